"""A routed call, checked and planned before anything is built: which route takes which
parameter, and each route's call prepared as ``create_optimizer`` prepares one.

``create_optimizer``, ``estimate`` and ``explain`` all plan with :func:`plan_routes`, so a
route set is refused (or explained) exactly as it would be built. The rules:

- Every trainable parameter is taken by the first route whose selector matches it; a
  parameter no route takes is an error that lists it (unless the last route is ``*``), and
  so is a route that takes nothing (torchtitan's exactly-once rule).
- A route inherits the top-level arguments (learning rate, weight decay, betas, eps,
  weight_decay_policy, layer_decay, layerwise...) and overrides what it gives;
  ``lr_scale`` multiplies the learning rate it would get. Top-level ``optim_args`` are a
  routed preset's options (``muon``'s ``momentum``...); for a route set they are refused
  (each route has its own). Top-level ``optim_target_modules`` go to the routes whose
  optimizer uses them; such a route without any targets its own Linear weights.
- Each route is then prepared like a plain call on its share of the model (same checks,
  same errors, prefixed with the route), and must be able to take what it was given: a
  ``matrix_only`` optimizer takes no vector and no stacked expert weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .arguments import OptimizerArguments, resolve_arguments
from .errors import (
    MissingBackendError,
    OptimArgsError,
    OptimHubError,
    RoutingError,
    TargetModulesError,
    UnknownOptimizerError,
    shorten,
)
from .optim_args import resolve_optim_args
from .param_groups import parse_rules
from .parameter_source import ParameterSource
from .plugin_host import get_registry
from .prepare import HYPERPARAMETER_FIELDS, Prepared, prepare
from .roles import ParameterRole, Role, parameter_roles
from .route_text import is_route_text
from .routing import Route, RouteSet
from .spec import Capability, OptimizerSpec, RouteTemplate

__all__ = ["PlannedRoute", "RoutingPlan", "is_routed", "plan_routes", "spec_for"]

#: Capabilities a route gives the whole routed optimizer: what the training loop, the
#: schedulers and the distributed checks must honour for it.
_INHERITED_CAPABILITIES = (Capability.SCHEDULE_FREE, Capability.NO_DDP, Capability.CUDA_ONLY,
                           Capability.NO_DCP)
#: What a matrix-only optimizer may be given: weight matrices and (flattened) conv kernels.
_MATRIX_ROLES = frozenset({Role.MATRIX, Role.CONV, Role.HEAD, Role.EMBEDDING})
_SHOWN = 6


@dataclass(frozen=True)
class PlannedRoute:
    """One route, ready to build: its label, the route, the parameters it takes (model
    order) and its call prepared as ``create_optimizer`` prepares one."""

    label: str
    route: Route
    names: tuple[str, ...]
    prepared: Prepared

    @property
    def spec(self) -> OptimizerSpec:
        return self.prepared.spec


@dataclass(frozen=True)
class RoutingPlan:
    """A checked routed call: the spec ``optimhub.spec_of`` will answer, the route set,
    every trainable parameter's role, and the planned routes."""

    spec: OptimizerSpec
    route_set: RouteSet
    roles: Mapping[str, ParameterRole]
    routes: tuple[PlannedRoute, ...]
    arguments: OptimizerArguments
    source: ParameterSource

    def route_of(self, name: str) -> PlannedRoute:
        return next(r for r in self.routes if name in r.names)


def is_routed(name: Any) -> bool:
    """Whether ``name`` asks for a routed optimizer: a route set (text, a ``RouteSet`` or
    a list of ``Route``) or a routed catalog name (``muon``)."""
    if isinstance(name, RouteSet) or is_route_text(name):
        return True
    if isinstance(name, (list, tuple)) and name and all(isinstance(r, Route) for r in name):
        return True
    return isinstance(name, str) and get_registry().get(name).spec.routed


