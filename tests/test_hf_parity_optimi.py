"""StableAdamW: optimhub builds what ``Trainer.create_optimizer()`` builds (class, groups,
hyperparameters, parameters after 5 steps, bit-exact) — except where HF reads the boolean
options with ``bool(str)`` or passes an unused ``max_lr``; each difference has its test."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train
from parity import training_args as _training_args

import optimhub
from optimhub.errors import OptimArgsError

pytest.importorskip("transformers")
pytest.importorskip("optimi")

CASES = [None, "kahan_sum=True,decouple_lr=True,max_lr=6e-3"]
#: optimi warns about a weight decay >= 1e-3 with decouple_lr (it is not scaled by lr there)
SMALL_DECAY = 1e-4


@pytest.mark.parametrize("optim_args", CASES)
def test_same_optimizer_as_the_hf_trainer(tmp_path, optim_args):
    args = _training_args(tmp_path, "stable_adamw", optim_args, weight_decay=SMALL_DECAY)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("stable_adamw", our_model, args)

    assert type(ours) is type(theirs)
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    assert ours.defaults["weight_decay"] == theirs.defaults["weight_decay"] == SMALL_DECAY

    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.lm_head.weight, make_tiny_lm().lm_head.weight)


def test_deviation_false_means_false(tmp_path):
    args = _training_args(tmp_path, "stable_adamw", "kahan_sum=False,decouple_lr=False",
                          weight_decay=SMALL_DECAY)
    theirs = hf_optimizer(make_tiny_lm(), args)
    ours = optimhub.create_optimizer("stable_adamw", make_tiny_lm(), args)
    assert (theirs.param_groups[0]["kahan_sum"], theirs.param_groups[0]["decouple_lr"]) == (
        True, True)  # bool("False")
    assert (ours.param_groups[0]["kahan_sum"], ours.param_groups[0]["decouple_lr"]) == (
        False, False)


def test_deviation_max_lr_without_decouple_lr_is_refused(tmp_path):
    args = _training_args(tmp_path, "stable_adamw", "max_lr=1e-2")
    theirs = hf_optimizer(make_tiny_lm(), args)
    assert theirs.param_groups[0]["max_lr"] == 1e-2  # kept, and never read by optimi
    assert theirs.param_groups[0]["decouple_lr"] is False
    with pytest.raises(OptimArgsError, match="max_lr=0.01 is only used with decouple_lr=true"):
        optimhub.create_optimizer("stable_adamw", make_tiny_lm(), args)
