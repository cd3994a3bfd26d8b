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
entry already has. Shared by the built-in plugins (private).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["entry_in_groups"]


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
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list):
            return state_dict
        carried = [g[group_key] for g in groups if isinstance(g, dict) and group_key in g]
        if not carried:
            return state_dict
        plain = [{k: v for k, v in g.items() if k != group_key} if isinstance(g, dict) else g
                 for g in groups]
        entry = state_dict[key] if key in state_dict else carried[0][0]
        return {**state_dict, "param_groups": plain, key: entry}

    optimizer.register_state_dict_post_hook(carry)
    # First: the backend's own load pre-hook (heavyball's _load_stats) reads the entry.
    optimizer.register_load_state_dict_pre_hook(take, prepend=True)
