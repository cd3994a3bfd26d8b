"""Built-in plugin: PyTorch's own Muon (``torch.optim.Muon``, torch >= 2.9).

``muon_torch`` is Muon alone: it orthogonalises the momentum of each weight matrix, so it
is ``matrix_only`` and a whole model needs a fallback for its embeddings, head, norms and
biases. The catalog's ``muon`` is that routed form (registry.toml: matrices and conv kernels
here, the rest to AdamW), built by the hub's router: this module only builds the Muon part.

``torch.optim.Muon`` refuses any parameter that is not 2-D. A conv kernel
``(out, in, *k)`` is stepped as the matrix ``(out, in * prod(k))``, as timm and
pytorch-optimizer do (and as the Muon authors suggest): ``FlatteningMuon``
(plugins/_flattening_muon.py, imported by the builder) gives torch's own update to that
view. Sharded (DTensor, FSDP2) matrices are gathered, orthogonalised whole and sharded
again, by the same class, so that FSDP2 equals one process bit for bit. When every
parameter is a plain 2-D tensor the builder returns torch's class itself, so the update is
torch's to the bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import (
    BuildError,
    BuildRequest,
    Register,
    dense_estimator,
    hookimpl,
)

if TYPE_CHECKING:
    import torch


def build_muon(request: BuildRequest) -> torch.optim.Optimizer:
    import torch

    named = request.named_parameters().items()
    kernels = [(n, p) for n, p in named if p.ndim > 2]
    sharded = any(hasattr(p, "device_mesh") for _, p in named)  # DTensors (FSDP2)
    if not kernels and not sharded:
        return torch.optim.Muon(request.param_groups, **request.kwargs)
    scattered = [n for n, p in kernels if not p.is_contiguous()]
    if scattered:
        raise BuildError(
            f"muon_torch steps an N-D kernel through its 2-D view, which needs a contiguous "
            f"tensor; {scattered[0]!r} is not (channels_last?): call "
            "model.to(memory_format=torch.contiguous_format) first"
        )
    from ._flattening_muon import FlatteningMuon

    return FlatteningMuon(request.param_groups, **request.kwargs)


estimate_muon = dense_estimator(1, "One momentum buffer per parameter, in its dtype.")


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("muon_torch", build_muon, estimator=estimate_muon)
