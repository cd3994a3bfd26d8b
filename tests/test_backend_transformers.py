"""Adafactor from transformers.optimization, with the HF Trainer's absolute learning rate by
default, typed options, and HF Adafactor's own rules checked before building."""

from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import train_on_batches

import optimhub
from optimhub.errors import OptimArgsError

pytest.importorskip("transformers")


def _steps(model, optimizer, count: int) -> list[float]:
    return train_on_batches(model, optimizer, [1] * count)


def test_spec_has_the_trainer_defaults():
    spec = optimhub.get_spec("adafactor")
    assert spec.hyperparameters == {"lr", "weight_decay"}
    assert spec.has("layerwise_capable")
    defaults = {k: a.default for k, a in spec.args.items()}
    assert defaults == {
        "relative_step": False, "scale_parameter": False, "warmup_init": False, "beta1": None,
        "clip_threshold": 1.0, "decay_rate": -0.8, "eps": (1e-30, 1e-3),
    }


def test_trains_with_an_absolute_lr_and_factored_state():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adafactor", model, lr=1e-2, weight_decay=0.01)
    assert type(optimizer).__module__ == "transformers.optimization"
    group = optimizer.param_groups[0]
    assert (group["lr"], group["relative_step"], group["scale_parameter"]) == (1e-2, False, False)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    losses = _steps(model, optimizer, 6)
    assert losses[-1] < losses[0]
    weight = model.layers[0].mlp["up_proj"].weight  # 32 x 16
    state = optimizer.state[weight]
    assert state["exp_avg_sq_row"].shape == (32,) and state["exp_avg_sq_col"].shape == (16,)
    assert "exp_avg" not in state  # no first moment without beta1


def test_options_reach_the_groups():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(
        "adafactor", model, lr=1e-2,
        optim_args="beta1=0.9,clip_threshold=0.5,decay_rate=-0.5,eps=(1e-30,1e-2),"
                   "scale_parameter=true",
    )
    group = optimizer.param_groups[0]
    assert (group["beta1"], group["clip_threshold"], group["decay_rate"]) == (0.9, 0.5, -0.5)
    assert group["eps"] == (1e-30, 1e-2) and group["scale_parameter"] is True
    _steps(model, optimizer, 1)
    assert optimizer.state[model.lm_head.weight]["exp_avg"].shape == model.lm_head.weight.shape


def test_relative_step_computes_its_own_step_size():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(
        "adafactor", model, optim_args="relative_step=true,warmup_init=true"
    )
    group = optimizer.param_groups[0]
    assert group["lr"] is None and group["relative_step"] and group["warmup_init"]
    before = model.lm_head.weight.detach().clone()
    _steps(model, optimizer, 2)
    assert not torch.equal(model.lm_head.weight, before)
    from transformers.optimization import AdafactorSchedule

    # the step size to log (HF's proxy schedule): 1e-6 * t with warmup_init, t = 2
    assert AdafactorSchedule(optimizer).get_lr() == pytest.approx([2e-6, 2e-6])


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"lr": 1e-3, "optim_args": "relative_step=true"}, "learning_rate=0.001 would be unused"),
        ({"optim_args": "warmup_init=true"}, "needs relative_step=true"),
        ({"optim_args": "relative_step=true",
          "param_group_rules": [{"pattern": "lm_head", "lr": 1e-3}]}, "lm_head.weight"),
        ({"optim_args": "beta1=1"}, "beta1=.* must be < 1"),
        ({"optim_args": "eps=(1e-30)"}, "it has 1 item, not 2"),
        ({"optim_args": "clip_threshold=0"}, "clip_threshold=.* must be > 0"),
        ({"optim_args": "lr=0.1"}, "unknown"),
    ],
)
def test_hf_adafactor_rules_are_checked_before_building(overrides, text):
    with pytest.raises(OptimArgsError, match=text):
        optimhub.create_optimizer("adafactor", make_tiny_lm(), **overrides)


def test_layerwise_mode():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adafactor", model, lr=1e-2, layerwise=True)
    before = model.lm_head.weight.detach().clone()
    lm_loss(model, lm_batch()).backward()
    assert not torch.equal(model.lm_head.weight, before)
    optimizer.close()