def plan_routes(name: Any, model: Any, args: Any, overrides: Mapping[str, Any], *,
                build: bool) -> RoutingPlan:
    """Resolve and check a routed call; ``build`` adds what building needs (the routes'
    backends installed, parameters with data). Nothing is imported or touched beyond what
    ``prepare`` does for one call."""
    top = resolve_arguments(args, overrides)
    route_set, spec = _route_set(name, top)
    top = dataclasses.replace(top, optim_args=None)
    source = ParameterSource.from_user(model)
    if source.user_groups is not None:
        raise RoutingError(
            "a routed optimizer selects parameters by role and name from the model: pass the "
            "model (or (name, parameter) pairs), not param-group dicts"
        )
    if source.module is None:
        guessed = [label for label, route in route_set if route.select.needs_model]
        if guessed:
            raise RoutingError(
                f"route(s) {', '.join(map(repr, guessed))} select by role or module type, "
                "which are read from the model (an embedding and a head are 2-D like any "
                "matrix): pass the nn.Module, not its parameters, or select by 're:' name "
                "patterns"
            )
    trainable = [(n, p) for n, p in source.named if p.requires_grad]
    roles = parameter_roles(source.module, trainable, source.walk)
    claims = _assign(route_set, roles)
    _check_rules_match_somewhere(top, roles)
    _check_targets_used(route_set, top)
    _check_hyperparameters_used(route_set, top)
    planned = tuple(
        _plan_route(label, route, claims[label], roles, top, source, spec, build=build)
        for label, route in route_set
    )
    return RoutingPlan(_routed_spec(spec, route_set, top), route_set, roles, planned,
                       top, source)


def spec_for(name: Any, args: Any = None, **overrides: Any) -> OptimizerSpec:
    """The spec ``optimhub.spec_of`` will answer for ``create_optimizer(name, ...)``, before
    building and without a model: a plain name's spec, a preset's (with the capabilities
    its options give it: a schedule-free fallback...), or a route set's. What a loop must
    do (schedule-free modes, no clipping for layerwise routes) can be checked on it."""
    if not is_routed(name):
        return get_registry().get(name).spec
    top = resolve_arguments(args, overrides)
    route_set, spec = _route_set(name, top)
    return _routed_spec(spec, route_set, top)


# ---- which route set ---------------------------------------------------------------------
def _route_set(name: Any, top: OptimizerArguments) -> tuple[RouteSet, OptimizerSpec | None]:
    """The route set asked for, and the routed catalog spec when it is a preset."""
    if isinstance(name, str) and not is_route_text(name):
        spec = get_registry().get(name).spec
        options = resolve_optim_args(spec, top.optim_args)
        return RouteSet.from_spec(spec, options), spec
    if top.optim_args not in (None, "", {}):
        raise RoutingError(
            f"optim_args={shorten(repr(top.optim_args))} were given for a route set, but each "
            "route has its own optimizer: put them in the route, e.g. "
            "'matrix -> muon_torch(momentum=0.9); * -> adamw_torch'"
        )
    return RouteSet.of(name), None


# ---- exactly once ------------------------------------------------------------------------
def _assign(route_set: RouteSet, roles: Mapping[str, ParameterRole]) -> dict[str, list[str]]:
    """The first matching route takes each parameter; everything taken, every route used."""
    claims: dict[str, list[str]] = {label: [] for label in route_set.labels}
    unclaimed: list[ParameterRole] = []
    selectors = [(claims[label], route.select) for label, route in route_set]
    for entry in roles.values():  # per parameter: loops, not a generator per entry
        for taken, select in selectors:
            if select.matches(entry):
                taken.append(entry.name)
                break
        else:
            unclaimed.append(entry)
    if not roles:
        raise RoutingError("the model has no trainable parameters to route")
    if unclaimed:
        shown = "; ".join(f"{e.name} ({e.role.value}, {list(e.shape)})"
                          for e in unclaimed[:_SHOWN])
        more = f" and {len(unclaimed) - _SHOWN} more" if len(unclaimed) > _SHOWN else ""
        raise RoutingError(
            f"{len(unclaimed)} trainable parameter(s) are taken by no route: {shown}{more}. "
            "Every parameter must be taken exactly once: add a route for them, or end the "
            "route set with a catch-all, e.g. '* -> adamw_torch'"
        )
    empty = [label for label, names in claims.items() if not names]
    if empty:
        raise RoutingError("; ".join(_why_empty(route_set, label, roles) for label in empty)
                           + ". Every route must take at least one parameter: remove it or "
                           "change its selector")
    return claims


