"""Checkpoint identity: a saved optimizer state says which optimizer and parameters it is for.

A torch optimizer's ``state_dict()`` is indexed by parameter *position* only. Loaded into
another optimizer (AdamW's moments into SGD) or saved for a differently shaped model, it
is silently partial, silently wrong, or a raw torch error far from the cause. So every
optimizer the hub builds stamps its state with a small piece of plain data::

    state_dict["optimhub"] = {"name": "adamw_torch", "format": 1,
                              "params": [["embed_tokens.weight", [64, 32]], ...],
                              "state": {"embed_tokens.weight": {"exp_avg": [64, 32],
                                                                "exp_avg_sq": [64, 32],
                                                                "step": []}, ...}}

(``params``: every parameter's name and shape, in param-group order, which is the order
torch indexes the state by; ``state``: for each parameter that has state, the keys of its
entry and each tensor's shape, ``None`` for a value that is not a tensor), and checks a
stamped state before loading it: another optimizer name, other parameter names or shapes,
or a parameter's entry whose keys or tensor shapes are not what was saved (a state
"gutted" of its ``exp_avg_sq`` would load and fail at the first ``step()`` with torch's
``KeyError``) is a :class:`CheckpointError` saying what differs. A stamp without ``state``
(written by optimhub 0.1) is checked without it. A state without the stamp (saved by
plain torch, or by an optimizer built outside the hub) still loads, with an
``OptimHubWarning`` that it could not be checked.

Both halves are torch's own optimizer hooks, registered on the instance by
:func:`remember`: nothing is wrapped and nothing touches ``step()``. The stamp
is removed before the backend's own loading sees the state, and it is plain data, so
``torch.load(weights_only=True)`` reads it. Two kinds of optimizer need more than the
hooks, both detected from the class, never from a name:

- a class whose ``load_state_dict`` is not torch's may not run torch's pre-hooks
  (bitsandbytes' does not): the instance gets its own ``load_state_dict`` that checks
  first and then calls the class's method, so the check cannot be skipped;
- a class whose ``state_dict`` is not torch's may reshape the state after torch's
  post-hooks ran (bitsandbytes packs each entry's tensors into one dict): the instance gets
  its own ``state_dict`` that stamps what the class's method returns, so the stamp
  describes the entries exactly as they are saved and loaded;
- a class that sets ``checks_optimhub_stamp = True`` (the hub's ``LayerwiseOptimizer``)
  calls :func:`stamp_state` and :func:`check_state` from its own methods.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import CheckpointError, OptimArgsTypeError, OptimHubWarning, shorten, shown
from .spec import OptimizerSpec

__all__ = [
    "STAMP_FORMAT",
    "STAMP_KEY",
    "check_stamp",
    "check_state",
    "checked_elsewhere",
    "parameter_names",
    "remember",
    "spec_of",
    "spec_or_none",
    "stamp_of",
    "stamp_state",
    "state_entry_problems",
]

#: The key of the stamp in a state dict, and the version of its layout.
STAMP_KEY = "optimhub"
STAMP_FORMAT = 1

#: How many differences an error lists before it says "and N more".
_SHOWN = 4


@dataclass(frozen=True)
class _Identity:
    """What the hub knows of an optimizer it built: the spec it was built from (what
    ``optimhub.spec_of`` answers), and what a state must match: the spec's catalog name
    and its parameters' names.

    ``names`` maps ``id(parameter)`` to the parameter's name, made from ``named`` when a
    state is first saved or loaded (not at build: a per-parameter dict on every build
    costs as much as a check pass); the parameters themselves are already kept alive by
    the optimizer that owns this identity.
    """

    spec: OptimizerSpec
    named: tuple[tuple[str, Any], ...]

    @functools.cached_property
    def names(self) -> Mapping[int, str]:
        return {id(p): n for n, p in self.named}

    @property
    def name(self) -> str:
        return self.spec.name

    def parameters(self, optimizer: torch.optim.Optimizer) -> list[list[Any]]:
        """``[name, shape]`` of every parameter, in param-group order (torch's indices)."""
        flat = (p for group in optimizer.param_groups for p in group["params"])
        return [[self.names.get(id(p), f"<unnamed #{i}>"), list(p.shape)]
                for i, p in enumerate(flat)]

    def stamp(self, optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]
              ) -> dict[str, Any]:
        params = self.parameters(optimizer)
        entries = _per_parameter_state(state_dict, [name for name, _ in params])
        return {"name": self.name, "format": STAMP_FORMAT, "params": params,
                "state": {name: _layout(entry) for name, entry in entries.items()}}


