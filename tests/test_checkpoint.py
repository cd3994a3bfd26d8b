"""Checkpoint identity (hub/checkpoint.py): every state the hub's optimizers save says which
optimizer and which parameters it belongs to, and a state for another optimizer or model
is refused before anything is loaded.

Each way a check can be wired is covered: torch's own ``load_state_dict`` (a pre-hook),
a backend that overrides it without running torch's hooks (bitsandbytes: the instance's
own ``load_state_dict``), one that overrides it and calls torch's (GrokAdamW), a plugin
with its own pre-hook (GaLore's projectors) and the hub's layerwise optimizer.
"""

from __future__ import annotations

import copy
import gc
import io
import re
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch import nn

import optimhub
from optimhub.checkpoint import STAMP_KEY, stamp_of
from optimhub.errors import CheckpointError, OptimHubWarning
from optimhub.layerwise import LayerwiseOptimizer
from optimhub.state_encoding import OBJECT_TAG

LOW_RANK = {"optim_args": {"rank": 2}, "optim_target_modules": [r".*attn.*", r".*mlp.*"]}

#: One name per way the check is wired (see the module docstring).
WIRINGS = {
    "adamw_torch": {},  # torch's load_state_dict: a prepended pre-hook
    "adamw_bnb_8bit": {},  # bitsandbytes' own load_state_dict, which skips torch's hooks
    "grokadamw": {},  # its own load_state_dict, which calls torch's (and a post-hook)
    "galore_adamw": LOW_RANK,  # GaLore's projector pre-hook runs after the check
    "adamw_torch+layerwise": {"layerwise": True},  # the hub's LayerwiseOptimizer
}


def build(key: str, model: nn.Module | None = None, **extra: Any) -> torch.optim.Optimizer:
    name, _, mode = key.partition("+")
    settings = {**WIRINGS.get(key, {"layerwise": True} if mode else {}), **extra}
    optimizer = optimhub.create_optimizer(name, model or make_tiny_lm(), lr=1e-2,
                                          weight_decay=0.1 if name != "grokadamw" else 0.0,
                                          **settings)
    if isinstance(optimizer, LayerwiseOptimizer):
        _LAYERWISE.append(optimizer)
    return optimizer


_LAYERWISE: list[LayerwiseOptimizer] = []


