"""optimhub: one front door to the memory-efficient PyTorch optimizers.

    import optimhub
    opt = optimhub.create_optimizer("adamw_torch", model, training_args)

Importing this package loads no backend, no transformers and no plugin: the catalog and
the plugins load on first use, the backends only when an optimizer is built.
"""

from __future__ import annotations

from .arguments import OptimizerArguments
from .build import Builder, BuildRequest, class_builder
from .catalog import spec_from_mapping
from .checkpoint import spec_of
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
    TargetModulesError,
    TargetModulesTypeError,
    UnknownOptimizerError,
)
from .factory import create_optimizer
from .hookspecs import hookimpl
from .listing import get_spec, list_optimizers
from .memory import estimate
from .param_groups import ParamGroupRule
from .registration import Register
from .schedules import SCHEDULE_NAMES, create_scheduler
from .spec import ArgSpec, Capability, OptimizerSpec
from .targets import explain_targets
from .training import TrainingDriver, drive
from .weight_decay_schedules import WeightDecayScheduler, create_weight_decay_scheduler

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
    "TargetModulesError",
    "TargetModulesTypeError",
    "TrainingDriver",
    "UnknownOptimizerError",
    "WeightDecayScheduler",
    "class_builder",
    "create_optimizer",
    "create_scheduler",
    "create_weight_decay_scheduler",
    "drive",
    "estimate",
    "explain_targets",
    "get_spec",
    "hookimpl",
    "list_optimizers",
    "spec_from_mapping",
    "spec_of",
]
