"""Every check a call makes before anything is built, shared by ``create_optimizer`` and
``estimate``: one ``prepare()``, so an estimate is refused exactly when a build would be.

In order of cost: the name, whether the backend is installed (a file-system lookup, build
only), the arguments and typed ``optim_args``, the parameters (build only: an estimate may
describe a model on the meta device), and the spec's capability rules. Nothing here imports
a backend or touches a tensor's data.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from .arguments import OptimizerArguments, resolve_arguments
from .backends import import_backend, is_installed
from .errors import CapabilityError, OptimArgsError, TargetModulesError, shorten, shown
from .layerwise import OWNED_PARAMETERS
from .optim_args import resolve_optim_args
from .parameter_source import ParameterSource
from .plugin_host import get_registry
from .registration import RegisteredOptimizer
from .spec import Capability, OptimizerSpec
from .targets import select_targets

__all__ = [
    "HYPERPARAMETER_FIELDS",
    "Prepared",
    "check_layerwise_allowed",
    "prepare",
    "refuse_matrix_only_without_routes",
]


@dataclass(frozen=True)
class Prepared:
    """A checked call: the registered optimizer, the resolved arguments, the typed
    ``optim_args`` (defaults filled in) and the parameters."""

    entry: RegisteredOptimizer
    arguments: OptimizerArguments
    options: Mapping[str, Any]
    source: ParameterSource

    @property
    def spec(self) -> OptimizerSpec:
        return self.entry.spec

    @property
    def layerwise(self) -> bool:
        """One optimizer per parameter, stepped inside backward."""
        return self.spec.runs_layerwise(self.arguments.layerwise)

    @cached_property
    def target_names(self) -> tuple[str, ...]:
        """The parameters ``optim_target_modules`` selects (none for other specs)."""
        if not self.spec.has(Capability.TARGET_MODULES):
            return ()
        assert self.source.module is not None  # checked in _check_capabilities
        selected = select_targets(self.source.module, self.arguments.optim_target_modules,
                                  self.source.model_named, self.source.named_modules
                                  ).parameter_names
        if self.source.named is self.source.model_named:  # the whole model
            return selected
        given = {name for name, _ in self.source.named}  # a route's share of the model
        return tuple(name for name in selected if name in given)


def prepare(
    name: str, model: Any, args: Any, overrides: Mapping[str, Any], *, build: bool
) -> Prepared:
    """Resolve and check one call; ``build`` adds what only building needs (the backend
    installed, parameters with data)."""
    entry = get_registry().get(name)
    spec = entry.spec
    if build and not is_installed(spec):
        import_backend(spec)  # raises MissingBackendError with the install command
    arguments = resolve_arguments(args, overrides)
    options = resolve_optim_args(spec, arguments.optim_args)
    source = ParameterSource.from_user(model)
    if build:
        _check_parameters(spec, source, arguments)  # the leaves first, in the same pass
    else:
        _check_leaves(source)
    _check_capabilities(spec, source, arguments)
    refuse_matrix_only_without_routes(spec, source)
    return Prepared(entry, arguments, options, source)


def refuse_matrix_only_without_routes(spec: OptimizerSpec, source: ParameterSource) -> None:
    """A ``matrix_only`` optimizer (the Muon family) given parameters with fewer than two
    dimensions: they need a fallback optimizer, which only a routed form provides. Backends
    either raise deep inside, or (worse) treat a vector as a 1-row matrix."""
    if not spec.has(Capability.MATRIX_ONLY):
        return
    vectors = [(n, tuple(p.shape)) for n, p in source.named
               if p.requires_grad and len(p.shape) < 2]
    if vectors:
        shown = ", ".join(f"{n!r} {list(s)}" for n, s in vectors[:3])
        routed = f"matrix, conv -> {spec.name}; * -> adamw_torch"
        raise CapabilityError(
            f"optimizer {spec.name!r} updates only weight matrices (capability "
            f"'{Capability.MATRIX_ONLY.value}'), but {len(vectors)} trainable parameter(s) have "
            f"fewer than two dimensions, e.g. {shown}: they need a fallback optimizer. Use the "
            f"routed form, create_optimizer({routed!r}, model, ...), which sends the "
            "matrices to it and everything else to AdamW (see docs/user-guide.md, Routing)"
        )


def _check_leaves(source: ParameterSource) -> None:
    """Only a leaf tensor can be optimized: a computed one (``w * 2``, ``w[0]``) has no
    gradient of its own, and every backend refuses it with its own words (or, in layerwise
    mode, torch refuses to hook it)."""
    for name, param in source.named:
        if param.requires_grad and not param.is_leaf:
            made_by = type(param.grad_fn).__name__ if param.grad_fn is not None else "a view"
            raise OptimArgsError(
                f"parameter {shown(name)} (shape {list(param.shape)}) is not a leaf tensor: it was "
                f"computed from other tensors (grad_fn {made_by}, e.g. w * 2 or w[0]), so "
                "no optimizer can update it (its gradient flows to the tensors it came from). "
                "Pass the nn.Parameter it came from, or make a new leaf with "
                "t.detach().requires_grad_()."
            )


def _check_parameters(
    spec: OptimizerSpec, source: ParameterSource, arguments: OptimizerArguments
) -> None:
    """What no backend checks, yet every backend gets wrong, refused before building.

    One pass over the parameters (it runs per parameter: on 10k tensors every pass costs
    as much as the by-hand groups), gathering what each check needs; a tensor that is not
    a leaf is refused first, as ``_check_leaves`` would."""
    meta: list[str] = []
    first_of_dtype: dict[torch.dtype, str] = {}
    leaves = True
    for name, param in source.named:
        if not param.requires_grad:
            continue
        if not param.is_leaf:
            leaves = False
        if param.is_meta:
            meta.append(name)
        if param.dtype not in first_of_dtype:
            first_of_dtype[param.dtype] = name
    if not leaves:
        _check_leaves(source)  # raises, naming the first
    if meta:
        raise OptimArgsError(
            f"{len(meta)} trainable parameter(s) are on the meta device (no data), e.g. "
            f"{', '.join(shown(n) for n in meta[:3])}: an optimizer built on them steps "
            "nothing or fails inside the backend. Materialise the model first "
            "(model.to_empty(device=...) and load or initialise its weights)."
        )
    if len(OWNED_PARAMETERS):  # checked again, atomically, when claiming
        OWNED_PARAMETERS.refuse_owned((n, p) for n, p in source.named if p.requires_grad)
    if spec.has_hyperparameter("eps"):
        _check_eps_representable(arguments.adam_epsilon, first_of_dtype)


def _check_eps_representable(eps: float, first_of_dtype: dict[torch.dtype, str]) -> None:
    """An eps that rounds to 0 in a parameter's dtype (1e-8 in float16) gives 0/0 = NaN."""
    for dtype, name in first_of_dtype.items():
        if not dtype.is_floating_point:
            continue
        if torch.tensor(eps, dtype=dtype).item() == 0:
            smallest = torch.finfo(dtype).tiny
            raise OptimArgsError(
                f"adam_epsilon={eps!r} is 0 in {dtype} (parameter {shown(name)}), so Adam "
                f"divides 0 by 0 and the weights become NaN; use adam_epsilon >= "
                f"{smallest:.1e} (1e-6 or more is common for {dtype}), or train in "
                "bfloat16 / float32"
            )


