"""Explain before training: for every trainable parameter, its role, the route and optimizer
that will step it, its learning rate and weight decay, and the optimizer state it will cost.

    print(optimhub.explain("muon", model, learning_rate=3e-4, weight_decay=0.1))
    optimhub.explain("matrix -> muon_torch; * -> adamw_torch", model).as_dict()  # for JSON

Nothing is built and no tensor's data is read: the call is planned and checked exactly as
``create_optimizer`` would (the same errors), and the param groups are assembled from names
and shapes, so a 7B configuration on the meta device explains in a second. A plain name is
explained as one route that takes everything.

The learning rate shown is what the optimizer's group will hold (a route's own lr, a
param-group rule's, layer-wise decay applied); a scheduler multiplies it over training.
State bytes come from each optimizer's estimator (``optimhub.estimate``): per parameter
(the estimator on that parameter alone) and per route (on the route's parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .arguments import OptimizerArguments
from .assemble import build_request
from .errors import OptimHubError
from .estimator import EstimateRequest
from .memory import (
    describe_model,
    estimate,
    estimate_from_request,
    model_from,
    route_estimates,
)
from .prepare import Prepared, prepare
from .roles import ParameterRole, layer_indices, parameter_roles
from .route_plan import is_routed, plan_routes
from .selectors import CATCH_ALL

__all__ = ["Explanation", "ParameterRow", "RouteSummary", "explain"]


@dataclass(frozen=True)
class ParameterRow:
    """One trainable parameter: what it is and what will step it.

    ``lr`` / ``weight_decay`` are its group's values (None where the optimizer takes no
    such hyperparameter); ``lr_scale`` is ``lr`` over the route's learning rate (layer-wise
    decay, a param-group rule); ``depth`` its block (timm's layer-wise decay counting);
    ``target`` whether it gets a low-rank update; ``state_bytes`` None where no estimate.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    why: str
    route: str
    optimizer: str
    lr: float | None
    lr_scale: float | None
    weight_decay: float | None
    depth: int
    target: bool
    state_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "role": self.role,
                "why": self.why, "route": self.route, "optimizer": self.optimizer,
                "lr": self.lr, "lr_scale": self.lr_scale, "weight_decay": self.weight_decay,
                "depth": self.depth, "low_rank_target": self.target,
                "state_bytes": self.state_bytes}


@dataclass(frozen=True)
class RouteSummary:
    """One route's totals: what it selects, its optimizer, how many tensors and scalars it
    takes, their optimizer state (the estimator on the whole route)."""

    label: str
    select: str
    optimizer: str
    tensors: int
    parameters: int
    state_bytes: int | None
    layerwise: bool

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.label, "select": self.select, "optimizer": self.optimizer,
                "tensors": self.tensors, "parameters": self.parameters,
                "state_bytes": self.state_bytes, "layerwise": self.layerwise}


