"""Schedule-Free AdamW / RAdam / SGD: real optimizers, real steps, the train/eval contract
and the warmup that comes from the training arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import train_on_batches

import optimhub
from optimhub.errors import OptimArgsError

pytest.importorskip("schedulefree")

NAMES = ("schedule_free_adamw", "schedule_free_radam", "schedule_free_sgd")
#: State per parameter: z (the SGD sequence) and, for the Adam ones, the second moment.
STATE_KEYS = {
    "schedule_free_adamw": {"z", "exp_avg_sq"},
    "schedule_free_radam": {"z", "exp_avg_sq"},
    "schedule_free_sgd": {"z"},
}
LR = {"schedule_free_adamw": 1e-2, "schedule_free_radam": 1e-2, "schedule_free_sgd": 0.5}


def _steps(model, optimizer, count: int) -> list[float]:
    return train_on_batches(model, optimizer, [1] * count)


def test_specs():
    for name in NAMES:
        spec = optimhub.get_spec(name)
        assert spec.has("schedule_free") and spec.min_version in (None, "1.4.0")
        assert set(spec.args) >= {"weight_lr_power", "r"}
    assert optimhub.get_spec("schedule_free_sgd").hyperparameters == {"lr", "weight_decay"}
    assert optimhub.get_spec("schedule_free_radam").min_version == "1.4.0"


@pytest.mark.parametrize("name", NAMES)
def test_trains_and_switches_between_train_and_eval_weights(name):
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(name, model, lr=LR[name], weight_decay=0.01)
    optimizer.train()
    losses = _steps(model, optimizer, 8)
    assert losses[-1] < losses[0]
    for param in model.parameters():
        state = optimizer.state[param]
        assert set(state) == STATE_KEYS[name]
        assert all(state[k].shape == param.shape and state[k].dtype == torch.float32
                   for k in STATE_KEYS[name])
    training_weights = model.lm_head.weight.detach().clone()
    optimizer.eval()  # the averaged x sequence: what to evaluate and save
    assert not torch.equal(model.lm_head.weight, training_weights)
    optimizer.train()
    assert torch.allclose(model.lm_head.weight, training_weights, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_stepping_without_train_raises_in_the_backend(name):
    """The quirk the loop contract (capability schedule_free) exists for."""
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(name, model, lr=LR[name])
    lm_loss(model, lm_batch()).backward()
    with pytest.raises(Exception, match="not in train mode"):
        optimizer.step()


def test_the_driver_switches_modes():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("schedule_free_adamw", model, lr=1e-2)
    driver = optimhub.drive(optimizer)  # calls train()
    driver.backward(lm_loss(model, lm_batch()))
    driver.step()
    assert optimizer.param_groups[0]["train_mode"]
    with driver.evaluating():
        assert not optimizer.param_groups[0]["train_mode"]
    assert optimizer.param_groups[0]["train_mode"]


def test_weight_decay_as_hf_passes_it_constructor_and_groups():
    optimizer = optimhub.create_optimizer("schedule_free_adamw", make_tiny_lm(), weight_decay=0.1)
    assert optimizer.defaults["weight_decay"] == 0.1
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("name", ["schedule_free_adamw", "schedule_free_sgd"])
def test_warmup_steps_drive_the_scheduled_lr(name):
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(name, model, lr=LR[name], warmup_steps=4)
    assert {g["warmup_steps"] for g in optimizer.param_groups} == {4}
    optimizer.train()
    _steps(model, optimizer, 1)
    assert optimizer.param_groups[0]["scheduled_lr"] == pytest.approx(LR[name] / 4)


def test_a_warmup_ratio_becomes_whole_steps():
    optimizer = optimhub.create_optimizer(
        "schedule_free_adamw", make_tiny_lm(), warmup_steps=0.05, max_steps=30
    )
    warmup = optimizer.param_groups[0]["warmup_steps"]
    assert warmup == 2 and isinstance(warmup, int)  # ceil(30 * 0.05)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"warmup_steps": 0.1}, "ratio of the training length, but max_steps"),
        ({"warmup_steps": 2.5}, "neither a whole number"),
    ],
)
def test_unusable_warmup_is_refused(overrides, text):
    with pytest.raises(OptimArgsError, match=text):
        optimhub.create_optimizer("schedule_free_adamw", make_tiny_lm(), **overrides)


def test_radam_refuses_a_warmup_it_would_ignore():
    with pytest.raises(OptimArgsError, match="warms up by itself.*schedule_free_adamw"):
        optimhub.create_optimizer("schedule_free_radam", make_tiny_lm(), warmup_steps=10)
    optimizer = optimhub.create_optimizer(
        "schedule_free_radam", make_tiny_lm(), optim_args="silent_sgd_phase=false"
    )
    assert "warmup_steps" not in optimizer.param_groups[0]
    assert optimizer.param_groups[0]["silent_sgd_phase"] is False


def test_sgd_momentum_option():
    optimizer = optimhub.create_optimizer(
        "schedule_free_sgd", make_tiny_lm(), optim_args="momentum=0.5,weight_lr_power=0,r=1"
    )
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_lr_power"], group["r"]) == (0.5, 0.0, 1.0)
    assert optimhub.create_optimizer("schedule_free_sgd", make_tiny_lm()).param_groups[0][
        "momentum"] == 0.9  # the backend's default, as with HF


@pytest.mark.parametrize(
    ("name", "optim_args", "text"),
    [
        ("schedule_free_sgd", "momentum=1", "momentum=.* must be < 1"),
        ("schedule_free_adamw", "momentum=0.9", "momentum"),  # an SGD option only
        ("schedule_free_adamw", "weight_lr_power=-1", "must be >= 0"),
        ("schedule_free_radam", "r=abc", "is not a number"),
    ],
)
def test_bad_options(name, optim_args, text):
    with pytest.raises(OptimArgsError, match=text):
        optimhub.create_optimizer(name, make_tiny_lm(), optim_args=optim_args)


def test_eps_and_betas_are_not_sgd_hyperparameters_but_weight_decay_is():
    optimizer = optimhub.create_optimizer("schedule_free_sgd", make_tiny_lm(), weight_decay=0.2)
    group = optimizer.param_groups[0]
    assert "betas" not in group and "eps" not in group and group["weight_decay"] == 0.2


def test_state_dict_round_trip_in_eval_mode(tmp_path):
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("schedule_free_adamw", model, lr=1e-2)
    optimizer.train()
    _steps(model, optimizer, 3)
    optimizer.eval()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    restored_model = make_tiny_lm()
    restored_model.load_state_dict(saved["model"])
    restored = optimhub.create_optimizer("schedule_free_adamw", restored_model, lr=1e-2)
    restored.load_state_dict(saved["optim"])
    for opt, net in ((optimizer, model), (restored, restored_model)):
        opt.train()
        _steps(net, opt, 2)
        opt.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), restored_model.parameters(),
                                                 strict=True))
