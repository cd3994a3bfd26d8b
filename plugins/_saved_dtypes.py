"""Optimizer state that keeps its own floating dtype across a checkpoint.

torch's ``Optimizer.load_state_dict`` casts every floating-point state tensor (all but
``step``) to its parameter's dtype. A backend that keeps some state in another dtype on
purpose (heavyball's PSGD keeps float64 running bounds and step sizes next to float32
parameters) then resumes from rounded values: measured on the conformance model, a
PSGD-Kron run resumed from a checkpoint ended 1.5e-8 away from the uninterrupted one.

:func:`keep_saved_dtypes` registers a pre-hook that notes, per parameter, the state
tensors saved in a floating dtype other than the parameter's, and a post-hook that puts
them back (a copy, on the parameter's device) after torch's cast: the resumed run is then
exact. Shared by the built-in plugins (private: ``plugins/_saved_dtypes.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["keep_saved_dtypes"]

_Path = tuple[Any, ...]


def keep_saved_dtypes(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.load_state_dict`` keep state tensors in the dtype they were saved
    in, where torch would cast them to the parameter's floating dtype."""
    kept: list[tuple[torch.Tensor, _Path, torch.Tensor]] = []

    def note(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        kept.clear()
        params = _saved_ids(opt, state_dict)
        for index, entry in state_dict.get("state", {}).items():
            param = params.get(index)
            if param is None:
                continue
            if not param.is_floating_point():
                continue
            for path, value in _tensors(entry, ()):
                if (path[-1:] != ("step",) and value.is_floating_point()
                        and value.dtype != param.dtype):
                    kept.append((param, path, value))

    def restore(opt: torch.optim.Optimizer) -> None:
        for param, path, value in kept:
            _set(opt.state[param], path, value.to(device=param.device, copy=True))
        kept.clear()

    optimizer.register_load_state_dict_pre_hook(note)
    optimizer.register_load_state_dict_post_hook(restore)


def _saved_ids(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
               ) -> dict[Any, torch.Tensor]:
    """Each saved state key's parameter, paired as torch's ``load_state_dict`` pairs them:
    the saved groups' ``params`` in order against the live ones. They are positions in
    ``optimizer.state_dict()``, parameter names in DCP's ``set_state_dict`` (which loads
    state keyed by name: a float64 bound was cast to float32 there, measured 7.5e-9 off)."""
    saved = [key for group in state_dict.get("param_groups", ()) if isinstance(group, dict)
             for key in group.get("params", ())]
    live = [p for group in optimizer.param_groups for p in group["params"]]
    return dict(zip(saved, live, strict=False)) if len(saved) == len(live) else {}


def _tensors(value: Any, path: _Path) -> Iterator[tuple[_Path, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, (*path, key))
    elif isinstance(value, list):  # a tuple is rebuilt by torch's load: not patched
        for key, item in enumerate(value):
            yield from _tensors(item, (*path, key))


def _set(container: Any, path: _Path, value: torch.Tensor) -> None:
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = value
