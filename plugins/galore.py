"""Built-in plugin: GaLore (galore-torch): GaLoreAdamW, GaLoreAdamW8bit, GaLoreAdafactor.

Specs are in registry.toml; this module supplies the builders, and the low-rank helpers
that plugins/apollo.py shares (APOLLO's SVD projector is GaLore's, and both keep a Python
projector object in their state). What a builder adds to the plain constructor call,
each for a reason:

- **Low-rank groups are prepared** (``low_rank_groups``): only 2-D weights may be in one
  (the backends index ``grad.shape[1]``), and the rank is capped at each weight's smaller
  side. A param group carries one rank, so a target group is split per distinct
  effective rank ``min(rank, *weight.shape)``: one group per rank, in order of first
  appearance, each keeping the parameters in model order. For GaLore's SVD the cap only
  names the rank the projector really uses; for APOLLO's random projector it is what
  keeps the state below dense Adam's.
- **Option combinations the backend rejects only inside ``step()`` are refused here**,
  with the parameter, its shape and the fix.
- **Checkpoints load with ``torch.load(weights_only=True)``** (``install_checkpoint_hooks``):
  the projector objects in the state are turned into plain tagged dicts by a
  ``state_dict`` post-hook, and rebuilt by a ``load_state_dict`` pre-hook. Both are
  torch's own optimizer hooks on the returned instance: nothing on the step path.
- GaLoreAdamW gets ``no_deprecation_warning=True`` (a registry ``fixed`` keyword): its
  "This implementation of AdamW is deprecated" FutureWarning tells users to leave the
  optimizer they chose.
- GaLoreAdamW8bit is refused with bitsandbytes >= 0.50, where its positional arguments
  land in the wrong parameters (``check_bitsandbytes_for_galore_8bit``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import torch

import optimhub
from optimhub.build import Builder, BuildRequest
from optimhub.errors import (
    BackendUnavailableError,
    CheckpointError,
    OptimArgsError,
    OptimHubWarning,
    TargetModulesError,
)
from optimhub.memory import (
    EstimateRequest,
    ParamShape,
    StateEstimate,
    dense_bytes,
    factored_elements,
    low_rank_grad_shape,
    projection_side,
)

__all__ = [
    "RANK_KEY",
    "check_bitsandbytes_for_galore_8bit",
    "check_galore_projection",
    "estimate_galore_adafactor",
    "estimate_galore_adamw",
    "estimate_galore_adamw_8bit",
    "galore_builder",
    "install_checkpoint_hooks",
    "low_rank_groups",
    "low_rank_members",
    "low_rank_request_groups",
    "projectors_from_dicts",
    "projectors_to_dicts",
    "svd_projector_bytes",
    "version_tuple",
]

#: The group key that makes a group low-rank in galore-torch and apollo-torch alike.
RANK_KEY = "rank"

# -- low-rank groups -----------------------------------------------------------------


def low_rank_groups(request: BuildRequest) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The request's groups, each low-rank group split per effective rank.

    Returns the groups and, in parallel, their parameter names. A group without
    ``RANK_KEY`` is passed through unchanged. Raises ``TargetModulesError`` for a
    parameter that is not a 2-D matrix.
    """
    groups: list[dict[str, Any]] = []
    names: list[list[str]] = []
    for group, group_names in zip(request.param_groups, request.param_names, strict=True):
        if RANK_KEY not in group:
            groups.append(group)
            names.append(list(group_names))
            continue
        for rank, members in _split_by_rank(request.spec.name, group, group_names).items():
            groups.append({**group, "params": [p for _, p in members], RANK_KEY: rank})
            names.append([n for n, _ in members])
    return groups, names


