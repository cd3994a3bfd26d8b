"""StableAdamW (torch-optimi): real steps in fp32 and bf16, typed options, layerwise mode."""

from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import train_on_batches

import optimhub
from optimhub.errors import OptimArgsError

pytest.importorskip("optimi")


def _steps(model, optimizer, count: int) -> list[float]:
    return train_on_batches(model, optimizer, [1] * count)


def test_spec():
    spec = optimhub.get_spec("stable_adamw")
    assert spec.has("layerwise_capable") and spec.hyperparameters == {
        "lr", "betas", "eps", "weight_decay"}
    assert {k: a.default for k, a in spec.args.items()} == {
        "decouple_lr": False, "max_lr": None, "kahan_sum": None}


def test_trains_in_fp32_with_adam_state_and_no_kahan_buffer():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(
        "stable_adamw", model, lr=1e-2, betas=(0.9, 0.95), eps=1e-7, weight_decay=0.1
    )
    assert type(optimizer).__name__ == "StableAdamW"
    assert optimizer.defaults["weight_decay"] == 0.1  # as HF passes it; the groups override
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert (optimizer.param_groups[0]["beta1"], optimizer.param_groups[0]["beta2"]) == (0.9, 0.95)
    losses = _steps(model, optimizer, 6)
    assert losses[-1] < losses[0]
    state = optimizer.state[model.lm_head.weight]
    assert state["exp_avg"].shape == model.lm_head.weight.shape
    assert state["exp_avg"].dtype == torch.float32 and state["kahan_comp"] is None


@pytest.mark.parametrize(("optim_args", "buffer"), [(None, True), ("kahan_sum=False", False)])
def test_kahan_summation_in_bf16_follows_the_typed_option(optim_args, buffer):
    model = make_tiny_lm().to(torch.bfloat16)
    optimizer = optimhub.create_optimizer("stable_adamw", model, lr=1e-2, optim_args=optim_args)
    _steps(model, optimizer, 1)
    kahan = optimizer.state[model.lm_head.weight]["kahan_comp"]
    if buffer:
        assert kahan is not None and kahan.dtype == torch.bfloat16
    else:
        assert kahan is None


def test_decoupled_weight_decay_with_max_lr():
    optimizer = optimhub.create_optimizer(
        "stable_adamw", make_tiny_lm(), lr=1e-3, weight_decay=1e-4,
        optim_args="decouple_lr=true,max_lr=2e-3",
    )
    group = optimizer.param_groups[0]
    assert (group["decouple_lr"], group["max_lr"]) == (True, 2e-3)
    default_max = optimhub.create_optimizer(
        "stable_adamw", make_tiny_lm(), lr=1e-3, weight_decay=1e-4, optim_args="decouple_lr=yes")
    assert default_max.param_groups[0]["max_lr"] == 1e-3  # optimi: max_lr defaults to lr


@pytest.mark.parametrize(
    ("optim_args", "text"),
    [
        ("max_lr=1e-3", "only used with decouple_lr=true"),
        ("max_lr=0,decouple_lr=true", "max_lr=.* must be > 0"),
        ("kahan_sum=maybe", "not true/false"),
        ("foreach=true", "foreach"),
    ],
)
def test_bad_options(optim_args, text):
    with pytest.raises(OptimArgsError, match=text):
        optimhub.create_optimizer("stable_adamw", make_tiny_lm(), optim_args=optim_args)


def test_layerwise_mode_steps_inside_backward():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("stable_adamw", model, lr=1e-2, layerwise=True)
    assert len(optimizer.inner) == len(list(model.parameters()))
    assert all(type(o).__name__ == "StableAdamW" for o in optimizer.inner.values())
    before = model.lm_head.weight.detach().clone()
    lm_loss(model, lm_batch()).backward()  # the update happens here
    assert not torch.equal(model.lm_head.weight, before)
    assert model.lm_head.weight.grad is None
    optimizer.close()
