"""Adafactor: optimhub builds what ``Trainer.create_optimizer()`` builds (class, groups,
hyperparameters, parameters after 5 steps, bit-exact) — except that ``optim_args``, which
HF ignores for this name (issue #21317), are applied here (or refused when unknown)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train
from parity import training_args as _training_args

import optimhub
from optimhub.errors import OptimArgsError

pytest.importorskip("transformers")


def test_same_optimizer_as_the_hf_trainer(tmp_path):
    args = _training_args(tmp_path, "adafactor")
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("adafactor", our_model, args)

    assert type(ours) is type(theirs)
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    assert ours.param_groups[0]["lr"] == 3e-3 and ours.param_groups[0]["eps"] == (1e-30, 1e-3)

    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.lm_head.weight, make_tiny_lm().lm_head.weight)


def test_deviation_optim_args_are_applied_where_hf_ignores_them(tmp_path):
    args = _training_args(tmp_path, "adafactor", "beta1=0.9,clip_threshold=0.5")
    theirs = hf_optimizer(make_tiny_lm(), args)
    ours = optimhub.create_optimizer("adafactor", make_tiny_lm(), args)
    assert (theirs.param_groups[0]["beta1"], theirs.param_groups[0]["clip_threshold"]) == (
        None, 1.0)
    assert (ours.param_groups[0]["beta1"], ours.param_groups[0]["clip_threshold"]) == (0.9, 0.5)


def test_deviation_an_unknown_key_is_refused_where_hf_ignores_it(tmp_path):
    args = _training_args(tmp_path, "adafactor", "beta=0.9")
    assert hf_optimizer(make_tiny_lm(), args).param_groups[0]["beta1"] is None
    with pytest.raises(OptimArgsError, match="beta1"):  # names the key that was meant
        optimhub.create_optimizer("adafactor", make_tiny_lm(), args)
