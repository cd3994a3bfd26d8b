"""The bitsandbytes plugin on real bnb optimizers (bnb 0.50 runs 8-bit state on CPU).

What is checked here beyond HF parity (tests/test_hf_parity_bitsandbytes.py): the spec data
(bits, paging, capabilities, the adamw_8bit alias), the 32-bit embedding override and its
clean-up, builds from bare parameters, state memory per parameter, the paged fallback
without CUDA, and the typed options of RMSprop and AdEMAMix with their refusals.
"""

from __future__ import annotations

import gc
import inspect
import warnings
from collections.abc import Iterator

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import train
from torch import nn

import optimhub
from optimhub import backends
from optimhub.spec import Capability

bnb = pytest.importorskip("bitsandbytes")

NAMES = [
    "adamw_bnb_8bit", "paged_adamw_32bit", "paged_adamw_8bit",
    "lion_8bit", "lion_32bit", "paged_lion_32bit", "paged_lion_8bit",
    "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
    "ademamix", "ademamix_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit",
]
#: vocab 128 x width 64: embedding, lm_head and projections all have >= 4096 elements.
SIZE = {"vocab": 128, "width": 64}
pytestmark = pytest.mark.filterwarnings(
    "ignore:optimhub.*pages its state through CUDA:optimhub.OptimHubWarning"
)


@pytest.fixture(autouse=True)
def fresh_bnb_manager() -> Iterator[None]:
    """bnb's GlobalOptimManager is process-wide: no test sees another test's overrides."""
    manager = bnb.optim.GlobalOptimManager.get_instance()
    manager.initialize()
    yield
    manager.initialize()


