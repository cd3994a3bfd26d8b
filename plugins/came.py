"""Built-in plugin: CAME (pip ``came-pytorch``, the authors' implementation), ``came``.

CAME is Adafactor's factored second moment plus a factored *confidence* statistic (the
residual of the update against its momentum), with a first moment: memory close to
Adafactor with momentum, stability close to Adam. Its constructor takes three betas and
two epsilons, neither of which is Adam's, so they are typed options (``betas``, ``eps``)
rather than adam_beta1/2 / adam_epsilon. ``pto_came`` is pytorch-optimizer's port.
"""

from __future__ import annotations

from optimhub.plugin import (
    EstimateRequest,
    Register,
    StateEstimate,
    class_builder,
    dense_bytes,
    factored_elements,
    hookimpl,
)


def estimate(request: EstimateRequest) -> StateEstimate:
    """exp_avg in full; for matrices two factored statistics (squared gradient and
    residual: a row and a column each), for vectors the full squared gradient."""
    factored = sum(
        (2 * factored_elements(p.shape) if p.ndim >= 2 else p.numel) * p.dtype_bytes
        for p in request.trainable
    )
    return StateEstimate(dense_bytes(request.trainable, 1) + factored)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("came", class_builder("came_pytorch", "CAME"), estimator=estimate)
