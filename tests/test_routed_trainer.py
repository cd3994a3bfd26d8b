"""Routed optimizers inside ``transformers.Trainer`` (OptimHubTrainer): ``muon`` trains a tiny
Llama with its options from TrainingArguments.optim_args, a route set given as text trains,
and the routes' capabilities reach the Trainer's checks."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
from test_trainer_integration import (
    STEPS,
    assert_learns,
    backend,
    logged,
    make_trainer,
)

from optimhub import CapabilityError, RoutedOptimizer, spec_of
from optimhub.errors import OptimArgsError, OptimHubWarning


def test_muon_lowers_the_loss_with_its_options_from_the_training_arguments(tmp_path):
    trainer = make_trainer(tmp_path, optim="muon",
                           args={"optim_args": "momentum=0.9,fallback_lr=5e-3",
                                 "lr_scheduler_type": "constant", "weight_decay": 0.01})
    trainer.train()
    assert_learns(trainer)
    optimizer = backend(trainer)
    assert isinstance(optimizer, RoutedOptimizer) and spec_of(optimizer).name == "muon"
    lrs = {label: {g["lr"] for g in o.param_groups} for label, o in optimizer.routes.items()}
    assert lrs == {"muon": {1e-2}, "fallback": {5e-3}}
    assert {g["momentum"] for g in optimizer.routes["muon"].param_groups} == {0.9}
    assert set(logged(trainer, "learning_rate")) == {1e-2}  # HF logs the first group's lr


def test_a_route_set_given_as_text_trains_and_each_route_keeps_its_lr(tmp_path):
    text = ("matrix -> muon_torch(lr_scale=0.5,adjust_lr_fn=match_rms_adamw); "
            "* -> adamw_torch(lr=2e-2)")
    trainer = make_trainer(tmp_path, optim=text, args={"warmup_steps": 2})
    trainer.train()
    assert_learns(trainer)
    optimizer = backend(trainer)
    base = {"muon_torch": 5e-3, "adamw_torch": 2e-2}
    final = (STEPS - STEPS) / (STEPS - 2)  # HF's linear schedule after the last step: 0
    for label, group in zip(optimizer.group_routes, optimizer.param_groups, strict=True):
        assert group["initial_lr"] == pytest.approx(base[label])
        assert group["lr"] == pytest.approx(base[label] * final)


def test_a_routed_optimizer_with_a_schedule_free_route_needs_a_constant_schedule(tmp_path):
    """The schedule-free rule of a plain name, per route: an explicit decaying schedule is
    refused; HF's untouched default runs as constant, with one warning
    (docs/differences-from-transformers.md)."""
    pytest.importorskip("schedulefree")
    trainer = make_trainer(tmp_path / "cosine", optim="muon",
                           args={"optim_args": "fallback=schedule_free_adamw",
                                 "lr_scheduler_type": "cosine"})
    with pytest.raises(CapabilityError, match="schedule-free"):
        trainer.train()
    trainer = make_trainer(tmp_path / "default", optim="muon",
                           args={"optim_args": "fallback=schedule_free_adamw"})
    with pytest.warns(OptimHubWarning, match="runs as lr_scheduler_type='constant'"):
        trainer.train()


def test_a_bad_route_set_fails_when_the_trainer_is_made(tmp_path):
    with pytest.raises(OptimArgsError, match="Did you mean 'matrix'"):
        make_trainer(tmp_path, optim="matrx -> muon_torch; * -> adamw_torch")
