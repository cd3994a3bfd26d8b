"""optimhub's own ``AdamWeightDecay`` (MindSpore / MindFormers' update), for
plugins/mindformers.py.

A private helper module: it imports torch at module level, so the plugin imports it only
inside its builder, and ``optimhub list`` (which loads every plugin) stays torch-free. The
update and the reasons for it are documented in plugins/mindformers.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from optimhub.plugin import (
    OptimArgsError,
    OptimArgsTypeError,
)

__all__ = ["AdamWeightDecay"]


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The moments' (and the update's) dtype: float32, or float64 for float64 parameters."""
    return torch.promote_types(dtype, torch.float32)


class AdamWeightDecay(torch.optim.Optimizer):
    """Adam without bias correction, decay inside the lr scaling (MindSpore's
    ``AdamWeightDecay``), with float32 moments (MindFormers' ``FP32StateAdamWeightDecay``).

    ``lr >= 0``, ``betas`` in ``[0, 1)`` (MindSpore refuses 0, which is harmless here),
    ``eps > 0``, ``weight_decay >= 0``; a bad value is an :class:`optimhub.OptimArgsError`
    raised before anything is built. ``foreach=True`` steps each group with
    ``torch._foreach_*`` kernels, ``False`` loops over the parameters (the reference);
    ``None`` (default) chooses as torch's own optimizers do: foreach where the parameters
    are on a device with multi-tensor kernels (CUDA), the loop elsewhere (on the CPU the
    foreach ops are a loop too, and measured slower for large tensors:
    benchmarks/adamweightdecay_foreach.py).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "foreach": foreach}
        _check_hyperparameters(defaults, where="AdamWeightDecay")
        super().__init__(params, defaults)
        for index, group in enumerate(self.param_groups):
            _check_hyperparameters(group, where=f"AdamWeightDecay param group {index}")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            # Schedulers write lr / weight_decay between steps: a bad value written there
            # is refused before any tensor of this step changes.
            _check_hyperparameters(group, where=f"AdamWeightDecay param group {index}")
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs = self._gather(group)
            if params:
                update = _foreach_update if _use_foreach(group, params) else _single_update
                update(params, grads, exp_avgs, exp_avg_sqs, group)
        return loss

    def _gather(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], ...]:
        """The parameters of ``group`` that have a gradient, with their state (created
        here, as zeros, on a parameter's first step)."""
        params, grads, exp_avgs, exp_avg_sqs = [], [], [], []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise OptimArgsError(
                    "AdamWeightDecay does not take sparse gradients (an nn.Embedding built with "
                    "sparse=True): build the embedding with sparse=False"
                )
            state = self.state[param]
            if not state:
                dtype = _state_dtype(param.dtype)
                state["exp_avg"] = torch.zeros_like(param, dtype=dtype,
                                                    memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, dtype=dtype,
                                                       memory_format=torch.preserve_format)
            params.append(param)
            grads.append(param.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        return params, grads, exp_avgs, exp_avg_sqs


def _use_foreach(group: dict[str, Any], params: list[torch.Tensor]) -> bool:
    if group["foreach"] is not None:
        return bool(group["foreach"])
    return all(p.device.type in _FOREACH_DEVICES for p in params)


def _foreach_devices() -> tuple[str, ...]:
    """The device types with multi-tensor (foreach) kernels, as torch's optimizers see them."""
    try:
        from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices
    except ImportError:  # pragma: no cover - a torch without the helper
        return ("cuda",)
    return tuple(_get_foreach_kernels_supported_devices())


_FOREACH_DEVICES = _foreach_devices()


def _single_update(params: list[torch.Tensor], grads: list[torch.Tensor],
                   exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                   group: dict[str, Any]) -> None:
    """The reference: one parameter at a time, the documented formula op by op."""
    lr, (beta1, beta2), eps, decay = _scalars(group)
    for param, grad, exp_avg, exp_avg_sq in zip(params, grads, exp_avgs, exp_avg_sqs,
                                                strict=True):
        weight = param.to(exp_avg.dtype)  # the parameter itself unless it is 16-bit
        grad = grad.to(exp_avg.dtype)
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        update = exp_avg / exp_avg_sq.sqrt().add_(eps)
        if decay != 0.0:
            update.add_(weight, alpha=decay)
        weight.add_(update, alpha=-lr)
        if weight is not param:
            param.copy_(weight)  # one rounding into the parameter's dtype


def _foreach_update(params: list[torch.Tensor], grads: list[torch.Tensor],
                    exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                    group: dict[str, Any]) -> None:
    """The same operations as :func:`_single_update`, each over the whole group at once."""
    lr, (beta1, beta2), eps, decay = _scalars(group)
    weights = [p.to(m.dtype) for p, m in zip(params, exp_avgs, strict=True)]  # 16-bit: a copy
    grads = [g.to(m.dtype) for g, m in zip(grads, exp_avgs, strict=True)]
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    updates = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(updates, eps)
    updates = torch._foreach_div(exp_avgs, updates)
    if decay != 0.0:
        torch._foreach_add_(updates, weights, alpha=decay)
    torch._foreach_add_(weights, updates, alpha=-lr)
    copies = [(p, w) for p, w in zip(params, weights, strict=True) if w is not p]
    if copies:
        torch._foreach_copy_([p for p, _ in copies], [w for _, w in copies])


def _scalars(group: dict[str, Any]) -> tuple[float, tuple[float, float], float, float]:
    """lr, betas, eps and weight decay as Python floats (a 0-d tensor lr is read once)."""
    lr = group["lr"]
    lr = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
    beta1, beta2 = (float(b) for b in group["betas"])
    return lr, (beta1, beta2), float(group["eps"]), float(group["weight_decay"])


def _check_hyperparameters(values: dict[str, Any], *, where: str) -> None:
    """MindSpore's rules (betas may also be 0), as optimhub errors naming the value."""
    _check_number(values["lr"], "lr", where, minimum=0.0)
    betas = values["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise OptimArgsTypeError(f"{where}: betas must be a pair like (0.9, 0.999), got {betas!r}")
    for name, beta in zip(("beta1", "beta2"), betas, strict=True):
        _check_number(beta, name, where, minimum=0.0, below=1.0)
    _check_number(values["eps"], "eps", where, above=0.0)
    _check_number(values["weight_decay"], "weight_decay", where, minimum=0.0)
    if not isinstance(values.get("foreach"), (bool, type(None))):
        raise OptimArgsTypeError(f"{where}: foreach must be True, False or None, "
                                 f"got {values['foreach']!r}")


def _check_number(value: Any, name: str, where: str, *, minimum: float | None = None,
                  above: float | None = None, below: float | None = None) -> None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptimArgsTypeError(f"{where}: {name} must be a number, got "
                                 f"{type(value).__name__} {value!r}")
    bad = (not math.isfinite(value)
           or (minimum is not None and value < minimum)
           or (above is not None and value <= above)
           or (below is not None and value >= below))
    if bad:
        low = f"[{minimum:g}" if minimum is not None else f"({above:g}"
        high = f"{below:g})" if below is not None else "inf)"
        raise OptimArgsError(f"{where}: {name} must be in {low}, {high}, got {value!r}")
