"""Built-in plugin: PyTorch's own Muon (``torch.optim.Muon``, torch >= 2.9).

``muon_torch`` is Muon alone: it orthogonalises the momentum of each weight matrix, so it
is ``matrix_only`` and a whole model needs a fallback for its embeddings, head, norms and
biases. The catalog's ``muon`` is that routed form (registry.toml: matrices and conv kernels
here, the rest to AdamW), built by the hub's router: this module only builds the Muon part.

``torch.optim.Muon`` refuses any parameter that is not 2-D. A conv kernel
``(out, in, *k)`` is stepped as the matrix ``(out, in * prod(k))``, as timm and
pytorch-optimizer do (and as the Muon authors suggest): :class:`FlatteningMuon` gives
torch's own update to that view. When every parameter is 2-D the builder returns torch's
class itself, so the update is torch's to the bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optimhub.plugin import (
    BuildError,
    BuildRequest,
    Register,
    dense_estimator,
    hookimpl,
)


class FlatteningMuon(torch.optim.Muon):
    """``torch.optim.Muon`` that also takes N-D kernels, each stepped as the 2-D view
    ``(shape[0], -1)`` (momentum buffer, gradient and update alike); 2-D parameters get
    exactly torch's update."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        probe = torch.optim.Muon([torch.zeros(1, 1)], **kwargs)  # torch checks the keywords
        torch.optim.Optimizer.__init__(self, params, probe.defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        from torch.optim._muon import muon  # the functional step torch's Muon.step calls

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor] = []
            has_complex = self._init_group(group, params, grads, buffers)
            muon(
                [_matrix(p) for p in params],
                [g.reshape(g.shape[0], -1) for g in grads],
                [_matrix(b) for b in buffers],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                nesterov=group["nesterov"],
                ns_coefficients=group["ns_coefficients"],
                eps=group["eps"],
                ns_steps=group["ns_steps"],
                adjust_lr_fn=group["adjust_lr_fn"],
                has_complex=has_complex,
            )
        return loss


def _matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A view (updates in place reach the tensor), never a copy."""
    return tensor.view(tensor.shape[0], -1)


def build_muon(request: BuildRequest) -> torch.optim.Optimizer:
    kernels = [(n, p) for n, p in request.named_parameters().items() if p.ndim > 2]
    if not kernels:
        return torch.optim.Muon(request.param_groups, **request.kwargs)
    scattered = [n for n, p in kernels if not p.is_contiguous()]
    if scattered:
        raise BuildError(
            f"muon_torch steps an N-D kernel through its 2-D view, which needs a contiguous "
            f"tensor; {scattered[0]!r} is not (channels_last?): call "
            "model.to(memory_format=torch.contiguous_format) first"
        )
    return FlatteningMuon(request.param_groups, **request.kwargs)


estimate_muon = dense_estimator(1, "One momentum buffer per parameter, in its dtype.")


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("muon_torch", build_muon, estimator=estimate_muon)