def _why_empty(route_set: RouteSet, label: str, roles: Mapping[str, ParameterRole]) -> str:
    index = route_set.labels.index(label)
    route = route_set.routes[index]
    selected = [e for e in roles.values() if route.select.matches(e)]
    where = f"route #{index} {label!r} ({route.select} -> {route.optimizer}) takes nothing"
    if not selected:
        present = sorted({e.role.value for e in roles.values()})
        return f"{where}: it selects no trainable parameter (roles here: {', '.join(present)})"
    takers = sorted({route_set.labels[i] for i, r in enumerate(route_set.routes[:index])
                     if any(r.select.matches(e) for e in selected)})
    return (f"{where}: the {len(selected)} parameter(s) it selects were all taken first by "
            f"{', '.join(map(repr, takers))} (the first matching route wins)")


def _check_rules_match_somewhere(top: OptimizerArguments,
                                 roles: Mapping[str, ParameterRole]) -> None:
    """Top-level param_group_rules apply to every route; each must match some parameter."""
    for index, rule in enumerate(parse_rules(top.param_group_rules)):
        if not any(rule.matches(name) for name in roles):
            raise RoutingError(
                f"param group rule #{index} {rule.describe()} matches no trainable parameter "
                f"(names such as {', '.join(repr(n) for n in list(roles)[:4])})"
            )


def _check_hyperparameters_used(route_set: RouteSet, top: OptimizerArguments) -> None:
    """An explicit top-level lr / betas / eps that no route's optimizer takes would be
    silently ignored: an error, as it is for a plain name."""
    for hyperparameter, fields in HYPERPARAMETER_FIELDS.items():
        given = [f for f in fields if f in (top.explicit or ())]
        if given and not any(r.spec.has_hyperparameter(hyperparameter)
                             for r in route_set.routes):
            raise OptimArgsError(
                f"{', '.join(given)} was given, but no route's optimizer takes "
                f"{hyperparameter}; remove it (it would be silently ignored otherwise)"
            )


def _check_targets_used(route_set: RouteSet, top: OptimizerArguments) -> None:
    if top.optim_target_modules in (None, [], ()):
        return
    if not any(r.spec.has(Capability.TARGET_MODULES) for r in route_set.routes):
        users = [e.spec.name for e in get_registry() if e.spec.has(Capability.TARGET_MODULES)]
        raise TargetModulesError(
            f"optim_target_modules={top.optim_target_modules!r} was given, but no route's "
            f"optimizer uses target modules (low-rank optimizers such as "
            f"{', '.join(users[:3])} do); remove it"
        )


# ---- one route ---------------------------------------------------------------------------
def _plan_route(label: str, route: Route, names: Sequence[str],
                roles: Mapping[str, ParameterRole], top: OptimizerArguments,
                source: ParameterSource, preset: OptimizerSpec | None, *,
                build: bool) -> PlannedRoute:
    where = f"route {label!r} ({route.select} -> {route.optimizer})"
    try:
        _check_takes(route, names, roles, where)
        share = source.restricted(names)
        arguments = _route_arguments(route, top, share, names)
        prepared = prepare(route.optimizer, share, arguments, {}, build=build)
        if prepared.spec.has(Capability.TARGET_MODULES) and not prepared.target_names:
            raise RoutingError(
                f"optim_target_modules={arguments.optim_target_modules!r} selects none of the "
                "Linear weights this route takes, so its low-rank update would apply to nothing"
            )
    except UnknownOptimizerError:
        raise
    except OptimHubError as exc:
        raise _in_route(exc, where, preset) from exc
    return PlannedRoute(label, route, tuple(names), prepared)


def _check_takes(route: Route, names: Sequence[str], roles: Mapping[str, ParameterRole],
                 where: str) -> None:
    """A matrix-only optimizer (the Muon family) takes weight matrices and conv kernels
    only: a vector has no orthogonalisation, and a stack of expert matrices would be
    flattened into one matrix across the experts."""
    if not route.spec.has(Capability.MATRIX_ONLY):
        return
    wrong = [roles[n] for n in names if roles[n].role not in _MATRIX_ROLES]
    if wrong:
        shown = "; ".join(f"{e.name} ({e.role.value}, {list(e.shape)})" for e in wrong[:_SHOWN])
        raise RoutingError(
            f"it sends {len(wrong)} parameter(s) that are not weight matrices to "
            f"{route.optimizer!r}, which updates only matrices (capability "
            f"'{Capability.MATRIX_ONLY.value}'): {shown}. Narrow the selector (e.g. "
            "'matrix, conv') and let a later route (e.g. '* -> adamw_torch') take the rest"
        )


