"""For the torch built-ins, optimhub builds exactly what ``Trainer.create_optimizer()`` builds:
same class, same parameters in the same groups, same hyperparameters, same parameters
after five identical steps (bit-exact: both run the same torch kernels on CPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train
from parity import training_args as _training_args

import optimhub

transformers = pytest.importorskip("transformers")

CASES = [
    ("adamw_torch", None),
    ("adamw_torch_fused", None),
    ("sgd", "momentum=0.9,nesterov=true"),
    ("sgd", None),
    ("adagrad", "lr_decay=0.01,eps=1e-9"),
    ("rmsprop", "momentum=0.5,alpha=0.9,eps=1e-6,centered=true"),
]


@pytest.mark.parametrize(("name", "optim_args"), CASES)
def test_same_optimizer_as_the_hf_trainer(tmp_path, name, optim_args):
    args = _training_args(tmp_path, name, optim_args)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer(name, our_model, args)

    assert type(ours) is type(theirs)
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    decayed = groups_by_name(ours, our_model)[0][0]
    assert "lm_head.weight" in decayed and not any("norm" in n or "bias" in n for n in decayed)

    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.lm_head.weight, make_tiny_lm().lm_head.weight)


def test_the_same_from_a_dict_and_from_keywords(tmp_path):
    hf_args = _training_args(tmp_path, "adamw_torch", None)
    hf_model = make_tiny_lm()
    from_hf = optimhub.create_optimizer("adamw_torch", hf_model, hf_args)
    as_dict = {
        "learning_rate": 3e-3, "weight_decay": 0.05, "adam_beta1": 0.85, "adam_beta2": 0.98,
        "adam_epsilon": 1e-7,
    }
    model = make_tiny_lm()
    from_dict = optimhub.create_optimizer("adamw_torch", model, as_dict)
    from_keywords = optimhub.create_optimizer(
        "adamw_torch", model, lr=3e-3, weight_decay=0.05, betas=(0.85, 0.98), eps=1e-7
    )
    from_dataclass = optimhub.create_optimizer(
        "adamw_torch", model, optimhub.OptimizerArguments(**as_dict)
    )
    expected = groups_by_name(from_hf, hf_model)
    for optimizer in (from_dict, from_keywords, from_dataclass):
        assert groups_by_name(optimizer, model) == expected


def test_keyword_overrides_win_over_args(tmp_path):
    args = _training_args(tmp_path, "sgd", "momentum=0.9")
    optimizer = optimhub.create_optimizer("sgd", make_tiny_lm(), args, lr=0.5,
                                          optim_args="momentum=0.1")
    assert {g["lr"] for g in optimizer.param_groups} == {0.5}
    assert {g["momentum"] for g in optimizer.param_groups} == {0.1}
