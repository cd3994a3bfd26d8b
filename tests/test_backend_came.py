"""CAME (came-pytorch) behind the hub: parity with the class built by hand; its three betas
and two epsilons are typed options, not adam_beta1/2 / adam_epsilon."""

from __future__ import annotations

import pytest
import torch
from parity import conformance_steps

import optimhub
import optimhub.testing as ot

came_pytorch = pytest.importorskip("came_pytorch")


def test_hub_matches_the_class_built_by_hand() -> None:
    hub_model, hand_model = ot.conformance_model(), ot.conformance_model()
    # adam_beta1/2 do not apply (CAME's three betas are its own option): giving one is an
    # error, not a silent ignore
    with pytest.raises(optimhub.OptimArgsError, match="takes no betas"):
        optimhub.create_optimizer("came", hub_model, adam_beta1=0.5)
    hub = optimhub.create_optimizer("came", hub_model, learning_rate=2e-3,
                                    optim_args="betas=(0.8,0.99,0.999),clip_threshold=2.0")
    hand = came_pytorch.CAME(hand_model.parameters(), lr=2e-3, betas=(0.8, 0.99, 0.999),
                             eps=(1e-30, 1e-16), clip_threshold=2.0, weight_decay=0.0)
    for model, optimizer in ((hub_model, hub), (hand_model, hand)):
        conformance_steps(model, optimizer)
    for a, b in zip(hub_model.parameters(), hand_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_betas_are_refused_before_building() -> None:
    with pytest.raises(optimhub.OptimArgsError, match="betas"):
        optimhub.create_optimizer("came", ot.conformance_model(), optim_args="betas=(0.9,0.99)")
