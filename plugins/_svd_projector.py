"""SVD projectors that keep only the rows or columns they use: shared by the GaLore plugin and
the APOLLO plugin (whose ``proj="svd"`` is GaLore's projector, copied into apollo-torch).

Why: galore-torch's ``GaLoreProjector`` takes ``torch.linalg.svd`` of the gradient and keeps
``Vh[:rank]`` (or ``U[:, :rank]``). For a float32 gradient that is a *view*, and a view keeps
its whole storage alive: the min(m, n) x n factor instead of rank x n, about 4 bytes per
projected parameter, more than the two low-rank moments together. (Other dtypes are cast
back, which copies just the slice.)

The stand-in classes (``_galore_projector``, ``_apollo_projector``) are the backend's own
class with one change: ``get_orthogonal_matrix`` returns a copy that holds only the slice
(:func:`keeping_only_the_slice`), laid out in the same dimension order, so the matmuls
that use it see the same strides up to the leading dimension and give the same numbers
(tested bit for bit against galore-torch). During the SVD itself the whole factors exist,
as in galore-torch; after it, only the slice is kept.

How they get into the state without patching the package (:func:`install_compact_projectors`):
every backend creates its projector lazily in ``step()``, ``if "projector" not in state``,
from the group's ``rank``, ``update_proj_gap``, ``scale`` and ``proj_type``; a step
pre-hook puts a stand-in there first, made from the same four values, before the first
step. Checkpoints keep the backend's format: the state dict names the backend's class
(so a checkpoint reads as before, and one written before this change loads), and loading
turns every backend projector back into a stand-in and drops what a saved view kept of
the whole factor. (GaLoreAdamW8bit, a bitsandbytes class that runs no load hooks, gets the
stand-ins only; it runs on CUDA with bitsandbytes < 0.50, so it is untested here.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from optimhub.plugin import RANK_KEY

__all__ = ["install_compact_projectors", "keeping_only_the_slice", "owning_copy"]

#: Where the backends keep a parameter's projector in ``optimizer.state[param]``.
PROJECTOR_KEY = "projector"


def owning_copy(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` if it owns its memory; else a copy of just its elements, with the
    dimensions laid out in the same order (a column-major slice stays column-major)."""
    if matrix.untyped_storage().nbytes() <= matrix.numel() * matrix.element_size():
        return matrix
    order = sorted(range(matrix.dim()), key=matrix.stride, reverse=True)
    copy = matrix.permute(order).clone(memory_format=torch.contiguous_format)
    return copy.permute([order.index(d) for d in range(matrix.dim())])


def keeping_only_the_slice(get_orthogonal_matrix: Callable[..., Any]) -> Callable[..., Any]:
    """A projector's ``get_orthogonal_matrix`` whose result (one matrix, or the pair of
    ``proj_type="full"``) owns its memory: the slice, not the factor it was cut from."""

    @functools.wraps(get_orthogonal_matrix)
    def compact(self: Any, weights: torch.Tensor, rank: int, type: str) -> Any:
        result = get_orthogonal_matrix(self, weights, rank, type=type)
        if isinstance(result, list):
            return [owning_copy(matrix) for matrix in result]
        return owning_copy(result)

    return compact


def install_compact_projectors(
    optimizer: torch.optim.Optimizer,
    compact: type,
    backend: type,
    *,
    applies: Callable[[Mapping[str, Any]], bool] = lambda group: True,
) -> None:
    """Give every parameter of a low-rank group (one with ``rank``, and ``applies``) a
    ``compact`` projector before the backend would make a ``backend`` one (at the first
    step: building stays as cheap as the backend's own constructor), save it as the
    backend's class, and turn loaded ``backend`` projectors into ``compact`` ones.

    Call it before the state codec is installed: its state_dict hook must run first, so
    that the codec packs the backend's class. A class with a ``load_state_dict`` of its
    own (bitsandbytes-based: it runs no load hooks) only gets the stand-ins, which its
    pickled checkpoints then keep.
    """
    give = functools.partial(_give_compact_projectors, compact=compact, backend=backend,
                             applies=applies)
    optimizer.register_step_pre_hook(_BeforeTheFirstStep(give))
    if type(optimizer).load_state_dict is not torch.optim.Optimizer.load_state_dict:
        return
    optimizer.register_state_dict_post_hook(
        functools.partial(_saved_as_backend, compact=compact, backend=backend))
    optimizer.register_load_state_dict_post_hook(give)


class _BeforeTheFirstStep:
    """A step pre-hook that runs ``action(optimizer)`` once, before the first step; later
    steps only read a flag (torch's hooks cannot be removed while they are being run)."""

    def __init__(self, action: Callable[[torch.optim.Optimizer], None]) -> None:
        self.action: Callable[[torch.optim.Optimizer], None] | None = action

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.action is not None:
            action, self.action = self.action, None
            action(optimizer)


def _give_compact_projectors(
    optimizer: torch.optim.Optimizer,
    compact: type,
    backend: type,
    applies: Callable[[Mapping[str, Any]], bool],
) -> None:
    for group in optimizer.param_groups:
        if RANK_KEY not in group or not applies(group):
            continue
        for param in group["params"]:
            state = optimizer.state[param]
            projector = state.get(PROJECTOR_KEY)
            if projector is None:
                state[PROJECTOR_KEY] = compact(
                    group[RANK_KEY], update_proj_gap=group["update_proj_gap"],
                    scale=group["scale"], proj_type=group["proj_type"])
            elif type(projector) is backend:  # loaded, or made before the hub saw it
                projector.__class__ = compact
                if projector.ortho_matrix is not None:
                    projector.ortho_matrix = _owning(projector.ortho_matrix)


def _owning(matrix: Any) -> Any:
    if isinstance(matrix, list):
        return [owning_copy(m) for m in matrix]
    return owning_copy(matrix)


def _saved_as_backend(
    optimizer: torch.optim.Optimizer, state_dict: dict[str, Any], *, compact: type,
    backend: type,
) -> dict[str, Any] | None:
    """state_dict post-hook: every stand-in becomes a ``backend`` object with the same
    attributes, in copies of the per-parameter dicts (torch hands out the live ones)."""
    state = state_dict["state"]
    if not any(type(entry.get(PROJECTOR_KEY)) is compact for entry in state.values()):
        return None
    saved = {
        key: {**entry, PROJECTOR_KEY: _as(backend, entry[PROJECTOR_KEY])}
        if type(entry.get(PROJECTOR_KEY)) is compact else entry
        for key, entry in state.items()
    }
    return {**state_dict, "state": saved}


def _as(cls: type, obj: Any) -> Any:
    copy = cls.__new__(cls)
    copy.__dict__.update(vars(obj))
    return copy
