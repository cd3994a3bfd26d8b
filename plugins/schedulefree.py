"""Built-in plugin: the Schedule-Free optimizers (facebookresearch schedulefree).

Schedule-Free optimizers replace the LR schedule by iterate averaging, and keep two weight
sequences: training runs on one (y), evaluation and checkpoints need the other (x). Hence
the loop contract (capability ``schedule_free``, driven by ``optimhub.drive``):
``optimizer.train()`` before training steps (``step()`` raises otherwise: the optimizers
start in eval mode), ``optimizer.eval()`` before evaluating or saving (forgetting it is
silent), and a constant LR schedule. ``step()`` also normalises ``p.grad`` in place.

As in HF, ``weight_decay`` is passed to the constructor as well as carried by the decay /
no-decay groups (the groups win), and ``warmup_steps`` comes from the training arguments.
Where we differ from HF (docs/differences-from-transformers.md, section schedulefree):

- a ``warmup_steps`` below 1 is a ratio of ``max_steps`` and becomes whole steps here; HF
  passes the float through, and ``(k+1)/0.1`` makes step 0 run at 10x the learning rate;
- RAdamScheduleFree has no warmup argument (its rectification is the warmup); HF drops a
  nonzero ``warmup_steps`` for it silently, we refuse it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import BuildRequest, OptimArgsError, Register, dense_estimator, hookimpl

if TYPE_CHECKING:
    import torch


def build_adamw(request: BuildRequest) -> torch.optim.Optimizer:
    from schedulefree import AdamWScheduleFree

    return AdamWScheduleFree(request.param_groups, **_with_warmup(request))


def build_sgd(request: BuildRequest) -> torch.optim.Optimizer:
    from schedulefree import SGDScheduleFree

    return SGDScheduleFree(request.param_groups, **_with_warmup(request))


def build_radam(request: BuildRequest) -> torch.optim.Optimizer:
    warmup = request.arguments.warmup_steps
    if warmup:
        raise OptimArgsError(
            f"optimizer {request.spec.name!r} has no warmup_steps: RAdamScheduleFree warms up "
            "by itself (its rectification damps the first steps), so warmup_steps="
            f"{warmup!r} would be ignored. Set warmup_steps=0, or use schedule_free_adamw for "
            "an explicit linear warmup."
        )
    from schedulefree import RAdamScheduleFree

    return RAdamScheduleFree(
        request.param_groups, weight_decay=request.weight_decay, **request.kwargs
    )


def _with_warmup(request: BuildRequest) -> dict[str, object]:
    """The constructor keywords plus HF's two extras: weight_decay and warmup_steps (an int)."""
    return {
        **request.kwargs,
        "weight_decay": request.weight_decay,
        "warmup_steps": request.arguments.warmup_step_count(),
    }


estimate_adam_like = dense_estimator(
    2, "z (the SGD sequence, a copy of the weights) and exp_avg_sq, in the parameter's dtype.")
estimate_sgd = dense_estimator(1, "z only.")


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("schedule_free_adamw", build_adamw, estimator=estimate_adam_like)
    register.builder("schedule_free_radam", build_radam, estimator=estimate_adam_like)
    register.builder("schedule_free_sgd", build_sgd, estimator=estimate_sgd)
