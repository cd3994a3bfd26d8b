"""apollo-torch's SVD projector (``proj="svd"``: GaLore's projector, copied into
apollo-torch), keeping only the rank rows / columns of the factor it uses (why and how:
``_svd_projector``). It imports apollo-torch, so only the APOLLO builder imports it.
"""

from __future__ import annotations

from apollo_torch.svd_projector import GaLoreProjector

from ._svd_projector import keeping_only_the_slice

__all__ = ["CompactSVDProjector", "GaLoreProjector"]


class CompactSVDProjector(GaLoreProjector):
    """apollo-torch's ``GaLoreProjector`` whose orthogonal matrix owns its memory: the
    slice of the SVD factor, not a view that keeps the whole factor alive. Saved as
    apollo-torch's ``GaLoreProjector``."""

    get_orthogonal_matrix = keeping_only_the_slice(GaLoreProjector.get_orthogonal_matrix)
