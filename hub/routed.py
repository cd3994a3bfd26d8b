"""One ``torch.optim.Optimizer`` made of the route optimizers: what a routed name builds.

``RoutedOptimizer`` owns one backend optimizer per route (Muon for the matrices, AdamW for
the rest) and behaves as one optimizer everywhere a loop, a scheduler or a Trainer looks:

- ``param_groups`` *are* the route optimizers' own group dicts (a live list, in route
  order), so a scheduler that sets ``group["lr"]`` sets it where the backend reads it, each
  route keeping its own base lr, and the HF Trainer logs the real learning rate;
- ``step(closure)`` evaluates the closure once, then steps every route optimizer (their
  parameters are disjoint, so the order cannot matter); ``zero_grad`` clears every route;
- ``state`` is a read-only view of the route optimizers' states;
- ``state_dict()`` has torch's layout over all routes (``state`` by the parameter's
  position in ``param_groups``, which is route order), so ``torch.distributed.checkpoint``
  rekeys, primes and loads it as any optimizer's; the ``routed`` marker and the
  ``routes`` table (each route's optimizer, parameter names, group count and the extra
  keys of its own state dict) ride along, stamped like every hub optimizer.
  ``load_state_dict`` takes that, DCP's markerless version of it (split by the routes'
  group and parameter counts) and the earlier layout (state by route, then by parameter
  name); it is strict: another route set, a parameter in another route, another optimizer
  on a route is a ``CheckpointError`` that names the difference, before anything is
  loaded. Plain data throughout, so ``torch.load(weights_only=True)`` reads it;
- ``train()`` / ``eval()`` reach the schedule-free routes (the others have no modes), and
  ``close()`` the layerwise ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .build import BuildRequest
from .checkpoint import (
    STAMP_KEY,
    check_listed,
    check_state,
    spec_or_none,
    stamp_of,
    stamp_state,
    torch_layout_parts,
)
from .errors import CapabilityError, CheckpointError, OptimHubError, shorten
from .layerwise import LAYERWISE_KEY, InnerStates, LayerwiseOptimizer
from .spec import Capability, OptimizerSpec

__all__ = ["BuiltRoute", "RoutedOptimizer", "build_routed", "check_routes", "routes_table"]

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
        """torch's layout over all routes, so that DCP's ``get_state_dict`` (which rekeys
        ``state`` by parameter name through ``param_groups`` order) takes it as any
        optimizer's: ``state`` by the parameter's position in ``self.param_groups`` (route
        order), ``param_groups`` every route's groups listing positions. Plus the ``routed``
        marker, the ``routes`` table (per label: optimizer name, parameter names, number of
        groups and the ``extras`` of the route's own state dict, such as a layerwise route's
        marker) and the hub's stamp. A route whose own state dict is not torch's layout is
        a ``CapabilityError`` naming it (its state could not be placed by position)."""
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        table: dict[str, Any] = {}
        count = 0  # positions given so far
        for route in self._routes:
            own = route.optimizer.state_dict()
            problem = _layout_problem(own)
            if problem:
                raise CapabilityError(
                    f"route {route.label!r} ({route.spec.name}, {type(route.optimizer).__name__})"
                    f": its state dict {problem}, and a routed optimizer saves its routes' "
                    "states in torch's layout ('state' by the positions its 'param_groups' "
                    "list). Route those parameters to another optimizer, or save that "
                    "optimizer's own state_dict() apart"
                )
            position: dict[Any, int] = {}
            for group in own["param_groups"]:
                entry = {k: v for k, v in group.items() if k != "params"}
                entry["params"] = []
                for key in group["params"]:
                    position[key] = count
                    entry["params"].append(count)
                    count += 1
                groups.append(entry)
            state.update({position[key]: value for key, value in own["state"].items()})
            table[route.label] = {
                "optimizer": route.spec.name,
                "params": route.parameter_names(),
                "groups": len(own["param_groups"]),
                "extras": _extras(own),
            }
        return stamp_state(self, {"state": state, "param_groups": groups, ROUTED_KEY: True,
                                  "routes": table})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Load what :meth:`state_dict` writes, what DCP's ``set_state_dict`` hands over
        (the same without the marker, the table and the stamp, keyed by parameter name:
        split by the routes' group and parameter counts) or the earlier routed layout
        (``routes`` with each route's state by parameter name). Strict: another route
        set, optimizer on a route, parameter in a route, group or parameter count is a
        ``CheckpointError`` naming the difference, raised before any route is loaded."""
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(
                f"an optimizer state must be a dict (what optimizer.state_dict() returns), "
                f"got {type(state_dict).__name__}"
            )
        marked = state_dict.get(ROUTED_KEY) is True
        if not marked and not _from_dcp(state_dict):
            stamp = stamp_of(state_dict)
            saved = f" (it was saved by {stamp['name']!r})" if stamp else ""
            raise CheckpointError(
                f"this is a routed optimizer ({self._describe()}), but the state was not saved "
                f"by one{saved}; load it into the optimizer that saved it"
            )
        saved_routes: Mapping[str, Any] | None = None
        if marked:
            saved_routes = state_dict.get("routes")
            if not isinstance(saved_routes, Mapping):
                raise CheckpointError("a routed state dict without its 'routes' table")
            _compare_routes(saved_routes, self._routes)
            if "state" not in state_dict and "param_groups" not in state_dict:
                self._load_earlier_layout(state_dict, saved_routes)
                return
        # torch's layout is positional: the stamp's parameters must be in this order
        checked = check_state(self, state_dict, ordered=True)
        loads = self._split(checked, saved_routes)
        for route, own in zip(self._routes, loads, strict=True):
            route.optimizer.load_state_dict(own)

    def _split(self, state_dict: Mapping[str, Any], table: Mapping[str, Any] | None
               ) -> list[dict[str, Any]]:
        """Each route's own state dict, cut from torch's layout by the routes' group and
        parameter counts (as torch matches a state to its parameters: by order), each
        keyed by its own positions and given its ``extras`` (saved in the table; the
        route's current ones for DCP's dict, which keeps none). Every count is checked
        before anything is loaded."""
        groups, state = torch_layout_parts(state_dict, "routed", "the earlier per-route states")
        counts = ", ".join(f"{r.label}: {len(r.optimizer.param_groups)}" for r in self._routes)
        if len(groups) != len(self.param_groups):
            raise CheckpointError(
                f"the state has {len(groups)} param groups, this routed optimizer "
                f"{len(self.param_groups)} ({counts}); it was saved for another route set "
                "or with other settings"
            )
        labels = self.group_routes
        for index, (saved, group) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise CheckpointError(
                    f"saved param group #{index} has {len(saved['params'])} parameters, this "
                    f"optimizer's (route {labels[index]!r}) {len(group['params'])}; it was "
                    "saved for another model, route set or other trainable parameters"
                )
        check_listed(groups, state, "routed")
        loads = []
        start = 0
        for route in self._routes:
            mine = groups[start:start + len(route.optimizer.param_groups)]
            start += len(mine)
            local: dict[Any, int] = {}
            own_groups = []
            for group in mine:
                own_groups.append({**group, "params": [local.setdefault(key, len(local))
                                                       for key in group["params"]]})
            entry = table.get(route.label) if table is not None else None
            extras = entry.get("extras") if isinstance(entry, Mapping) else None
            if not isinstance(extras, Mapping):
                extras = _extras(route.optimizer.state_dict())
            loads.append({
                **extras,
                "state": {index: state[key] for key, index in local.items() if key in state},
                "param_groups": own_groups,
            })
        return loads

    def _load_earlier_layout(self, state_dict: Mapping[str, Any],
                             saved_routes: Mapping[str, Any]) -> None:
        """The layout before torch's (``routes[label]["state"]``: each route's own state
        dict keyed by parameter name), routes already compared."""
        check_state(self, state_dict, ordered=False)  # name, parameter names and shapes
        for route in self._routes:
            names = route.parameter_names()
            route.optimizer.load_state_dict(_by_position(saved_routes[route.label].get("state"),
                                                         names))

    def _describe(self) -> str:
        spec = spec_or_none(self)
        return repr(spec.name) if spec is not None else ", ".join(r.label for r in self._routes)


# ---- layouts -----------------------------------------------------------------------------
#: The keys of torch's layout; a route's other top-level keys are its ``extras``.
_TORCH_KEYS = frozenset({"state", "param_groups"})


def _layout_problem(state: Any) -> str:
    """What keeps a route's own state dict from torch's layout ("" when nothing does)."""
    if not isinstance(state, Mapping):
        return f"is a {type(state).__name__}, not a dict"
    groups, entries = state.get("param_groups"), state.get("state")
    if not isinstance(entries, Mapping) or not isinstance(groups, list) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups):
        return f"has no 'state' and 'param_groups' (its keys: {_few(list(state))})"
    listed = [key for g in groups for key in g["params"]]
    if len(set(listed)) != len(listed):
        return "lists a parameter key in more than one place"
    unlisted = [key for key in entries if key not in set(listed)]
    if unlisted:
        return f"keeps state under keys no param group lists: {_few(unlisted)}"
    return ""


def _extras(state: Mapping[str, Any]) -> dict[str, Any]:
    """A route's top-level keys beside torch's (a layerwise route's marker), stamp aside."""
    return {k: v for k, v in state.items() if k not in _TORCH_KEYS and k != STAMP_KEY}


def _from_dcp(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state without the routed marker is what DCP's ``set_state_dict`` loads:
    torch's layout, unstamped (DCP keeps only ``state`` and ``param_groups``). A stamped
    state without the marker was saved by another optimizer."""
    return (stamp_of(state_dict) is None and isinstance(state_dict.get("state"), Mapping)
            and isinstance(state_dict.get("param_groups"), list))


def _by_position(state: Any, names: list[str]) -> dict[str, Any]:
    """A route's state in the earlier routed layout (parameter names where torch has
    positions) in torch's layout for the route's current parameter order."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"a route of the saved routed state has no state dict (got "
                              f"{type(state).__name__}); load it into the optimizer that saved it")
    groups = state.get("param_groups")
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


