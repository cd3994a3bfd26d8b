"""The torchao plugin on real torchao optimizers: low-bit state and its memory, the tensor
``lr`` quirk, the typed options and the bf16-rounding warning.

torchao compiles its step per parameter shape and per float hyperparameter value, so every
step here runs on the same two 64x64 weights with the hyperparameters of the parity tests
(tests/test_hf_parity_torchao.py), and reuses their compiled graphs in one pytest run.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_tiny_lm
from torch import nn

import optimhub
from optimhub.spec import Capability

torchao_optim = pytest.importorskip("torchao.optim")

NAMES = ["adamw_torch_4bit", "adamw_torch_8bit"]
#: The hyperparameters of parity.training_args: one compiled graph per name and shape.
HYPER = {"lr": 3e-3, "weight_decay": 0.05, "betas": (0.85, 0.98), "eps": 1e-7}

pytestmark = pytest.mark.filterwarnings(  # emitted by torch.compile, about torchao's code
    "ignore:OptimState.bit does not implement _stable_hash_for_caching:UserWarning",
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
)


def pair() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64, bias=False), nn.Tanh(), nn.Linear(64, 64, bias=False))


def train_pair(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3
               ) -> list[float]:
    generator = torch.Generator().manual_seed(1)
    inputs, targets = (torch.randn(16, 64, generator=generator) for _ in range(2))
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(inputs) - targets).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def low_bit_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the quantized codes and block scales (the fixed-size qmap table of each
    tensor, 1 KB at most, is left out: per parameter it vanishes on large tensors)."""
    total = 0
    for state in optimizer.state.values():
        for key in ("exp_avg", "exp_avg_sq"):
            for part in (state[key].codes, state[key].scale):
                total += part.numel() * part.element_size()
    return total


def test_spec_data():
    for name in NAMES:
        spec = optimhub.get_spec(name)
        # no_fsdp2: torchao quantizes each rank's shard on its own (tools/distributed_matrix.py)
        assert spec.plugin == "torchao" and spec.capabilities == {Capability.LOW_BIT_STATE,
                                                                  Capability.NO_FSDP2}
        assert spec.args["block_size"].default == 256  # HF's, for both names
        assert spec.args["bf16_stochastic_round"].default is False


@pytest.mark.parametrize("name", NAMES)
def test_low_bit_state_trains_and_uses_the_memory_the_spec_says(name):
    model = pair()
    optimizer = optimhub.create_optimizer(name, model, **HYPER)
    losses = train_pair(model, optimizer)
    assert losses[-1] < losses[0]
    for state in optimizer.state.values():
        assert state["exp_avg"].codes.dtype == torch.uint8
        assert state["exp_avg"].block_size == 256
    per_param = low_bit_state_bytes(optimizer) / sum(p.numel() for p in model.parameters())
    assert per_param == pytest.approx(optimhub.get_spec(name).state_bytes_per_param, abs=0.02)
    assert per_param <= {"adamw_torch_4bit": 1.05, "adamw_torch_8bit": 2.05}[name]


def test_lr_is_a_tensor_schedulers_work_and_float_assignment_fails():
    """torchao keeps group['lr'] as a 0-d tensor: LR schedulers update it in place; a
    plain float assigned to it is refused at the next step (documented quirk)."""
    model = pair()
    optimizer = optimhub.create_optimizer("adamw_torch_8bit", model, **HYPER)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    train_pair(model, optimizer, steps=1)
    scheduler.step()
    lr = optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(1.5e-3)
    train_pair(model, optimizer, steps=1)

    optimizer.param_groups[0]["lr"].fill_(1e-3)  # the supported way to set it by hand
    train_pair(model, optimizer, steps=1)
    optimizer.param_groups[0]["lr"] = 1e-3
    with pytest.raises(RuntimeError, match="non-Tensor"):
        train_pair(model, optimizer, steps=1)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_stochastic_round_warns_when_no_parameter_is_bfloat16(name):
    with pytest.warns(optimhub.OptimHubWarning, match="acts only on bfloat16 parameters.*float32"):
        optimizer = optimhub.create_optimizer(name, make_tiny_lm(),
                                              optim_args="bf16_stochastic_round=true")
    assert optimizer.bf16_stochastic_round is True

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = optimhub.create_optimizer(name, make_tiny_lm().to(torch.bfloat16),
                                              optim_args="bf16_stochastic_round=yes")
        assert optimizer.bf16_stochastic_round is True
        optimhub.create_optimizer(name, make_tiny_lm(), optim_args="bf16_stochastic_round=0")


@pytest.mark.parametrize(
    ("optim_args", "message"),
    [
        ("block_size=0", r"block_size=.*must be >= 1"),
        ("block_size=2.5", r"block_size=.*is not an integer"),
        ("block_size=big", r"block_size=.*is not an integer"),
        ("bf16_stochastic_round=maybe", r"bf16_stochastic_round=.*not true/false"),
        ("blocksize=128", r"unknown key 'blocksize'. Did you mean 'block_size'"),
    ],
)
def test_bad_options_are_refused_before_torchao_sees_them(optim_args, message):
    with pytest.raises(optimhub.OptimArgsError, match=message):
        optimhub.create_optimizer("adamw_torch_4bit", make_tiny_lm(), optim_args=optim_args)


def test_block_size_reaches_the_optimizer():
    optimizer = optimhub.create_optimizer("adamw_torch_4bit", make_tiny_lm(),
                                          optim_args={"block_size": 64})
    assert optimizer.block_size == 64
