"""Built-in plugin: GrokAdamW (the ``grokadamw`` package).

GrokAdamW has three habits a hub must absorb without wrapping the optimizer:

- ``import grokadamw`` runs ``logging.basicConfig(level=INFO)``. The core imports
  backends inside ``preserve_root_logger()``, so the user's root logger keeps its level
  and handlers.
- It keeps its per-parameter state in ``param_groups[i]['state']``, keyed by the Parameter
  objects, so ``optimizer.state`` and ``state_dict()['state']`` are empty and a checkpoint
  loses the state silently (after ``torch.save``/``torch.load`` the keys are copies that
  match no parameter). The builder makes each group's ``'state'`` the optimizer's own
  ``state`` mapping (one dict, shared), so GrokAdamW reads and writes ``optimizer.state``
  as torch's optimizers do, and registers a ``state_dict`` post-hook and a
  ``load_state_dict`` post-hook that give the state in the standard ``state`` section
  (keyed by parameter index, loadable with ``weights_only=True``, a snapshot) and link the
  groups again after a load. ``step()`` is untouched. With ``optimizer.state`` empty,
  DCP's ``get_state_dict`` took every trained GrokAdamW for a fresh one and *primed* it (a
  zero-gradient step at lr 0) at each save: one more step counted, the moments and the
  gradient EMA decayed, and the resumed run ended 4.7e-2 off (measured by
  tools/distributed_checkpoint.py).
- Every step enters the deprecated ``torch.cuda.amp.autocast()``, which warns (and, without
  CUDA, warns that autocast is disabled). Both warnings are filtered by message *and* by the
  module that issues them (grokadamw's own line, and torch's deprecated
  ``torch.cuda.amp.autocast`` class), so no warning from the user's own code is hidden.

Two facts of the algorithm worth knowing: beta1 shrinks with the parameter's index inside
its group (``beta1 * (1 - gamma) ** i``), so how parameters are grouped changes the maths
(our decay / no-decay groups are HF's, so results match HF's); and ``gradient_clipping``
clips each parameter's gradient separately, in place, inside ``step()``.

Where we differ from HF (docs/differences-from-transformers.md, section grokadamw): HF passes
no Adam hyperparameters, so ``adam_beta1``, ``adam_beta2`` and ``adam_epsilon`` are silently
ignored there; we pass them (their HF defaults equal GrokAdamW's own, so default runs match).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from optimhub.plugin import (
    BuildRequest,
    EstimateRequest,
    OptimHubWarning,
    Register,
    StateEstimate,
    dense_bytes,
    hookimpl,
)

if TYPE_CHECKING:
    import torch

#: The warnings GrokAdamW's step() triggers through torch.cuda.amp.autocast(), each with the
#: module it is attributed to: (message regex, category, module regex).
_STEP_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated", FutureWarning,
     r"grokadamw\.grokadamw\Z"),
    (r"CUDA is not available or torch_xla is imported\. Disabling autocast", UserWarning,
     r"torch\.cuda\.amp\.autocast_mode\Z"),
)


def build_grokadamw(request: BuildRequest) -> torch.optim.Optimizer:
    from grokadamw import GrokAdamW

    _quiet_step_warnings()
    optimizer = GrokAdamW(request.param_groups, **request.kwargs)
    _link_groups(optimizer)
    optimizer.register_state_dict_post_hook(state_into_state_dict)
    optimizer.register_load_state_dict_post_hook(state_into_groups)
    return optimizer


def _quiet_step_warnings() -> None:
    """Filter the two per-step warnings; re-adding an identical filter replaces it."""
    for message, category, module in _STEP_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def state_into_state_dict(
    optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
) -> dict[str, Any]:
    """``state_dict`` post-hook: ``param_groups[i]['state'][param]`` -> ``state[index]``.

    The packed groups hold each parameter's index in ``params`` (same order as the live
    groups), which is the key torch's ``load_state_dict`` maps back to the parameter. The
    per-parameter dicts are copied so a later ``step()`` does not change a saved
    ``'step'`` count.
    """
    for group, packed in zip(optimizer.param_groups, state_dict["param_groups"], strict=True):
        packed.pop("state", None)
        kept = group.get("state") or {}
        for param, index in zip(group["params"], packed["params"], strict=True):
            if param in kept:
                state_dict["state"][index] = dict(kept[param])
    return state_dict


def _link_groups(optimizer: torch.optim.Optimizer) -> None:
    """Each group's ``'state'`` is ``optimizer.state`` (GrokAdamW looks a parameter up in
    its group's, so one mapping for all groups holds every parameter's state)."""
    for group in optimizer.param_groups:
        group["state"] = optimizer.state


def state_into_groups(optimizer: torch.optim.Optimizer) -> None:
    """``load_state_dict`` post-hook: the loaded ``optimizer.state``, on the CPU, linked
    as every group's ``state`` again (torch's load replaced both).

    torch has already mapped the saved indices to the live parameters (and cast the tensors
    to each parameter's dtype); GrokAdamW expects its state on the CPU. A group's saved
    ``state`` keyed by parameter copies (a checkpoint written without these hooks) cannot
    be matched to parameters: that is said, not silently dropped.
    """
    import torch

    for number, group in enumerate(optimizer.param_groups):
        live = {id(p) for p in group["params"]}
        stale = [key for key in group.get("state") or {} if id(key) not in live]
        if stale:
            warnings.warn(
                f"optimhub: param group {number} of this GrokAdamW checkpoint holds its state "
                "keyed by parameter copies (it was saved without optimhub's state hooks), so "
                f"the state of {len(stale)} parameters cannot be restored and starts afresh.",
                OptimHubWarning,
                stacklevel=3,
            )
        for p in group["params"]:
            if p in optimizer.state:
                optimizer.state[p] = {k: v.to("cpu") if isinstance(v, torch.Tensor) else v
                                      for k, v in optimizer.state[p].items()}
    _link_groups(optimizer)


def estimate_grokadamw(request: EstimateRequest) -> StateEstimate:
    """exp_avg, exp_avg_sq and grok_ema in the parameter's dtype, kept on the CPU."""
    return StateEstimate(
        dense_bytes(request.trainable, 3),
        notes=("GrokAdamW keeps its state in CPU memory (it moves it to the parameter's "
               "device and back on every step)",),
    )


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("grokadamw", build_grokadamw, estimator=estimate_grokadamw)
