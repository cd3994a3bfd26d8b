"""``FlatteningMuon``: torch's Muon that also steps N-D kernels through their 2-D view.

A helper module of plugins/muon.py, imported by its builder only: it subclasses a torch
class, so importing it imports torch, which listing the catalog must not do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["FlatteningMuon"]


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