def _split_by_rank(
    optimizer: str, group: Mapping[str, Any], names: Sequence[str]
) -> dict[int, list[tuple[str, torch.Tensor]]]:
    """Parameters by effective rank; dict order is first appearance, lists keep model order."""
    buckets: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, param in zip(names, group["params"], strict=True):
        if param.dim() != 2:
            raise TargetModulesError(
                f"optimizer {optimizer!r}: target parameter {name!r} has shape "
                f"{tuple(param.shape)}, but only 2-D weight matrices can get a low-rank "
                "update (the backend fails at the first step otherwise); narrow "
                "optim_target_modules to nn.Linear layers"
            )
        rank = min(int(group[RANK_KEY]), *param.shape)
        buckets.setdefault(rank, []).append((name, param))
    return buckets


def low_rank_members(
    groups: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]
) -> Iterable[tuple[dict[str, Any], str, torch.Tensor]]:
    """(group, name, parameter) for every parameter of a low-rank group."""
    for group, group_names in zip(groups, names, strict=True):
        if RANK_KEY in group:
            for name, param in zip(group_names, group["params"], strict=True):
                yield group, name, param


def check_galore_projection(
    optimizer: str, groups: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]
) -> None:
    """Refuse what GaLore's projector accepts at construction but fails on in ``step()``.

    With ``proj_type="reverse_std"`` a wide weight (rows < columns) is projected on the
    right; ``project_back`` then picks the side from the low-rank shape, which is square
    once the rank reaches the row count, and multiplies the wrong way round
    (``RuntimeError: mat1 and mat2 shapes cannot be multiplied``).
    """
    for group, name, param in low_rank_members(groups, names):
        rows, cols = param.shape
        if group.get("proj_type") == "reverse_std" and rows < cols and group[RANK_KEY] >= rows:
            raise OptimArgsError(
                f"optimizer {optimizer!r}: proj_type='reverse_std' with rank "
                f"{group[RANK_KEY]} fails at the first step for {name!r} ({rows}x{cols}): "
                "galore-torch projects it back the wrong way round once the rank reaches "
                f"its row count. Use rank < {rows}, or proj_type='std'."
            )


# -- checkpoints ---------------------------------------------------------------------

#: Marks a projector saved as a plain dict; the value is the projector's class path.
PROJECTOR_TAG = "__optimhub_projector__"

#: The projector classes a checkpoint may name (module -> class names). Only these are
#: rebuilt on load: a checkpoint never makes optimhub import or construct anything else.
KNOWN_PROJECTORS: Mapping[str, tuple[str, ...]] = {
    "galore_torch.galore_projector": ("GaLoreProjector",),
    "apollo_torch.svd_projector": ("GaLoreProjector",),
    "apollo_torch.random_projector": ("GradientProjector",),
}

_SAFE_SCALARS = (bool, int, float, str, type(None), torch.Tensor)


