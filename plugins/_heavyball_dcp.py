"""What heavyball's state needs to go through ``torch.distributed.checkpoint`` (DCP).

DCP loads a checkpoint *into* the fresh optimizer's state: its template must have every
saved entry, in the saved shape. A fresh optimizer's state is made by DCP's priming step
(a zero gradient for every parameter, one ``step()`` at lr 0); two things in heavyball
defeat it, each measured by tools/distributed_checkpoint.py:

- **PSGD's automatic initial scale.** With ``precond_init_scale=None`` (heavyball's
  default) the PSGD family (PSGDKron, PSGDLRA, PSGDPRO, QSGD, Lather...) computes the
  preconditioner's initial scale from the first gradient, and a zero gradient raises
  ``PrecondInitError`` ("Grad or HVP is all 0s"): the load failed at the priming step.
  :func:`prime_with_zero_gradients` gives such a step (every gradient zero, every group's
  lr 0: one heavyball would refuse anyway) a scale of 1 for that step only. What it
  initializes is only a template: DCP then overwrites every entry with the saved one.
- **A scalar state changes shape.** heavyball's bucketing (``BucketGuard``: the state of
  same-shape parameters is stacked along a new first dim, 0-d values unsqueezed, and cut
  back as ``[i:i+1]``) creates a scalar state 0-d on the first step and leaves it shape
  ``(1,)`` from the second step on: SOAP-NAdam's ``mu_product``, PSGD's ``step``. The
  primed template (one step) had ``()`` and a checkpoint after two steps ``(1,)``: DCP's
  planner refused ("Size mismatch between saved torch.Size([1]) and current:
  torch.Size([])"). :func:`scalar_bucket_state` gives ``state_dict()`` every one-element
  ``(1,)`` value of a bucketed key as a 0-d view of the same storage (so DCP's in-place
  load lands in the live tensor); the next step stacks a 0-d or a ``(1,)`` one alike, so
  the arithmetic is unchanged. Only the keys a ``BucketGuard`` stacks: elsewhere a
  ``(1,)`` state (a one-element parameter's moment) must keep its shape.

Private to the heavyball plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["prime_with_zero_gradients", "scalar_bucket_state"]

_SCALE = "precond_init_scale"


def prime_with_zero_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Let a priming step (every gradient zero, every lr 0) initialize PSGD's
    preconditioner with scale 1 where heavyball would compute it from the gradient."""
    if not any(_SCALE in group for group in optimizer.param_groups):
        return
    changed: list[dict[str, Any]] = []

    def restore() -> None:
        for group in changed:
            group[_SCALE] = None
        changed.clear()

    def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        restore()  # a priming step that raised left its scale behind
        if not _is_priming(opt):
            return
        for group in opt.param_groups:
            if _SCALE in group and group[_SCALE] is None:
                group[_SCALE] = 1.0
                changed.append(group)

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(lambda opt, args, kwargs: restore())


def _is_priming(optimizer: torch.optim.Optimizer) -> bool:
    """DCP's priming step: every group's lr is 0 and every gradient there is all zeros."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    return (bool(grads)
            and all(float(group.get("lr", 1.0)) == 0.0 for group in optimizer.param_groups)
            and all(not g.any() for g in grads))


def scalar_bucket_state(optimizer: torch.optim.Optimizer) -> None:
    """Make ``state_dict()`` give each one-element value of a bucketed key as a 0-d view."""
    keys = _bucketed_keys(optimizer)
    if not keys:
        return

    def scalar(entry: Any) -> Any:
        if not isinstance(entry, Mapping):
            return entry
        return {key: (value.view(()) if key in keys and isinstance(value, torch.Tensor)
                      and value.shape == (1,) else scalar(value))
                for key, value in entry.items()}

    def hook(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state = state_dict.get("state")
        if not isinstance(state, Mapping):
            return state_dict
        return {**state_dict, "state": {index: scalar(entry) for index, entry in state.items()}}

    optimizer.register_state_dict_post_hook(hook)


def _bucketed_keys(optimizer: torch.optim.Optimizer) -> frozenset[str]:
    """The state keys a ``BucketGuard`` of ``optimizer``'s chain stacks (none where this
    heavyball has no such thing: then nothing is reshaped)."""
    from heavyball import chainable

    guard = getattr(chainable, "BucketGuard", None)
    walk = getattr(chainable, "_walk_fns", None)
    fns = getattr(optimizer, "fns", None)
    if guard is None or walk is None or fns is None:
        return frozenset()
    return frozenset(key for transform in walk(fns) if isinstance(transform, guard)
                     for key in transform._chain_keys)
