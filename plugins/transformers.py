"""Built-in plugin: Adafactor from ``transformers.optimization``, as the HF Trainer builds it.

The Trainer's ``adafactor`` is Adafactor with an absolute learning rate:
``Adafactor(groups, lr=learning_rate, scale_parameter=False, relative_step=False)``
(torch's own ``torch.optim.Adafactor`` is a different optimizer: always relative-step;
it is ``adafactor_torch`` here). HF ignores ``optim_args`` for this name (issue #21317);
here they are typed options with the Trainer's values as defaults, and HF Adafactor's own
rules are checked before building, each naming the keys to change:

- ``warmup_init=true`` needs ``relative_step=true``;
- ``relative_step=true`` means the optimizer computes its own step size,
  ``min(1e-2, 1/sqrt(t))`` (times the parameter RMS with ``scale_parameter``), and HF
  Adafactor refuses an ``lr`` with it. We then pass ``lr=None``, so ``learning_rate``
  must stay at its default: any other value would be silently unused, and is refused.
  The groups' ``lr`` is then None, so an ordinary LR scheduler cannot drive the
  optimizer; use ``transformers.optimization.AdafactorSchedule(optimizer)``, which reports
  the step size Adafactor really uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import (
    BuildRequest,
    EstimateRequest,
    OptimArgsError,
    OptimizerArguments,
    Register,
    StateEstimate,
    factored_elements,
    hookimpl,
)

if TYPE_CHECKING:
    import torch

#: The learning rate a user gets without setting one (HF's default, and optimhub's).
DEFAULT_LEARNING_RATE = OptimizerArguments().learning_rate


def build_adafactor(request: BuildRequest) -> torch.optim.Optimizer:
    kwargs = dict(request.kwargs)
    if request.options["warmup_init"] and not request.options["relative_step"]:
        raise OptimArgsError(
            f"optim_args for {request.spec.name!r}: warmup_init=true only changes the relative "
            "step size, so it needs relative_step=true; add relative_step=true or remove "
            "warmup_init"
        )
    if request.options["relative_step"]:
        learning_rate = request.arguments.learning_rate
        if learning_rate != DEFAULT_LEARNING_RATE:
            raise OptimArgsError(
                f"optim_args for {request.spec.name!r}: relative_step=true makes Adafactor "
                "compute its own step size, min(1e-2, 1/sqrt(step)), so learning_rate="
                f"{learning_rate!r} would be unused; leave learning_rate at its default "
                f"({DEFAULT_LEARNING_RATE!r}) or set relative_step=false to use it"
            )
        ruled = [names[0] for group, names in zip(request.param_groups, request.param_names,
                                                 strict=True) if "lr" in group and names]
        if ruled:
            raise OptimArgsError(
                f"optim_args for {request.spec.name!r}: relative_step=true ignores learning "
                f"rates, but param_group_rules give {ruled[0]!r} (and its group) its own lr; "
                "drop the rules' lr or set relative_step=false"
            )
        kwargs["lr"] = None
    from transformers.optimization import Adafactor

    from ._whole_tensors import whole_tensors_if_sharded

    # FSDP2: its factored moments mix plain tensors into DTensor ops; step whole tensors
    return whole_tensors_if_sharded(Adafactor(request.param_groups, **kwargs))


def estimate_adafactor(request: EstimateRequest) -> StateEstimate:
    """HF Adafactor casts gradients to float32: factored fp32 second moments (rows and
    columns per matrix, the full tensor for vectors), plus an fp32 first moment with beta1."""
    first = request.option("beta1") is not None
    return StateEstimate(4 * sum(
        factored_elements(p.shape) + (p.numel if first else 0) for p in request.trainable
    ))


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adafactor", build_adafactor, estimator=estimate_adafactor)
