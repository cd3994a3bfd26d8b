"""Built-in plugin: the optimizers that ship with PyTorch itself.

Specs are in registry.toml; this module only supplies builders. Where torch would only
complain at construction (SGD's nesterov rules), the builder checks first so the user
gets an optimhub error that names the optim_args keys to change.
"""

from __future__ import annotations

import torch

import optimhub
from optimhub.build import BuildRequest, class_builder
from optimhub.errors import OptimArgsError


def build_sgd(request: BuildRequest) -> torch.optim.Optimizer:
    options = request.options
    momentum, dampening = options.get("momentum", 0.0), options.get("dampening", 0.0)
    if options.get("nesterov") and (momentum <= 0 or dampening != 0):
        raise OptimArgsError(
            "optimizer 'sgd': nesterov=true needs momentum > 0 and dampening = 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}; "
            "set e.g. optim_args='momentum=0.9,nesterov=true'"
        )
    return torch.optim.SGD(request.param_groups, **request.kwargs)


@optimhub.hookimpl
def optimhub_register_optimizers(register: optimhub.Register) -> None:
    register.builder("adamw_torch", class_builder("torch.optim", "AdamW"))
    register.builder("adamw_torch_fused", class_builder("torch.optim", "AdamW"))
    register.builder("sgd", build_sgd)
    register.builder("adagrad", class_builder("torch.optim", "Adagrad"))
    register.builder("rmsprop", class_builder("torch.optim", "RMSprop"))
    register.builder("adafactor_torch", class_builder("torch.optim", "Adafactor"))
