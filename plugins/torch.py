"""Built-in plugin: the optimizers that ship with PyTorch itself.

Specs are in registry.toml; this module only supplies builders. Where torch would only
complain at construction (SGD's nesterov rules), the builder checks first so the user
gets an optimhub error that names the optim_args keys to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import (
    BuildRequest,
    EstimateRequest,
    OptimArgsError,
    Register,
    StateEstimate,
    class_builder,
    dense_bytes,
    dense_estimator,
    factored_elements,
    hookimpl,
)

if TYPE_CHECKING:
    import torch


def build_adafactor_torch(request: BuildRequest) -> torch.optim.Optimizer:
    """torch's Adafactor; under FSDP2 it steps whole tensors (its factored second moment
    needs in-place ops that DTensor cannot run on a shard)."""
    import torch

    from ._whole_tensors import whole_tensors_if_sharded

    return whole_tensors_if_sharded(torch.optim.Adafactor(request.param_groups,
                                                          **request.kwargs))


def build_sgd(request: BuildRequest) -> torch.optim.Optimizer:
    import torch

    options = request.options
    momentum, dampening = options.get("momentum", 0.0), options.get("dampening", 0.0)
    if options.get("nesterov") and (momentum <= 0 or dampening != 0):
        raise OptimArgsError(
            "optimizer 'sgd': nesterov=true needs momentum > 0 and dampening = 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}; "
            "set e.g. optim_args='momentum=0.9,nesterov=true'"
        )
    return torch.optim.SGD(request.param_groups, **request.kwargs)


# -- memory estimates: torch keeps every buffer in the parameter's dtype ------------------


def estimate_adamw(request: EstimateRequest) -> StateEstimate:
    """exp_avg and exp_avg_sq (and max_exp_avg_sq with amsgrad)."""
    return StateEstimate(dense_bytes(request.trainable, 3 if request.option("amsgrad") else 2))


def estimate_sgd(request: EstimateRequest) -> StateEstimate:
    """A momentum_buffer only when momentum is nonzero (torch's default is 0)."""
    return StateEstimate(dense_bytes(request.trainable, 1 if request.option("momentum") else 0))


estimate_adagrad = dense_estimator(
    1, "The running sum of squared gradients (created at construction).")


def estimate_rmsprop(request: EstimateRequest) -> StateEstimate:
    """square_avg, plus momentum_buffer with momentum > 0 and grad_avg when centered."""
    buffers = 1 + bool(request.option("momentum")) + bool(request.option("centered"))
    return StateEstimate(dense_bytes(request.trainable, buffers))


def estimate_adafactor_torch(request: EstimateRequest) -> StateEstimate:
    """row_var / col_var per matrix, the full variance for vectors; no first moment."""
    return StateEstimate(
        sum(factored_elements(p.shape) * p.dtype_bytes for p in request.trainable)
    )


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    # adamw_torch_fused inherits adamw_torch's builder (its spec adds fused=True).
    register.builder("adamw_torch", class_builder("torch.optim", "AdamW"),
                     estimator=estimate_adamw)
    register.builder("sgd", build_sgd, estimator=estimate_sgd)
    register.builder("adagrad", class_builder("torch.optim", "Adagrad"),
                     estimator=estimate_adagrad)
    register.builder("rmsprop", class_builder("torch.optim", "RMSprop"),
                     estimator=estimate_rmsprop)
    register.builder("adafactor_torch", build_adafactor_torch,
                     estimator=estimate_adafactor_torch)