def state_dtypes(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, torch.dtype]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: s["state1"].dtype for p, s in optimizer.state.items()}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in optimizer.state, each storage once (the qmaps are shared)."""
    storages = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


# ----------------------------------------------------------------------------- spec data
def test_bits_and_paging_are_spec_data_and_match_the_capabilities():
    for name in NAMES:
        spec = optimhub.get_spec(name)
        assert spec.plugin == "bitsandbytes" and spec.paper.startswith("https://")
        assert spec.fixed["optim_bits"] in (8, 32)
        assert spec.has(Capability.LOW_BIT_STATE) == (spec.fixed["optim_bits"] == 8), name
        assert spec.has(Capability.PAGED) == spec.fixed.get("is_paged", False), name
    # bnb's RMSprop has no is_paged keyword, and Lion no eps (as HF passes them).
    assert "is_paged" not in inspect.signature(bnb.optim.RMSprop).parameters
    for name in ("rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit"):
        assert "is_paged" not in optimhub.get_spec(name).fixed
    assert optimhub.get_spec("lion_8bit").hyperparameters == {"lr", "betas", "weight_decay"}


def test_adamw_8bit_is_an_alias_of_adamw_bnb_8bit():
    spec = optimhub.get_spec("adamw_8bit")
    assert spec.name == "adamw_bnb_8bit" and "adamw_8bit" in spec.aliases
    assert [s.name for s in optimhub.list_optimizers("adamw_8bit")] == ["adamw_bnb_8bit"]
    optimizer = optimhub.create_optimizer("adamw_8bit", make_tiny_lm())
    assert optimhub.spec_of(optimizer) is spec and optimizer.args.optim_bits == 8


# ----------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("name", ["adamw_bnb_8bit", "lion_8bit", "rmsprop_bnb_8bit",
                                  "ademamix_8bit"])
def test_8bit_names_keep_embedding_state_in_32_bits(name):
    model = make_tiny_lm(**SIZE)
    optimizer = optimhub.create_optimizer(name, model, lr=1e-3)
    before = lm_loss(model, lm_batch(seed=0)).item()
    train(model, optimizer, steps=3)
    assert lm_loss(model, lm_batch(seed=0)).item() < before
    dtypes = state_dtypes(optimizer, model)
    assert model.embed_tokens.weight.numel() >= 4096  # large enough to be quantized
    assert dtypes["embed_tokens.weight"] == torch.float32
    assert dtypes["lm_head.weight"] == dtypes["layers.1.mlp.up_proj.weight"] == torch.uint8
    assert dtypes["layers.0.attn.q_proj.bias"] == torch.float32  # under min_8bit_size


def test_32bit_names_register_no_override():
    model = make_tiny_lm(**SIZE)
    optimhub.create_optimizer("lion_32bit", model)
    assert bnb.optim.GlobalOptimManager.get_instance().pid2config == {}


def test_without_a_model_every_large_tensor_gets_8bit_state():
    """Bare parameters carry no module types: the build is allowed (documented) and the
    embedding is quantized like any other large tensor."""
    model = make_tiny_lm(**SIZE)
    optimizer = optimhub.create_optimizer("adamw_bnb_8bit", list(model.named_parameters()))
    train(model, optimizer, steps=1)
    dtypes = state_dtypes(optimizer, model)
    assert dtypes["embed_tokens.weight"] == dtypes["lm_head.weight"] == torch.uint8


def test_the_override_is_per_parameter_and_dropped_with_the_parameter():
    manager = bnb.optim.GlobalOptimManager.get_instance()
    model = make_tiny_lm(**SIZE)
    optimhub.create_optimizer("paged_lion_8bit", model)
    key = id(model.embed_tokens.weight)
    assert manager.pid2config == {key: {"optim_bits": 32}}
    assert manager.index2config == {} and manager.module_weight_config_triple == []
    del model
    gc.collect()
    assert key not in manager.pid2config


def test_frozen_embeddings_are_left_alone():
    model = make_tiny_lm(**SIZE)
    model.embed_tokens.weight.requires_grad_(False)
    optimhub.create_optimizer("adamw_bnb_8bit", model)
    assert bnb.optim.GlobalOptimManager.get_instance().pid2config == {}


# ----------------------------------------------------------------------------- memory
@pytest.mark.parametrize(
    ("name", "dense"),
    [("adamw_bnb_8bit", "paged_adamw_32bit"), ("lion_8bit", "lion_32bit"),
     ("rmsprop_bnb_8bit", "rmsprop_bnb_32bit"), ("ademamix_8bit", "ademamix")],
)
def test_state_bytes_per_parameter_match_the_spec(name, dense):
    """Two 512x512 weights after two steps: 8-bit state is about a quarter of 32-bit."""
    measured = {}
    for which in (name, dense):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(512, 512, bias=False), nn.Linear(512, 512, bias=False))
        optimizer = optimhub.create_optimizer(which, model)
        for _ in range(2):
            model(torch.randn(8, 512)).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        measured[which] = state_bytes(optimizer) / sum(p.numel() for p in model.parameters())
        assert measured[which] == pytest.approx(
            optimhub.get_spec(which).state_bytes_per_param, abs=0.01
        )
    assert measured[name] <= measured[dense] / 3.9
    if name == "adamw_bnb_8bit":
        assert measured[name] <= 2.1 and measured[dense] == 8.0


# ----------------------------------------------------------------------------- paging
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback needs a machine "
                    "without CUDA")
@pytest.mark.parametrize("name", ["paged_adamw_8bit", "paged_lion_32bit", "paged_ademamix_8bit"])
def test_paged_without_cuda_warns_once_in_our_words_and_builds_unpaged(name, monkeypatch):
    monkeypatch.setattr(backends, "_paged_warned", set())
    model = make_tiny_lm(**SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = optimhub.create_optimizer(name, model)
        train(model, optimizer, steps=2)
        optimhub.create_optimizer(name, make_tiny_lm())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "pages its state through CUDA" in messages[0], messages
    assert issubclass(caught[0].category, optimhub.OptimHubWarning)
    assert optimizer.is_paged is False
    assert optimhub.get_spec(name).fixed["is_paged"] is True


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="paging needs a CUDA device")
def test_paged_names_page_their_state_on_cuda():
    model = nn.Sequential(nn.Linear(512, 512, bias=False)).cuda()
    optimizer = optimhub.create_optimizer("paged_adamw_32bit", model)
    model(torch.randn(8, 512, device="cuda")).square().mean().backward()
    optimizer.step()
    assert optimizer.is_paged
    assert getattr(optimizer.state[model[0].weight]["state1"], "is_paged", False)


# ----------------------------------------------------------------------------- lion
def test_lion_takes_the_adam_betas_and_no_eps():
    optimizer = optimhub.create_optimizer(
        "lion_8bit", make_tiny_lm(), lr=1e-4, betas=(0.95, 0.98), weight_decay=0.1
    )
    assert type(optimizer) is bnb.optim.Lion
    assert {g["betas"] for g in optimizer.param_groups} == {(0.95, 0.98)}
    assert {g["eps"] for g in optimizer.param_groups} == {0.0}  # bnb's constant for Lion
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.1]


# ----------------------------------------------------------------------------- rmsprop
def test_rmsprop_defaults_are_bnbs_own():
    signature = inspect.signature(bnb.optim.RMSprop).parameters
    spec = optimhub.get_spec("rmsprop_bnb")
    for key in ("alpha", "eps", "momentum", "centered"):
        assert spec.args[key].default == signature[key].default, key
    optimizer = optimhub.create_optimizer("rmsprop_bnb", make_tiny_lm())
    assert type(optimizer) is bnb.optim.RMSprop and optimizer.args.optim_bits == 32
    assert {g["betas"] for g in optimizer.param_groups} == {(0.99, 0.0)}  # (alpha, momentum)


@pytest.mark.parametrize(
    ("optim_args", "message"),
    [
        ("centered=true", r"centered=.*not one of the choices"),
        ("alpha=0", r"alpha=.*must be > 0"),
        ("momentum=1", r"momentum=.*must be < 1"),
        ("eps=-1e-8", r"eps=.*must be > 0"),
        ("alpha=fast", r"alpha=.*is not a number"),
        ("rho=0.9", r"unknown key 'rho'.*Valid keys: alpha, centered, eps, momentum"),
    ],
)
def test_rmsprop_bad_options_are_refused_before_bnb_sees_them(optim_args, message):
    with pytest.raises(optimhub.OptimArgsError, match=message):
        optimhub.create_optimizer("rmsprop_bnb_8bit", make_tiny_lm(), optim_args=optim_args)


# ----------------------------------------------------------------------------- ademamix
def test_ademamix_betas_and_eps_default_to_the_training_arguments():
    optimizer = optimhub.create_optimizer(
        "ademamix_8bit", make_tiny_lm(), betas=(0.8, 0.95), eps=1e-6
    )
    assert type(optimizer) is bnb.optim.AdEMAMix
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["alpha"]) == ((0.8, 0.95, 0.9999), 1e-6, 5.0)
    assert (group["t_alpha"], group["t_beta3"]) == (None, None)


def test_ademamix_optim_args_win_over_the_training_arguments():
    optimizer = optimhub.create_optimizer(
        "paged_ademamix_32bit", make_tiny_lm(), betas=(0.8, 0.95), eps=1e-6,
        optim_args="beta1=0.7,beta2=0.9,beta3=0.999,alpha=2,eps=1e-5,t_alpha=10,t_beta3=20",
    )
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["alpha"]) == ((0.7, 0.9, 0.999), 1e-5, 2.0)
    assert (group["t_alpha"], group["t_beta3"]) == (10, 20)


@pytest.mark.parametrize(
    ("optim_args", "overrides", "message"),
    [
        ("beta3=1.0", {}, r"beta3=.*must be < 1"),
        ("beta1=-0.1", {}, r"beta1=.*must be >= 0"),
        ("t_alpha=0", {}, r"t_alpha=.*must be >= 1"),
        ("t_beta3=1.5", {}, r"t_beta3=.*is not an integer"),
        ("alpha=-1", {}, r"alpha=.*must be >= 0"),
        ("t_beta3=100,beta1=0", {}, r"t_beta3=100 .*needs both > 0.*beta1=0.0"),
        ("t_beta3=100", {"betas": (0.0, 0.999)}, r"needs both > 0.*beta1=0.0"),
        ("t_beta3=100,beta3=0", {}, r"needs both > 0.*beta3=0.0"),
    ],
)
def test_ademamix_bad_options_are_refused_before_the_first_step(optim_args, overrides,
                                                               message):
    with pytest.raises(optimhub.OptimArgsError, match=message):
        optimhub.create_optimizer("ademamix", make_tiny_lm(), optim_args=optim_args,
                                  **overrides)


def test_ademamix_with_both_schedules_trains():
    model = make_tiny_lm(**SIZE)
    optimizer = optimhub.create_optimizer("ademamix_8bit", model, lr=1e-3,
                                          optim_args="t_alpha=4,t_beta3=4")
    before = lm_loss(model, lm_batch(seed=0)).item()
    train(model, optimizer, steps=3)
    assert lm_loss(model, lm_batch(seed=0)).item() < before
    assert state_dtypes(optimizer, model)["lm_head.weight"] == torch.uint8