def _route_arguments(route: Route, top: OptimizerArguments, share: ParameterSource,
                     names: Sequence[str]) -> OptimizerArguments:
    """The top-level arguments with the route's own over them."""
    given = dict(route.arguments)
    scale = given.pop("lr_scale", None)
    if scale is not None:
        given["learning_rate"] = top.learning_rate * scale
    spec = route.spec
    wants_targets = spec.has(Capability.TARGET_MODULES)
    if "optim_target_modules" in given:
        given["optim_target_modules"] = _patterns(given["optim_target_modules"])
    elif not wants_targets:
        given["optim_target_modules"] = None
    elif top.optim_target_modules in (None, [], ()):
        given["optim_target_modules"] = _own_linear_modules(share, names)
    if top.param_group_rules and "param_group_rules" not in given:
        rules = parse_rules(top.param_group_rules)
        given["param_group_rules"] = [r for r in rules if any(r.matches(n) for n in names)]
    given["optim_args"] = dict(route.options)
    arguments = resolve_arguments(top, given)
    # A top-level lr / betas / eps reaches every route: one this route's optimizer does not
    # take is the other routes' (_check_hyperparameters_used refuses one no route takes).
    inherited = {f for fields in HYPERPARAMETER_FIELDS.values() for f in fields} - given.keys()
    object.__setattr__(arguments, "explicit", (arguments.explicit or frozenset()) - inherited)
    return arguments


def _patterns(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _own_linear_modules(share: ParameterSource, names: Sequence[str]) -> list[str]:
    """A target-modules route without patterns targets the Linear weights it takes.

    As patterns: the distinct last parts of their module names (``q_proj``, ...), which
    HF's list mode matches inside every longer name. Every Linear the route takes is
    matched; whatever else they match is outside the route (dropped after selection) or
    not a Linear. One exact name per layer would select the same weights, but selection
    tries every module against every pattern: quadratic in the model's depth."""
    module = share.module
    if module is None:
        return []
    modules = dict(share.named_modules if share.named_modules is not None
                   else module.named_modules())
    owners = [n.rpartition(".")[0] for n in names if n.endswith(".weight")]
    linear = [o for o in owners if isinstance(modules.get(o), nn.Linear)]
    if not linear:
        raise RoutingError(
            "its optimizer projects the weights of nn.Linear layers (target modules), but "
            "this route takes none; select Linear weights (e.g. 'matrix') or give "
            "optim_target_modules"
        )
    return list(dict.fromkeys(o.rpartition(".")[2] for o in linear))


def _in_route(exc: OptimHubError, where: str, preset: OptimizerSpec | None
              ) -> OptimHubError:
    """The same error, saying which route it is about (and, for a missing backend of a
    preset, the install command of the whole preset)."""
    message = f"{where}: {exc}"
    if isinstance(exc, MissingBackendError) and preset is not None:
        message += f" (everything {preset.name!r} needs: {preset.install_command})"
    try:
        return type(exc)(message)
    except TypeError:  # an error class with its own constructor: keep it as it is
        return exc


# ---- what spec_of answers ----------------------------------------------------------------
def _routed_spec(preset: OptimizerSpec | None, route_set: RouteSet,
                 top: OptimizerArguments) -> OptimizerSpec:
    """The catalog spec of a preset built as declared; otherwise a spec that states the
    routes as built and the capabilities the loop must honour (schedule-free, layerwise,
    no DDP...)."""
    specs = [route.spec for route in route_set.routes]
    capabilities = {c for s in specs for c in _INHERITED_CAPABILITIES if s.has(c)}
    if any(route.spec.runs_layerwise(bool(route.arguments.get("layerwise", top.layerwise)))
           for route in route_set.routes):
        capabilities.add(Capability.LAYERWISE)
    templates = tuple(RouteTemplate(label, route.select.terms, route.optimizer)
                      for label, route in route_set)
    if preset is not None:
        if templates == preset.routes and capabilities <= preset.capabilities:
            return preset
        return dataclasses.replace(preset, routes=templates,
                                   capabilities=preset.capabilities | capabilities)
    text = route_set.to_text()
    return OptimizerSpec(
        name=text,
        summary=f"routed: {text}",
        plugin="routing",
        distribution="torch",
        import_name="torch",
        capabilities=frozenset(capabilities),
        routes=templates,
    )
