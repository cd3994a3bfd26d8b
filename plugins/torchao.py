"""Built-in plugin: torchao's low-bit AdamW (``torchao.optim.AdamW4bit`` / ``AdamW8bit``).

Specs are in registry.toml. ``block_size`` is typed there (HF passes a user's value on as
a str, which fails at the first step on any tensor of 4096+ elements) and defaults to 256
for both names, as in HF (torchao's own 4-bit default is 128).

Quirks the user should know (also in docs/differences-from-transformers.md, section torchao):

- Each step runs ``torch.compile(single_param_adam)``: the first step compiles once per
  new parameter shape/dtype (seconds on CPU, and it needs a C++ compiler there).
- ``group["lr"]`` is a 0-d tensor: LR schedulers work, but assigning a float to it makes
  the next step fail; change it in place with ``group["lr"].fill_(new_lr)``.
- Only tensors of 4096+ elements whose size is a multiple of ``block_size`` get low-bit
  state; the others keep full-precision state.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING

from optimhub.plugin import (
    Builder,
    BuildRequest,
    EstimateRequest,
    Estimator,
    OptimHubWarning,
    Register,
    StateEstimate,
    blockwise_bytes,
    hookimpl,
)

if TYPE_CHECKING:
    import torch


def torchao_builder(attribute: str) -> Builder:
    """A builder for ``torchao.optim.<attribute>`` (imported when it runs)."""

    def build(request: BuildRequest) -> torch.optim.Optimizer:
        _warn_if_rounding_has_no_effect(request)
        cls = getattr(importlib.import_module("torchao.optim"), attribute)
        return cls(request.param_groups, **request.kwargs)

    build.__qualname__ = f"torchao_builder({attribute})"
    return build


def _warn_if_rounding_has_no_effect(request: BuildRequest) -> None:
    """torchao applies ``bf16_stochastic_round`` to bfloat16 parameters only, silently."""
    if not request.options.get("bf16_stochastic_round"):
        return
    import torch

    params = [p for group in request.param_groups for p in group["params"]]
    if params and not any(p.dtype == torch.bfloat16 for p in params):
        dtypes = ", ".join(sorted({str(p.dtype).removeprefix("torch.") for p in params}))
        warnings.warn(
            f"optimhub: {request.spec.name!r}: bf16_stochastic_round=true acts only on "
            f"bfloat16 parameters, and none of these is ({dtypes}); it has no effect "
            "unless the model is cast to bfloat16",
            OptimHubWarning,
            stacklevel=4,
        )


# -- memory estimates ----------------------------------------------------------------

#: torchao quantizes a tensor's state only from this many elements (bitsandbytes' rule).
MIN_QUANTIZED_NUMEL = 4096
#: Entries of the code table each quantized state tensor carries (float32): 2**bits.
QMAP_ENTRIES = {8: 256, 4: 16}


def torchao_estimator(bits: int) -> Estimator:
    """exp_avg and exp_avg_sq: for tensors of >= 4096 elements whose size is a multiple
    of block_size, ``bits`` per value, a float32 scale per block and the tensor's own
    float32 code table; any other tensor keeps them in the parameter's dtype."""

    def estimate(request: EstimateRequest) -> StateEstimate:
        block = request.options["block_size"]
        total = 0
        for p in request.trainable:
            if p.numel >= MIN_QUANTIZED_NUMEL and p.numel % block == 0:
                one = blockwise_bytes(p.numel, bits=bits, block_size=block, ceil_blocks=False)
                total += 2 * (one + 4 * QMAP_ENTRIES[bits])
            else:
                total += 2 * p.nbytes
        return StateEstimate(total)

    estimate.__qualname__ = f"torchao_estimator({bits})"
    return estimate


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adamw_torch_4bit", torchao_builder("AdamW4bit"),
                     estimator=torchao_estimator(4))
    register.builder("adamw_torch_8bit", torchao_builder("AdamW8bit"),
                     estimator=torchao_estimator(8))
