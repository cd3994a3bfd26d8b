"""Resharding checkpoints (``torch.distributed.checkpoint``, DCP) that keep the hub's stamp.

DCP's ``get_state_dict`` keeps only an optimizer's ``state`` and ``param_groups``, so the
stamp that says which optimizer and parameters a state belongs to (hub/checkpoint.py) is
dropped, and ``set_state_dict`` loads whatever it finds. Worse, ``dcp.load`` writes the
saved tensors *into* the state it is given (the live model and optimizer tensors) before
``set_state_dict`` calls ``load_state_dict``, so a check in ``load_state_dict`` comes too
late to leave anything untouched. Hence these helpers::

    from optimhub import distributed_checkpoint

    distributed_checkpoint.save(model, optimizer, "ckpt/step-100")   # on every rank
    ...
    distributed_checkpoint.load(model, optimizer, "ckpt/step-100")   # any world size

``save`` stores the stamp next to the model and optimizer states, as one more entry of the
checkpoint (``"optimhub"``: the stamp as JSON text, a single object DCP saves once).
``load`` reads that entry alone first and checks it against the optimizer: another
optimizer, other parameters (names or global shapes), another route set (a routed
optimizer's table of which optimizer steps which parameters) or a layerwise state for a
plain optimizer (or back) is a ``CheckpointError`` raised before any tensor is read. It then
makes sure the fresh optimizer has every state entry the checkpoint has (DCP loads only
the keys of the state it is given: APOLLO's constructor stores a per-parameter seed, so
without this its moments and projector are silently not loaded, measured 3.3e-2 off), by
DCP's own priming step (zero gradients at lr 0, which leaves the weights as they are),
and refuses what is still missing. Then DCP loads as usual.

For an application state of your own (torchtitan's ``Stateful`` objects), put
``stamp(optimizer)`` under ``STAMP_ENTRY`` when saving and call ``check(optimizer,
checkpoint_id)`` before loading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint import (
    STAMP_KEY,
    check_stamp,
    checked_elsewhere,
    spec_or_none,
    stamp_of,
    state_entry_problems,
)
from .errors import CapabilityError, CheckpointError, OptimHubWarning, shorten
from .routed import check_routes, routes_table
from .spec import Capability

__all__ = ["STAMP_ENTRY", "check", "load", "save", "stamp"]

#: The checkpoint entry that holds the stamp (next to "model" and "optimizer").
STAMP_ENTRY = STAMP_KEY
#: In the stamp entry of an optimizer without state or ``step()``: its param groups' values.
GROUPS_KEY = "param_group_values"


def stamp(optimizer: torch.optim.Optimizer) -> str:
    """The stamp of ``optimizer``'s current state as JSON text (one object for DCP),
    with whether it is a layerwise state and, for a routed optimizer, its routes table
    (which optimizer steps which parameters: DCP keeps only the merged state); empty for
    an optimizer the hub did not build."""
    state = _torch_layout(optimizer)
    saved = stamp_of(state)
    if saved is None:
        return ""
    entry = {"stamp": saved, "layerwise": bool(state.get("layerwise"))}
    routes = routes_table(state)
    if routes is not None:
        entry["routes"] = routes
    if _stateless(optimizer):
        entry[GROUPS_KEY] = _group_values(optimizer)
    return json.dumps(entry)


def save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint_id: Any,
         *, options: Any = None) -> None:
    """``dcp.save`` of ``{"model", "optimizer", "optimhub"}``: DCP's ``get_state_dict``
    (parameter names as keys, DTensors where sharded) plus the stamp. Call it on every
    rank; ``options`` is DCP's ``StateDictOptions``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    _check_resumable(optimizer)
    _torch_layout(optimizer)  # the hub's error, not get_state_dict's KeyError
    stateless = _stateless(optimizer)  # before get_state_dict's priming
    model_state, optimizer_state = get_state_dict(model, () if stateless else optimizer,
                                                  options=options)
    entry = stamp(optimizer)  # after get_state_dict: its priming may have made the state
    dcp.save({"model": model_state, "optimizer": optimizer_state, STAMP_ENTRY: entry},
             checkpoint_id=checkpoint_id)


