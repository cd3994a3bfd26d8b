"""galore-torch's SVD projector, keeping only the rank rows / columns of the factor it uses
(why and how: ``_svd_projector``). It imports galore-torch, so only the GaLore builder
imports it, when it builds; the plugin module itself stays cheap to load.
"""

from __future__ import annotations

from galore_torch.galore_projector import GaLoreProjector

from ._svd_projector import keeping_only_the_slice

__all__ = ["CompactGaLoreProjector", "GaLoreProjector"]


class CompactGaLoreProjector(GaLoreProjector):
    """``GaLoreProjector`` whose orthogonal matrix owns its memory: the slice of the SVD
    factor, not a view that keeps the whole factor alive. Saved as ``GaLoreProjector``."""

    get_orthogonal_matrix = keeping_only_the_slice(GaLoreProjector.get_orthogonal_matrix)