_IDENTITIES: weakref.WeakKeyDictionary[torch.optim.Optimizer, _Identity] = (
    weakref.WeakKeyDictionary()
)


def remember(
    optimizer: torch.optim.Optimizer,
    spec: OptimizerSpec,
    named_parameters: Iterable[tuple[str, Any]],
) -> None:
    """Remember ``optimizer`` as built from ``spec`` (in a weak map, not as an attribute
    pasted onto a foreign object), stamp its state dicts and check the ones it loads.

    Called once by ``create_optimizer`` on the optimizer it returns. The state_dict hook is
    appended (it stamps what the plugins' own hooks produced); the load check is prepended
    (a state for another optimizer is refused before a plugin's hook tries to unpack it).
    """
    _IDENTITIES[optimizer] = _Identity(spec, tuple(named_parameters))
    cls = type(optimizer)
    if getattr(cls, "checks_optimhub_stamp", False):
        return  # it calls stamp_state / check_state itself
    if cls.state_dict is torch.optim.Optimizer.state_dict:
        optimizer.register_state_dict_post_hook(_stamp_hook)
    else:
        _stamp_after_own_save(optimizer)
    if cls.load_state_dict is torch.optim.Optimizer.load_state_dict:
        optimizer.register_load_state_dict_pre_hook(_check_hook, prepend=True)
    else:
        _check_before_own_load(optimizer)


def spec_of(optimizer: Any) -> OptimizerSpec:
    """The spec an optimizer was built from."""
    spec = spec_or_none(optimizer)
    if spec is None:
        raise OptimArgsTypeError(
            f"{type(optimizer).__name__} object was not built by optimhub.create_optimizer"
        )
    return spec


def spec_or_none(optimizer: Any) -> OptimizerSpec | None:
    """The spec of an optimizer built by the hub, or None for a foreign one."""
    try:
        identity = _IDENTITIES.get(optimizer)
    except TypeError:  # not weak-referenceable: certainly not ours
        return None
    return identity.spec if identity is not None else None


def parameter_names(optimizer: Any) -> Mapping[int, str] | None:
    """``id(parameter) -> name`` for an optimizer the hub built (None for a foreign one):
    what lets a per-group setting name its groups by parameter name."""
    try:
        identity = _IDENTITIES.get(optimizer)
    except TypeError:  # not weak-referenceable: certainly not ours
        return None
    return identity.names if identity is not None else None


def stamp_state(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Add the stamp to ``state_dict`` (in place) if the hub built ``optimizer``."""
    identity = _IDENTITIES.get(optimizer)
    if identity is not None:
        state_dict[STAMP_KEY] = identity.stamp(optimizer, state_dict)
    return state_dict


def stamp_of(state_dict: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The stamp of a saved state (None when it has none): which optimizer saved it, for
    which parameters."""
    stamp = state_dict.get(STAMP_KEY) if isinstance(state_dict, Mapping) else None
    return stamp if isinstance(stamp, Mapping) else None


def check_state(
    optimizer: torch.optim.Optimizer,
    state_dict: Mapping[str, Any],
    *,
    ordered: bool = True,
) -> dict[str, Any]:
    """Check a state against ``optimizer``; return it without the stamp (a shallow copy).

    Raises :class:`CheckpointError` when the stamp names another optimizer or other
    parameters (``ordered``: also in another order, which matters wherever the state is
    indexed by position, i.e. everywhere but the layerwise optimizer). Warns, and lets
    the state through, when there is no stamp (the warning points at the first caller
    outside optimhub and torch). An optimizer the hub did not build is not checked at all.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"an optimizer state must be a dict (what optimizer.state_dict() returns), got "
            f"{type(state_dict).__name__}"
        )
    state = dict(state_dict)
    saved = state.pop(STAMP_KEY, None)
    identity = _IDENTITIES.get(optimizer)
    if identity is None:
        return state
    if saved is None:
        if _CHECKED_ELSEWHERE.get() is optimizer:
            return state
        warnings.warn(
            f"optimhub: this optimizer state has no {STAMP_KEY!r} stamp (it was saved by "
            f"plain torch, or by an optimizer not built by optimhub), so optimhub cannot check "
            f"that it belongs to {identity.name!r} and to this model; it is loaded as torch "
            f"loads it, by parameter position.{_through_dcp(state)}",
            OptimHubWarning,
            stacklevel=_outside_stacklevel(),
        )
        return state
    stamp = _check_stamp(saved, identity, optimizer, ordered=ordered)
    if not getattr(type(optimizer), "checks_optimhub_stamp", False) and state.get("layerwise"):
        raise CheckpointError(
            f"this state of {identity.name!r} was saved by a layerwise optimizer "
            "(layerwise=True: one state per parameter name), and this one is not; build it "
            "with layerwise=True to resume it"
        )
    if "state" in stamp:
        _check_entries(stamp, state)
    return state


#: The optimizer whose state a caller has already checked (optimhub.distributed_checkpoint:
#: DCP's set_state_dict hands load_state_dict an unstamped state after the check ran).
_CHECKED_ELSEWHERE: contextvars.ContextVar[object] = contextvars.ContextVar(
    "optimhub_checked_elsewhere", default=None)


def torch_layout_parts(state_dict: Mapping[str, Any], what: str, other: str
                       ) -> tuple[list[Mapping[str, Any]], Mapping[Any, Any]]:
    """``(param_groups, state)`` of a state dict in torch's layout (each group listing its
    ``params``), or a ``CheckpointError`` saying it is neither that nor ``other`` (the
    earlier layout of ``what``, the optimizer that owns several inner ones)."""
    groups, state = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(state, Mapping) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups):
        raise CheckpointError(
            f"this {what} state has neither torch's 'state' and 'param_groups' nor "
            f"{other}; load it into the optimizer that saved it"
        )
    return groups, state


def check_listed(groups: list[Mapping[str, Any]], state: Mapping[Any, Any], what: str) -> None:
    """A ``CheckpointError`` naming the state keys no param group lists (a state dict
    changed after it was saved): a load must not pair them with parameters by guess."""
    listed = {key for g in groups for key in g["params"]}
    unexpected = [shorten(str(key)) for key in state if key not in listed]
    if unexpected:
        more = f" and {len(unexpected) - 4} more" if len(unexpected) > 4 else ""
        raise CheckpointError(
            f"{what} state for parameters no param group lists: "
            f"[{', '.join(unexpected[:4])}]{more}; was it changed after it was saved?"
        )


@contextlib.contextmanager
def checked_elsewhere(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within this block, ``optimizer`` loads an unstamped state without the warning: its
    stamp was checked by the caller, from where the checkpoint keeps it."""
    token = _CHECKED_ELSEWHERE.set(optimizer)
    try:
        yield
    finally:
        _CHECKED_ELSEWHERE.reset(token)


