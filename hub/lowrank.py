"""Low-rank projection, shared by every backend that keeps projected state for 2-D weights
(GaLore, APOLLO, and the catalogs' variants of them): one definition of the rank cap, the
target groups, the projected side and shape, and the projector's bytes, used by builders and
estimators alike.

The facts here are the projection's, not a backend's: a low-rank group is a param group
carrying ``rank``; only 2-D weights may be in one (the backends index ``grad.shape[1]``);
the rank is capped at each weight's smaller side, and since a group carries one rank, a
target group is split per effective rank ``min(rank, *weight.shape)``, in order of first
appearance, each keeping model order. For an SVD projector the cap only names the rank it
really uses; for a random projector it is what keeps the state below dense Adam's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .build import BuildRequest
from .errors import OptimArgsError, TargetModulesError
from .estimator import EstimateRequest, ParamShape

if TYPE_CHECKING:
    import torch

__all__ = [
    "RANK_KEY",
    "estimate_groups",
    "low_rank_grad_shape",
    "low_rank_groups",
    "low_rank_members",
    "projection_side",
    "svd_projector_bytes",
]

#: The group key that makes a group low-rank (galore-torch and apollo-torch alike).
RANK_KEY = "rank"


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
    rank = int(group[RANK_KEY])
    for name, param in zip(names, group["params"], strict=True):
        shape = param.shape
        if len(shape) != 2:
            raise TargetModulesError(
                f"optimizer {optimizer!r}: target parameter {name!r} has shape "
                f"{tuple(param.shape)}, but only 2-D weight matrices can get a low-rank "
                "update (the backend fails at the first step otherwise); narrow "
                "optim_target_modules to nn.Linear layers"
            )
        effective = rank if rank <= shape[0] and rank <= shape[1] else min(shape)
        bucket = buckets.get(effective)
        if bucket is None:
            bucket = buckets[effective] = []
        bucket.append((name, param))
    return buckets


def low_rank_members(
    groups: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]
) -> Iterable[tuple[dict[str, Any], str, Any]]:
    """(group, name, parameter) for every parameter of a low-rank group: what a backend's
    early checks walk, on real groups (``low_rank_groups``) or on shapes
    (``estimate_groups``) alike."""
    for group, group_names in zip(groups, names, strict=True):
        if RANK_KEY in group:
            for name, param in zip(group_names, group["params"], strict=True):
                yield group, name, param


def estimate_groups(request: EstimateRequest) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """One group per target weight, as ``low_rank_groups`` would place it (the rank capped
    at the weight's smaller side), with shapes for parameters: what a plugin's build-time
    checks read when the same check must refuse an estimate."""
    options = {a.key: request.options[a.name] for a in request.spec.target_group_args
               if a.name in request.options}
    groups = [{**options, "params": [p], RANK_KEY: min(int(options[RANK_KEY]), *p.shape)}
              for p in request.targets]
    return groups, [[p.name] for p in request.targets]


#: How each ``proj_type`` picks the projected side of an (m, n) gradient: "right" keeps
#: (m, r), "left" keeps (r, n), "both" keeps (r, r).
_SIDES: Mapping[str, Callable[[int, int], str]] = {
    "std": lambda m, n: "right" if m >= n else "left",
    "reverse_std": lambda m, n: "left" if m >= n else "right",
    "right": lambda m, n: "right",
    "left": lambda m, n: "left",
    "full": lambda m, n: "both",
}


def projection_side(shape: Sequence[int], proj_type: str) -> str:
    """``"right"``, ``"left"`` or ``"both"``: which side of a 2-D gradient a low-rank
    projector of this ``proj_type`` multiplies (``std`` keeps the smaller side)."""
    if proj_type not in _SIDES or len(shape) != 2:
        raise OptimArgsError(
            f"no low-rank projection for proj_type={proj_type!r} on shape {tuple(shape)}: "
            f"a 2-D weight and one of {', '.join(_SIDES)} are needed"
        )
    return _SIDES[proj_type](shape[0], shape[1])


def low_rank_grad_shape(shape: Sequence[int], rank: int, side: str) -> tuple[int, int]:
    """The projected gradient of an (m, n) weight: what the low-rank moments are shaped
    like. ``rank`` is capped at the smaller side (the hub caps it when it builds)."""
    m, n = shape
    r = min(rank, m, n)
    return {"right": (m, r), "left": (r, n), "both": (r, r)}[side]


def svd_projector_bytes(param: ParamShape, rank: int, proj_type: str, grad_bytes: int) -> int:
    """What an SVD projector (GaLore's, also APOLLO's ``proj=svd``) keeps for one (m, n)
    weight, given the bytes per element of the gradient it is fed: the rank rows of
    ``Vh`` (r x n, on the right), the rank columns of ``U`` (m x r, on the left), or both.

    That is what the built-in plugins' projectors keep. galore-torch's own keeps, for a
    float32 gradient, a view that holds the whole factor (min(m, n) x n or m x min(m, n):
    about +4 bytes per parameter); the plugins keep a copy of the slice instead.
    """
    m, n = param.shape
    r = min(rank, m, n)
    side = projection_side(param.shape, proj_type)
    return grad_bytes * {"right": r * n, "left": m * r, "both": m * r + r * n}[side]
