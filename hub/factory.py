"""``create_optimizer``: name -> spec -> arguments -> checks -> param groups -> plugin builds.

Every check runs before the backend is imported or a tensor is touched, in order of cost:
the name, whether the backend is installed (a file-system lookup), the arguments and
``optim_args``, the capability rules, then the (possibly slow) backend import, the param
groups, and finally the plugin's builder. What comes back is the backend's own optimizer
object: the hub adds nothing to the step path.
"""

from __future__ import annotations

import dataclasses
import math
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .arguments import OptimizerArguments, resolve_arguments
from .backends import ensure_usable, import_backend, is_installed
from .build import BuildRequest
from .checkpoint import install_identity
from .errors import (
    BuildError,
    CapabilityError,
    MissingBackendError,
    OptimArgsError,
    OptimArgsTypeError,
    OptimHubError,
    TargetModulesError,
)
from .layerwise import OWNED_PARAMETERS as _LAYERWISE_OWNED
from .layerwise import LayerwiseOptimizer
from .optim_args import resolve_optim_args
from .param_groups import (
    NO_DECAY_NAME_PATTERNS,
    ParamGroups,
    build_param_groups,
    decay_parameter_names,
    parse_rules,
)
from .plugin_host import get_registry
from .registration import RegisteredOptimizer
from .spec import Capability, OptimizerSpec
from .targets import select_targets

__all__ = [
    "check_build_inputs",
    "check_layerwise_allowed",
    "create_optimizer",
    "spec_of",
    "spec_or_none",
]

_SPECS: weakref.WeakKeyDictionary[Any, OptimizerSpec] = weakref.WeakKeyDictionary()