def routes_table(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``routes`` table of a routed state (None for another state) as JSON-ready data
    (only the plain values among a route's extras), for a checkpoint that keeps the
    stamp apart from the state (optimhub.distributed_checkpoint)."""
    table = state_dict.get("routes") if state_dict.get(ROUTED_KEY) is True else None
    if not isinstance(table, Mapping):
        return None
    plain = (bool, int, float, str, type(None))
    return {label: {**{k: v for k, v in entry.items() if k != "extras"},
                    "extras": {k: v for k, v in (entry.get("extras") or {}).items()
                               if isinstance(v, plain)}}
            for label, entry in table.items() if isinstance(entry, Mapping)}


def check_routes(optimizer: torch.optim.Optimizer, table: Any) -> None:
    """A saved ``routes`` table (:func:`routes_table`) against a routed optimizer's routes:
    a ``CheckpointError`` naming every difference. Nothing for another optimizer (its
    stamp's name already differs from a routed one's)."""
    if isinstance(optimizer, RoutedOptimizer):
        if not isinstance(table, Mapping):
            raise CheckpointError(f"the saved routes table is {type(table).__name__}, not "
                                  "the table a routed optimizer saves")
        _compare_routes(table, optimizer._routes)


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
        groups = entry.get("groups")
        if groups is not None and groups != len(route.optimizer.param_groups):
            problems.append(f"route {label!r} was saved with {groups!r} param groups, here "
                            f"{len(route.optimizer.param_groups)}")
        extras = entry.get("extras")
        layerwise = isinstance(route.optimizer, LayerwiseOptimizer)
        if isinstance(extras, Mapping) and bool(extras.get(LAYERWISE_KEY)) != layerwise:
            problems.append(f"route {label!r} was saved "
                            f"{'not ' if layerwise else ''}layerwise, here it is "
                            f"{'' if layerwise else 'not '}layerwise (layerwise={not layerwise} "
                            "on the route resumes it)")
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


def _few(names: list[Any], limit: int = 4) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{', '.join(shorten(str(n)) for n in names[:limit])}]{more}"
