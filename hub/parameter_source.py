"""What the user passed as ``model``, normalised to named parameters.

``create_optimizer`` and ``estimate`` accept an ``nn.Module`` (a DDP wrapper included), an
iterable of parameters, of ``(name, parameter)`` pairs, or of param-group dicts. Every
later step (checks, target selection, param groups, the checkpoint stamp) reads one shape:
``ParameterSource.named``, the parameters with the names the user knows them by.

A model is walked once (:func:`walk_model`): the walk lists its parameters and modules
and notes the parameters that HF's decay split leaves out by module type, so that no later
step (decay split, target selection) walks the module tree again: on a model with 10k
parameter tensors one walk costs about as much as all the rest of the hub's work per
parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .errors import OptimArgsError, OptimArgsTypeError, shown
from .param_groups import NO_DECAY_MODULE_TYPES

__all__ = ["ModelWalk", "ParameterSource", "walk_model"]


@dataclass(frozen=True)
class ParameterSource:
    """What the user passed as ``model``, normalised to named parameters."""

    module: nn.Module | None
    named: list[tuple[str, Any]]
    user_groups: list[dict[str, Any]] | None = None
    wrapper: nn.Module | None = None
    #: ``list(module.named_modules())``, from the same walk (None without a module).
    named_modules: list[tuple[str, nn.Module]] | None = None
    #: Names (in ``named``) of parameters held inside a submodule of one of
    #: ``NO_DECAY_MODULE_TYPES`` (HF: ``nn.LayerNorm``), never decayed whatever their name.
    in_no_decay_module: frozenset[str] = frozenset()
    #: ``list(module.named_parameters())`` of the whole model, from the same walk: equal
    #: to ``named`` except in a route's share (:meth:`restricted`), where target selection
    #: still runs on the whole model (None without a module).
    model_named: list[tuple[str, Any]] | None = None
    #: The walk itself (None without a module), for what else it found (tied names).
    walk: ModelWalk | None = None

    @classmethod
    def from_module(cls, module: nn.Module, wrapper: nn.Module | None = None
                    ) -> ParameterSource:
        walk = walk_model(module, NO_DECAY_MODULE_TYPES)
        return cls(module, walk.parameters, wrapper=wrapper, named_modules=walk.modules,
                   in_no_decay_module=walk.inside, model_named=walk.parameters, walk=walk)

    @classmethod
    def from_user(cls, model: Any) -> ParameterSource:
        if isinstance(model, ParameterSource):  # already normalised (a route's share)
            return model
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            # Name parameters as the model itself does ("lm_head.weight", not
            # "module.lm_head.weight"), so rules and target patterns written for the model
            # work; the wrapper is kept for the DDP capability checks.
            return cls.from_module(model.module, wrapper=model)
        if isinstance(model, nn.Module):
            return cls.from_module(model)
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
        return replace(self, named=[(n, p) for n, p in self.named if n in wanted],
                       user_groups=None)


class _ListedDifferently(Exception):
    """A module of the tree lists its submodules its own way: let torch walk it."""


@dataclass(frozen=True)
class ModelWalk:
    """What one walk of a module tree finds: ``list(model.named_parameters())``,
    ``list(model.named_modules())``, and the names of the parameters inside a submodule
    (not the root) of the types the walk was asked about.

    ``repeated``: the further names of a parameter held twice (tied weights), in the order
    ``named_parameters(remove_duplicate=False)`` lists them; complete only when
    ``modules_unique`` (no module is reached by two paths, and the walk was this one's:
    then ``modules`` is also ``named_modules(remove_duplicate=False)``)."""

    parameters: list[tuple[str, Any]]
    modules: list[tuple[str, nn.Module]]
    inside: frozenset[str]
    repeated: list[tuple[str, Any]] = field(default_factory=list)
    modules_unique: bool = False


def walk_model(root: nn.Module, inside: tuple[type[nn.Module], ...]) -> ModelWalk:
    """``root``'s named parameters and named modules, and which parameters sit inside a
    submodule of one of the ``inside`` types, from one walk of the tree.

    It follows torch's own walk step by step (``named_modules``: each module once, under
    the first name it is reached by, parents before children; then each module's
    ``_parameters``: each parameter once, under the first name, ``None`` entries
    skipped), so the names and their order are ``named_parameters()``'s and
    ``named_modules()``'s (tested on tied, shared and frozen models). It is done here
    rather than by calling them because each of torch's walks costs about as much as this
    one (on 10k tensors as much as all the rest of the hub's work per parameter), and
    the factory needs the parameters, the modules and the module types.
    A model that lists its members its own way (an override of ``named_parameters`` on
    the root, or of ``named_modules`` anywhere in the tree) is walked by torch itself.
    """
    if (type(root).named_parameters is not nn.Module.named_parameters
            or type(root)._named_members is not nn.Module._named_members):
        return _walk_with_torch(root, inside)
    parameters: list[tuple[str, Any]] = []
    modules: list[tuple[str, nn.Module]] = []
    inside_names: set[str] = set()
    repeated: list[tuple[str, Any]] = []
    shared: list[str] = []
    seen_modules, seen_params = {id(root)}, set()
    # Bound methods and the default walk as locals: this runs once per module and tensor.
    add_module, add_parameter, add_inside = modules.append, parameters.append, inside_names.add
    mark_module, mark_parameter = seen_modules.add, seen_params.add
    default_walk = nn.Module.named_modules

    def visit(module: nn.Module, name: str, prefix: str, within: bool) -> None:
        if type(module).named_modules is not default_walk:
            raise _ListedDifferently
        add_module((name, module))
        for key, param in module._parameters.items():
            if param is None:
                continue
            if id(param) in seen_params:
                repeated.append((prefix + key, param))
                continue
            mark_parameter(id(param))
            full = prefix + key
            add_parameter((full, param))
            if within:
                add_inside(full)
        for key, child in module._modules.items():
            if child is None:
                continue
            if id(child) in seen_modules:
                shared.append(prefix + key)
                continue
            mark_module(id(child))
            child_name = prefix + key
            visit(child, child_name, child_name + ".", within or isinstance(child, inside))

    try:
        visit(root, "", "", False)
    except _ListedDifferently:
        return _walk_with_torch(root, inside)
    return ModelWalk(parameters, modules, frozenset(inside_names), repeated, not shared)


def _walk_with_torch(root: nn.Module, inside: tuple[type[nn.Module], ...]) -> ModelWalk:
    """The same answer from torch's own walks, for models that list members their way."""
    parameters = list(root.named_parameters())
    modules = list(root.named_modules())
    holders = {name for name, module in modules if name and isinstance(module, inside)}
    found = set()
    for name, _ in parameters if holders else ():
        parts = name.split(".")
        if any(".".join(parts[:depth]) in holders for depth in range(1, len(parts))):
            found.add(name)
    return ModelWalk(parameters, modules, frozenset(found))


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