def _check_capabilities(
    spec: OptimizerSpec, source: ParameterSource, arguments: OptimizerArguments
) -> None:
    """The spec's rules, checked before anything is imported or built."""
    if spec.has(Capability.NEEDS_MODEL) and source.module is None:
        raise CapabilityError(
            f"optimizer {spec.name!r} needs the model itself (it registers hooks on the "
            "module); pass the nn.Module, not its parameters"
        )
    if arguments.weight_decay and not spec.has_hyperparameter("weight_decay"):
        raise OptimArgsError(
            f"optimizer {spec.name!r} has no weight decay, but weight_decay="
            f"{arguments.weight_decay!r} was given; set weight_decay=0 for it (it would be "
            "silently ignored otherwise)"
        )
    _check_unusable_hyperparameters(spec, arguments)
    if spec.has(Capability.SINGLE_GROUP) and arguments.param_group_rules:
        raise OptimArgsError(
            f"optimizer {spec.name!r} applies one learning rate and one weight decay to every "
            "parameter (it takes the model, not param groups), so param_group_rules cannot "
            f"apply (got {shown(list(arguments.param_group_rules))}); remove them or choose an "
            "optimizer that takes param groups"
        )
    _check_layerwise_and_ddp(spec, source, arguments)
    _check_sharded_parameters(spec, source)
    wants_targets = spec.has(Capability.TARGET_MODULES)
    if wants_targets and source.module is None:
        raise CapabilityError(
            f"optimizer {spec.name!r} selects layers by module name (optim_target_modules); "
            "pass the nn.Module, not its parameters"
        )
    if not wants_targets and arguments.optim_target_modules not in (None, [], ()):
        users = ", ".join(s.name for s in _specs_with(Capability.TARGET_MODULES)[:4])
        raise TargetModulesError(
            f"optimizer {spec.name!r} does not use optim_target_modules "
            f"(got {shown(arguments.optim_target_modules)}); remove it, or choose an optimizer "
            f"that projects target layers (e.g. {users})"
        )
    _check_role_arguments(spec, source, arguments)
    if source.user_groups is not None and (wants_targets or arguments.param_group_rules):
        raise CapabilityError(
            f"param-group dicts were given for {spec.name!r} together with "
            "optim_target_modules or param_group_rules; pass the model instead and let the "
            "hub build the groups, or build every group yourself"
        )


