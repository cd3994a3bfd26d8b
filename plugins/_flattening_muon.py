"""``FlatteningMuon``: torch's Muon that also steps N-D kernels through their 2-D view, and
sharded (DTensor) matrices as whole matrices.

Newton-Schulz orthogonalises a whole matrix. On an FSDP2 shard (a ``DTensor`` whose local
part is a block of rows) torch's Muon runs the iterations as DTensor operations: the
result is the whole matrix's, but its matrix products sum per shard and then across ranks,
and the bfloat16 iterations spread those rounding differences over the matrix (measured: up
to 6.4e-4 from one process after 5 steps at lr 1e-2, tools/distributed_matrix.py). So a
sharded matrix is gathered, stepped by torch's own functional update on the whole tensors,
and each rank keeps its shard of the result, as torchtitan's DistMuon does (gather ->
Newton-Schulz -> shard); the result is one process's, bit for bit. The price: every rank
gathers the parameter, its gradient and its momentum buffer, and orthogonalises every
matrix itself (DistMuon spreads the matrices over the ranks instead).

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
    ``(shape[0], -1)`` (momentum buffer, gradient and update alike), and DTensor shards,
    each stepped as its whole matrix; plain 2-D parameters get exactly torch's update."""

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
            # (param, grad, buffer) as stepped: a DTensor shard's whole tensors (gathered)
            triples = [tuple(_full(t) for t in triple) if _is_dtensor(triple[0]) else triple
                       for triple in zip(params, grads, buffers, strict=True)]
            muon(
                [_matrix(p) for p, _, _ in triples],
                [g.reshape(g.shape[0], -1) for _, g, _ in triples],
                [_matrix(b) for _, _, b in triples],
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
            for param, buffer, (whole_param, _, whole_buffer) in zip(
                params, buffers, triples, strict=True
            ):
                if whole_param is not param:  # a shard: keep this rank's part of the result
                    _keep_shard(param, whole_param)
                    _keep_shard(buffer, whole_buffer)
        return loss


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "full_tensor") and hasattr(tensor, "device_mesh")


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective: every rank calls it, in the same order)."""
    return tensor.full_tensor()


def _keep_shard(sharded: torch.Tensor, full: torch.Tensor) -> None:
    """Write this rank's part of ``full`` into the DTensor ``sharded`` (no communication:
    every rank holds the same ``full``)."""
    from torch.distributed.tensor import distribute_tensor

    mine = distribute_tensor(full, sharded.device_mesh, sharded.placements, src_data_rank=None)
    sharded.to_local().copy_(mine.to_local())


def _matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A view (updates in place reach the tensor), never a copy."""
    return tensor.view(tensor.shape[0], -1)