@dataclass(frozen=True)
class Explanation:
    """What ``explain`` answers: ``rows`` (one per trainable parameter, model order) and
    ``routes`` (totals). ``str()`` is the table the CLI prints, ``as_dict()`` its JSON."""

    name: str
    rows: tuple[ParameterRow, ...]
    routes: tuple[RouteSummary, ...]
    notes: tuple[str, ...] = ()

    @property
    def state_bytes(self) -> int | None:
        """The whole optimizer's state: the sum of the routes' (what ``estimate`` says)."""
        parts = [r.state_bytes for r in self.routes]
        return None if None in parts else sum(p for p in parts if p is not None)

    def row(self, name: str) -> ParameterRow:
        return next(r for r in self.rows if r.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state_bytes": self.state_bytes,
                "routes": [r.as_dict() for r in self.routes],
                "parameters": [r.as_dict() for r in self.rows], "notes": list(self.notes)}

    def __str__(self) -> str:
        scaled = any(r.lr_scale not in (None, 1.0) for r in self.rows)
        headers = ["parameter", "shape", "role", "route", "optimizer", "lr",
                   *(["scale"] if scaled else []), "wd", "state"]
        rows = [[r.name, "x".join(map(str, r.shape)) or "()", r.role, r.route, r.optimizer,
                 _number(r.lr), *([_number(r.lr_scale)] if scaled else []),
                 _number(r.weight_decay), _bytes(r.state_bytes)] for r in self.rows]
        totals = [[r.label, r.select, r.optimizer + (" (layerwise)" if r.layerwise else ""),
                   str(r.tensors), f"{r.parameters:,}", _bytes(r.state_bytes)]
                  for r in self.routes]
        count = sum(r.parameters for r in self.routes)
        totals.append(["total", "", "", str(len(self.rows)), f"{count:,}",
                       _bytes(self.state_bytes)])
        lines = [f"{self.name}: {count:,} trainable parameters in {len(self.rows)} tensors, "
                 f"{len(self.routes)} route(s)", "", *_table(headers, rows), "",
                 *_table(["route", "selects", "optimizer", "tensors", "parameters", "state"],
                         totals)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def explain(name: Any, model: nn.Module | str, args: Any = None, **overrides: Any
            ) -> Explanation:
    """What ``create_optimizer(name, model, args, **overrides)`` would do with each
    parameter, without building anything (see the module docstring). ``model`` is an
    ``nn.Module`` (the meta device is enough) or a ``llama:`` model spec."""
    module = model_from(model)
    if is_routed(name):
        plan = plan_routes(name, module, args, overrides, build=False)
        routes = [(r.label, r.route.select.describe(), r.names, r.prepared)
                  for r in plan.routes]
        estimates = {r.label: e for r, e in _route_estimates(plan, module)}
        title, roles = plan.spec.name, plan.roles
    else:
        prepared = prepare(name, module, args, overrides, build=False)
        names = tuple(n for n, p in prepared.source.named if p.requires_grad)
        routes = [(prepared.spec.name, CATCH_ALL, names, prepared)]
        estimates = {prepared.spec.name: _whole(prepared, module)}
        title = prepared.spec.name
        roles = parameter_roles(prepared.source.module, prepared.source.named,
                                prepared.source.walk)
    shapes = {p.name: p for p in describe_model(module)}
    depths = layer_indices(module)
    rows: list[ParameterRow] = []
    summaries: list[RouteSummary] = []
    notes: list[str] = []
    for label, select, names, prepared in routes:
        settings = _group_settings(prepared)
        for param in names:
            lr, weight_decay = settings[param]
            rows.append(_row(param, roles[param], label, prepared, lr, weight_decay,
                             depths.get(param, 0), _parameter_bytes(prepared, shapes[param])))
        estimate = estimates[label]
        summaries.append(RouteSummary(
            label, select, prepared.spec.name, len(names),
            sum(shapes[n].numel for n in names),
            None if estimate is None else estimate.state_bytes, prepared.layerwise))
        if estimate is None:
            notes.append(f"route {label!r}: no memory estimate for {prepared.spec.name!r}")
    order = {n: i for i, (n, _) in enumerate(module.named_parameters())}
    rows.sort(key=lambda r: order[r.name])
    return Explanation(title, tuple(rows), tuple(summaries), tuple(notes))


def _route_estimates(plan: Any, module: nn.Module) -> list[tuple[Any, Any]]:
    try:
        return route_estimates(plan, module)
    except OptimHubError:
        return [(route, None) for route in plan.routes]


def _whole(prepared: Prepared, module: nn.Module) -> Any:
    try:
        return estimate(prepared.spec.name, module, prepared.arguments)
    except OptimHubError:
        return None


def _group_settings(prepared: Prepared) -> dict[str, tuple[float | None, float | None]]:
    """Each parameter's lr and weight decay, as its param group will hold them."""
    request = build_request(prepared)
    base_lr = request.kwargs.get("lr")
    result = {}
    for group, names in zip(request.param_groups, request.param_names, strict=True):
        lr = group.get("lr", base_lr)
        weight_decay = group.get("weight_decay", request.kwargs.get("weight_decay"))
        for name in names:
            result[name] = (lr, weight_decay)
    return result


def _row(name: str, role: ParameterRole, label: str, prepared: Prepared, lr: float | None,
         weight_decay: float | None, depth: int, state: int | None) -> ParameterRow:
    base = _route_lr(prepared.arguments, prepared)
    scale = None if lr is None or base is None else lr / base
    return ParameterRow(
        name=name, shape=role.shape, role=role.role.value, why=role.why, route=label,
        optimizer=prepared.spec.name, lr=lr, lr_scale=scale, weight_decay=weight_decay,
        depth=depth, target=name in prepared.target_names, state_bytes=state,
    )


def _route_lr(arguments: OptimizerArguments, prepared: Prepared) -> float | None:
    return arguments.learning_rate if prepared.spec.has_hyperparameter("lr") else None


def _parameter_bytes(prepared: Prepared, shape: Any) -> int | None:
    """The route's estimator on this one parameter."""
    entry = prepared.entry
    target = shape.name in prepared.target_names
    request = EstimateRequest(
        spec=prepared.spec, options=prepared.options,
        params=(type(shape)(shape.name, shape.shape, shape.dtype_bytes, True, target,
                            shape.module_type),),
        layerwise=prepared.layerwise,
    )
    try:
        return estimate_from_request(request, entry.estimator).state_bytes
    except OptimHubError:
        return None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, ["-" * w for w in widths], *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines
