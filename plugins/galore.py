"""Built-in plugin: GaLore (galore-torch): GaLoreAdamW, GaLoreAdamW8bit, GaLoreAdafactor.

Specs are in registry.toml (the layerwise names inherit these builders and estimators).
The low-rank preparation (rank capped per weight, groups split per rank) and the projector
byte rules are the hub's shared low-rank helpers; what is GaLore's own:

- **Option combinations the backend rejects only inside ``step()`` are refused here**,
  with the parameter, its shape and the fix (``check_galore_projection``).
- **The projector keeps only the rank rows / columns of the SVD factor it uses**, not a
  view that keeps the whole factor alive (about 4 bytes per projected float32 parameter,
  more than the two low-rank moments together): a compact stand-in for galore-torch's
  projector is put in the state before the backend would make its own
  (``plugins/_svd_projector.py``), with galore-torch's numbers to the bit.
- **Checkpoints load with ``torch.load(weights_only=True)``**: the projector objects in the
  state are saved as plain data by the hub's state codec (``PROJECTORS``), under
  galore-torch's class, as before.
- GaLoreAdamW gets ``no_deprecation_warning=True`` (a registry ``fixed`` keyword): its
  "This implementation of AdamW is deprecated" FutureWarning tells users to leave the
  optimizer they chose.
- GaLoreAdamW8bit is refused with bitsandbytes >= 0.50, where its positional arguments
  land in the wrong parameters (``check_bitsandbytes_for_galore_8bit``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from optimhub.plugin import (
    RANK_KEY,
    BackendUnavailableError,
    Builder,
    BuildRequest,
    EstimateRequest,
    ObjectCodec,
    OptimArgsError,
    ParamShape,
    Register,
    StateEstimate,
    dense_bytes,
    estimate_groups,
    factored_elements,
    hookimpl,
    install_state_codec,
    installed_version,
    low_rank_grad_shape,
    low_rank_groups,
    low_rank_members,
    projection_side,
    svd_projector_bytes,
    version_tuple,
)

from ._bitsandbytes_rules import QMAP_BYTES, bnb_quantized, bnb_state_bytes

if TYPE_CHECKING:
    import torch

#: The projector class whose instances GaLore keeps in its state (saved as plain data).
PROJECTORS = ObjectCodec({"galore_torch.galore_projector": ("GaLoreProjector",)})


def check_galore_projection(
    optimizer: str, groups: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]
) -> None:
    """Refuse what GaLore's projector accepts at construction but fails on in ``step()``.

    With ``proj_type="reverse_std"`` a wide weight (rows < columns) is projected on the
    right; ``project_back`` then picks the side from the low-rank shape, which is square
    once the rank reaches the row count, and multiplies the wrong way round
    (``RuntimeError: mat1 and mat2 shapes cannot be multiplied``).
    """
    for group, name, param in low_rank_members(
            *_reverse_std_groups(groups, names)):  # asked of every target: filter groups first
        rows, cols = param.shape
        if rows < cols and group[RANK_KEY] >= rows:
            raise OptimArgsError(
                f"optimizer {optimizer!r}: proj_type='reverse_std' with rank "
                f"{group[RANK_KEY]} fails at the first step for {name!r} ({rows}x{cols}): "
                "galore-torch projects it back the wrong way round once the rank reaches "
                f"its row count. Use rank < {rows}, or proj_type='std'."
            )


def _reverse_std_groups(groups: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]
                        ) -> tuple[list[dict[str, Any]], list[Sequence[str]]]:
    """The groups (and their names) with ``proj_type="reverse_std"``."""
    chosen = [(group, group_names) for group, group_names in zip(groups, names, strict=True)
              if group.get("proj_type") == "reverse_std"]
    return [group for group, _ in chosen], [group_names for _, group_names in chosen]


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
    version = installed_version("bitsandbytes")
    if version is None:
        return  # galore_torch's own import of bitsandbytes reports the absence
    if version_tuple(version) >= BNB_BREAKING_VERSION:
        raise BackendUnavailableError(
            f"optimizer {optimizer!r}: galore-torch's GaLoreAdamW8bit is incompatible with "
            f"bitsandbytes {version}: it passes percentile_clipping=100 and block_wise=True "
            "positionally, and since bitsandbytes 0.50 they land in max_unorm and "
            "skip_zeros, which changes the update. Pin bitsandbytes below 0.50 "
            "(pip install 'bitsandbytes<0.50'), or use 'galore_adamw'."
        )


# -- builders ------------------------------------------------------------------------


def galore_builder(
    attribute: str, *, precheck: Callable[[str], None] | None = None,
    whole_tensors: bool = False,
) -> Builder:
    """A builder for ``galore_torch.<attribute>``: prepared groups, early checks, hooks.
    ``whole_tensors``: under FSDP2, step DTensor parameters as whole tensors (see
    plugins/_whole_tensors.py)."""

    def build(request: BuildRequest) -> torch.optim.Optimizer:
        if precheck is not None:
            precheck(request.spec.name)
        groups, names = low_rank_groups(request)
        check_galore_projection(request.spec.name, groups, names)
        cls = getattr(importlib.import_module("galore_torch"), attribute)
        optimizer = cls(groups, **request.kwargs)
        from ._galore_projector import CompactGaLoreProjector, GaLoreProjector
        from ._svd_projector import install_compact_projectors  # imports torch

        install_compact_projectors(optimizer, CompactGaLoreProjector, GaLoreProjector)
        install_state_codec(optimizer, PROJECTORS)
        if whole_tensors:
            from ._whole_tensors import whole_tensors_if_sharded

            whole_tensors_if_sharded(optimizer)
        return optimizer

    build.__qualname__ = f"galore_builder({attribute})"
    return build


build_galore_adamw = galore_builder("GaLoreAdamW")
build_galore_adamw_8bit = galore_builder(
    "GaLoreAdamW8bit", precheck=check_bitsandbytes_for_galore_8bit
)
# FSDP2: its factored moments mix plain tensors into DTensor ops; step whole tensors
build_galore_adafactor = galore_builder("GaLoreAdafactor", whole_tensors=True)


# -- memory estimates ----------------------------------------------------------------


def _low_rank_numel(param: ParamShape, request: EstimateRequest) -> int:
    side = projection_side(param.shape, request.options["proj_type"])
    return math.prod(low_rank_grad_shape(param.shape, request.options["rank"], side))


def estimate_galore_adamw(request: EstimateRequest) -> StateEstimate:
    """Targets: two low-rank moments and the projector (the rank rows / columns), in the
    parameter's dtype; the other parameters: AdamW's two full moments."""
    groups, names = estimate_groups(request)
    check_galore_projection(request.spec.name, groups, names)
    proj_type, rank = request.options["proj_type"], request.options["rank"]
    low_rank = sum(
        2 * _low_rank_numel(p, request) * p.dtype_bytes
        + svd_projector_bytes(p, rank, proj_type, p.dtype_bytes)
        for p in request.targets
    )
    return StateEstimate(low_rank + dense_bytes(request.dense, 2))


def estimate_galore_adafactor(request: EstimateRequest) -> StateEstimate:
    """GaLoreAdafactor casts every gradient to float32 first: fp32 factored second moments
    (of the low-rank gradient for targets) and an fp32 projector, whatever the dtype."""
    groups, names = estimate_groups(request)
    check_galore_projection(request.spec.name, groups, names)
    proj_type, rank = request.options["proj_type"], request.options["rank"]
    total = 0
    for p in request.targets:
        side = projection_side(p.shape, proj_type)
        total += 4 * factored_elements(low_rank_grad_shape(p.shape, rank, side))
        total += svd_projector_bytes(p, rank, proj_type, 4)
    total += sum(4 * factored_elements(p.shape) for p in request.dense)
    return StateEstimate(total)


def estimate_galore_adamw_8bit(request: EstimateRequest) -> StateEstimate:
    """bitsandbytes' 8-bit AdamW rules applied to each target's low-rank gradient shape and
    to the other parameters, plus the projectors."""
    groups, names = estimate_groups(request)
    check_galore_projection(request.spec.name, groups, names)
    proj_type, rank = request.options["proj_type"], request.options["rank"]
    sizes = [_low_rank_numel(p, request) for p in request.targets]
    sizes += [p.numel for p in request.dense]
    total = sum(bnb_state_bytes(n, states=2, bits=8) for n in sizes)
    total += sum(svd_projector_bytes(p, rank, proj_type, p.dtype_bytes) for p in request.targets)
    quantized = sum(bnb_quantized(n, bits=8) for n in sizes)
    tables = quantized if request.layerwise else min(quantized, 1)  # one per optimizer
    return StateEstimate(total + tables * QMAP_BYTES)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    # The layerwise names inherit these (the core calls the builder once per parameter).
    register.builder("galore_adamw", build_galore_adamw, estimator=estimate_galore_adamw)
    register.builder("galore_adamw_8bit", build_galore_adamw_8bit,
                     estimator=estimate_galore_adamw_8bit)
    register.builder("galore_adafactor", build_galore_adafactor,
                     estimator=estimate_galore_adafactor)