def install_checkpoint_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Make the optimizer's state dicts loadable with ``torch.load(weights_only=True)``.

    Returns False (and installs nothing) for classes that override ``state_dict`` or
    ``load_state_dict`` without running torch's hooks (bitsandbytes-based ones): their
    projectors stay pickled objects, as the backend saves them.
    """
    cls = type(optimizer)
    base = torch.optim.Optimizer
    if cls.state_dict is not base.state_dict or cls.load_state_dict is not base.load_state_dict:
        return False
    optimizer.register_state_dict_post_hook(projectors_to_dicts)
    optimizer.register_load_state_dict_pre_hook(projectors_from_dicts)
    return True


def projectors_to_dicts(
    optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
) -> dict[str, Any] | None:
    """``state_dict`` post-hook: each known projector object becomes a tagged plain dict.

    torch's ``state_dict()`` hands out the live per-parameter state dicts, so entries
    are copied, never changed in place.
    """
    state = state_dict["state"]
    if not any(_is_known_projector(_projector_of(entry)) for entry in state.values()):
        return None
    packed = {
        key: {**entry, "projector": _pack(entry["projector"])}
        if _is_known_projector(_projector_of(entry)) else entry
        for key, entry in state.items()
    }
    return {**state_dict, "state": packed}


def projectors_from_dicts(
    optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
) -> dict[str, Any] | None:
    """``load_state_dict`` pre-hook: tagged dicts become projector objects again.

    It runs before torch's own copying, which would mangle the dict's strings (torch
    rebuilds every iterable, a str included, from its items). Tensors move to the
    device of their parameter, as torch moves the rest of the state.
    """
    state = state_dict.get("state", {})
    if not any(_is_packed(_projector_of(entry)) for entry in state.values()):
        return None
    params = _saved_index_to_param(optimizer, state_dict)
    unpacked = {
        key: {**entry, "projector": _unpack(entry["projector"], params.get(key))}
        if _is_packed(_projector_of(entry)) else entry
        for key, entry in state.items()
    }
    return {**state_dict, "state": unpacked}


def _projector_of(entry: Any) -> Any:
    return entry.get("projector") if isinstance(entry, Mapping) else None


def _is_known_projector(obj: Any) -> bool:
    cls = type(obj)
    return cls.__name__ in KNOWN_PROJECTORS.get(cls.__module__, ())


def _is_packed(obj: Any) -> bool:
    return isinstance(obj, Mapping) and PROJECTOR_TAG in obj


def _pack(projector: Any) -> Any:
    attributes = dict(vars(projector))
    unsafe = {k: type(v).__name__ for k, v in attributes.items() if not _is_safe(v)}
    cls = type(projector)
    if unsafe:
        warnings.warn(
            f"optimhub: {cls.__module__}.{cls.__name__} holds {unsafe}, which cannot be "
            "saved as plain data; the projector stays a pickled object, so load this "
            "optimizer state with torch.load(weights_only=False)",
            OptimHubWarning,
            stacklevel=4,
        )
        return projector
    for key, value in attributes.items():
        if isinstance(value, (list, tuple)):
            attributes[key] = list(value)
    return {PROJECTOR_TAG: f"{cls.__module__}.{cls.__name__}", "attributes": attributes}


def _is_safe(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, torch.Tensor) for item in value)
    return isinstance(value, _SAFE_SCALARS)


def _unpack(data: Mapping[str, Any], param: torch.Tensor | None) -> Any:
    path = data[PROJECTOR_TAG]
    module, _, name = str(path).rpartition(".")
    if name not in KNOWN_PROJECTORS.get(module, ()):
        known = ", ".join(f"{m}.{c}" for m, cs in KNOWN_PROJECTORS.items() for c in cs)
        raise CheckpointError(
            f"the optimizer state names projector class {path!r}, which optimhub does not "
            f"rebuild (known: {known}); load it with the optimizer that saved it"
        )
    cls = getattr(importlib.import_module(module), name)
    projector = cls.__new__(cls)
    projector.__dict__.update(
        {key: _to_device(value, param) for key, value in data["attributes"].items()}
    )
    return projector


def _to_device(value: Any, param: torch.Tensor | None) -> Any:
    if param is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device=param.device)
    if isinstance(value, list):
        return [_to_device(item, param) for item in value]
    return value


def _saved_index_to_param(
    optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]
) -> dict[Any, torch.Tensor]:
    """Saved parameter index -> this optimizer's parameter, paired as torch pairs them.

    A layout mismatch is left to ``load_state_dict`` itself, which raises its own error.
    """
    saved = chain.from_iterable(g["params"] for g in state_dict.get("param_groups", []))
    current = chain.from_iterable(g["params"] for g in optimizer.param_groups)
    return dict(zip(saved, current, strict=False))


# -- bitsandbytes --------------------------------------------------------------------

#: First bitsandbytes release whose Optimizer2State no longer takes percentile_clipping
#: and block_wise (GaLoreAdamW8bit passes them positionally).
BNB_BREAKING_VERSION = (0, 50)


def check_bitsandbytes_for_galore_8bit(optimizer: str) -> None:
    """Refuse GaLoreAdamW8bit where its bitsandbytes call is shifted.

    galore-torch 1.0 calls ``Optimizer2State.__init__(..., min_8bit_size,
    percentile_clipping, block_wise, is_paged=...)`` positionally. bitsandbytes 0.50
    dropped those two parameters, so 100 and True land in ``max_unorm`` and
    ``skip_zeros``: a different update (norm clipping, skipped zeros), on any device.
    """
    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return  # galore_torch's own import of bitsandbytes reports the absence
    if version_tuple(version) >= BNB_BREAKING_VERSION:
        raise BackendUnavailableError(
            f"optimizer {optimizer!r}: galore-torch's GaLoreAdamW8bit is incompatible with "
            f"bitsandbytes {version}: it passes percentile_clipping=100 and block_wise=True "
            "positionally, and since bitsandbytes 0.50 they land in max_unorm and "
            "skip_zeros, which changes the update. Pin bitsandbytes below 0.50 "
            "(pip install 'bitsandbytes<0.50'), or use 'galore_adamw'."
        )


def version_tuple(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "0.50.2.dev0" -> (0, 50, 2)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else (0,)


# -- builders ------------------------------------------------------------------------


def galore_builder(
    attribute: str, *, precheck: Callable[[str], None] | None = None
) -> Builder:
    """A builder for ``galore_torch.<attribute>``: prepared groups, early checks, hooks."""

    def build(request: BuildRequest) -> torch.optim.Optimizer:
        if precheck is not None:
            precheck(request.spec.name)
        groups, names = low_rank_groups(request)
        check_galore_projection(request.spec.name, groups, names)
        cls = getattr(importlib.import_module("galore_torch"), attribute)
        optimizer = cls(groups, **request.kwargs)
        install_checkpoint_hooks(optimizer)
        return optimizer

    build.__qualname__ = f"galore_builder({attribute})"
    return build


build_galore_adamw = galore_builder("GaLoreAdamW")
build_galore_adamw_8bit = galore_builder(
    "GaLoreAdamW8bit", precheck=check_bitsandbytes_for_galore_8bit
)
build_galore_adafactor = galore_builder("GaLoreAdafactor")


# -- memory estimates ----------------------------------------------------------------


def low_rank_request_groups(
    request: EstimateRequest,
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """One group per target weight, as ``low_rank_groups`` would place it (the rank capped
    at the weight's smaller side), with shapes for parameters: what the builders' checks
    (``check_galore_projection``, ``check_apollo_scaling``) read."""
    options = {a.key: request.options[a.name] for a in request.spec.target_group_args
               if a.name in request.options}
    groups = [{**options, "params": [p], RANK_KEY: min(int(options[RANK_KEY]), *p.shape)}
              for p in request.targets]
    return groups, [[p.name] for p in request.targets]


def svd_projector_bytes(param: ParamShape, rank: int, proj_type: str, grad_bytes: int) -> int:
    """What GaLore's SVD projector keeps for one (m, n) weight, given the bytes per element
    of the gradient it is fed.

    For a float32 gradient ``Vh[:rank]`` / ``U[:, :rank]`` are views that keep the whole
    SVD factor alive (min(m, n) x n on the right, m x min(m, n) on the left: about +4
    bytes per parameter); any other dtype is cast, a copy of the rank rows or columns.
    """
    m, n = param.shape
    k, r = min(m, n), min(rank, m, n)
    side = projection_side(param.shape, proj_type)
    if grad_bytes == 4:
        return 4 * {"right": k * n, "left": m * k, "both": m * k + k * n}[side]
    return grad_bytes * {"right": r * n, "left": m * r, "both": m * r + r * n}[side]


def _low_rank_numel(param: ParamShape, request: EstimateRequest) -> int:
    side = projection_side(param.shape, request.options["proj_type"])
    return math.prod(low_rank_grad_shape(param.shape, request.options["rank"], side))


def estimate_galore_adamw(request: EstimateRequest) -> StateEstimate:
    """Targets: two low-rank moments and the projector, in the parameter's dtype; the
    other parameters: AdamW's two full moments."""
    groups, names = low_rank_request_groups(request)
    check_galore_projection(request.spec.name, groups, names)
    proj_type, rank = request.options["proj_type"], request.options["rank"]
    low_rank = sum(
        2 * _low_rank_numel(p, request) * p.dtype_bytes
        + svd_projector_bytes(p, rank, proj_type, p.dtype_bytes)
        for p in request.targets
    )
    return StateEstimate(low_rank + dense_bytes(request.dense, 2), notes=_factor_note(request))


def estimate_galore_adafactor(request: EstimateRequest) -> StateEstimate:
    """GaLoreAdafactor casts every gradient to float32 first: fp32 factored second moments
    (of the low-rank gradient for targets) and an fp32 projector, whatever the dtype."""
    groups, names = low_rank_request_groups(request)
    check_galore_projection(request.spec.name, groups, names)
    proj_type, rank = request.options["proj_type"], request.options["rank"]
    total = 0
    for p in request.targets:
        side = projection_side(p.shape, proj_type)
        total += 4 * factored_elements(low_rank_grad_shape(p.shape, rank, side))
        total += svd_projector_bytes(p, rank, proj_type, 4)
    total += sum(4 * factored_elements(p.shape) for p in request.dense)
    return StateEstimate(total, notes=_factor_note(request, fp32_grads=True))


def estimate_galore_adamw_8bit(request: EstimateRequest) -> StateEstimate:
    """bitsandbytes' 8-bit AdamW rules (plugins/bitsandbytes.py) applied to each target's
    low-rank gradient shape and to the other parameters, plus the projectors."""
    from .bitsandbytes import QMAP_BYTES, bnb_quantized, bnb_state_bytes

    groups, names = low_rank_request_groups(request)
    check_galore_projection(request.spec.name, groups, names)
    proj_type, rank = request.options["proj_type"], request.options["rank"]
    sizes = [_low_rank_numel(p, request) for p in request.targets]
    sizes += [p.numel for p in request.dense]
    total = sum(bnb_state_bytes(n, states=2, bits=8) for n in sizes)
    total += sum(svd_projector_bytes(p, rank, proj_type, p.dtype_bytes) for p in request.targets)
    quantized = sum(bnb_quantized(n, bits=8) for n in sizes)
    tables = quantized if request.layerwise else min(quantized, 1)  # one per optimizer
    return StateEstimate(total + tables * QMAP_BYTES, notes=_factor_note(request))


def _factor_note(request: EstimateRequest, *, fp32_grads: bool = False) -> tuple[str, ...]:
    """Say so where the SVD projector keeps whole factors (float32 gradients)."""
    if not any(fp32_grads or p.dtype_bytes == 4 for p in request.targets):
        return ()
    return ("the SVD projector of a float32 gradient keeps the whole SVD factor alive (a "
            "view): about +4 bytes per target parameter",)


@optimhub.hookimpl
def optimhub_register_optimizers(register: optimhub.Register) -> None:
    # A layerwise name has its base's builder: the core calls it once per parameter.
    register.builder("galore_adamw", build_galore_adamw, estimator=estimate_galore_adamw)
    register.builder("galore_adamw_layerwise", build_galore_adamw,
                     estimator=estimate_galore_adamw)
    register.builder("galore_adamw_8bit", build_galore_adamw_8bit,
                     estimator=estimate_galore_adamw_8bit)
    register.builder("galore_adamw_8bit_layerwise", build_galore_adamw_8bit,
                     estimator=estimate_galore_adamw_8bit)
    register.builder("galore_adafactor", build_galore_adafactor,
                     estimator=estimate_galore_adafactor)
    register.builder("galore_adafactor_layerwise", build_galore_adafactor,
                     estimator=estimate_galore_adafactor)
