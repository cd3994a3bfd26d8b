"""Step sharded (DTensor) parameters as whole tensors, for optimizers whose update needs
the whole matrix (a random or SVD projection of it) and that mix their own plain tensors
into the step, which DTensor refuses ("got mixed torch.Tensor and DTensor").

A helper module of the built-in plugins, imported by their builders only (it imports
torch). Around each ``step()``, every DTensor parameter of the selected param groups is
gathered (parameter and gradient), the backend steps the whole tensors exactly as it
would in one process, and each rank keeps its shard of the result. The optimizer state of
those parameters is therefore whole (not sharded) and the same on every rank: for a
low-rank optimizer it is the small projected state. ``state_dict()`` between steps is
keyed as usual, by the DTensor parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

import torch

__all__ = ["has_dtensor", "step_whole_tensors", "whole_tensors_if_sharded"]


def whole_tensors_if_sharded(
    optimizer: torch.optim.Optimizer,
    selected: Callable[[dict[str, Any]], bool] = lambda group: True,
) -> torch.optim.Optimizer:
    """``optimizer``, stepping its DTensor parameters (in the groups ``selected`` picks)
    as whole tensors when it has any; unchanged otherwise."""
    if has_dtensor(p for group in optimizer.param_groups for p in group["params"]):
        step_whole_tensors(optimizer, selected)
    return optimizer


def has_dtensor(params: Any) -> bool:
    """Whether any of ``params`` is a DTensor (FSDP2's shards); imports nothing."""
    return any(hasattr(p, "device_mesh") and hasattr(p, "full_tensor") for p in params)


def step_whole_tensors(optimizer: torch.optim.Optimizer,
                       selected: Callable[[dict[str, Any]], bool]) -> None:
    """Make ``optimizer.step()`` step the DTensor parameters of the param groups that
    ``selected`` picks as whole tensors (every rank must step: it gathers).

    The new step is a method bound to ``optimizer``, as the one it replaces: torch's
    ``LRScheduler`` rewraps ``optimizer.step`` through its ``__func__`` (a plain function
    there made every lr scheduler fail at construction)."""
    inner_step = optimizer.step

    def step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        swapped = _swap_in_whole_tensors(self, selected)
        try:
            return inner_step(closure)
        finally:
            _swap_back(self, swapped)

    optimizer.step = MethodType(step, optimizer)  # type: ignore[method-assign]


def _swap_in_whole_tensors(optimizer: torch.optim.Optimizer,
                           selected: Callable[[dict[str, Any]], bool]) -> list[Any]:
    swapped = []
    for group in optimizer.param_groups:
        if not selected(group):
            continue
        for index, param in enumerate(group["params"]):
            if param.grad is None or not has_dtensor([param]):
                continue
            whole = param.detach().full_tensor()
            whole.grad = param.grad.full_tensor()
            if param in optimizer.state:
                optimizer.state[whole] = optimizer.state.pop(param)
            group["params"][index] = whole
            swapped.append((group, index, param, whole))
    return swapped


def _swap_back(optimizer: torch.optim.Optimizer, swapped: list[Any]) -> None:
    from torch.distributed.tensor import distribute_tensor

    for group, index, param, whole in swapped:
        group["params"][index] = param
        if whole in optimizer.state:
            optimizer.state[param] = optimizer.state.pop(whole)
        # every rank holds the same whole tensor: take this rank's part, no communication
        mine = distribute_tensor(whole.detach(), param.device_mesh, param.placements,
                                 src_data_rank=None)
        with torch.no_grad():
            param.to_local().copy_(mine.to_local())
