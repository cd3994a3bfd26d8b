"""Built-in plugin: bitsandbytes' AdamW, Lion, RMSprop and AdEMAMix (8-bit, 32-bit, paged).

Specs are in registry.toml. The state precision and the paging of a name are its ``fixed``
constructor keywords (``optim_bits``, ``is_paged``), never read from the spelling of the
name. Beyond ``Class(param_groups, **kwargs)``, the builders here do three things:

- **8-bit state keeps embeddings in 32 bits**, as the HF Trainer does: bnb quantizes every
  tensor of at least ``min_8bit_size`` (4096) elements, and an embedding's rows (most of
  them untouched by any one batch) are where 8-bit moments hurt most. The override is
  registered per parameter (``GlobalOptimManager.override_config``) and dropped when the
  parameter dies; HF's ``register_module_override`` instead writes the override into
  bnb's process-wide ``index2config`` under the embedding's (group, position) *index*, so
  every later bnb optimizer in the process keeps whatever sits at that index in 32 bits.
  With bare parameters (no ``nn.Module``) nothing says which tensor is an embedding, so
  every large tensor gets 8-bit state; such builds are allowed (HF always has the model).
- **Paged names without CUDA are built unpaged**: their spec's ``without_cuda = {
  is_paged = false }`` (registry.toml) replaces the ``fixed`` keyword, and the core warns
  once, in its own words. bnb's own CPU fallback covers AdamW and Lion (with a second
  warning at the first step), but AdEMAMix's double buffer skips it and a step on a tensor
  of 1e5+ elements fails with "cget_managed_ptr not available".
- **AdEMAMix's three betas** are assembled HF's way: ``beta1``/``beta2`` default to the
  training arguments' ``adam_beta1``/``adam_beta2`` (a schema default cannot be dynamic),
  ``eps`` to ``adam_epsilon``.
"""

from __future__ import annotations

import importlib
import weakref
from typing import TYPE_CHECKING, Any

from optimhub.plugin import (
    Builder,
    BuildRequest,
    EstimateRequest,
    Estimator,
    OptimArgsError,
    Register,
    StateEstimate,
    hookimpl,
)

from ._bitsandbytes_rules import QMAP_BYTES, bnb_state_bytes

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch
    from torch import nn


def _construct(attribute: str, request: BuildRequest, kwargs: dict[str, Any]
               ) -> torch.optim.Optimizer:
    """``bitsandbytes.optim.<attribute>(groups, **kwargs)``, with the embedding override for
    8-bit state."""
    bnb_optim = importlib.import_module("bitsandbytes.optim")
    optimizer = getattr(bnb_optim, attribute)(request.param_groups, **kwargs)
    if request.spec.fixed.get("optim_bits") == 8 and request.model is not None:
        modules = request.named_modules
        keep_embeddings_32bit(optimizer, request.model.named_modules() if modules is None
                              else modules)
    return optimizer


def keep_embeddings_32bit(optimizer: torch.optim.Optimizer,
                          named_modules: Iterable[tuple[str, nn.Module]]) -> list[str]:
    """Give every optimized ``nn.Embedding`` weight among ``named_modules`` (the model's)
    32-bit state; returns the names of the weights overridden.

    bnb reads ``GlobalOptimManager.pid2config`` (keyed by ``id(param)``) when it creates a
    parameter's state at the first step. The entry is removed when the parameter is
    garbage-collected, so a later tensor that reuses the id does not inherit it.
    """
    from torch import nn

    manager = importlib.import_module("bitsandbytes.optim").GlobalOptimManager.get_instance()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = []
    for module_name, module in named_modules:
        weight = getattr(module, "weight", None) if isinstance(module, nn.Embedding) else None
        if weight is None or id(weight) not in optimized:
            continue
        manager.override_config(weight, "optim_bits", 32)
        weakref.finalize(weight, manager.pid2config.pop, id(weight), None)
        names.append(f"{module_name}.weight")
    return names


def bnb_builder(attribute: str) -> Builder:
    """A builder for ``bitsandbytes.optim.<attribute>`` whose keywords are all in the
    request already (AdamW, Lion, RMSprop: bits and paging come from the spec's ``fixed``)."""

    def build(request: BuildRequest) -> torch.optim.Optimizer:
        return _construct(attribute, request, dict(request.kwargs))

    build.__qualname__ = f"bnb_builder({attribute})"
    return build


def build_ademamix(request: BuildRequest) -> torch.optim.Optimizer:
    """AdEMAMix: ``betas=(beta1, beta2, beta3)`` with beta1/beta2 from the training
    arguments unless ``optim_args`` gives them (HF's semantics)."""
    kwargs = dict(request.kwargs)
    adam_beta1, adam_beta2 = kwargs.pop("betas")
    betas = (
        float(kwargs.pop("beta1", adam_beta1)),
        float(kwargs.pop("beta2", adam_beta2)),
        float(kwargs.pop("beta3")),
    )
    if kwargs.get("t_beta3") is not None and (betas[0] == 0.0 or betas[2] == 0.0):
        # bnb's beta3 schedule interpolates between log(beta1) and log(beta3): log(0) fails
        # at the first step, after the optimizer was handed out.
        raise OptimArgsError(
            f"optimizer {request.spec.name!r}: t_beta3={kwargs['t_beta3']} schedules beta3 "
            f"between beta1 and beta3 in log space, which needs both > 0, got "
            f"beta1={betas[0]!r}, beta3={betas[2]!r}; set beta1/beta3 (or adam_beta1) above "
            "0, or remove t_beta3"
        )
    kwargs["betas"] = betas
    return _construct("AdEMAMix", request, kwargs)


# -- memory estimates ----------------------------------------------------------------

PAGED_NOTE = ("paged: under GPU memory pressure the state moves to CPU memory (CUDA unified "
              "memory); without CUDA it is not paged")


def bnb_estimator(states: int) -> Estimator:
    """The estimator of a bnb class with ``states`` buffers per parameter (AdamW 2, Lion
    and RMSprop 1, AdEMAMix 3: its first buffer is doubled). 8-bit names keep embeddings
    in 32 bits, as the builder does."""

    def estimate(request: EstimateRequest) -> StateEstimate:
        bits = request.spec.fixed.get("optim_bits", 32)
        sizes = [(p.numel, 32 if p.module_type == "Embedding" else bits)
                 for p in request.trainable]
        total = sum(bnb_state_bytes(n, states=states, bits=b) for n, b in sizes)
        if bits == 8:  # bnb fills its code tables at construction, quantized tensors or not
            total += QMAP_BYTES
        paged = request.spec.fixed.get("is_paged")
        return StateEstimate(total, notes=(PAGED_NOTE,) if paged else ())

    estimate.__qualname__ = f"bnb_estimator({states})"
    return estimate


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    # One builder per bnb class, with the class's buffers per parameter; the names derived
    # from these in registry.toml (paged, other precisions) inherit both.
    for name, builder, states in (
        ("adamw_bnb_8bit", bnb_builder("AdamW"), 2),
        ("paged_adamw_32bit", bnb_builder("AdamW"), 2),
        ("lion_8bit", bnb_builder("Lion"), 1),
        ("lion_32bit", bnb_builder("Lion"), 1),
        ("rmsprop_bnb", bnb_builder("RMSprop"), 1),
        ("ademamix", build_ademamix, 3),
    ):
        register.builder(name, builder, estimator=bnb_estimator(states))
