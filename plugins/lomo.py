"""Built-in plugin: LOMO and AdaLomo (lomo-optim), the fused-backward optimizers.

Both take the *model*, not parameter groups: at construction they register a gradient
hook on every trainable parameter, **permanently** (there is no way to remove them), and
from then on each backward pass updates the parameters in place as their gradients
arrive and frees the gradients. So the loop contract differs from every other optimizer
(capability ``fused_backward``, see ``optimhub.drive``): ``optimizer.fused_backward(loss,
lr)`` replaces ``loss.backward(); optimizer.step()`` (``step()`` raises
NotImplementedError), ``optimizer.grad_norm(loss)`` must come first when
``clip_grad_norm`` is set (a second backward), gradients cannot accumulate, and the model
cannot be shared with another optimizer. The learning rate that counts is the one passed to
``fused_backward``; ``param_groups[0]['lr']`` is only where a scheduler writes it.

Where we differ from HF (docs/differences-from-transformers.md, section lomo): HF passes only
``lr`` and drops ``weight_decay``; we pass it. LOMO applies one decay to *every* parameter
(biases and norm weights too): it has no param groups, so the hub's decay / no-decay split
cannot apply.

Its spec says ``single_group`` (the core refuses ``param_group_rules``: LOMO has one lr and
one decay) and ``constructor_weight_decay`` (the core passes ``weight_decay`` to the
constructor). Refused here, before any hook is registered:

- float16 parameters for ``lomo``: lomo-optim then switches on a dynamic loss scaler that
  forces ``clip_grad_norm=1.0`` and calls ``torch.distributed.get_rank()`` on overflow, and
  ``fused_backward`` raises on the first overflowed step unless the loop skips it;
- ``adalomo`` on parameters that are not on the CUDA device (its state is created with
  ``.cuda()``; the core already refuses it without CUDA: capability ``cuda_only``);
- a model that already carries a LOMO / AdaLomo's hooks: a second optimizer would update
  every parameter twice per backward.

Neither works under DistributedDataParallel (capability ``no_ddp``): the hooks apply each
rank's local gradient before DDP averages it, so replicas drift apart (lomo-optim only
synchronises under DeepSpeed ZeRO-3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import (
    BackendUnavailableError,
    BuildRequest,
    CapabilityError,
    EstimateRequest,
    Register,
    StateEstimate,
    hookimpl,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


def build_lomo(request: BuildRequest) -> torch.optim.Optimizer:
    """``lomo_optim.Lomo(model, lr, weight_decay, clip_grad_norm, clip_grad_value)``."""
    model = _model(request)
    _refuse_float16(request.spec.name, model)
    _refuse_hooked_model(request.spec.name, model)
    from lomo_optim import Lomo

    return Lomo(model, **request.kwargs)


def build_adalomo(request: BuildRequest) -> torch.optim.Optimizer:
    """``lomo_optim.AdaLomo(model, lr, weight_decay, ...)``: its state lives on CUDA."""
    model = _model(request)
    _require_cuda_parameters(request.spec.name, model)
    _refuse_hooked_model(request.spec.name, model)
    from lomo_optim import AdaLomo

    return AdaLomo(model, **request.kwargs)


def _model(request: BuildRequest) -> nn.Module:
    if request.model is None:  # the core refuses this first (needs_model); kept for typing
        raise CapabilityError(f"optimizer {request.spec.name!r} needs the model itself")
    return request.model


def _refuse_float16(name: str, model: nn.Module) -> None:
    import torch

    half = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype == torch.float16]
    if half:
        raise BackendUnavailableError(
            f"optimizer {name!r} cannot train float16 parameters ({half[0]!r} and "
            f"{len(half) - 1} more): lomo-optim then scales the loss dynamically, forces "
            "clip_grad_norm=1.0 and needs torch.distributed plus a loop that skips overflowed "
            "steps, which fused_backward does not do. Train in bfloat16 or float32 (with "
            "autocast for speed)."
        )


def _refuse_hooked_model(name: str, model: nn.Module) -> None:
    """One LOMO / AdaLomo per model: a second one would stack its hooks on the first's.

    lomo-optim's gradient hooks cannot be removed, so building a second optimizer on the
    same model (a retry in a notebook, a re-created Trainer) makes every backward update
    each parameter twice, silently. Its hooks are recognised by their defining module.
    """
    hooked = [n for n, p in model.named_parameters() if p.requires_grad and _has_lomo_hook(p)]
    if hooked:
        raise CapabilityError(
            f"optimizer {name!r}: this model already has a LOMO/AdaLomo optimizer attached "
            f"({hooked[0]!r} and {len(hooked) - 1} more parameters carry its gradient hooks, "
            "which lomo-optim registers for good), so a second one would update every "
            "parameter twice per backward. Keep using the first optimizer, or build the new "
            "one on a fresh copy of the model (e.g. reload it from its checkpoint)."
        )


def _has_lomo_hook(param: torch.Tensor) -> bool:
    hooks = getattr(param, "_backward_hooks", None) or {}
    return any(
        str(getattr(hook, "__module__", "")).startswith("lomo_optim") for hook in hooks.values()
    )


def _require_cuda_parameters(name: str, model: nn.Module) -> None:
    elsewhere = [n for n, p in model.named_parameters() if p.device.type != "cuda"]
    if elsewhere:
        raise BackendUnavailableError(
            f"optimizer {name!r} keeps its state on the current CUDA device (lomo-optim calls "
            f".cuda()), but {elsewhere[0]!r} and {len(elsewhere) - 1} more parameters are not "
            "on CUDA; move the model first: model.cuda()"
        )


def estimate_lomo(request: EstimateRequest) -> StateEstimate:
    """No state: LOMO is SGD applied inside backward (gradients: see fused backward)."""
    return StateEstimate(0)


def estimate_adalomo(request: EstimateRequest) -> StateEstimate:
    """float32 factored second moments made at construction for *every* named parameter,
    frozen ones included: ``shape[0] + shape[1]`` for matrices, ``shape[0]`` for vectors."""
    return StateEstimate(4 * sum(
        p.shape[0] if p.ndim == 1 else p.shape[0] + p.shape[1] for p in request.params
    ))


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("lomo", build_lomo, estimator=estimate_lomo)
    register.builder("adalomo", build_adalomo, estimator=estimate_adalomo)