def _check_role_arguments(
    spec: OptimizerSpec, source: ParameterSource, arguments: OptimizerArguments
) -> None:
    """weight_decay_policy and layer_decay read the model's structure: refuse them where
    they would be silently ignored."""
    if arguments.weight_decay_policy != "hf" and source.user_groups is not None:
        raise OptimArgsError(
            f"weight_decay_policy={arguments.weight_decay_policy!r} decides decay per "
            "parameter, but param-group dicts were given (their weight_decay is yours); pass "
            "the model instead, or set weight_decay in each group"
        )
    if arguments.layer_decay is not None and source.module is None:
        raise CapabilityError(
            f"layer_decay={arguments.layer_decay!r} needs the model (its stack of blocks "
            f"gives each parameter's depth); pass the nn.Module to {spec.name!r}, not its "
            "parameters"
        )
    if arguments.layer_decay is not None and not spec.has_hyperparameter("lr"):
        raise OptimArgsError(
            f"optimizer {spec.name!r} takes no learning rate, so layer_decay cannot scale it"
        )


#: The hyperparameters a spec may or may not take, and the argument fields that set them.
HYPERPARAMETER_FIELDS = {
    "lr": ("learning_rate",),
    "betas": ("adam_beta1", "adam_beta2"),
    "eps": ("adam_epsilon",),
}


def _check_unusable_hyperparameters(spec: OptimizerSpec, arguments: OptimizerArguments) -> None:
    """An explicit ``lr`` / ``betas`` / ``eps`` the optimizer does not take is an error (HF
    drops it silently). Values left at TrainingArguments' defaults are not explicit."""
    for hyperparameter, fields in HYPERPARAMETER_FIELDS.items():
        given = [f for f in fields if f in (arguments.explicit or ())]
        if not given or spec.has_hyperparameter(hyperparameter):
            continue
        if len(given) == len(fields) > 1:
            given_text = f"{hyperparameter}={tuple(getattr(arguments, f) for f in fields)!r}"
        else:
            given_text = ", ".join(f"{f}={getattr(arguments, f)!r}" for f in given)
        own = spec.args.get(hyperparameter)
        if own is not None and len(fields) == 1:
            hint = (f"; it takes its own {hyperparameter} through optim_args: "
                    f"optim_args='{own.name}={getattr(arguments, fields[0])!r}'")
        else:
            hint = f"; its options: `optimhub info {spec.name}`"
        raise OptimArgsError(
            f"optimizer {spec.name!r} takes no {hyperparameter}, but {shorten(given_text)} was "
            f"given; remove it (it would be silently ignored otherwise){hint}"
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
    spec: OptimizerSpec, source: ParameterSource, arguments: OptimizerArguments
) -> None:
    layerwise = spec.runs_layerwise(arguments.layerwise)
    check_layerwise_allowed(spec, arguments.layerwise)
    ddp = source.wrapper is not None
    if ddp and (layerwise or spec.has(Capability.NO_DDP)):
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot run under DistributedDataParallel"
            + (" in layerwise mode: DDP all-reduces gradients after backward, but layerwise "
               "steps consume them inside backward" if layerwise else "")
            + "; train in one process, or see docs/distributed.md for what works with which "
            "engine"
        )


def _check_sharded_parameters(spec: OptimizerSpec, source: ParameterSource) -> None:
    """A ``no_fsdp2`` optimizer given DTensor parameters (FSDP2's shards, or tensor
    parallelism): refused here, instead of failing at the first step or, worse, stepping
    each shard as if it were the whole tensor."""
    if not spec.has(Capability.NO_FSDP2):
        return
    sharded = _dtensor_parameters(source)
    if sharded:
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot step parameters sharded by FSDP2 (capability "
            f"'{Capability.NO_FSDP2.value}'): {len(sharded)} trainable parameter(s) are "
            f"DTensors, e.g. {shown(sharded[0])}, and measured under FSDP2 it fails or does "
            f"not match one process. {_engine_that_works(spec)}; docs/distributed.md has "
            "the measured matrix"
        )


def _engine_that_works(spec: OptimizerSpec) -> str:
    """What to use instead of FSDP2: DDP, which the matrix shows equal to one process,
    unless the spec cannot run under DDP either."""
    if spec.has(Capability.NO_DDP) or spec.updates_in_backward():
        return ("It cannot run under DistributedDataParallel (DDP) either: train it in one "
                "process, or use an optimizer without 'no_fsdp2'")
    return ("Use DistributedDataParallel (DDP) for it, which it matches bit for bit, or an "
            "optimizer without 'no_fsdp2'")


def _dtensor_parameters(source: ParameterSource) -> list[str]:
    """The names of trainable DTensor parameters. Without ``torch.distributed.tensor``
    imported there is no DTensor, so nothing is imported to find out."""
    module = sys.modules.get("torch.distributed.tensor")
    dtensor = getattr(module, "DTensor", None)
    if dtensor is None:
        return []
    return [n for n, p in source.named if p.requires_grad and isinstance(p, dtensor)]


def _specs_with(capability: Capability) -> list[OptimizerSpec]:
    return [e.spec for e in get_registry() if e.spec.has(capability)]


