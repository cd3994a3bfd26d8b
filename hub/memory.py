"""Memory before training: how many bytes of optimizer state and of gradients an optimizer
will hold for a model, without building it.

    est = optimhub.estimate("galore_adamw", model, optim_args="rank=128",
                            optim_target_modules=[r".*attn.*", r".*mlp.*"])
    est.state_bytes, est.bytes_per_param, est.grad_bytes

The arguments are ``create_optimizer``'s and are checked by the same code
(:func:`optimhub.prepare.prepare`), so a configuration that would fail to build fails here
too. Nothing is built, no backend is imported and no tensor's data is read: ``model`` may
live on the meta device, so a 70B model costs nothing to describe. ``model`` may also be a
Llama layer-shape spec such as ``"llama:hidden=4096,layers=32,vocab=32000,intermediate=11008"``
(see :mod:`optimhub.model_shapes`).

The formula of each name is its plugin's estimator (:mod:`optimhub.estimator`); without one
the spec's ``state_bytes_per_param`` (registry.toml) is used; without either,
:class:`EstimateUnavailableError`: no silent guess. A routed name or route set is estimated
route by route, each on the parameters it takes: the estimate is the sum of the routes'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .assemble import group_count
from .errors import CapabilityError, EstimateUnavailableError, OptimArgsError, OptimHubError
from .estimator import EstimateRequest, Estimator, ParamShape, StateEstimate
from .model_shapes import MODEL_SPEC_EXAMPLE, FlatModel, parse_model_spec
from .plugin_host import get_registry
from .prepare import prepare
from .route_plan import PlannedRoute, RoutingPlan, is_routed, plan_routes
from .spec import Capability

__all__ = [
    "ADAMW_STATE_BYTES_PER_PARAM",
    "MemoryEstimate",
    "describe_model",
    "estimate",
    "estimate_from_request",
    "model_from",
    "peak_gradient_bytes",
    "route_estimates",
]

#: The yardstick every estimate is shown next to: AdamW with two fp32 moments.
ADAMW_STATE_BYTES_PER_PARAM = 8


@dataclass(frozen=True)
class MemoryEstimate:
    """What ``optimhub.estimate`` answers, next to the AdamW fp32 yardstick.

    ``source`` says where the figure came from: ``"plugin"`` (the plugin's estimator),
    ``"registry"`` (the spec's ``state_bytes_per_param`` times the trainable count) or
    ``"routes"`` (a routed optimizer: the sum of its routes' estimates, each in ``notes``).
    ``baseline_*`` is AdamW with fp32 moments (8 bytes per trainable parameter) and every
    gradient held.
    """

    name: str
    source: str
    trainable_params: int
    total_params: int
    param_bytes: int
    state_bytes: int
    grad_bytes: int
    baseline_state_bytes: int
    baseline_grad_bytes: int
    layerwise: bool = False
    notes: tuple[str, ...] = ()

    @property
    def bytes_per_param(self) -> float:
        """Optimizer state per trainable parameter."""
        return self.state_bytes / self.trainable_params if self.trainable_params else 0.0

    @property
    def total_bytes(self) -> int:
        """Optimizer state plus gradients at their peak (weights and activations not counted)."""
        return self.state_bytes + self.grad_bytes

    @property
    def baseline_total_bytes(self) -> int:
        return self.baseline_state_bytes + self.baseline_grad_bytes

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for ``--json``)."""
        return {
            "name": self.name,
            "source": self.source,
            "layerwise": self.layerwise,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "param_bytes": self.param_bytes,
            "state_bytes": self.state_bytes,
            "state_bytes_per_param": self.bytes_per_param,
            "grad_bytes": self.grad_bytes,
            "total_bytes": self.total_bytes,
            "adamw_fp32": {
                "state_bytes": self.baseline_state_bytes,
                "state_bytes_per_param": float(ADAMW_STATE_BYTES_PER_PARAM),
                "grad_bytes": self.baseline_grad_bytes,
                "total_bytes": self.baseline_total_bytes,
            },
            "notes": list(self.notes),
        }


def peak_gradient_bytes(request: EstimateRequest) -> int:
    """Gradient bytes alive at the peak of one step.

    Every trainable parameter's gradient for an ordinary optimizer. A fused-backward or
    layerwise run applies and frees each gradient inside backward, so about one
    parameter's worth (the largest) is alive; autograd may hold one more in flight.
    """
    trainable = request.trainable
    if not trainable:
        return 0
    if request.spec.updates_in_backward(request.layerwise):
        return max(p.nbytes for p in trainable)
    return sum(p.nbytes for p in trainable)


def describe_model(model: nn.Module, targets: Iterable[str] = ()) -> tuple[ParamShape, ...]:
    """The parameters of ``model`` as shapes (any device, meta included; no data read).

    Named and deduplicated as ``named_parameters()`` does (a tied weight once); the names
    in ``targets`` are marked ``is_target``.
    """
    chosen = set(targets)
    owners = {name: type(module).__name__ for name, module in model.named_modules()}
    return tuple(
        ParamShape(
            name=name,
            shape=tuple(param.shape),
            dtype_bytes=param.element_size(),
            trainable=param.requires_grad,
            is_target=name in chosen,
            module_type=owners.get(name.rpartition(".")[0], ""),
        )
        for name, param in model.named_parameters()
    )


def model_from(model: Any) -> nn.Module:
    if isinstance(model, str):
        return parse_model_spec(model).build()
    if isinstance(model, nn.Module):
        return model
    raise OptimArgsError(
        f"estimate needs the model (an nn.Module, on any device: meta is enough) or a model "
        f"spec like {MODEL_SPEC_EXAMPLE!r}; got {type(model).__name__}. For a bare "
        "parameter count: `from optimhub.model_shapes import flat_model`; flat_model(N)."
    )


def estimate(name: str, model: nn.Module | str, args: Any = None, **overrides: Any
             ) -> MemoryEstimate:
    """Bytes of optimizer state and peak gradients that ``create_optimizer(name, model,
    args, **overrides)`` would hold, without building it or reading a tensor.

    ``model`` is an ``nn.Module`` (put a big one on the meta device), a ``llama:`` model
    spec (:func:`parse_model_spec`) or a :class:`FlatModel`. Bad arguments raise what
    ``create_optimizer`` raises; a name without any estimate raises
    :class:`EstimateUnavailableError`. The backend need not be installed.
    """
    if is_routed(name):  # also reports an unknown name before a bad model
        module = model_from(model)
        return _sum_of_routes(plan_routes(name, module, args, overrides, build=False), module)
    get_registry().get(name)  # an unknown name is reported before a bad model
    module = model_from(model)
    prepared = prepare(name, module, args, overrides, build=False)
    spec = prepared.spec
    if spec.has(Capability.TARGET_MODULES) and isinstance(module, FlatModel):
        raise CapabilityError(
            f"optimizer {spec.name!r} keeps low-rank state shaped by each target layer, and "
            "a bare parameter count has no layers: describe the model instead (an nn.Module, "
            f"or `--model {MODEL_SPEC_EXAMPLE}`)"
        )
    request = EstimateRequest(
        spec=spec,
        options=prepared.options,
        params=describe_model(prepared.source.module or module, prepared.target_names),
        layerwise=prepared.layerwise,
        param_groups=group_count(prepared),
    )
    entry = prepared.entry
    return estimate_from_request(request, entry.estimator, plugin=entry.plugin.describe())


def route_estimates(plan: RoutingPlan, module: nn.Module
                    ) -> list[tuple[PlannedRoute, MemoryEstimate]]:
    """Each planned route's estimate, on the parameters that route takes."""
    shapes = describe_model(module, [n for r in plan.routes for n in r.prepared.target_names])
    result = []
    for route in plan.routes:
        taken = set(route.names)
        request = EstimateRequest(
            spec=route.spec,
            options=route.prepared.options,
            params=tuple(p for p in shapes if p.name in taken),
            layerwise=route.prepared.layerwise,
            param_groups=group_count(route.prepared),
        )
        entry = route.prepared.entry
        result.append((route, estimate_from_request(request, entry.estimator,
                                                    plugin=entry.plugin.describe())))
    return result


def _sum_of_routes(plan: RoutingPlan, module: nn.Module) -> MemoryEstimate:
    parts = route_estimates(plan, module)
    shapes = describe_model(module)
    count = sum(e.trainable_params for _, e in parts)
    notes = tuple(
        f"route {route.label!r} ({route.route.select} -> {route.spec.name}): "
        f"{e.state_bytes:,} bytes of state for {e.trainable_params:,} parameters"
        + ("" if e.source == "plugin" else " (from registry.toml)")
        for route, e in parts
    ) + tuple(note for _, e in parts for note in e.notes)
    return MemoryEstimate(
        name=plan.spec.name,
        source="routes",
        trainable_params=count,
        total_params=sum(p.numel for p in shapes),
        param_bytes=sum(p.nbytes for p in shapes),
        state_bytes=sum(e.state_bytes for _, e in parts),
        grad_bytes=sum(e.grad_bytes for _, e in parts),
        baseline_state_bytes=ADAMW_STATE_BYTES_PER_PARAM * count,
        baseline_grad_bytes=sum(e.baseline_grad_bytes for _, e in parts),
        layerwise=any(e.layerwise for _, e in parts),
        notes=notes,
    )


def estimate_from_request(
    request: EstimateRequest, estimator: Estimator | None, *, plugin: str = "its plugin"
) -> MemoryEstimate:
    """Run ``estimator`` (or the spec's ``state_bytes_per_param``) on a prepared request."""
    spec = request.spec
    trainable = request.trainable
    count = sum(p.numel for p in trainable)
    if estimator is not None:
        result = _run_estimator(estimator, request, plugin)
        source = "plugin"
    elif spec.state_bytes_per_param is not None:
        result = StateEstimate(
            round(spec.state_bytes_per_param * count),
            notes=(f"from registry: {spec.state_bytes_per_param:g} bytes per parameter, "
                   "whatever the shapes and dtypes",),
        )
        source = "registry"
    else:
        raise EstimateUnavailableError(
            f"no estimate available for {spec.name!r}: {plugin} registers no estimator "
            "for it and its spec has no state_bytes_per_param. The plugin can pass "
            "estimator= to register.builder / register.optimizer."
        )
    grads = result.grad_bytes if result.grad_bytes is not None else peak_gradient_bytes(request)
    full_grads = sum(p.nbytes for p in trainable)
    return MemoryEstimate(
        name=spec.name,
        source=source,
        trainable_params=count,
        total_params=sum(p.numel for p in request.params),
        param_bytes=sum(p.nbytes for p in request.params),
        state_bytes=int(result.state_bytes),
        grad_bytes=int(grads),
        baseline_state_bytes=ADAMW_STATE_BYTES_PER_PARAM * count,
        baseline_grad_bytes=full_grads,
        layerwise=request.layerwise,
        notes=tuple(result.notes),
    )


def _run_estimator(estimator: Estimator, request: EstimateRequest, plugin: str
                   ) -> StateEstimate:
    try:
        result = estimator(request)
    except OptimHubError:
        raise
    except Exception as exc:
        raise EstimateUnavailableError(
            f"{plugin} failed to estimate {request.spec.name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, StateEstimate) or isinstance(result.state_bytes, bool) or not (
        isinstance(result.state_bytes, int) and result.state_bytes >= 0
    ):
        raise EstimateUnavailableError(
            f"{plugin} returned {result!r} as the estimate for {request.spec.name!r}; an "
            "estimator returns StateEstimate(state_bytes=<int >= 0>) from optimhub.plugin"
        )
    return result