def load(model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint_id: Any,
         *, options: Any = None) -> None:
    """Check the checkpoint's stamp (:func:`check`), then load the model and optimizer
    states into ``model`` and ``optimizer`` through DCP, at any world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    saved = _checked(optimizer, checkpoint_id)
    if saved is not None and GROUPS_KEY in saved:  # an optimizer without state: the model
        model_state, _ = get_state_dict(model, (), options=options)
        dcp.load({"model": model_state}, checkpoint_id=checkpoint_id)
        set_state_dict(model, (), model_state_dict=model_state, optim_state_dict={},
                       options=options)
        _restore_group_values(optimizer, saved[GROUPS_KEY])
        return
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=checkpoint_id)
    with checked_elsewhere(optimizer):  # set_state_dict passes no stamp: checked above
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"], options=options)


def check(optimizer: torch.optim.Optimizer, checkpoint_id: Any) -> None:
    """Read the checkpoint's stamp alone and check it against ``optimizer`` (the
    ``CheckpointError`` comes before any tensor is read); then give ``optimizer`` every
    state entry the checkpoint has, priming it as DCP does if some are missing.

    A checkpoint without the stamp (saved by DCP directly) is loaded unchecked, with an
    ``OptimHubWarning``; its optimizer is primed whatever its state holds.
    """
    _checked(optimizer, checkpoint_id)


def _checked(optimizer: torch.optim.Optimizer, checkpoint_id: Any) -> dict[str, Any] | None:
    """:func:`check`, returning the parsed stamp entry (None: the checkpoint has none)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner

    _check_resumable(optimizer)
    entry: dict[str, Any] = {STAMP_ENTRY: ""}
    dcp.load(entry, checkpoint_id=checkpoint_id,
             planner=DefaultLoadPlanner(allow_partial_load=True))
    text = entry[STAMP_ENTRY]
    if not text:
        import warnings

        warnings.warn(
            f"optimhub: this distributed checkpoint has no {STAMP_ENTRY!r} entry (it was not "
            "saved by optimhub.distributed_checkpoint.save), so optimhub cannot check that "
            "its optimizer state belongs to this optimizer and model; it is loaded unchecked.",
            OptimHubWarning, stacklevel=2,
        )
        _prime(optimizer)
        return None
    saved = _parse(text)
    check_stamp(optimizer, saved["stamp"], ordered=False,  # DCP matches by name
                unchecked="load it with DCP's own get_state_dict / set_state_dict, unchecked")
    if "routes" in saved:  # the same route set, each route's optimizer and parameters
        check_routes(optimizer, saved["routes"])
    layerwise = bool(_torch_layout(optimizer).get("layerwise"))
    if saved["layerwise"] != layerwise:
        raise CheckpointError(
            "this distributed checkpoint holds the state of a "
            f"{'layerwise' if saved['layerwise'] else 'plain (not layerwise)'} optimizer, and "
            f"this one is {'layerwise' if layerwise else 'not'}; build it with "
            f"layerwise={saved['layerwise']} to resume it"
        )
    if state_entry_problems(optimizer, saved["stamp"], _torch_layout(optimizer)):
        _prime(optimizer)
        problems = state_entry_problems(optimizer, saved["stamp"], _torch_layout(optimizer))
        if problems:
            raise CheckpointError(
                "this optimizer's state cannot take the distributed checkpoint's, even after "
                f"DCP's priming step: {'; '.join(problems[:4])}. DCP loads only the entries "
                "the state it is given has, so the rest would silently not be loaded."
            )
    return saved


def _stateless(optimizer: torch.optim.Optimizer) -> bool:
    """An optimizer without ``step()`` (it updates inside its own backward: capability
    ``fused_backward``, LOMO) whose state is empty. DCP's ``get_state_dict`` would prime
    that empty state with a ``step()`` it does not have, and there is nothing to save but
    its param groups' values: the checkpoint holds the model, the values ride in the stamp
    entry (``GROUPS_KEY``)."""
    spec = spec_or_none(optimizer)
    return spec is not None and spec.has(Capability.FUSED_BACKWARD) and not optimizer.state


def _group_values(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each param group's values but its parameters, as JSON (plain numbers, text, flags
    and tuples of them; anything else is refused, never dropped)."""
    groups = []
    for index, group in enumerate(optimizer.param_groups):
        values = {k: v for k, v in group.items() if k != "params"}
        for key, value in values.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise CapabilityError(
                    f"param group #{index} of this stateless optimizer holds {key}="
                    f"{shorten(repr(value))} ({type(value).__name__}), which the checkpoint's "
                    f"{STAMP_ENTRY!r} entry (JSON) cannot hold; keep plain numbers, text and "
                    "flags in its param groups, or save optimizer.state_dict() with torch.save"
                ) from None
        groups.append(values)
    return groups


def _restore_group_values(optimizer: torch.optim.Optimizer, saved: Any) -> None:
    """Give each param group the values saved for it (tuples come back from JSON as
    lists: kept as tuples where the group has a tuple)."""
    groups = optimizer.param_groups
    if not isinstance(saved, list) or len(saved) != len(groups):
        raise CheckpointError(
            f"the checkpoint saved {len(saved) if isinstance(saved, list) else 'no'} param "
            f"groups for this stateless optimizer, which has {len(groups)}; build it with "
            "the settings it was saved with"
        )
    for group, values in zip(groups, saved, strict=True):
        group.update({k: tuple(v) if isinstance(group.get(k), tuple) else v
                      for k, v in values.items()})


def _check_resumable(optimizer: torch.optim.Optimizer) -> None:
    """Refuse, before anything is written or read, an optimizer whose state is measured not
    to resume through DCP (capability ``no_dcp``): its load would succeed and the next step
    fail inside the backend, or the resumed run would silently differ."""
    spec = spec_or_none(optimizer)
    if spec is not None and spec.has(Capability.NO_DCP):
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot be checkpointed through "
            f"torch.distributed.checkpoint (capability '{Capability.NO_DCP.value}': measured, "
            "its state does not come back as it was saved; docs/distributed.md says how); "
            "save optimizer.state_dict() with torch.save on each rank and resume at the same "
            "world size"
        )


def _parse(text: Any) -> dict[str, Any]:
    try:
        saved = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        saved = None
    if not (isinstance(saved, Mapping) and isinstance(saved.get("stamp"), Mapping)
            and isinstance(saved.get("layerwise"), bool)):
        raise CheckpointError(
            f"the distributed checkpoint's {STAMP_ENTRY!r} entry is not optimhub's stamp "
            f"(JSON with 'stamp' and 'layerwise'): {str(text)[:120]!r}"
        )
    return dict(saved)


def _torch_layout(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()``, which must have torch's layout for DCP."""
    state = optimizer.state_dict()
    if not isinstance(state.get("state"), Mapping) or not isinstance(
            state.get("param_groups"), list):
        raise CapabilityError(
            f"{type(optimizer).__name__}'s state dict does not have torch's layout ('state' "
            "and 'param_groups'), which torch.distributed.checkpoint's get_state_dict needs; "
            "save optimizer.state_dict() with torch.save on each rank instead"
        )
    return state


def _prime(optimizer: torch.optim.Optimizer) -> None:
    """DCP's priming step, done whatever the state holds: a zero gradient for every
    trainable parameter, one ``step()`` at lr 0 (the weights stay as they are), so that the
    state has every entry to load into. Skipped when a gradient is already set (DCP's rule:
    that step would change the weights). A schedule-free optimizer takes it in train mode,
    as every step (its ``step()`` refuses otherwise); so does a routed one with a
    schedule-free route (its spec inherits the capability, and its ``train()`` reaches
    that route)."""
    params = [p for group in optimizer.param_groups for p in group["params"]
              if p.requires_grad]
    if any(p.grad is not None for p in params):
        return
    spec = spec_or_none(optimizer)
    if spec is not None and spec.has(Capability.SCHEDULE_FREE):
        optimizer.train()  # type: ignore[attr-defined]
    for param in params:
        param.grad = torch.zeros_like(param)
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(0.0) if isinstance(group["lr"], torch.Tensor) else 0.0
    optimizer.step()
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    optimizer.zero_grad(set_to_none=True)
