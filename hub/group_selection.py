"""Which param groups a per-group setting is for: keys resolved to group indices.

Per-group learning-rate schedules and weight-decay schedules are given as a mapping from a
*group key* to a schedule. A key names whole param groups, in one of four forms:

- an ``int`` ``i``, or the text ``"group:i"`` (the form JSON and YAML can carry): the
  optimizer's ``param_groups[i]``;
- ``"route:NAME"``: every group of the route ``NAME``. A routed optimizer (optimhub's
  ``RoutedOptimizer``) knows the route of each of its groups (``group_routes``); for any
  other optimizer a group's ``"route"`` entry, if it has one, names it. An optimizer
  without routes has no such group, and the key is an error like any key that selects
  nothing;
- any other ``str``: a regular expression searched (``re.search``) in parameter names,
  the language of ``param_group_rules``. It selects every group all of whose parameters
  match, so the pattern of a rule selects the groups that rule created (the decayed and
  the non-decayed half alike). A group only partly matched is an error: a schedule
  applies to a whole group, and the fix is a rule that gives those parameters a group of
  their own. Parameter names are known for optimizers built by ``create_optimizer``.

Every key must select at least one group, and no group may be selected by two keys;
both mistakes are errors naming the keys, raised before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .checkpoint import parameter_names
from .errors import OptimArgsError, OptimArgsTypeError

__all__ = [
    "GROUP_PREFIX",
    "ROUTE_PREFIX",
    "check_group_key",
    "check_group_mapping",
    "describe_group",
    "resolve_group_keys",
]

GROUP_PREFIX = "group:"
ROUTE_PREFIX = "route:"
#: How many names an error message shows.
_SHOWN = 4


def check_group_key(key: Any, *, what: str) -> None:
    """Refuse a key that can never select a group, before any optimizer exists."""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise OptimArgsTypeError(
            f"{what}: a group key must be a group index (int or 'group:N'), 'route:NAME' or a "
            f"regex of parameter names (str); got {type(key).__name__} {key!r}"
        )
    if isinstance(key, int):
        if key < 0:
            raise OptimArgsError(f"{what}: group index {key} is negative; count from 0")
        return
    if key.startswith(GROUP_PREFIX):
        index = key[len(GROUP_PREFIX):]
        if not index.isdigit():
            raise OptimArgsError(
                f"{what}: {key!r} is not 'group:N' with N a group index, e.g. 'group:0'"
            )
    elif key.startswith(ROUTE_PREFIX):
        if not key[len(ROUTE_PREFIX):]:
            raise OptimArgsError(f"{what}: {key!r} names no route; write 'route:NAME'")
    else:
        if not key:
            raise OptimArgsError(f"{what}: an empty pattern selects every parameter; write "
                                 "'.*' if that is meant (it is what the default schedule does)")
        try:
            re.compile(key)
        except re.error as exc:
            raise OptimArgsError(
                f"{what}: {key!r} is not a valid regular expression ({exc})"
            ) from exc


def resolve_group_keys(
    optimizer: torch.optim.Optimizer, keys: Sequence[Any], *, what: str
) -> dict[int, Any]:
    """``{group index: key}`` for the groups the keys select; every key must select at
    least one group and each group at most one key."""
    names = _group_names(optimizer)
    chosen: dict[int, Any] = {}
    for key in keys:
        check_group_key(key, what=what)
        for index in _select(optimizer, names, key, what=what):
            if index in chosen:
                raise OptimArgsError(
                    f"{what}: param group {index} ({describe_group(optimizer, index)}) is "
                    f"selected by both {chosen[index]!r} and {key!r}; give each group one "
                    "schedule"
                )
            chosen[index] = key
    return chosen


def describe_group(optimizer: torch.optim.Optimizer, index: int) -> str:
    """A short description for messages: its parameters' first names, or their count."""
    names = _group_names(optimizer)
    group = optimizer.param_groups[index]
    if names is None:
        return f"{len(group['params'])} parameters"
    shown = ", ".join(names[index][:_SHOWN])
    more = f" and {len(names[index]) - _SHOWN} more" if len(names[index]) > _SHOWN else ""
    return f"{shown}{more}"


