"""One ``torch.optim.Optimizer`` made of the route optimizers: what a routed name builds.

``RoutedOptimizer`` owns one backend optimizer per route (Muon for the matrices, AdamW for
the rest) and behaves as one optimizer everywhere a loop, a scheduler or a Trainer looks:

- ``param_groups`` *are* the route optimizers' own group dicts (a live list, in route
  order), so a scheduler that sets ``group["lr"]`` sets it where the backend reads it, each
  route keeping its own base lr, and the HF Trainer logs the real learning rate;
- ``step(closure)`` evaluates the closure once, then steps every route optimizer (their
  parameters are disjoint, so the order cannot matter); ``zero_grad`` clears every route;
- ``state`` is a read-only view of the route optimizers' states;
- ``state_dict()`` is keyed by route label and, inside each route, by parameter name, and
  stamped like every hub optimizer; ``load_state_dict`` is strict: another route set, a
  parameter in another route, another optimizer on a route is a ``CheckpointError`` that
  names the difference, before anything is loaded. Plain data throughout, so
  ``torch.load(weights_only=True)`` reads it;
- ``train()`` / ``eval()`` reach the schedule-free routes (the others have no modes), and
  ``close()`` the layerwise ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .build import BuildRequest
from .checkpoint import check_state, spec_or_none, stamp_of, stamp_state
from .errors import CapabilityError, CheckpointError, OptimHubError
from .layerwise import InnerStates, LayerwiseOptimizer
from .spec import Capability, OptimizerSpec

__all__ = ["BuiltRoute", "RoutedOptimizer", "build_routed"]

#: The marker of a routed optimizer's state dict.
ROUTED_KEY = "routed"


@dataclass(frozen=True)
class BuiltRoute:
    """One route's optimizer: its label, the spec of its optimizer, the backend object and
    the parameters it steps with their names (pairs, so that a deep copy keeps them)."""

    label: str
    spec: OptimizerSpec
    optimizer: torch.optim.Optimizer
    named: tuple[tuple[torch.Tensor, str], ...]

    @property
    def names(self) -> dict[int, str]:
        """``id(parameter) -> name``."""
        return {id(p): n for p, n in self.named}

    def parameter_names(self) -> list[str]:
        """Names in the optimizer's own parameter order (what torch indexes state by)."""
        return [self.names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]


def build_routed(plan: Any, build_one: Callable[[Any], tuple[torch.optim.Optimizer,
                                                              BuildRequest]]
                 ) -> RoutedOptimizer:
    """Build every planned route (``build_one(prepared) -> (optimizer, request)``) into one
    ``RoutedOptimizer``. A failure half-way closes the layerwise routes already built, so
    the model is left without hooks."""
    built: list[BuiltRoute] = []
    try:
        for route in plan.routes:
            try:
                optimizer, request = build_one(route.prepared)
            except OptimHubError as exc:
                raise _in_route(exc, route) from exc
            named = tuple((p, n) for n, p in request.named_parameters().items())
            built.append(BuiltRoute(route.label, route.spec, optimizer, named))
    except BaseException:
        for route in built:
            if isinstance(route.optimizer, LayerwiseOptimizer):
                route.optimizer.close()
        raise
    return RoutedOptimizer(built, defaults={"lr": plan.arguments.learning_rate})


def _in_route(exc: OptimHubError, route: Any) -> OptimHubError:
    """The builder's error, saying which route it is about."""
    try:
        return type(exc)(f"route {route.label!r} ({route.route.select} -> "
                         f"{route.spec.name}): {exc}")
    except TypeError:  # an error class with its own constructor: keep it as it is
        return exc


class RoutedOptimizer(torch.optim.Optimizer):
    """The route optimizers as one optimizer (see the module docstring).

    ``routes`` maps each label to its backend optimizer; ``route_of(parameter)`` says which
    route steps a parameter.
    """

    #: Its state_dict / load_state_dict stamp and check the state themselves.
    checks_optimhub_stamp = True

    def __init__(self, routes: Sequence[BuiltRoute], defaults: Mapping[str, Any]) -> None:
        if not routes:
            raise CapabilityError("a routed optimizer needs at least one route")
        self._routes = tuple(routes)
        self._ready = False
        self._owner = self._owners()
        # torch's constructor sets up the hook tables; the groups and state stay the routes'.
        super().__init__([p for r in self._routes for g in r.optimizer.param_groups
                          for p in g["params"]], dict(defaults))
        self._ready = True

    # ---- what torch's base class reads and writes --------------------------------------
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        """The route optimizers' own group dicts, in route order (a new list each time;
        the dicts are the live ones)."""
        return [g for route in self._routes for g in route.optimizer.param_groups]

    @param_groups.setter
    def param_groups(self, value: Any) -> None:
        if getattr(self, "_ready", True):
            raise CapabilityError(
                "the param_groups of a routed optimizer are its routes' own groups; change "
                "a group's values in place (group['lr'] = ...), not the list"
            )

    @property  # type: ignore[override]
    def state(self) -> InnerStates:
        """A read-only view of the routes' states, by parameter."""
        return InnerStates(self._route_optimizer_of, lambda: (r.optimizer for r in self._routes))

    def _route_optimizer_of(self, parameter: object) -> torch.optim.Optimizer | None:
        route = self._owner.get(id(parameter))
        return None if route is None else route.optimizer

    @state.setter
    def state(self, value: Any) -> None:
        if getattr(self, "_ready", True):
            raise CapabilityError("the state of a routed optimizer is its routes' state")

    def _owners(self) -> dict[int, BuiltRoute]:
        return {id(p): route for route in self._routes for p, _ in route.named}

    def __getstate__(self) -> dict[str, Any]:  # type: ignore[override]
        """Everything it holds (torch's version keeps only its own groups and state)."""
        return {k: v for k, v in self.__dict__.items() if k != "_owner"}

    def __setstate__(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.__dict__.update(state)
        self._owner = self._owners()  # a copy's parameters are other objects

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self._ready:
            raise CapabilityError(
                "a routed optimizer cannot take a new param group: each parameter belongs to "
                "one route, chosen when it was built. Build it again for the new parameters"
            )

    # ---- the loop ----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Evaluate ``closure`` once (with gradients), then step every route."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for route in self._routes:
            route.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for route in self._routes:
            route.optimizer.zero_grad(set_to_none=set_to_none)

    def train(self) -> None:
        """Schedule-free routes: the training weights (the others have no modes)."""
        for route in self._schedule_free():
            route.optimizer.train()  # type: ignore[attr-defined]

    def eval(self) -> None:
        """Schedule-free routes: the averaged weights, for evaluating and saving."""
        for route in self._schedule_free():
            route.optimizer.eval()  # type: ignore[attr-defined]

    def _schedule_free(self) -> list[BuiltRoute]:
        return [r for r in self._routes if r.spec.has(Capability.SCHEDULE_FREE)]

    def close(self) -> None:
        """Remove the backward hooks of the layerwise routes."""
        for route in self._routes:
            if isinstance(route.optimizer, LayerwiseOptimizer):
                route.optimizer.close()

    @property
    def closed(self) -> bool:
        return all(r.optimizer.closed for r in self._routes
                   if isinstance(r.optimizer, LayerwiseOptimizer))

    # ---- what it is made of ------------------------------------------------------------
    @property
    def routes(self) -> dict[str, torch.optim.Optimizer]:
        """Each route's label and its backend optimizer."""
        return {r.label: r.optimizer for r in self._routes}

    @property
    def group_routes(self) -> list[str]:
        """The route label of each entry of ``param_groups``."""
        return [r.label for r in self._routes for _ in r.optimizer.param_groups]

    def route_of(self, parameter: torch.Tensor) -> str:
        """The label of the route that steps ``parameter``."""
        route = self._owner.get(id(parameter))
        if route is None:
            raise KeyError("this tensor is not a parameter of this optimizer")
        return route.label

    def __iter__(self) -> Iterator[tuple[str, torch.optim.Optimizer]]:
        return iter(self.routes.items())

    def __repr__(self) -> str:
        parts = [f"{r.label}: {type(r.optimizer).__name__} ({len(r.named)} tensors)"
                 for r in self._routes]
        return f"RoutedOptimizer({'; '.join(parts)})"

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"routed": True, "routes": {label: {"optimizer", "params", "state"}}}`` plus
        the hub's stamp; each route's state keyed by parameter name."""
        routes = {}
        for route in self._routes:
            names = route.parameter_names()
            routes[route.label] = {
                "optimizer": route.spec.name,
                "params": names,
                "state": _by_name(route.optimizer.state_dict(), names),
            }
        return stamp_state(self, {ROUTED_KEY: True, "routes": routes})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Strict: the same routes, optimizers and parameters, or a ``CheckpointError``
        naming what differs, raised before any route is loaded."""
        if not isinstance(state_dict, Mapping) or state_dict.get(ROUTED_KEY) is not True:
            stamp = stamp_of(state_dict) if isinstance(state_dict, Mapping) else None
            saved = f" (it was saved by {stamp['name']!r})" if stamp else ""
            raise CheckpointError(
                f"this is a routed optimizer ({self._describe()}), but the state was not saved "
                f"by one{saved}; load it into the optimizer that saved it"
            )
        saved_routes = state_dict.get("routes")
        if not isinstance(saved_routes, Mapping):
            raise CheckpointError("a routed state dict without its 'routes' table")
        _compare_routes(saved_routes, self._routes)
        check_state(self, state_dict, ordered=False)  # name, parameter names and shapes
        for route in self._routes:
            names = route.parameter_names()
            route.optimizer.load_state_dict(_by_position(saved_routes[route.label]["state"],
                                                         names))

    def _describe(self) -> str:
        spec = spec_or_none(self)
        return repr(spec.name) if spec is not None else ", ".join(r.label for r in self._routes)