def create_optimizer(
    name: str,
    model: nn.Module | Iterable[Any],
    args: Any = None,
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` for ``model``, configured by ``args`` and ``overrides``.

    ``model`` is an ``nn.Module`` (needed for the HF weight-decay split and for
    ``optim_target_modules``), or, where the spec does not need the model, an iterable of
    parameters, of ``(name, parameter)`` pairs, or of param-group dicts. ``args`` is None,
    a dict, :class:`optimhub.OptimizerArguments` or a ``TrainingArguments``-like object;
    keyword ``overrides`` (``lr=``, ``weight_decay=``, ``optim_args=``...) win.

    Returns the backend's own optimizer; ``optimhub.spec_of(optimizer)`` gives its spec.
    """
    entry = get_registry().get(name)
    spec = entry.spec
    if not is_installed(spec):
        import_backend(spec)  # raises MissingBackendError with the install command
    settings = resolve_arguments(args, overrides)
    options = resolve_optim_args(spec, settings.optim_args)
    source = _ParameterSource.from_user(model)
    _check_parameters(spec, source, settings)
    _check_capabilities(spec, source, settings)
    ensure_usable(spec)
    groups = _param_groups(spec, source, settings, options)
    request = BuildRequest(
        spec=spec,
        param_groups=groups.groups,
        param_names=groups.names,
        kwargs=_constructor_kwargs(spec, settings, options),
        options=options,
        model=source.module,
        weight_decay=settings.weight_decay,
        arguments=settings,
    )
    if spec.has(Capability.LAYERWISE) or settings.layerwise:
        optimizer = _build_layerwise(entry, request)
    else:
        optimizer = _build(entry, request)
    _SPECS[optimizer] = spec
    install_identity(optimizer, spec.name, source.named)  # stamped, checked checkpoints
    return optimizer


def spec_of(optimizer: Any) -> OptimizerSpec:
    """The spec an optimizer was built from (kept in a weak map, not on the object)."""
    try:
        return _SPECS[optimizer]
    except (KeyError, TypeError):
        raise OptimArgsTypeError(
            f"{type(optimizer).__name__} object was not built by optimhub.create_optimizer"
        ) from None


def spec_or_none(optimizer: Any) -> OptimizerSpec | None:
    """The spec of an optimizer built by the hub, or None for a foreign one."""
    try:
        return _SPECS.get(optimizer)
    except TypeError:  # not weak-referenceable: certainly not ours
        return None


@dataclass(frozen=True)
class _ParameterSource:
    """What the user passed as ``model``, normalised to named parameters."""

    module: nn.Module | None
    named: list[tuple[str, Any]]
    user_groups: list[dict[str, Any]] | None = None
    wrapper: nn.Module | None = None

    @classmethod
    def from_user(cls, model: Any) -> _ParameterSource:
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
    def _from_groups(cls, groups: list[Mapping[str, Any]]) -> _ParameterSource:
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


def check_build_inputs(spec: OptimizerSpec, model: Any, settings: OptimizerArguments
                       ) -> _ParameterSource:
    """Every check create_optimizer runs on the model and arguments, without building:
    what ``optimhub.estimate`` shares so an estimate is refused exactly when a build would be."""
    source = _ParameterSource.from_user(model)
    _check_capabilities(spec, source, settings)
    return source


def _check_parameters(
    spec: OptimizerSpec, source: _ParameterSource, settings: OptimizerArguments
) -> None:
    """What no backend checks, yet every backend gets wrong, refused before building."""
    trainable = [(n, p) for n, p in source.named if p.requires_grad]
    meta = [n for n, p in trainable if p.is_meta]
    if meta:
        raise OptimArgsError(
            f"{len(meta)} trainable parameter(s) are on the meta device (no data), e.g. "
            f"{', '.join(repr(n) for n in meta[:3])}: an optimizer built on them steps "
            "nothing or fails inside the backend. Materialise the model first "
            "(model.to_empty(device=...) and load or initialise its weights)."
        )
    owned = [n for n, p in trainable if p in _LAYERWISE_OWNED]
    if owned:
        raise CapabilityError(
            f"parameters such as {owned[0]!r} are stepped inside backward by a live "
            "layerwise optimizer: a second optimizer would step them twice, or never see a "
            "gradient. close() the layerwise optimizer (or leave its with-block) first."
        )
    if spec.has_hyperparameter("eps"):
        _check_eps_representable(settings.adam_epsilon, trainable)


def _check_eps_representable(eps: float, trainable: list[tuple[str, Any]]) -> None:
    """An eps that rounds to 0 in a parameter's dtype (1e-8 in float16) gives 0/0 = NaN."""
    checked: set[torch.dtype] = set()
    for name, param in trainable:
        if param.dtype in checked or not param.is_floating_point():
            continue
        checked.add(param.dtype)
        if torch.tensor(eps, dtype=param.dtype).item() == 0:
            smallest = torch.finfo(param.dtype).tiny
            raise OptimArgsError(
                f"adam_epsilon={eps!r} is 0 in {param.dtype} (parameter {name!r}), so Adam "
                f"divides 0 by 0 and the weights become NaN; use adam_epsilon >= "
                f"{smallest:.1e} (1e-6 or more is common for {param.dtype}), or train in "
                "bfloat16 / float32"
            )


def _group_params(index: int, group: Mapping[str, Any]) -> list[Any]:
    if "params" not in group:
        raise OptimArgsTypeError(f"param group {index} has no 'params' key: {group!r}")
    params = group["params"]
    if isinstance(params, torch.Tensor):
        return [params]
    if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
        raise OptimArgsTypeError(
            f"param group {index}: 'params' must be a tensor or an iterable of tensors, "
            f"got {type(params).__name__} {params!r}"
        )
    params = list(params)
    for param in params:
        if not isinstance(param, torch.Tensor):
            raise OptimArgsTypeError(
                f"param group {index}: 'params' holds a {type(param).__name__} ({param!r}); "
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
                f"{value!r}"
            )
        if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
            allowed = "> 0" if key == "lr" else ">= 0"
            raise OptimArgsError(
                f"param group {index}: {key}={value!r} is not valid; it must be a finite "
                f"number {allowed}"
            )


def _is_named_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        and isinstance(item[1], torch.Tensor)
    )


def _check_capabilities(
    spec: OptimizerSpec, source: _ParameterSource, settings: OptimizerArguments
) -> None:
    """The spec's rules, checked before anything is imported or built."""
    if spec.has(Capability.NEEDS_MODEL) and source.module is None:
        raise CapabilityError(
            f"optimizer {spec.name!r} needs the model itself (it registers hooks on the "
            "module); pass the nn.Module, not its parameters"
        )
    if settings.weight_decay and not spec.has_hyperparameter("weight_decay"):
        raise OptimArgsError(
            f"optimizer {spec.name!r} has no weight decay, but weight_decay="
            f"{settings.weight_decay!r} was given; set weight_decay=0 for it (it would be "
            "silently ignored otherwise)"
        )
    _check_layerwise_and_ddp(spec, source, settings)
    wants_targets = spec.has(Capability.TARGET_MODULES)
    if wants_targets and source.module is None:
        raise CapabilityError(
            f"optimizer {spec.name!r} selects layers by module name (optim_target_modules); "
            "pass the nn.Module, not its parameters"
        )
    if not wants_targets and settings.optim_target_modules not in (None, [], ()):
        users = ", ".join(s.name for s in _specs_with(Capability.TARGET_MODULES)[:4])
        raise TargetModulesError(
            f"optimizer {spec.name!r} does not use optim_target_modules "
            f"(got {settings.optim_target_modules!r}); remove it, or choose an optimizer "
            f"that projects target layers (e.g. {users})"
        )
    if source.user_groups is not None and (wants_targets or settings.param_group_rules):
        raise CapabilityError(
            f"param-group dicts were given for {spec.name!r} together with "
            "optim_target_modules or param_group_rules; pass the model instead and let the "
            "hub build the groups, or build every group yourself"
        )


def check_layerwise_allowed(spec: OptimizerSpec, layerwise: bool) -> None:
    """``layerwise=True`` only for specs that allow it (before anything is built)."""
    can_layerwise = spec.has(Capability.LAYERWISE_CAPABLE) or spec.has(Capability.LAYERWISE)
    if layerwise and not can_layerwise:
        capable = ", ".join(s.name for s in _specs_with(Capability.LAYERWISE_CAPABLE)[:6])
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot run layerwise (its spec lacks "
            f"'{Capability.LAYERWISE_CAPABLE.value}'); drop layerwise=True or use one of: "
            f"{capable}"
        )


def _check_layerwise_and_ddp(
    spec: OptimizerSpec, source: _ParameterSource, settings: OptimizerArguments
) -> None:
    layerwise = spec.has(Capability.LAYERWISE) or settings.layerwise
    check_layerwise_allowed(spec, settings.layerwise)
    ddp = source.wrapper is not None
    if ddp and (layerwise or spec.has(Capability.NO_DDP)):
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot run under DistributedDataParallel"
            + (" in layerwise mode: DDP all-reduces gradients after backward, but layerwise "
               "steps consume them inside backward" if layerwise else "")
            + "; train in one process, or see docs/distributed.md for what works with which "
            "engine"
        )


def _specs_with(capability: Capability) -> list[OptimizerSpec]:
    return [e.spec for e in get_registry() if e.spec.has(capability)]


def _param_groups(
    spec: OptimizerSpec,
    source: _ParameterSource,
    settings: OptimizerArguments,
    options: Mapping[str, Any],
) -> ParamGroups:
    if source.user_groups is not None:
        names = [[n for n, _ in source.named if n.startswith(f"group{i}.")]
                 for i in range(len(source.user_groups))]
        # A group without its own weight_decay gets the user's, never the backend's default
        # (1e-2 for AdamW-style backends, which nobody asked for).
        decay = settings.weight_decay if spec.has_hyperparameter("weight_decay") else None
        groups = [
            group if decay is None else {"weight_decay": decay, **group}
            for group in source.user_groups
        ]
        return ParamGroups(groups=groups, names=names)
    target_names: tuple[str, ...] = ()
    target_options: dict[str, Any] = {}
    if spec.has(Capability.TARGET_MODULES):
        assert source.module is not None  # checked in _check_capabilities
        target_names = select_targets(source.module, settings.optim_target_modules).parameter_names
        target_options = {
            arg.key: options[arg.name] for arg in spec.target_group_args if arg.name in options
        }
    return build_param_groups(
        source.named,
        weight_decay=settings.weight_decay if spec.has_hyperparameter("weight_decay") else 0.0,
        decay_names=_decay_names(source),
        target_names=target_names,
        target_options=target_options,
        rules=parse_rules(settings.param_group_rules),
    )


def _decay_names(source: _ParameterSource) -> set[str] | None:
    if source.module is not None:
        return decay_parameter_names(source.module)
    if all(n.startswith("params.") for n, _ in source.named):
        return None  # bare parameters carry no names: every one decays
    patterns = [re.compile(p) for p in NO_DECAY_NAME_PATTERNS]
    return {n for n, _ in source.named if not any(p.search(n.lower()) for p in patterns)}


def _constructor_kwargs(
    spec: OptimizerSpec, settings: OptimizerArguments, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Hyperparameters the backend takes, the spec's fixed keywords, then optim_args."""
    kwargs: dict[str, Any] = {}
    if spec.has_hyperparameter("lr"):
        kwargs["lr"] = settings.learning_rate
    if spec.has_hyperparameter("betas"):
        kwargs["betas"] = settings.betas
    if spec.has_hyperparameter("eps"):
        kwargs["eps"] = settings.adam_epsilon
    kwargs.update(spec.fixed)
    for name, value in options.items():
        arg = spec.args[name]
        if not arg.target_group:
            kwargs[arg.key] = value
    return kwargs


def _build_layerwise(entry: RegisteredOptimizer, request: BuildRequest) -> LayerwiseOptimizer:
    """One backend optimizer per parameter, each built by the plugin's own builder."""

    def build_one(group: dict[str, Any], name: str) -> torch.optim.Optimizer:
        single = dataclasses.replace(request, param_groups=[group], param_names=[[name]])
        return _build(entry, single)

    return LayerwiseOptimizer(
        request.param_groups, request.param_names, build_one,
        defaults={"lr": request.arguments.learning_rate},
    )


def _build(entry: RegisteredOptimizer, request: BuildRequest) -> torch.optim.Optimizer:
    spec = request.spec
    try:
        optimizer = entry.builder(request)
    except OptimHubError:
        raise
    except ImportError as exc:
        raise MissingBackendError(
            f"optimizer {spec.name!r}: {entry.plugin.describe()} could not import what it "
            f"needs ({exc}); install it with: {spec.install_command}"
        ) from exc
    except Exception as exc:
        raise BuildError(
            f"{entry.plugin.describe()} failed to build {spec.name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise BuildError(
            f"{entry.plugin.describe()} returned {type(optimizer).__name__} for {spec.name!r}, "
            "not a torch.optim.Optimizer"
        )
    return optimizer