def _through_dcp(state: Mapping[str, Any]) -> str:
    """What to do when the state came through DCP's set_state_dict (keyed by name)."""
    entries = state.get("state")
    if not (isinstance(entries, Mapping) and entries
            and all(isinstance(key, str) for key in entries)):
        return ""
    return (" It is keyed by parameter name, as torch.distributed.checkpoint's "
            "set_state_dict loads it: DCP keeps only 'state' and 'param_groups'. Save and "
            "load with optimhub.distributed_checkpoint.save / .load to keep and check the "
            "stamp.")


def check_stamp(optimizer: torch.optim.Optimizer, stamp: Any, *, ordered: bool,
                unchecked: str) -> None:
    """Check a stamp kept apart from its state (a distributed checkpoint's) against
    ``optimizer``: the same optimizer name and parameters (names and shapes), or a
    ``CheckpointError`` (``unchecked`` says how to load it anyway). An optimizer the hub
    did not build is not checked."""
    identity = _IDENTITIES.get(optimizer)
    if identity is not None:
        _check_stamp(stamp, identity, optimizer, ordered=ordered, unchecked=unchecked)


def state_entry_problems(optimizer: torch.optim.Optimizer, stamp: Mapping[str, Any],
                         state: Mapping[str, Any]) -> list[str]:
    """A sentence per parameter whose entry in ``state`` (``optimizer``'s own state dict)
    lacks keys the stamp records (what was saved): a loader that fills only the entries
    it is given (DCP) would not load them. Nothing for an optimizer the hub did not build."""
    identity = _IDENTITIES.get(optimizer)
    if identity is None:
        return []
    entries = _per_parameter_state(state, [name for name, _ in identity.parameters(optimizer)])
    problems = []
    for name, layout in stamp.get("state", {}).items():
        entry = entries.get(name)
        missing = [key for key in layout if entry is None or key not in _layout(entry)]
        if missing:
            problems.append(f"parameter {shown(name)} has no {_keys(missing, quote=True)}")
    return problems


# ---- the check ---------------------------------------------------------------------------
def _check_stamp(
    saved: Any, identity: _Identity, optimizer: torch.optim.Optimizer, *, ordered: bool,
    unchecked: str = f"delete state_dict[{STAMP_KEY!r}] to load it unchecked",
) -> dict[str, Any]:
    stamp = _parse_stamp(saved)
    name = stamp["name"]
    if name != identity.name:
        raise CheckpointError(
            f"this optimizer state was saved by optimizer {shown(name)} and is being loaded into "
            f"{identity.name!r}: their states are not interchangeable (torch would load it "
            f"by position, partially or wrongly). Build {shown(name)} to resume this checkpoint; "
            f"if you know both keep the same state, {unchecked}."
        )
    here = [(n, tuple(s)) for n, s in identity.parameters(optimizer)]
    there = [(n, tuple(s)) for n, s in stamp["params"]]
    problem = _compare(there, here, ordered=ordered)
    if problem:
        raise CheckpointError(
            f"this state of optimizer {shown(name)} was saved for other parameters than this "
            f"optimizer has: {problem}. Load it with the model it was saved with (same "
            "trainable parameters, and the same weight_decay, optim_target_modules and "
            "param_group_rules, which decide the parameter order)."
        )
    return stamp


def _parse_stamp(saved: Any) -> dict[str, Any]:
    """The stamp, checked to be what ``_Identity.stamp`` writes."""
    if not isinstance(saved, Mapping):
        raise CheckpointError(
            f"the state's {STAMP_KEY!r} entry is {type(saved).__name__}, not optimhub's "
            "stamp (a dict); it was not written by optimhub"
        )
    version = saved.get("format")
    if isinstance(version, int) and not isinstance(version, bool) and version > STAMP_FORMAT:
        raise CheckpointError(
            f"this optimizer state was stamped by a newer optimhub (stamp format {version}; "
            f"this version reads format {STAMP_FORMAT}); upgrade optimhub to load it"
        )
    params = saved.get("params")
    well_formed = (
        version == STAMP_FORMAT and isinstance(saved.get("name"), str)
        and isinstance(params, list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
            and _is_shape(p[1]) for p in params
        )
        and ("state" not in saved or _is_layouts(saved["state"]))
    )
    if not well_formed:
        raise CheckpointError(
            f"the state's {STAMP_KEY!r} stamp is malformed (expected name, format "
            f"{STAMP_FORMAT}, [name, shape] params and per-parameter state keys): "
            f"{shown(saved)}"
        )
    return dict(saved)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value)


