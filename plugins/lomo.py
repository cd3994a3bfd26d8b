"""Built-in plugin: LOMO and AdaLomo (lomo-optim), the fused-backward optimizers.

Both take the *model*, not parameter groups: at construction they register a gradient
hook on every trainable parameter, **permanently** (there is no way to remove them), and
from then on each backward pass updates the parameters in place as their gradients
arrive and frees the gradients. So the loop contract differs from every other optimizer
(capability ``fused_backward``, see ``optimhub.drive``): ``optimizer.fused_backward(loss,
lr)`` replaces ``loss.backward(); optimizer.step()``, ``optimizer.grad_norm(loss)`` must
come first when ``clip_grad_norm`` is set (a second backward), gradients cannot accumulate,
and the model cannot be shared with another optimizer. The learning rate that counts is the
one passed to ``fused_backward``; ``param_groups[0]['lr']`` is only where a scheduler writes
it.

lomo-optim's hook (one closure, registered with ``p.register_hook`` on every trainable
parameter) updates, each time any parameter's gradient arrives, every parameter whose
``.grad`` is already set. So a plain ``loss.backward()`` silently updated most of the model
with whatever ``lr`` was last used, and only the following ``step()`` raised torch's bare
``NotImplementedError``. The classes built here are lomo-optim's, subclassed by
:class:`_FusedBackwardOnly`: the hook acts only inside ``fused_backward`` / ``grad_norm``
and otherwise raises our ``CapabilityError`` before any update (the first gradient to
arrive stops the backward, so no weight and no ``.grad`` of a hooked parameter changes),
and ``step()`` raises the same error, both naming ``fused_backward`` and ``optimhub.drive``.

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

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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

    return _construct(Lomo, request.spec.name, model, request)


def build_adalomo(request: BuildRequest) -> torch.optim.Optimizer:
    """``lomo_optim.AdaLomo(model, lr, weight_decay, ...)``: its state lives on CUDA."""
    model = _model(request)
    _require_cuda_parameters(request.spec.name, model)
    _refuse_hooked_model(request.spec.name, model)
    from lomo_optim import AdaLomo

    return _construct(AdaLomo, request.spec.name, model, request)


def _construct(base: type, name: str, model: nn.Module, request: BuildRequest
               ) -> torch.optim.Optimizer:
    optimizer = _fused_backward_only(base)(model, **request.kwargs)
    optimizer.optimhub_name = name
    return optimizer


class _FusedBackwardOnly:
    """Mixed into lomo-optim's ``Lomo`` / ``AdaLomo``: their gradient hooks update the
    parameters only inside ``fused_backward`` / ``grad_norm``; anywhere else (a plain
    ``loss.backward()``) the first hook raises ``CapabilityError`` before any update, and
    ``step()`` raises it too. Nothing else of lomo-optim's behaviour changes."""

    #: The catalog name, for messages (set after construction).
    optimhub_name = "lomo"
    #: How many fused_backward / grad_norm calls are running (the hooks act only then).
    _fused_depth = 0

    def fuse_update(self) -> Callable[[Any], Any]:
        return self._only_when_fused(super().fuse_update())  # type: ignore[misc]

    def fuse_update_zero3(self) -> Callable[[Any], Any]:
        return self._only_when_fused(super().fuse_update_zero3())  # type: ignore[misc]

    def _only_when_fused(self, update: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def update_inside_fused_backward(x: Any) -> Any:
            if not self._fused_depth:
                raise CapabilityError(_plain_backward_message(self.optimhub_name))
            return update(x)

        return update_inside_fused_backward

    def fused_backward(self, loss: torch.Tensor, lr: float) -> None:
        with self._fused():
            super().fused_backward(loss, lr)  # type: ignore[misc]

    def grad_norm(self, loss: torch.Tensor) -> None:
        with self._fused():
            super().grad_norm(loss)  # type: ignore[misc]

    def step(self, closure: Any = None) -> None:
        raise CapabilityError(
            f"optimizer {self.optimhub_name!r} has no step(): it updates the parameters "
            "inside its own backward. Replace loss.backward(); optimizer.step() with "
            "optimizer.fused_backward(loss, lr) (after optimizer.grad_norm(loss) when "
            "clip_grad_norm is set), or let optimhub.drive(optimizer) do it: "
            "driver.backward(loss); driver.step()."
        )

    @contextmanager
    def _fused(self) -> Iterator[None]:
        self._fused_depth += 1
        try:
            yield
        finally:
            self._fused_depth -= 1


def _plain_backward_message(name: str) -> str:
    return (
        f"optimizer {name!r} updates the parameters inside its own fused backward, so a plain "
        "loss.backward() on its model is refused (it would update the weights with a stale "
        "learning rate and no clipping); nothing was changed. Call "
        "optimizer.fused_backward(loss, lr) (after optimizer.grad_norm(loss) when "
        "clip_grad_norm is set), or let optimhub.drive(optimizer) do it: "
        "driver.backward(loss); driver.step()."
    )


@functools.cache
def _fused_backward_only(base: type) -> type:
    """lomo-optim's class with :class:`_FusedBackwardOnly` mixed in, under its own name
    (so ``type(optimizer).__name__`` is still ``Lomo`` / ``AdaLomo``)."""
    return type(base.__name__, (_FusedBackwardOnly, base),
                {"__module__": __name__, "__qualname__": base.__qualname__})


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
    """lomo-optim's own hook (a LOMO built outside the hub) or ours, wrapping it."""
    hooks = getattr(param, "_backward_hooks", None) or {}
    return any(
        str(getattr(hook, "__module__", "")).startswith(("lomo_optim", __name__))
        for hook in hooks.values()
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
