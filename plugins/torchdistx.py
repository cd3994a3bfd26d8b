"""Built-in plugin: ``adamw_anyprecision``, torchdistx's AnyPrecisionAdamW.

torchdistx is archived: its last builds are for torch 1.12 and Python <= 3.10 on Linux, so
with any current torch the core answers with ``MissingBackendError`` and the install line
of registry.toml's ``[backends.torchdistx]`` (``stable_adamw`` is the maintained optimizer
with Kahan summation). Like HF, the builder passes lr, the Adam betas and epsilon, and the
four options; the dtype options are checked against a list of torch dtype names (HF calls
``getattr(torch, value)`` on anything, and ``strtobool`` on the flag) and converted here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import (
    BuildRequest,
    EstimateRequest,
    Register,
    StateEstimate,
    dense_bytes,
    hookimpl,
)

if TYPE_CHECKING:
    import torch

#: The options that name a torch dtype ("bfloat16" -> torch.bfloat16).
DTYPE_OPTIONS = ("momentum_dtype", "variance_dtype", "compensation_buffer_dtype")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (the catalog's choices are all torch dtype names)."""
    import torch

    dtype = getattr(torch, name)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"torch.{name} is not a dtype")
    return dtype


def anyprecision_kwargs(kwargs: dict[str, object]) -> dict[str, object]:
    """The constructor keywords with the dtype names turned into torch dtypes."""
    return {k: torch_dtype(str(v)) if k in DTYPE_OPTIONS else v for k, v in kwargs.items()}


def build_anyprecision(request: BuildRequest) -> torch.optim.Optimizer:
    from torchdistx.optimizers import AnyPrecisionAdamW

    return AnyPrecisionAdamW(request.param_groups, **anyprecision_kwargs(request.kwargs))


def estimate_anyprecision(request: EstimateRequest) -> StateEstimate:
    """exp_avg in momentum_dtype, exp_avg_sq in variance_dtype, and with Kahan summation
    a compensation buffer in compensation_buffer_dtype."""
    options = request.options
    dtypes = ["momentum_dtype", "variance_dtype"]
    if options["use_kahan_summation"]:
        dtypes.append("compensation_buffer_dtype")
    return StateEstimate(sum(
        dense_bytes(request.trainable, 1, torch_dtype(options[key]).itemsize) for key in dtypes
    ))


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adamw_anyprecision", build_anyprecision,
                     estimator=estimate_anyprecision)