def trained(key: str, model: nn.Module | None = None, **extra: Any
            ) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = model or make_tiny_lm()
    optimizer = build(key, model, **extra)
    lm_loss(model, lm_batch()).backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def through_disk(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def tensors(state: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) state dict, in a stable order."""
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for key in sorted(state, key=str):
            yield from tensors(state[key])
    elif isinstance(state, (list, tuple)):
        for item in state:
            yield from tensors(item)
    elif hasattr(state, "__dict__"):  # a GaLore projector object
        yield from tensors(vars(state))


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    left, right = list(tensors(a)), list(tensors(b))
    if len(left) != len(right):
        return False
    return all(torch.equal(x, y) for x, y in zip(left, right, strict=True))


@pytest.fixture(autouse=True)
def _close_layerwise() -> Iterator[None]:
    """Layerwise optimizers built here hook their models: let them go after each test."""
    yield
    while _LAYERWISE:
        _LAYERWISE.pop().close()


# ---------------------------------------------------------------------------- the stamp
def test_the_stamp_names_the_optimizer_and_every_parameter_in_the_state_order() -> None:
    model, optimizer = trained("adamw_torch")
    state = optimizer.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    order = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(optimizer.param_groups) == 2  # decay / no decay: not the model's order
    assert state[STAMP_KEY] == {
        "name": "adamw_torch", "format": 1,
        "params": [[names[id(p)], list(p.shape)] for p in order],
        "state": {names[id(p)]: {"step": [], "exp_avg": list(p.shape),
                                 "exp_avg_sq": list(p.shape)} for p in order},
    }
    assert [n for n, _ in state[STAMP_KEY]["params"]] != [n for n, _ in model.named_parameters()]
    assert stamp_of(through_disk(state)) == state[STAMP_KEY]  # plain data: weights_only loads it
    assert set(state) == {"state", "param_groups", STAMP_KEY}


def test_an_alias_stamps_the_canonical_name() -> None:
    optimizer = optimhub.create_optimizer("adamw_8bit", make_tiny_lm())
    assert optimizer.state_dict()[STAMP_KEY]["name"] == "adamw_bnb_8bit"
    assert isinstance(optimizer, torch.optim.Optimizer)


@pytest.mark.parametrize("key", list(WIRINGS))
def test_every_wiring_stamps_and_reloads_its_own_state(key: str) -> None:
    model, optimizer = trained(key)
    state = through_disk(optimizer.state_dict())
    assert state[STAMP_KEY]["name"] == key.partition("+")[0]
    twin = make_tiny_lm()
    twin.load_state_dict(model.state_dict())
    resumed = build(key, twin)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptimHubWarning)  # a stamped state loads silently
        resumed.load_state_dict(state)
    assert same_state(resumed.state_dict(), optimizer.state_dict())
    assert STAMP_KEY in state  # the caller's dict is left as it was


def test_optimizers_not_built_by_the_hub_are_left_alone() -> None:
    model = make_tiny_lm()
    plain = torch.optim.AdamW(model.parameters())
    assert STAMP_KEY not in plain.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain.load_state_dict(plain.state_dict())


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(("saved", "loading"), [
    ("adamw_torch", "sgd"),
    ("adamw_torch", "adamw_bnb_8bit"),
    ("adamw_bnb_8bit", "adamw_torch"),
    ("adamw_torch", "grokadamw"),
    ("galore_adamw", "apollo_adamw"),  # GaLore's packed projectors: refused before unpacking
    ("adamw_torch+layerwise", "sgd+layerwise"),
])
def test_a_state_of_another_optimizer_is_refused_naming_both(saved: str, loading: str) -> None:
    _, source = trained(saved)
    state = through_disk(source.state_dict())
    _, target = trained(loading, **(LOW_RANK if loading == "apollo_adamw" else {}))
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(CheckpointError) as info:
        target.load_state_dict(state)
    message = str(info.value)
    saved_name, loading_name = saved.partition("+")[0], loading.partition("+")[0]
    assert (f"saved by optimizer {saved_name!r} and is being loaded into {loading_name!r}"
            in message)
    assert f"delete state_dict[{STAMP_KEY!r}]" in message
    assert same_state(target.state_dict(), before)  # nothing was loaded


def _wider() -> nn.Module:
    return make_tiny_lm(width=8)


def _shallower() -> nn.Module:
    return make_tiny_lm(layers=1)


@pytest.mark.parametrize("key", list(WIRINGS))
@pytest.mark.parametrize(("other", "says"), [
    (_wider, r"other shapes: \[[\w.]+ saved \[\d+(, \d+)*\] here \[\d+(, \d+)*\]"),
    (_shallower, r"unexpected \(saved, not here\): \[layers\.1\."),
])
def test_a_state_for_another_model_is_refused(key: str, other: Any, says: str) -> None:
    _, source = trained(key)
    state = through_disk(source.state_dict())
    target = build(key, other())
    with pytest.raises(CheckpointError) as info:
        target.load_state_dict(state)
    message = str(info.value)
    assert re.search(says, message), message
    assert f"this state of optimizer {key.partition('+')[0]!r} was saved for other " in message


def test_the_same_parameters_in_another_order_are_refused() -> None:
    """Other target modules put other weights in the low-rank group: by position, torch
    would load each weight's moments (and GaLore's projectors) into another weight."""
    model = make_tiny_lm()
    _, attn = trained("galore_adamw", model, optim_target_modules=[r".*attn.*"])
    mlp = build("galore_adamw", model, optim_target_modules=[r".*mlp.*"])
    with pytest.raises(CheckpointError, match=r"the same parameters in another order: "
                       r"\[#\d+ saved '[\w.]+', here '[\w.]+'"):
        mlp.load_state_dict(through_disk(attn.state_dict()))


def test_a_layerwise_state_is_refused_by_a_plain_optimizer_and_back() -> None:
    _, layerwise = trained("adamw_torch+layerwise")
    _, plain = trained("adamw_torch")
    with pytest.raises(CheckpointError, match="saved by a layerwise optimizer"):
        plain.load_state_dict(through_disk(layerwise.state_dict()))
    with pytest.raises(CheckpointError, match="not saved by one"):
        layerwise.load_state_dict(through_disk(plain.state_dict()))


@pytest.mark.parametrize(("stamp", "says"), [
    ("adamw_torch", "is str, not optimhub's stamp"),
    ({"name": "adamw_torch", "format": 2, "params": []}, "stamp format 2"),
    ({"name": "adamw_torch", "format": 1, "params": [["w", "16"]]}, "stamp is malformed"),
    ({"name": 7, "format": 1, "params": []}, "stamp is malformed"),
])
def test_a_malformed_or_newer_stamp_is_refused(stamp: Any, says: str) -> None:
    _, optimizer = trained("adamw_torch")
    state = {**optimizer.state_dict(), STAMP_KEY: stamp}
    with pytest.raises(CheckpointError, match=says):
        optimizer.load_state_dict(state)


# ---------------------------------------------------------------------------- no stamp
@pytest.mark.parametrize("key", list(WIRINGS))
def test_a_state_without_the_stamp_loads_with_one_warning(key: str) -> None:
    """States from plain torch (or saved before the stamp) keep loading: unchecked, said."""
    model, optimizer = trained(key)
    state = through_disk(optimizer.state_dict())
    del state[STAMP_KEY]
    twin = make_tiny_lm()
    twin.load_state_dict(model.state_dict())
    resumed = build(key, twin)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.load_state_dict(state)
    ours = [w for w in caught if issubclass(w.category, OptimHubWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "has no 'optimhub' stamp" in str(ours[0].message)
    assert f"belongs to {key.partition('+')[0]!r}" in str(ours[0].message)
    assert ours[0].filename == __file__  # it points at the caller's load_state_dict line
    assert same_state(resumed.state_dict(), optimizer.state_dict())


# ---------------------------------------------------------------------------- wiring
def test_the_check_runs_before_the_plugins_hooks_and_later_ones_never_see_the_stamp() -> None:
    """GaLore's pre-hook (registered by its builder, before the hub's check) would refuse a
    tampered projector with its own error: the hub's check comes first and names the
    optimizer that saved the state. A hook added later sees the state without the stamp."""
    _, optimizer = trained("galore_adamw")
    state = through_disk(optimizer.state_dict())
    packed = next(e["projector"] for e in state["state"].values() if "projector" in e)
    packed[OBJECT_TAG] = "os.system"
    seen: list[set[str]] = []
    optimizer.register_load_state_dict_pre_hook(lambda _, given: seen.append(set(given)))
    with pytest.raises(CheckpointError, match="does not rebuild"):  # GaLore's own refusal
        optimizer.load_state_dict(state)
    assert seen == []  # GaLore's hook refused it before the later hook ran
    with pytest.raises(CheckpointError, match="saved by optimizer 'apollo_adamw'"):
        optimizer.load_state_dict({**state, STAMP_KEY: {**state[STAMP_KEY],
                                                        "name": "apollo_adamw"}})
    optimizer.load_state_dict(through_disk(optimizer.state_dict()))
    assert seen == [{"state", "param_groups"}]


@pytest.mark.parametrize("key", ["adamw_torch", "adamw_bnb_8bit", "galore_adamw"])
def test_nothing_is_added_to_the_step_path_and_no_cycle_keeps_the_optimizer(key: str) -> None:
    optimizer = build(key)
    cls = type(optimizer)
    assert cls.__module__.split(".")[0] != "optimhub"  # the backend's own class, unwrapped
    base = torch.optim.Optimizer
    own = {method for method in ("state_dict", "load_state_dict")
           if getattr(cls, method) is not getattr(base, method)}  # wrapped on the instance
    assert set(vars(optimizer)) & {"step", "zero_grad", "state_dict", "load_state_dict"} == own
    reference = weakref.ref(optimizer)
    gc.disable()
    try:
        del optimizer
        assert reference() is None  # freed by reference counting alone
    finally:
        gc.enable()
