"""An optimizer-wide state-dict entry carried in the param groups, so that
``torch.distributed.checkpoint`` keeps it.

Some backends save values that belong to the whole optimizer, not to a parameter, as one
more top-level entry of ``state_dict()``: heavyball's ``"heavyball"`` (``inner_group``,
whose ``cumulative_prob_prob_step`` counts the steps that decide when SOAP, Shampoo, SOLP,
the Muon family and kin refresh their preconditioners, and PSGD's hessian-vector flags).
DCP's ``get_state_dict`` keeps only ``state`` and ``param_groups``, so that entry was
dropped: the fresh optimizer kept the count of its own priming step, refreshed its
preconditioners on other steps than the uninterrupted run, and ended 1e-4 to 3e-2 off
(measured by tools/distributed_checkpoint.py; the state and param groups themselves came
back bit for bit).

:func:`entry_in_groups` copies the entry into every group of ``state_dict()`` (which DCP
keeps, per group, matched by parameter name) and ``load_state_dict`` takes it back out
(a state dict that has the entry at the top level, as ``torch.save`` keeps it, is used as
it is). The value is stored in a 1-tuple: DCP saves a tuple as one object and loads it
whole, where it would walk a dict key by key and load only the keys the fresh optimizer's
entry already has.

:func:`shared_state_in_groups` does the same for the entries of ``state`` that are not a
parameter's: pytorch-optimizer's EmoNavi and EmoLynx keep the loss EMAs that scale each
step under ``optimizer.state["ema"]``, and DCP's ``get_state_dict``, which renames every
state key to its parameter's name, failed with ``KeyError: 'ema'``. Shared by the
built-in plugins (private).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["entry_in_groups", "shared_state_in_groups"]


def entry_in_groups(optimizer: torch.optim.Optimizer, key: str) -> None:
    """Make ``optimizer.state_dict()`` carry its top-level entry ``key`` in each param
    group too, and ``load_state_dict`` take it from there when the top level lacks it."""
    group_key = f"{key}_entry"

    def carry(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        if key not in state_dict:
            return state_dict
        value = (state_dict[key],)
        groups = [{**group, group_key: value} for group in state_dict["param_groups"]]
        return {**state_dict, "param_groups": groups}

    def take(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        carried, plain = _taken_from_groups(state_dict, group_key)
        if carried is None:
            return state_dict
        entry = state_dict.get(key, carried)
        return {**state_dict, "param_groups": plain, key: entry}

    optimizer.register_state_dict_post_hook(carry)
    # First: the backend's own load pre-hook (heavyball's _load_stats) reads the entry.
    optimizer.register_load_state_dict_pre_hook(take, prepend=True)


_SHARED = "shared_state_entries"


def shared_state_in_groups(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer.state_dict()`` carry the ``state`` entries whose key is not a
    parameter's index in each param group, and ``load_state_dict`` put them back."""

    def carry(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state = state_dict.get("state")
        if not isinstance(state, dict):
            return state_dict
        shared = {k: v for k, v in state.items() if not isinstance(k, int)}
        if not shared:
            return state_dict
        groups = [{**group, _SHARED: (shared,)} for group in state_dict["param_groups"]]
        return {**state_dict, "param_groups": groups,
                "state": {k: v for k, v in state.items() if isinstance(k, int)}}

    def take(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        carried, plain = _taken_from_groups(state_dict, _SHARED)
        if carried is None:
            return state_dict
        return {**state_dict, "param_groups": plain,
                "state": {**state_dict.get("state", {}), **carried}}

    optimizer.register_state_dict_post_hook(carry)
    optimizer.register_load_state_dict_pre_hook(take, prepend=True)


def _taken_from_groups(state_dict: dict[str, Any], group_key: str
                       ) -> tuple[Any, list[Any]]:
    """The value carried under ``group_key`` (out of its 1-tuple; None when no group
    carries one) and the param groups without it."""
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list):
        return None, []
    carried = [g[group_key] for g in groups if isinstance(g, dict) and group_key in g]
    if not carried:
        return None, groups
    plain = [{k: v for k, v in g.items() if k != group_key} if isinstance(g, dict) else g
             for g in groups]
    return carried[0][0], plain
