"""optimhub: one front door to the memory-efficient PyTorch optimizers.

    import optimhub
    opt = optimhub.create_optimizer("adamw_torch", model, training_args)

Importing this package loads no backend, no transformers, no plugin and not even torch:
each public name is imported from its submodule on first use (PEP 562), the catalog and
the plugins load on first use, the backends only when an optimizer is built. So the
``optimhub`` command lists the catalog without paying torch's second of import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BackendUnavailableError,
    BuildError,
    CapabilityError,
    CatalogError,
    CheckpointError,
    EstimateUnavailableError,
    MissingBackendError,
    OptimArgsError,
    OptimArgsTypeError,
    OptimHubError,
    OptimHubWarning,
    PluginLoadError,
    RoutingError,
    TargetModulesError,
    TargetModulesTypeError,
    UnknownOptimizerError,
)

if TYPE_CHECKING:
    from .arguments import OptimizerArguments
    from .build import Builder, BuildRequest, class_builder
    from .catalog import spec_from_mapping
    from .checkpoint import spec_of
    from .explain import explain
    from .factory import create_optimizer
    from .hookspecs import hookimpl
    from .listing import get_spec, list_optimizers
    from .memory import estimate
    from .param_groups import ParamGroupRule
    from .registration import Register
    from .roles import Role, parameter_roles
    from .routed import RoutedOptimizer
    from .routing import Route, RouteSet
    from .schedules import SCHEDULE_NAMES, create_scheduler
    from .spec import ArgSpec, Capability, OptimizerSpec
    from .targets import explain_targets
    from .training import TrainingDriver, drive

#: Public name -> the submodule that defines it, imported on first access (PEP 562), so
#: ``import optimhub`` (and ``optimhub.cli``, which imports it as its package) pays for
#: none of them: most import torch.
_LAZY = {
    "OptimizerArguments": "arguments",
    "Builder": "build",
    "BuildRequest": "build",
    "class_builder": "build",
    "spec_from_mapping": "catalog",
    "spec_of": "checkpoint",
    "explain": "explain",
    "create_optimizer": "factory",
    "hookimpl": "hookspecs",
    "get_spec": "listing",
    "list_optimizers": "listing",
    "estimate": "memory",
    "ParamGroupRule": "param_groups",
    "Register": "registration",
    "Role": "roles",
    "parameter_roles": "roles",
    "RoutedOptimizer": "routed",
    "Route": "routing",
    "RouteSet": "routing",
    "SCHEDULE_NAMES": "schedules",
    "create_scheduler": "schedules",
    "ArgSpec": "spec",
    "Capability": "spec",
    "OptimizerSpec": "spec",
    "explain_targets": "targets",
    "TrainingDriver": "training",
    "drive": "training",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "SCHEDULE_NAMES",
    "ArgSpec",
    "BackendUnavailableError",
    "BuildError",
    "BuildRequest",
    "Builder",
    "Capability",
    "CapabilityError",
    "CatalogError",
    "CheckpointError",
    "EstimateUnavailableError",
    "MissingBackendError",
    "OptimArgsError",
    "OptimArgsTypeError",
    "OptimHubError",
    "OptimHubWarning",
    "OptimizerArguments",
    "OptimizerSpec",
    "ParamGroupRule",
    "PluginLoadError",
    "Register",
    "Role",
    "Route",
    "RouteSet",
    "RoutedOptimizer",
    "RoutingError",
    "TargetModulesError",
    "TargetModulesTypeError",
    "TrainingDriver",
    "UnknownOptimizerError",
    "class_builder",
    "create_optimizer",
    "create_scheduler",
    "drive",
    "estimate",
    "explain",
    "explain_targets",
    "get_spec",
    "hookimpl",
    "list_optimizers",
    "parameter_roles",
    "spec_from_mapping",
    "spec_of",
]
