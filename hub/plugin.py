"""The one module a plugin imports: everything a backend adapter needs, and nothing else.

    from optimhub.plugin import BuildRequest, EstimateRequest, StateEstimate, hookimpl

    @hookimpl
    def optimhub_register_optimizers(register):
        register.builder("my_name", build_my_name, estimator=estimate_my_name)

A plugin (built-in or third-party) imports this module and no other part of ``optimhub``,
as an ``llm`` plugin imports only ``llm``: the core can then be reorganised freely behind
it, and a test walks every built-in plugin's imports to keep it so. What is here:

- the hook marker and the ``Register`` the hook receives;
- the builder contract (``BuildRequest`` in, optimizer out) and the estimator contract
  (``EstimateRequest`` in, ``StateEstimate`` out) with the byte helpers estimators use;
- the spec types, for plugins that declare their specs in Python;
- the errors a builder or estimator may raise (each names what was wrong and the fix);
- the helpers shared by several backends: low-rank projection groups and their byte rules,
  the weights_only-safe encoding of Python objects kept in optimizer state, and the
  version parser.
"""

from __future__ import annotations

from typing import Any

from .arguments import OptimizerArguments
from .build import Builder, BuildRequest, class_builder
from .errors import (
    BackendUnavailableError,
    BuildError,
    CapabilityError,
    CatalogError,
    CheckpointError,
    MissingBackendError,
    OptimArgsError,
    OptimArgsTypeError,
    OptimHubError,
    OptimHubWarning,
    TargetModulesError,
)
from .estimator import (
    EstimateRequest,
    Estimator,
    ParamShape,
    StateEstimate,
    blockwise_bytes,
    dense_bytes,
    dense_estimator,
    factored_elements,
)
from .hookspecs import hookimpl
from .lowrank import (
    RANK_KEY,
    estimate_groups,
    low_rank_grad_shape,
    low_rank_groups,
    low_rank_members,
    projection_side,
    svd_projector_bytes,
)
from .registration import Register
from .spec import UNSET, ArgSpec, Capability, OptimizerSpec
from .state_encoding import ObjectCodec, install_state_codec
from .versions import installed_version, version_tuple

__all__ = [
    "RANK_KEY",
    "UNSET",
    "ArgSpec",
    "BackendUnavailableError",
    "BuildError",
    "BuildRequest",
    "Builder",
    "Capability",
    "CapabilityError",
    "CatalogError",
    "CheckpointError",
    "EstimateRequest",
    "Estimator",
    "MissingBackendError",
    "ObjectCodec",
    "OptimArgsError",
    "OptimArgsTypeError",
    "OptimHubError",
    "OptimHubWarning",
    "OptimizerArguments",
    "OptimizerSpec",
    "ParamShape",
    "Register",
    "StateEstimate",
    "TargetModulesError",
    "blockwise_bytes",
    "class_builder",
    "dense_bytes",
    "dense_estimator",
    "estimate_groups",
    "factored_elements",
    "hookimpl",
    "install_state_codec",
    "installed_version",
    "low_rank_grad_shape",
    "low_rank_groups",
    "low_rank_members",
    "projection_side",
    "state_bytes",
    "svd_projector_bytes",
    "version_tuple",
]


def state_bytes(optimizer: Any) -> int:
    """The bytes of state ``optimizer`` holds, measured as the conformance suite, the
    benchmarks and the estimate tests measure it (:func:`optimhub.testing.state_bytes`:
    objects in the state walked, each storage counted whole, 0-d tensors left out). For an
    estimator that probes a real optimizer. Imports torch when called."""
    from .state_size import state_bytes as measure

    return measure(optimizer)
