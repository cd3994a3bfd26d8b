"""Built-in plugin: Prodigy (pip ``prodigyopt``, the authors' implementation), ``prodigy``.

Prodigy estimates the step size itself (D-Adaptation's distance estimate, made faster):
``learning_rate`` is a *multiplier* of that estimate and should stay at 1.0 (HF's default
of 5e-5 would make it a near-zero step; the summary says so). Schedules still apply to the
multiplier. Its ``weight_decay`` is decoupled by default (``decouple``). ``pto_prodigy`` is
pytorch-optimizer's port; this is the reference implementation.
"""

from __future__ import annotations

from optimhub.plugin import (
    EstimateRequest,
    Register,
    StateEstimate,
    class_builder,
    dense_bytes,
    hookimpl,
)


def estimate(request: EstimateRequest) -> StateEstimate:
    """exp_avg, exp_avg_sq, and s and p0 (the initial weights) on every slice_p-th element."""
    slice_p = int(request.option("slice_p", 1))
    sliced = sum(-(-p.numel // slice_p) * p.dtype_bytes for p in request.trainable)
    return StateEstimate(dense_bytes(request.trainable, 2) + 2 * sliced)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("prodigy", class_builder("prodigyopt", "Prodigy"), estimator=estimate)
