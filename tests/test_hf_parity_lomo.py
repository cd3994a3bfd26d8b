"""LOMO / AdaLomo: optimhub builds what ``Trainer.create_optimizer()`` builds, except that
we pass ``weight_decay`` (HF drops it) — that difference has its own test.

Both are driven the way the Trainer drives them (through accelerate): ``fused_backward(loss,
lr)`` each step, with no ``step()``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train
from parity import training_args as _training_args

import optimhub
from optimhub.errors import BackendUnavailableError

pytest.importorskip("transformers")
pytest.importorskip("lomo_optim")

LR = 3e-3  # parity.training_args' learning rate


def _fused(optimizer):
    return lambda loss: optimizer.fused_backward(loss, LR)


def test_lomo_is_the_hf_trainer_lomo(tmp_path):
    args = _training_args(tmp_path, "lomo", weight_decay=0.0)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("lomo", our_model, args)

    # lomo-optim's own class, with the hub's guard mixed in (a plain backward or step()
    # is refused before any weight changes; tests/test_hardening_core.py)
    assert isinstance(ours, type(theirs)) and type(ours).__name__ == type(theirs).__name__
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    assert ours.lr == theirs.lr == LR and ours.weight_decay == theirs.weight_decay == 0.0

    train(hf_model, theirs, backward=_fused(theirs))
    train(our_model, ours, backward=_fused(ours))
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.lm_head.weight, make_tiny_lm().lm_head.weight)


def test_deviation_weight_decay_is_passed_where_hf_drops_it(tmp_path):
    args = _training_args(tmp_path, "lomo")  # weight_decay=0.05
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("lomo", our_model, args)
    assert args.weight_decay == 0.05
    assert theirs.weight_decay == 0.0 and ours.weight_decay == 0.05
    train(hf_model, theirs, steps=1, backward=_fused(theirs))
    train(our_model, ours, steps=1, backward=_fused(ours))
    # same gradient step, plus our decay p * lr * wd on every parameter (norms included)
    start = dict(make_tiny_lm().named_parameters())
    hf_params = dict(hf_model.named_parameters())
    for name, param in our_model.named_parameters():
        gap = (hf_params[name] - param).detach()
        assert torch.allclose(gap, start[name].detach() * LR * 0.05, rtol=0, atol=1e-6), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without CUDA")
def test_adalomo_fails_on_both_sides_without_cuda(tmp_path):
    args = _training_args(tmp_path, "adalomo")
    with pytest.raises(AssertionError, match="CUDA"):  # HF: a bare assert inside lomo-optim
        hf_optimizer(make_tiny_lm(), args)
    with pytest.raises(BackendUnavailableError, match="runs only on a CUDA device"):
        optimhub.create_optimizer("adalomo", make_tiny_lm(), args)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_adalomo_is_the_hf_trainer_adalomo(tmp_path):
    args = _training_args(tmp_path, "adalomo", weight_decay=0.0, use_cpu=False)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm().cuda()
    theirs = hf_optimizer(hf_model, args)  # the Trainer moves hf_model to the GPU
    ours = optimhub.create_optimizer("adalomo", our_model, args)
    assert isinstance(ours, type(theirs)) and type(ours).__name__ == type(theirs).__name__
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    for model, optimizer in ((hf_model, theirs), (our_model, ours)):
        for step in range(5):
            optimizer.fused_backward(lm_loss(model, lm_batch(seed=step).cuda()), LR)
    assert max_difference(hf_model, our_model) == 0.0
