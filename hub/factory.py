"""``create_optimizer``: name -> checked call -> build request -> the plugin builds.

Every check runs before the backend is imported or a tensor is touched (``prepare``); then
the backend is imported and checked against the device, the param groups and constructor
keywords are assembled, and the plugin's builder is called, once or (layerwise) once per
parameter. What comes back is the backend's own optimizer object: the hub adds nothing to
the step path. The spec is remembered for ``optimhub.spec_of`` and the state is stamped for
checked checkpoints.

A routed name (``muon``) or a route set is planned first (``route_plan``: every route
prepared and checked), then each route is built the same way, and the route optimizers
become one ``RoutedOptimizer``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .assemble import build_request
from .backends import build_lock, ensure_usable
from .build import BuildRequest
from .checkpoint import remember
from .errors import BuildError, MissingBackendError, OptimHubError
from .layerwise import OWNED_PARAMETERS, LayerwiseOptimizer
from .prepare import Prepared, prepare
from .registration import RegisteredOptimizer
from .route_plan import is_routed, plan_routes
from .routed import build_routed

__all__ = ["create_optimizer"]


def create_optimizer(
    name: Any,
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

    ``name`` may also be a route set (``"matrix -> muon_torch; * -> adamw_torch"``, a
    ``RouteSet`` or a list of ``Route``): see docs/user-guide.md, Routing.

    Returns the backend's own optimizer (a ``RoutedOptimizer`` for a routed name);
    ``optimhub.spec_of(optimizer)`` gives its spec.
    """
    if is_routed(name):
        plan = plan_routes(name, model, args, overrides, build=True)
        for route in plan.routes:
            ensure_usable(route.spec)
        optimizer: torch.optim.Optimizer = build_routed(plan, _build_prepared)
        remember(optimizer, plan.spec, plan.source.named)
        return optimizer
    prepared = prepare(name, model, args, overrides, build=True)
    ensure_usable(prepared.spec)
    optimizer, _ = _build_prepared(prepared)
    remember(optimizer, prepared.spec, prepared.source.named)
    return optimizer


def _build_prepared(prepared: Prepared) -> tuple[torch.optim.Optimizer, BuildRequest]:
    """The param groups and keywords of a checked call, then the plugin's builder."""
    request = build_request(prepared)
    if not prepared.spec.updates_in_backward(prepared.layerwise):
        return _build(prepared.entry, request), request
    # It hooks the parameters to update them inside backward: checking that no other
    # optimizer does, building and claiming them is one atomic step across threads.
    trainable = [(n, p) for n, p in prepared.source.named if p.requires_grad]
    with OWNED_PARAMETERS.claiming(trainable) as claim:
        if prepared.layerwise:
            optimizer: torch.optim.Optimizer = _build_layerwise(prepared.entry, request)
        else:
            optimizer = _build(prepared.entry, request)
        claim(optimizer)
    return optimizer, request


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
    """Call the builder; whatever it raises that is not ours becomes our error, naming it."""
    spec = request.spec
    try:
        with build_lock():  # builders (and the constructors they call) import lazily
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