# ---- state by name -----------------------------------------------------------------------
def _is_positional(state: Any) -> bool:
    """torch's layout: ``state`` by int index, ``param_groups`` listing int indices."""
    return (isinstance(state, Mapping) and isinstance(state.get("state"), Mapping)
            and isinstance(state.get("param_groups"), list)
            and all(isinstance(k, int) for k in state["state"])
            and all(isinstance(g, Mapping) and all(isinstance(i, int) for i in g.get("params", ()))
                    for g in state["param_groups"]))


def _by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """torch's positional state dict with parameter names for indices (other layouts, such
    as the layerwise optimizer's, are already keyed by name and kept as they are)."""
    if not _is_positional(state):
        return state
    return {
        **state,
        "state": {names[index]: value for index, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                         for g in state["param_groups"]],
    }


def _by_position(state: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of ``_by_name`` for this optimizer's current parameter order."""
    groups = state.get("param_groups") if isinstance(state, Mapping) else None
    named = (isinstance(groups, list) and all(isinstance(g, Mapping) for g in groups)
             and all(isinstance(n, str) for g in groups for n in g.get("params", ())))
    if not named or not isinstance(state.get("state"), Mapping):
        return dict(state)
    index = {name: i for i, name in enumerate(names)}
    try:
        return {
            **state,
            "state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in groups],
        }
    except KeyError as exc:
        raise CheckpointError(f"the saved state names parameter {exc.args[0]!r}, which this "
                              "route does not step") from None


def _compare_routes(saved: Mapping[str, Any], routes: Sequence[BuiltRoute]) -> None:
    """A sentence per difference between the saved routes and these; raised together."""
    here = {r.label: r for r in routes}
    problems: list[str] = []
    missing = [label for label in here if label not in saved]
    unexpected = [label for label in saved if label not in here]
    if missing or unexpected:
        problems.append(f"routes saved {sorted(saved)}, here {sorted(here)}")
    for label, route in here.items():
        entry = saved.get(label)
        if not isinstance(entry, Mapping):
            continue
        if entry.get("optimizer") != route.spec.name:
            problems.append(f"route {label!r} was stepped by {entry.get('optimizer')!r}, "
                            f"here by {route.spec.name!r}")
        saved_names = set(entry.get("params") or ())
        own = set(route.parameter_names())
        if saved_names != own:
            gone = sorted(own - saved_names)
            extra = sorted(saved_names - own)
            problems.append(
                f"route {label!r} took other parameters: here not saved {_few(gone)}, "
                f"saved not here {_few(extra)}"
            )
    if problems:
        raise CheckpointError(
            "this routed optimizer state was saved for another route set: "
            + "; ".join(problems)
            + ". Build the optimizer with the routes it was saved with to resume it"
        )


def _few(names: list[str], limit: int = 4) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{', '.join(names[:limit])}]{more}"
