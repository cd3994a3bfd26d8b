"""GrokAdamW: optimhub builds what ``Trainer.create_optimizer()`` builds — same class, the
same decay / no-decay groups (which matters: GrokAdamW's beta1 depends on a parameter's index
in its group), same hyperparameters, same parameters after 5 steps (bit-exact) — except
that the Adam betas and epsilon are passed (HF drops them) and checkpoints keep the state."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train
from parity import training_args as _training_args

import optimhub

pytest.importorskip("transformers")
pytest.importorskip("grokadamw")

OPTIM_ARGS = (
    "alpha_init=0.9,lamb=1.5,gamma=0.2,grokking_signal_decay_rate=0.2,gradient_clipping=0.5"
)
#: HF's default Adam hyperparameters, which equal GrokAdamW's own defaults.
HF_ADAM_DEFAULTS = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}


def _quiet_train(model, optimizer) -> None:
    with warnings.catch_warnings():  # HF's GrokAdamW warns on every step
        warnings.simplefilter("ignore")
        train(model, optimizer)


def test_same_optimizer_as_the_hf_trainer(tmp_path):
    args = _training_args(tmp_path, "grokadamw", OPTIM_ARGS, **HF_ADAM_DEFAULTS)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("grokadamw", our_model, args)

    assert type(ours) is type(theirs)
    # "state" is no hyperparameter: where GrokAdamW keeps the per-parameter state (ours
    # links it to optimizer.state from the start: plugins/grokadamw.py)
    assert (groups_by_name(ours, our_model, ignore=("state",))
            == groups_by_name(theirs, hf_model, ignore=("state",)))
    assert ours.param_groups[0]["gamma"] == 0.2 and ours.param_groups[0]["weight_decay"] == 0.05

    _quiet_train(hf_model, theirs)
    _quiet_train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.lm_head.weight, make_tiny_lm().lm_head.weight)


def test_deviation_adam_betas_and_epsilon_are_passed(tmp_path):
    args = _training_args(tmp_path, "grokadamw")  # betas (0.85, 0.98), epsilon 1e-7
    theirs = hf_optimizer(make_tiny_lm(), args)
    ours = optimhub.create_optimizer("grokadamw", make_tiny_lm(), args)
    for group in theirs.param_groups:  # HF: GrokAdamW's defaults, whatever the user set
        assert (group["betas"], group["eps"]) == ((0.9, 0.999), 1e-8)
    for group in ours.param_groups:
        assert (group["betas"], group["eps"]) == ((0.85, 0.98), 1e-7)


def test_deviation_the_state_is_in_the_state_dict(tmp_path):
    args = _training_args(tmp_path, "grokadamw", **HF_ADAM_DEFAULTS)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("grokadamw", our_model, args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(hf_model, theirs, steps=1)
        train(our_model, ours, steps=1)
    assert theirs.state_dict()["state"] == {}  # HF's checkpoints lose GrokAdamW's state
    assert len(ours.state_dict()["state"]) == len(list(our_model.parameters()))
