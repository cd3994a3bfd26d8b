"""An example third-party optimhub plugin: SignSGD with momentum ("Signum").

Everything a plugin needs is in this one module:

1. an optimizer (here a small ``torch.optim.Optimizer`` subclass in plain PyTorch),
2. a builder: ``BuildRequest`` in, optimizer out,
3. the hook implementation that registers the name ``sign_sgd`` with its spec and builder.

The distribution announces the module in its pyproject.toml::

    [project.entry-points.optimhub]
    example = "optimhub_example_plugin"

After ``pip install -e examples/optimhub-example-plugin`` the name works everywhere::

    optimhub.create_optimizer("sign_sgd", model, {"learning_rate": 1e-3},
                              optim_args="momentum=0.95")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from optimhub.plugin import ArgSpec, BuildRequest, OptimizerSpec, Register, hookimpl

__all__ = ["SignSGD", "build_sign_sgd", "optimhub_register_optimizers"]

__version__ = "0.1.0"


class SignSGD(torch.optim.Optimizer):
    """SignSGD with momentum (Signum, Bernstein et al. 2018).

    For each parameter ``p`` with gradient ``g``::

        m = momentum * m + (1 - momentum) * g
        p = p * (1 - lr * weight_decay)        # decoupled weight decay
        p = p - lr * sign(m)

    With ``momentum=0`` this is plain signSGD (``p -= lr * sign(g)``). The state is one
    momentum buffer per parameter (4 bytes per fp32 parameter), kept in
    ``optimizer.state[p]["momentum_buffer"]``, so ``state_dict()`` / ``load_state_dict()``
    come from the base class unchanged.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1))")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr = group["lr"]
            momentum = group["momentum"]
            weight_decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("SignSGD does not support sparse gradients")

                if momentum > 0.0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(grad, alpha=1.0 - momentum)
                    direction = buf
                else:
                    direction = grad

                if weight_decay != 0.0:
                    p.mul_(1.0 - lr * weight_decay)
                p.add_(torch.sign(direction), alpha=-lr)
        return loss


def build_sign_sgd(request: BuildRequest) -> SignSGD:
    """The builder: the hub has already split the param groups and typed the options."""
    return SignSGD(request.param_groups, **request.kwargs)


SIGN_SGD_SPEC = OptimizerSpec(
    name="sign_sgd",
    summary="SignSGD with momentum (Signum): steps by the sign of the momentum, plain PyTorch",
    plugin="example",
    distribution="optimhub-example-plugin",
    import_name="optimhub_example_plugin",
    hyperparameters={"lr", "weight_decay"},
    args={
        "momentum": ArgSpec(
            name="momentum",
            type="float",
            default=0.9,
            minimum=0.0,
            exclusive_maximum=1.0,
            doc="EMA coefficient of the gradient whose sign is the step; 0 is plain signSGD",
        ),
    },
    paper="https://arxiv.org/abs/1802.04434",
    state_bytes_per_param=4.0,
)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    """Tell the hub about ``sign_sgd``: its spec (what it is) and its builder (how to make it)."""
    register.optimizer(SIGN_SGD_SPEC, build_sign_sgd)
