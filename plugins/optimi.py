"""Built-in plugin: StableAdamW from torch-optimi.

As in HF, the constructor gets ``lr``, the Adam betas and epsilon, and ``weight_decay``
(which the decay / no-decay groups override per group). optimi has no default for ``lr``;
the hub always passes one.

Where we differ from HF (docs/differences-from-transformers.md, section optimi):

- ``kahan_sum`` and ``decouple_lr`` are typed booleans: HF reads them with ``bool(str)``,
  so ``kahan_sum=False`` turns Kahan summation *on* there;
- ``max_lr`` is only read by optimi when ``decouple_lr`` is on; HF passes it either way
  (silently unused), we refuse it without ``decouple_lr=true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import (
    BuildRequest,
    EstimateRequest,
    OptimArgsError,
    Register,
    StateEstimate,
    dense_bytes,
    hookimpl,
)

if TYPE_CHECKING:
    import torch


def build_stable_adamw(request: BuildRequest) -> torch.optim.Optimizer:
    options = request.options
    if options.get("max_lr") is not None and not options.get("decouple_lr"):
        raise OptimArgsError(
            f"optim_args for {request.spec.name!r}: max_lr={options['max_lr']!r} is only used "
            "with decouple_lr=true (it scales the fully decoupled weight decay by lr/max_lr); "
            "add decouple_lr=true or remove max_lr"
        )
    from optimi import StableAdamW

    return StableAdamW(request.param_groups, weight_decay=request.weight_decay, **request.kwargs)


def estimate_stable_adamw(request: EstimateRequest) -> StateEstimate:
    """exp_avg and exp_avg_sq in the parameter's dtype, plus a Kahan compensation buffer
    for 16-bit parameters unless kahan_sum=false (eps_sq is a scalar)."""
    kahan = request.options.get("kahan_sum") is not False
    low_precision = [p for p in request.trainable if p.dtype_bytes == 2]
    return StateEstimate(
        dense_bytes(request.trainable, 2) + (dense_bytes(low_precision, 1) if kahan else 0),
        notes=("with the Triton kernels (CUDA) each parameter tensor also gets 5 bytes of "
               "scratch",),
    )


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("stable_adamw", build_stable_adamw, estimator=estimate_stable_adamw)