def _select(optimizer: torch.optim.Optimizer, names: list[list[str]] | None, key: Any,
            *, what: str) -> list[int]:
    groups = optimizer.param_groups
    if isinstance(key, int) or key.startswith(GROUP_PREFIX):
        index = key if isinstance(key, int) else int(key[len(GROUP_PREFIX):])
        if index >= len(groups):
            raise OptimArgsError(
                f"{what}: {key!r} names param group {index}, but the optimizer has "
                f"{len(groups)} group(s) (0 to {len(groups) - 1})"
            )
        return [index]
    if key.startswith(ROUTE_PREFIX):
        route = key[len(ROUTE_PREFIX):]
        labels = _route_labels(optimizer)
        found = [i for i, label in enumerate(labels) if label == route]
        if not found:
            routes = sorted({str(label) for label in labels if label is not None})
            known = (f"its routes are {', '.join(routes)}" if routes
                     else "it is not a routed optimizer (no group belongs to a route)")
            raise OptimArgsError(f"{what}: no param group belongs to route {route!r}: {known}")
        return found
    return _by_pattern(optimizer, names, key, what=what)


def _route_labels(optimizer: torch.optim.Optimizer) -> list[Any]:
    """The route of each param group (None where a group has none)."""
    labels = getattr(optimizer, "group_routes", None)
    if isinstance(labels, list) and len(labels) == len(optimizer.param_groups):
        return labels
    return [group.get("route") for group in optimizer.param_groups]


def _by_pattern(optimizer: torch.optim.Optimizer, names: list[list[str]] | None, pattern: str,
                *, what: str) -> list[int]:
    if names is None:
        raise OptimArgsError(
            f"{what}: {pattern!r} selects groups by parameter name, but this "
            f"{type(optimizer).__name__} was not built by optimhub.create_optimizer, so its "
            "parameters have no names here; use group indices (0, 1, ... or 'group:N')"
        )
    regex = re.compile(pattern)
    found = []
    for index, group_names in enumerate(names):
        matched = [n for n in group_names if regex.search(n)]
        if not matched:
            continue
        if len(matched) < len(group_names):
            unmatched = [n for n in group_names if not regex.search(n)]
            raise OptimArgsError(
                f"{what}: {pattern!r} matches only part of param group {index} (it matches "
                f"{_few(matched)} but not {_few(unmatched)}); a schedule applies to whole "
                f"groups: give those parameters a group of their own with a param group rule "
                f"(param_group_rules=[{{'pattern': {pattern!r}, 'lr': ...}}]), or use a "
                "pattern that matches the whole group"
            )
        found.append(index)
    if not found:
        examples = [n for group_names in names for n in group_names][:_SHOWN]
        raise OptimArgsError(
            f"{what}: {pattern!r} matches no parameter of this optimizer, so it selects no "
            f"param group (the pattern is searched in names such as "
            f"{', '.join(repr(n) for n in examples)})"
        )
    return found


def _group_names(optimizer: torch.optim.Optimizer) -> list[list[str]] | None:
    """The parameter names of each group, or None for an optimizer optimhub did not build."""
    known = parameter_names(optimizer)
    if known is None:
        return None
    return [[known.get(id(p), f"<unnamed #{i}>") for i, p in enumerate(group["params"])]
            for group in optimizer.param_groups]


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check_group_mapping(value: Any, *, what: str) -> Mapping[Any, Any]:
    """``value`` as a mapping of group keys (each checked), or an error saying the form."""
    if not isinstance(value, Mapping):
        raise OptimArgsTypeError(
            f"{what} must be a dict from group keys to schedules, e.g. {{'lm_head': "
            f"'constant', 'group:1': {{'name': 'linear'}}}}; got {type(value).__name__} {value!r}"
        )
    for key in value:
        check_group_key(key, what=what)
    return value
