"""Built-in plugin: MindSpore / MindFormers' ``AdamWeightDecay`` update, in PyTorch.

MindFormers recipes (``optimizer: type: FP32StateAdamWeightDecay``, in most of its model
configs of r1.3 and half of r1.5's; MindSpore's ``nn.AdamWeightDecay`` behind it) train
with an Adam that has **no bias correction** and puts the decay inside the learning-rate
scaling::

    m_t = b1 m + (1 - b1) g
    v_t = b2 v + (1 - b2) g^2
    w_t = w - lr (m_t / (sqrt(v_t) + eps) + wd w)

(mindspore.nn.AdamWeightDecay's documented update; MindFormers' r1.3.0 documentation of
``mindformers.core.AdamW`` shows the same formula.) The decay term ``lr wd w`` is exactly
torch AdamW's decoupled decay; what differs from ``torch.optim.AdamW`` is the missing
``1 - b^t`` corrections, which make the first steps much smaller (step 1 moves each weight
by about ``lr (1 - b1) / sqrt(1 - b2)``, 3.2 lr at the default betas, not lr). No torch
optimizer computes this, so it is a small optimizer of our own:
:class:`AdamWeightDecay`.

Two choices, both MindFormers' (FP32StateAdamWeightDecay's reason to exist):

- the moments are kept in float32 whatever the parameters' dtype (8 bytes of state per
  parameter; float64 parameters keep float64 moments), and the update is computed in that
  dtype and rounded once into a 16-bit parameter;
- ``lr`` and ``weight_decay`` are read from each param group at every step, so per-group
  values, learning-rate schedules and weight-decay schedules are all honoured.

MindFormers' *current* ``mindformers.core.AdamW`` (its code since it was added, and its
documentation since December 2024) is the bias-corrected AdamW: use ``adamw_torch`` for it
(docs/user-guide.md, "Coming from MindFormers").

The ``foreach`` path (``torch._foreach_*`` over all tensors of a group; by default on CUDA,
as torch's own optimizers choose) and the per-parameter reference path (by default on the
CPU, where it measured faster for large tensors) compute the same operations in the same
order; a test checks that they give identical results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optimhub.plugin import (
    BuildRequest,
    EstimateRequest,
    Register,
    StateEstimate,
    hookimpl,
)

if TYPE_CHECKING:
    import torch

    from ._adamweightdecay import AdamWeightDecay

__all__ = ["AdamWeightDecay"]


def __getattr__(name: str) -> Any:
    """``AdamWeightDecay`` is imported on first access (PEP 562): the class needs torch, and
    catalog commands load this plugin without it."""
    if name == "AdamWeightDecay":
        from ._adamweightdecay import AdamWeightDecay

        return AdamWeightDecay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_adamweightdecay(request: BuildRequest) -> torch.optim.Optimizer:
    from ._adamweightdecay import AdamWeightDecay

    return AdamWeightDecay(request.param_groups, **request.kwargs)


def estimate_adamweightdecay(request: EstimateRequest) -> StateEstimate:
    """exp_avg and exp_avg_sq, in float32 for 16- and 32-bit parameters (float64 ones keep
    float64 moments)."""
    return StateEstimate(sum(2 * p.numel * max(4, p.dtype_bytes) for p in request.trainable))


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adamweightdecay", build_adamweightdecay,
                     estimator=estimate_adamweightdecay)
