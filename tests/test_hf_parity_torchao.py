"""For adamw_torch_4bit / adamw_torch_8bit, optimhub builds what ``Trainer.create_optimizer()``
builds: same class, groups, hyperparameters and ``block_size`` (256 for both, as HF passes:
torchao's own 4-bit default is 128), and bit-identical parameters after identical steps.

torchao compiles its step per parameter shape and per value of every float hyperparameter
(1.5-10 s each on CPU), so these tests use as few shapes and settings as possible and the
same ones as tests/test_backend_torchao.py: ``make_tiny_lm()``, whose tensors are all under
4096 elements (full-precision state; both names share the compiled graphs), and ``pair()``,
two 64x64 weights of 4096 elements each, where the low-bit state really is used.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train, training_args
from test_backend_torchao import pair, train_pair

import optimhub

transformers = pytest.importorskip("transformers")
torchao_optim = pytest.importorskip("torchao.optim")

NAMES = ["adamw_torch_4bit", "adamw_torch_8bit"]
STATE_CLASS = {"adamw_torch_4bit": "OptimState4bit", "adamw_torch_8bit": "OptimState8bit"}

pytestmark = pytest.mark.filterwarnings(  # emitted by torch.compile, about torchao's code
    "ignore:OptimState.bit does not implement _stable_hash_for_caching:UserWarning",
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
)


@pytest.mark.slow  # the first call compiles 10 graphs: 5 shapes, for HF's int 0 and our False
@pytest.mark.parametrize("name", NAMES)
def test_same_optimizer_as_the_hf_trainer(tmp_path, name):
    args = training_args(tmp_path, name)
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer(name, our_model, args)

    assert type(ours) is type(theirs)
    assert type(ours).__module__.startswith("torchao.optim")
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    assert all(isinstance(g["lr"], torch.Tensor) for g in ours.param_groups)
    assert (ours.block_size, ours.bf16_stochastic_round) == (theirs.block_size, False)
    assert ours.block_size == 256

    train(hf_model, theirs)
    losses = train(our_model, ours)
    assert losses[-1] < losses[0]
    assert max_difference(hf_model, our_model) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_same_low_bit_state_and_steps_as_the_hf_trainer(tmp_path, name):
    args = training_args(tmp_path, name)
    hf_model, our_model = pair(), pair()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer(name, our_model, args)
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)

    train_pair(hf_model, theirs)
    losses = train_pair(our_model, ours)
    assert losses[-1] < losses[0]
    assert max_difference(hf_model, our_model) == 0.0
    for optimizer in (ours, theirs):
        for state in optimizer.state.values():
            assert type(state["exp_avg"]).__name__ == STATE_CLASS[name]
            assert state["exp_avg"].block_size == 256


# ----------------------------------------------------------------------------- deviations
def test_block_size_is_typed_where_hf_passes_the_string(tmp_path):
    """HF passes optim_args' block_size on as the str "128": the first step on a tensor of
    4096+ elements then fails with ``int % str``. Ours is an int, checked when building."""
    args = training_args(tmp_path, "adamw_torch_8bit", "block_size=128")
    hf_model, our_model = pair(), pair()
    theirs = hf_optimizer(hf_model, args)
    assert theirs.block_size == "128"
    with pytest.raises(TypeError, match="%"):
        train_pair(hf_model, theirs, steps=1)

    ours = optimhub.create_optimizer("adamw_torch_8bit", our_model, args)
    assert ours.block_size == 128
    losses = train_pair(our_model, ours, steps=2)
    assert losses[1] < losses[0]
    assert {s["exp_avg"].block_size for s in ours.state.values()} == {128}
