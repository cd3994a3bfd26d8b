"""Prodigy (prodigyopt) behind the hub: parity with the class built by hand, HF vocabulary."""

from __future__ import annotations

import pytest
import torch
from parity import conformance_steps

import optimhub
import optimhub.testing as ot

prodigyopt = pytest.importorskip("prodigyopt")


def test_hub_matches_the_class_built_by_hand() -> None:
    args = {"learning_rate": 1.0, "weight_decay": 0.01, "adam_beta1": 0.8, "adam_epsilon": 1e-7}
    hub_model, hand_model = ot.conformance_model(), ot.conformance_model()
    hub = optimhub.create_optimizer("prodigy", hub_model, args, optim_args="d_coef=2.0")
    decay = optimhub.param_groups.decay_parameter_names(hand_model)
    named = dict(hand_model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if n in decay], "weight_decay": 0.01},
              {"params": [p for n, p in named.items() if n not in decay], "weight_decay": 0.0}]
    hand = prodigyopt.Prodigy(groups, lr=1.0, betas=(0.8, 0.999), eps=1e-7, d_coef=2.0)
    for model, optimizer in ((hub_model, hub), (hand_model, hand)):
        conformance_steps(model, optimizer)
    for a, b in zip(hub_model.parameters(), hand_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_growth_rate_has_no_default_so_the_library_keeps_it_unbounded() -> None:
    optimizer = optimhub.create_optimizer("prodigy", ot.conformance_model(), lr=1.0)
    assert optimizer.param_groups[0]["growth_rate"] == float("inf")
