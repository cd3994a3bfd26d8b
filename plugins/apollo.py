"""Built-in plugin: APOLLO (apollo-torch): ``APOLLOAdamW``, also as the APOLLO-Mini preset.

Specs are in registry.toml (``apollo_mini`` is ``apollo_adamw`` with the APOLLO-Mini
defaults: rank 1, one scaling factor per tensor, scale 128). The builder uses the
hub's shared low-rank preparation and state codec (its SVD projector is GaLore's, its
random projector its own), and adds the checks of APOLLO's own step:

- the rank is capped at each weight's smaller side, which for APOLLO's random
  projector matters: it does not clamp, so rank 128 on a 64x64 weight keeps 64x128
  moments, more than dense Adam;
- ``proj_type="full"`` is refused: the random projector raises NotImplementedError and
  the SVD one fails at the second step;
- the SVD projector (``proj="svd"``, GaLore's, copied into apollo-torch) keeps only the
  rank rows / columns of the factor it uses, as the GaLore plugin's does
  (``plugins/_svd_projector.py``), with apollo-torch's numbers to the bit;
- channel-wise scaling is checked against each weight's shape (see
  ``check_apollo_scaling``).

betas and eps come from the training arguments for every group (HF passes them into the
target group only, so its other parameters get APOLLO's eps of 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from optimhub.plugin import (
    RANK_KEY,
    BuildRequest,
    EstimateRequest,
    ObjectCodec,
    OptimArgsError,
    Register,
    StateEstimate,
    dense_bytes,
    estimate_groups,
    hookimpl,
    install_state_codec,
    low_rank_grad_shape,
    low_rank_groups,
    low_rank_members,
    projection_side,
    svd_projector_bytes,
)

if TYPE_CHECKING:
    import torch

__all__ = ["build_apollo", "check_apollo_scaling", "estimate_apollo"]


#: The projector classes APOLLO keeps in its state (saved as plain data).
PROJECTORS = ObjectCodec({
    "apollo_torch.svd_projector": ("GaLoreProjector",),
    "apollo_torch.random_projector": ("GradientProjector",),
})


def build_apollo(request: BuildRequest) -> torch.optim.Optimizer:
    groups, names = low_rank_groups(request)
    check_apollo_scaling(request.spec.name, groups, names)
    from apollo_torch import APOLLOAdamW

    optimizer = APOLLOAdamW(groups, **request.kwargs)
    from ._apollo_projector import CompactSVDProjector, GaLoreProjector
    from ._svd_projector import install_compact_projectors  # imports torch

    install_compact_projectors(optimizer, CompactSVDProjector, GaLoreProjector,
                               applies=lambda group: group["proj"] == "svd")
    install_state_codec(optimizer, PROJECTORS)
    from ._whole_tensors import whole_tensors_if_sharded

    # FSDP2: the random projection is drawn for the whole weight, so project it whole
    return whole_tensors_if_sharded(optimizer, lambda group: "rank" in group)


def check_apollo_scaling(
    optimizer: str, groups: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]
) -> None:
    """Refuse what ``APOLLOAdamW`` accepts at construction but fails on in ``step()``.

    With ``scale_type="channel"`` the scaling factor is the norm of the low-rank update
    taken along the weight's longer side (dim 1 when rows >= columns, else dim 0), and
    multiplies the full gradient: it must have one entry per row (per column) of the
    weight, or a single one. ``proj_type="std"`` always projects the side that makes this
    hold; ``reverse_std``, ``right`` and ``left`` do so only for some shapes and ranks,
    and fail with "The size of tensor a must match the size of tensor b" otherwise.
    """
    for group, name, param in low_rank_members(groups, names):
        proj_type = group["proj_type"]
        if proj_type == "full":
            raise OptimArgsError(
                f"optimizer {optimizer!r}: proj_type='full' is not implemented by apollo-torch "
                "(its random projector raises NotImplementedError, the SVD one fails at the "
                "second step); use proj_type='std' (the default), 'reverse_std', 'right' or "
                "'left'"
            )
        if group["scale_type"] != "channel":
            continue
        rows, cols = param.shape
        side = projection_side((rows, cols), proj_type)
        low_rows, low_cols = low_rank_grad_shape((rows, cols), group[RANK_KEY], side)
        by_row = rows >= cols
        entries, wanted = (low_rows, rows) if by_row else (low_cols, cols)
        if entries not in (wanted, 1):
            raise OptimArgsError(
                f"optimizer {optimizer!r}: scale_type='channel' with proj_type={proj_type!r} "
                f"fails at the first step for {name!r} ({rows}x{cols}, rank "
                f"{group[RANK_KEY]}): the projected gradient is {low_rows}x{low_cols}, so "
                f"the channel scaling has {entries} entries for the weight's {wanted} "
                f"{'rows' if by_row else 'columns'}. Use proj_type='std' (it projects the "
                "side that fits) or scale_type='tensor'."
            )


def estimate_apollo(request: EstimateRequest) -> StateEstimate:
    """Targets: two moments of the projected gradient plus the projector, in the
    parameter's dtype; the random projector is rank x the projected side, the SVD one is
    GaLore's (the rank rows / columns of the factor). Other parameters: AdamW's two full
    moments. The channel scale and the norm limiter are scalars."""
    groups, names = estimate_groups(request)
    check_apollo_scaling(request.spec.name, groups, names)
    options = request.options
    total = dense_bytes(request.dense, 2)
    for p in request.targets:
        rank = min(options["rank"], *p.shape)
        side = projection_side(p.shape, options["proj_type"])
        total += 2 * math.prod(low_rank_grad_shape(p.shape, rank, side)) * p.dtype_bytes
        if options["proj"] == "svd":
            total += svd_projector_bytes(p, rank, options["proj_type"], p.dtype_bytes)
        else:
            total += rank * (p.shape[1] if side == "right" else p.shape[0]) * p.dtype_bytes
    return StateEstimate(total)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    # apollo_adamw_layerwise and apollo_mini inherit this builder and estimator.
    register.builder("apollo_adamw", build_apollo, estimator=estimate_apollo)