def _is_layouts(value: Any) -> bool:
    """``{parameter name: {state key: shape or None}}``, as ``_layout`` writes it."""
    return isinstance(value, Mapping) and all(
        isinstance(name, str) and isinstance(layout, Mapping) and all(
            isinstance(key, str) and (shape is None or _is_shape(shape))
            for key, shape in layout.items())
        for name, layout in value.items()
    )


# ---- per-parameter state entries -------------------------------------------------------
def _per_parameter_state(state_dict: Mapping[str, Any], names: list[str]
                         ) -> dict[str, Mapping[str, Any]]:
    """Each parameter's state entry by name: torch's ``state`` is indexed by position in
    param-group order (``names``' order), the layerwise optimizer's too; the earlier
    layerwise layout holds one torch state per name (``inner``: its single parameter at
    index 0). A state of another shape yields nothing to check."""
    inner = state_dict.get("inner")
    if state_dict.get("layerwise") and isinstance(inner, Mapping):
        found = {name: own.get("state", {}).get(0) for name, own in inner.items()
                 if isinstance(own, Mapping) and isinstance(own.get("state"), Mapping)}
    else:
        state = state_dict.get("state")
        if not isinstance(state, Mapping):
            return {}
        found = {name: state.get(index) for index, name in enumerate(names)}
    return {name: entry for name, entry in found.items() if isinstance(entry, Mapping)}


def _layout(entry: Mapping[str, Any]) -> dict[str, list[int] | None]:
    """The keys of one parameter's state entry, each with its tensor's shape (None: not a
    tensor, such as a step count or a backend's packed object)."""
    return {str(key): list(value.shape) if isinstance(value, torch.Tensor) else None
            for key, value in entry.items()}


