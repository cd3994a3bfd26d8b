"""What the user passed as ``model``, normalised to named parameters.

``create_optimizer`` and ``estimate`` accept an ``nn.Module`` (a DDP wrapper included), an
iterable of parameters, of ``(name, parameter)`` pairs, or of param-group dicts. Every
later step (checks, target selection, param groups, the checkpoint stamp) reads one shape:
``ParameterSource.named``, the parameters with the names the user knows them by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import OptimArgsError, OptimArgsTypeError, shown

__all__ = ["ParameterSource"]


@dataclass(frozen=True)
class ParameterSource:
    """What the user passed as ``model``, normalised to named parameters."""

    module: nn.Module | None
    named: list[tuple[str, Any]]
    user_groups: list[dict[str, Any]] | None = None
    wrapper: nn.Module | None = None

    @classmethod
    def from_user(cls, model: Any) -> ParameterSource:
        if isinstance(model, ParameterSource):  # already normalised (a route's share)
            return model
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            # Name parameters as the model itself does ("lm_head.weight", not
            # "module.lm_head.weight"), so rules and target patterns written for the model
            # work; the wrapper is kept for the DDP capability checks.
            inner = model.module
            return cls(inner, list(inner.named_parameters()), wrapper=model)
        if isinstance(model, nn.Module):
            return cls(model, list(model.named_parameters()))
        if isinstance(model, (torch.Tensor, str, bytes, Mapping)) or not isinstance(
            model, Iterable
        ):
            raise OptimArgsTypeError(
                f"model must be an nn.Module or an iterable of parameters, (name, parameter) "
                f"pairs or param-group dicts; got {type(model).__name__}"
            )
        items = list(model)
        if items and all(isinstance(item, Mapping) for item in items):
            return cls._from_groups(items)
        if items and all(_is_named_pair(item) for item in items):
            return cls(None, [(str(n), p) for n, p in items])
        if all(isinstance(item, torch.Tensor) for item in items):
            return cls(None, [(f"params.{i}", p) for i, p in enumerate(items)])
        raise OptimArgsTypeError(
            "model must be an nn.Module or an iterable of one kind: parameters, "
            "(name, parameter) pairs, or param-group dicts; got a mix or other objects "
            f"({', '.join(sorted({type(i).__name__ for i in items}))})"
        )

    @classmethod
    def _from_groups(cls, groups: list[Mapping[str, Any]]) -> ParameterSource:
        named: list[tuple[str, Any]] = []
        copies: list[dict[str, Any]] = []
        seen: dict[int, int] = {}
        for index, group in enumerate(groups):
            params = _group_params(index, group)
            for param in params:
                if id(param) in seen:
                    raise OptimArgsError(
                        f"a parameter is in param group {seen[id(param)]} and in group "
                        f"{index}; each parameter may belong to one group only"
                    )
                seen[id(param)] = index
            _check_group_numbers(index, group)
            named.extend((f"group{index}.{j}", p) for j, p in enumerate(params))
            copies.append({**group, "params": params})
        return cls(None, named, copies)

    def restricted(self, names: Iterable[str]) -> ParameterSource:
        """The same model, with only the parameters called ``names`` (a route's share):
        the module stays, for decay rules, target selection and roles."""
        wanted = set(names)
        return ParameterSource(self.module, [(n, p) for n, p in self.named if n in wanted],
                               wrapper=self.wrapper)


def _group_params(index: int, group: Mapping[str, Any]) -> list[Any]:
    if "params" not in group:
        raise OptimArgsTypeError(f"param group {index} has no 'params' key: {shown(group)}")
    params = group["params"]
    if isinstance(params, torch.Tensor):
        return [params]
    if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
        raise OptimArgsTypeError(
            f"param group {index}: 'params' must be a tensor or an iterable of tensors, "
            f"got {type(params).__name__} {shown(params)}"
        )
    params = list(params)
    for param in params:
        if not isinstance(param, torch.Tensor):
            raise OptimArgsTypeError(
                f"param group {index}: 'params' holds a {type(param).__name__} ({shown(param)}); "
                "it must hold tensors (parameters)"
            )
    return params


def _check_group_numbers(index: int, group: Mapping[str, Any]) -> None:
    """The per-group hyperparameters every backend reads: finite, non-negative numbers."""
    for key in ("lr", "weight_decay"):
        if key not in group:
            continue
        value = group[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptimArgsTypeError(
                f"param group {index}: {key} must be a number, got {type(value).__name__} "
                f"{shown(value)}"
            )
        if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
            allowed = "> 0" if key == "lr" else ">= 0"
            raise OptimArgsError(
                f"param group {index}: {key}={shown(value)} is not valid; it must be a finite "
                f"number {allowed}"
            )


def _is_named_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        and isinstance(item[1], torch.Tensor)
    )


