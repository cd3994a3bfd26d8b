"""Optimizer state whose per-parameter entries nest dicts under int keys, saved with text
keys so that ``torch.distributed.checkpoint`` keeps all of it.

heavyball keeps each parameter's state as ``{0: {...}}`` (one dict per transform chain,
by index) with tensors and a Python ``set`` (``is_initialized``) inside. DCP flattens a
state dict into paths whose parts are text and puts a loaded tensor back where the fresh
optimizer's template has it, but a non-tensor value under the *text* key (``"0"``): after
a DCP load the int key's ``is_initialized`` was ``None`` and the next step failed inside
heavyball (measured by tools/distributed_checkpoint.py). With the nested keys as text in
``state_dict()`` (and turned back into ints by ``load_state_dict``), every value goes
through DCP where it came from; ``torch.save`` checkpoints are the same otherwise, and one
saved with int keys still loads. Shared by the built-in plugins (private).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["nested_keys_as_text"]


def nested_keys_as_text(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.state_dict()`` give the int keys of each entry's nested dicts as
    text, and ``load_state_dict`` take them back as ints."""
    optimizer.register_state_dict_post_hook(_rekeyed(_as_text))
    # First: the other load hooks (PSGD's saved dtypes) see the keys the state has.
    optimizer.register_load_state_dict_pre_hook(_rekeyed(_as_int), prepend=True)


def _as_text(key: Any) -> Any:
    return str(key) if isinstance(key, int) and not isinstance(key, bool) else key


def _as_int(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _rekeyed(rename: Callable[[Any], Any]
             ) -> Callable[[torch.optim.Optimizer, dict[str, Any]], dict[str, Any]]:
    """A hook that returns a copy of the state dict with each entry's keys renamed (the
    entries' values, tensors included, are shared, never changed)."""

    def hook(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state = state_dict.get("state")
        if not isinstance(state, Mapping):
            return state_dict
        renamed = {index: ({rename(k): v for k, v in entry.items()}
                           if isinstance(entry, Mapping) else entry)
                   for index, entry in state.items()}
        return {**state_dict, "state": renamed}

    return hook