def _check_entries(stamp: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Every parameter's state entry has the keys and tensor shapes it was saved with."""
    saved = stamp["state"]
    entries = _per_parameter_state(state, [name for name, _ in stamp["params"]])
    problems = []
    for name in [*saved, *(n for n in entries if n not in saved)]:
        problem = _entry_problem(name, saved.get(name), entries.get(name))
        if problem:
            problems.append(problem)
    if problems:
        raise CheckpointError(
            f"this optimizer state was changed after it was saved: {_few(problems, sep='; ')}. "
            "Its stamp records each parameter's state keys and shapes, and loading it would "
            "fail at the first step (or resume from a partial state). Load the state as it "
            "was saved; to load it unchecked, delete state_dict['optimhub']['state']."
        )


def _entry_problem(name: str, expected: Mapping[str, Any] | None,
                   entry: Mapping[str, Any] | None) -> str:
    if expected is None:
        return f"parameter {shown(name)} has state ({_keys(entry or {})}) it was saved without"
    if entry is None:
        return f"parameter {shown(name)} has no state, saved with {_keys(expected)}"
    got = _layout(entry)
    missing = [key for key in expected if key not in got]
    if missing:
        return f"parameter {shown(name)} lacks {_keys(missing, quote=True)} (saved with " \
               f"{_keys(expected)})"
    extra = [key for key in got if key not in expected]
    if extra:
        return f"parameter {shown(name)} has {_keys(extra, quote=True)}, saved without"
    reshaped = [f"{shown(key)} is {shorten(str(got[key]))}, saved {shorten(str(shape))}"
                for key, shape in expected.items()
                if got[key] != (None if shape is None else list(shape))]
    if reshaped:
        return f"parameter {shown(name)}: {', '.join(reshaped[:_SHOWN])}"
    return ""


def _compare(
    there: list[tuple[str, tuple[int, ...]]], here: list[tuple[str, tuple[int, ...]]],
    *, ordered: bool,
) -> str:
    """A sentence naming the first differences between saved and current parameters, or
    "" when they match."""
    if there == here or (not ordered and sorted(there) == sorted(here)):
        return ""
    saved_shapes, own_shapes = dict(there), dict(here)
    unexpected = [n for n, _ in there if n not in own_shapes]
    missing = [n for n, _ in here if n not in saved_shapes]
    reshaped = [f"{n} saved {list(s)} here {list(own_shapes[n])}"
                for n, s in there if n in own_shapes and own_shapes[n] != s]
    parts = [f"{len(there)} parameters saved, {len(here)} here"]
    if unexpected:
        parts.append(f"unexpected (saved, not here): {_few(unexpected)}")
    if missing:
        parts.append(f"missing (here, not saved): {_few(missing)}")
    if reshaped:
        parts.append(f"other shapes: {_few(reshaped)}")
    if not (unexpected or missing or reshaped):
        moved = [f"#{i} saved {shown(a)}, here {shown(b)}"
                 for i, ((a, _), (b, _)) in enumerate(zip(there, here, strict=False)) if a != b]
        parts.append(f"the same parameters in another order: {_few(moved, sep='; ')}")
    return "; ".join(parts)


def _few(items: list[str], sep: str = ", ") -> str:
    listed = sep.join(shorten(item, 200) for item in items[:_SHOWN])
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"[{listed}]{more}"


def _keys(keys: Any, *, quote: bool = False) -> str:
    """State keys from a saved file, as a message lists them (few, each shortened)."""
    keys = list(keys)
    listed = ", ".join((shown(k) if quote else shorten(str(k))) for k in keys[:_SHOWN])
    return listed + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside optimhub and torch: the user's
    ``load_state_dict`` call, however many hook and decorator frames lie between."""
    frame = sys._getframe(1)  # the caller of this function: where the warning is issued
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _INNER:
        frame = frame.f_back
        level += 1
    return level


_INNER = frozenset({__name__.split(".")[0], "torch"})


# ---- the hooks ---------------------------------------------------------------------------
def _stamp_hook(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """``state_dict`` post-hook: stamps the dict torch (and earlier hooks) produced."""
    stamp_state(optimizer, state_dict)


def _check_hook(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``load_state_dict`` pre-hook: torch passes its own shallow copy, so returning a copy
    without the stamp leaves the caller's dict untouched."""
    return check_state(optimizer, state_dict)


def _stamp_after_own_save(optimizer: torch.optim.Optimizer) -> None:
    """For a class with its own ``state_dict``: an instance attribute that calls the
    class's method, then stamps the dict it returns (held weakly, as below)."""
    save = type(optimizer).state_dict
    owner = weakref.ref(optimizer)

    @functools.wraps(save)
    def state_dict(*args: Any, **kwargs: Any) -> Any:
        target = owner()
        assert target is not None  # the attribute lives on the optimizer itself
        return stamp_state(target, save(target, *args, **kwargs))

    optimizer.state_dict = state_dict  # type: ignore[method-assign]


def _check_before_own_load(optimizer: torch.optim.Optimizer) -> None:
    """For a class with its own ``load_state_dict`` (which may skip torch's pre-hooks): an
    instance attribute that checks, then calls the class's method. It holds the optimizer
    weakly, so no reference cycle keeps the optimizer alive."""
    load = type(optimizer).load_state_dict
    owner = weakref.ref(optimizer)

    @functools.wraps(load)
    def load_state_dict(state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        target = owner()
        assert target is not None  # the attribute lives on the optimizer itself
        return load(target, check_state(target, state_dict), *args, **kwargs)

    optimizer.load_state_dict = load_state_dict  # type: ignore[method-assign]
