"""Built-in plugin: StableAdamW from torch-optimi.

As in HF, the constructor gets ``lr``, the Adam betas and epsilon, and ``weight_decay``
(which the decay / no-decay groups override per group). optimi has no default for ``lr``;
the hub always passes one.

Where we differ from HF (docs/_parts/differences-optimi.md):

- ``kahan_sum`` and ``decouple_lr`` are typed booleans: HF reads them with ``bool(str)``,
  so ``kahan_sum=False`` turns Kahan summation *on* there;
- ``max_lr`` is only read by optimi when ``decouple_lr`` is on; HF passes it either way
  (silently unused), we refuse it without ``decouple_lr=true``.
"""

from __future__ import annotations

import torch

import optimhub
from optimhub.build import BuildRequest
from optimhub.errors import OptimArgsError


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


@optimhub.hookimpl
def optimhub_register_optimizers(register: optimhub.Register) -> None:
    register.builder("stable_adamw", build_stable_adamw)
