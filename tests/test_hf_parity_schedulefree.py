"""Schedule-Free: optimhub builds what ``Trainer.create_optimizer()`` builds (class, groups,
every group hyperparameter including the warmup, parameters after 5 steps, bit-exact),
except for the two HF bugs, each shown by its own test."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train
from parity import training_args as _training_args

import optimhub
from optimhub.errors import OptimArgsError

pytest.importorskip("transformers")
pytest.importorskip("schedulefree")

CASES = [
    ("schedule_free_adamw", "weight_lr_power=1.5,r=0.5", 3),
    ("schedule_free_radam", None, 0),
    ("schedule_free_sgd", "weight_lr_power=0", 3),
]


@pytest.mark.parametrize(("name", "optim_args", "warmup"), CASES)
def test_same_optimizer_as_the_hf_trainer(tmp_path, name, optim_args, warmup):
    args = _training_args(tmp_path, name, optim_args, warmup_steps=warmup)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer(name, our_model, args)

    assert type(ours) is type(theirs)
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    assert ours.defaults["weight_decay"] == theirs.defaults["weight_decay"] == 0.05

    for model, optimizer in ((hf_model, theirs), (our_model, ours)):
        optimizer.train()  # what the Trainer's training_step does first
        train(model, optimizer)
        optimizer.eval()  # what its evaluation loop does
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.lm_head.weight, make_tiny_lm().lm_head.weight)


def test_deviation_a_warmup_ratio_is_whole_steps_not_a_tenfold_first_step(tmp_path):
    args = _training_args(tmp_path, "schedule_free_adamw", warmup_steps=0.1, max_steps=100)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("schedule_free_adamw", our_model, args)
    assert theirs.param_groups[0]["warmup_steps"] == 0.1  # HF passes the ratio through
    assert ours.param_groups[0]["warmup_steps"] == 10  # ceil(100 * 0.1), HF's own rule
    for model, optimizer in ((hf_model, theirs), (our_model, ours)):
        optimizer.train()
        train(model, optimizer, steps=1)
    lr = args.learning_rate
    assert theirs.param_groups[0]["scheduled_lr"] == pytest.approx(10 * lr)  # (0+1)/0.1
    assert ours.param_groups[0]["scheduled_lr"] == pytest.approx(lr / 10)


def test_deviation_radam_refuses_the_warmup_hf_drops(tmp_path):
    args = _training_args(tmp_path, "schedule_free_radam", warmup_steps=5)
    theirs = hf_optimizer(make_tiny_lm(), args)
    assert "warmup_steps" not in theirs.param_groups[0]  # silently unused by HF
    with pytest.raises(OptimArgsError, match="warmup_steps=5"):
        optimhub.create_optimizer("schedule_free_radam", make_tiny_lm(), args)
