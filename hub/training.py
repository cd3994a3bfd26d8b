"""One way to drive any optimizer: the loop contracts, decided by capabilities.

A training loop written once against :class:`TrainingDriver` trains every optimizer in
the catalog correctly::

    driver = optimhub.drive(optimizer, scheduler, max_grad_norm=1.0,
                            gradient_accumulation_steps=4, model=model)
    for batch in batches:
        driver.backward(loss_fn(model, batch))
        driver.step()                 # steps only every 4th call; clips; schedules
    with driver.evaluating():         # schedule-free: evaluation weights inside
        evaluate(model)
    with driver.saving():             # schedule-free: the weights you want to keep
        torch.save(model.state_dict(), path)

What it does per capability:

- plain optimizers: loss scaled by 1/accumulation, gradient clipping, ``step()``,
  scheduler step, ``zero_grad``;
- schedule-free: ``optimizer.train()`` before training steps, ``optimizer.eval()``
  around evaluation and saving (forgetting it is silent otherwise);
- fused backward (LOMO): ``grad_norm(loss)`` when the backend clips, then
  ``fused_backward(loss, lr)`` with the scheduler's current learning rate;
- layerwise: the update happens inside ``loss.backward()``; ``step()`` only schedules;
- create_graph (second-order: AdaHessian, Sophia-H): ``loss.backward(create_graph=True)``,
  so ``step()`` can take Hessian-vector products of the gradients; ``zero_grad`` frees
  the graph kept with them.

``weight_decay_scheduler=`` (optimhub.create_weight_decay_scheduler) is stepped after every
optimizer step, beside the lr scheduler, whatever drives that one (a metric-driven lr
schedule included); ``state_dict()`` / ``load_state_dict()`` checkpoint both schedules and
the accumulation count together.

Combinations that cannot work are refused when the driver is built, naming the capability.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from .checkpoint import spec_or_none
from .errors import CapabilityError, CheckpointError, OptimArgsError, OptimArgsTypeError, shown
from .layerwise import LayerwiseOptimizer
from .prepare import check_layerwise_allowed
from .spec import Capability, OptimizerSpec
from .weight_decay_schedules import WeightDecayScheduler

__all__ = ["TrainingDriver", "check_loop_contract", "drive"]


def drive(
    optimizer: torch.optim.Optimizer, scheduler: Any | None = None, **settings: Any
) -> TrainingDriver:
    """Build the :class:`TrainingDriver` for an optimizer (built by optimhub or not);
    ``settings`` are its keyword arguments (max_grad_norm, gradient_accumulation_steps,
    model, closure, weight_decay_scheduler)."""
    return TrainingDriver(optimizer, scheduler, **settings)


class TrainingDriver:
    """Drives one optimizer (and its scheduler) by the rules of its capabilities."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None = None,
        *,
        max_grad_norm: float | None = None,
        gradient_accumulation_steps: int = 1,
        model: nn.Module | None = None,
        closure: Callable[[], torch.Tensor] | None = None,
        weight_decay_scheduler: WeightDecayScheduler | None = None,
    ) -> None:
        _check_driver_inputs(optimizer, scheduler, model, closure)
        _check_weight_decay_scheduler(optimizer, weight_decay_scheduler)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.weight_decay_scheduler = weight_decay_scheduler
        self.spec = spec_or_none(optimizer)  # None: a foreign optimizer, driven as plain
        self.max_grad_norm = _grad_norm(max_grad_norm)
        self.accumulation = _accumulation(gradient_accumulation_steps)
        self.model = model
        self.closure = closure
        self.layerwise = isinstance(optimizer, LayerwiseOptimizer)
        self.fused = self._has(Capability.FUSED_BACKWARD)
        self.schedule_free = self._has(Capability.SCHEDULE_FREE)
        self.create_graph = self._has(Capability.CREATE_GRAPH)
        self._micro_steps = 0
        self._training_mode = False
        self._check_contracts()
        self._set_mode(training=True)

    # ---- contracts -------------------------------------------------------------------
    def _has(self, capability: Capability) -> bool:
        return self.spec is not None and self.spec.has(capability)

    def _check_contracts(self) -> None:
        if self.spec is not None:
            check_loop_contract(
                self.spec, layerwise=self.layerwise, max_grad_norm=self.max_grad_norm,
                gradient_accumulation_steps=self.accumulation, has_closure=self.closure is not None,
            )

    # ---- the loop --------------------------------------------------------------------
    @property
    def lr(self) -> float | None:
        """The learning rate the next update will use (the scheduler's current value);
        None where the optimizer computes its own step size (Adafactor's relative step)."""
        value = self.optimizer.param_groups[0]["lr"]
        if value is None:
            return None
        return float(value.item() if isinstance(value, torch.Tensor) else value)

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` the way this optimizer needs."""
        self._micro_steps += 1
        if self.fused:
            if getattr(self.optimizer, "clip_grad_norm", None) is not None:
                self.optimizer.grad_norm(loss)
            self.optimizer.fused_backward(loss, self.lr)
            return
        scaled = loss / self.accumulation if self.accumulation > 1 else loss
        scaled.backward(create_graph=self.create_graph)

    def step(self) -> bool:
        """Finish one micro-step; returns True when the parameters were updated."""
        if self._micro_steps == 0:
            raise CapabilityError("step() was called before backward(loss)")
        if self._micro_steps % self.accumulation:
            return False
        if not (self.fused or self.layerwise):
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(_parameters(self.optimizer), self.max_grad_norm)
            if self.closure is not None:
                self.optimizer.step(self.closure)
            else:
                self.optimizer.step()
        if self.scheduler is not None and not self._metric_driven:
            self.scheduler.step()
        if self.weight_decay_scheduler is not None:
            self.weight_decay_scheduler.step()
        self.zero_grad()
        return True

    @property
    def _metric_driven(self) -> bool:
        return isinstance(self.scheduler, ReduceLROnPlateau)

    def evaluated(self, metric: float) -> None:
        """Report an evaluation metric: metric-driven schedules (reduce_lr_on_plateau,
        greedy) step on it; time-driven ones already stepped in ``step()``."""
        if self._metric_driven:
            self.scheduler.step(metric)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    # ---- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What the loop itself must resume: the schedulers' states and the micro-step
        count (a checkpoint mid-accumulation resumes mid-accumulation). The optimizer and
        the model are saved as usual, beside it. Plain data (``weights_only=True``)."""
        return {
            "micro_steps": self._micro_steps,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "weight_decay_scheduler": (None if self.weight_decay_scheduler is None
                                       else self.weight_decay_scheduler.state_dict()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; a state for other schedulers is refused."""
        if not isinstance(state_dict, dict) or not {
                "micro_steps", "scheduler", "weight_decay_scheduler"} <= set(state_dict):
            raise CheckpointError(
                "this is not a TrainingDriver state (expected micro_steps, scheduler and "
                "weight_decay_scheduler, as driver.state_dict() saves them)"
            )
        for key in ("scheduler", "weight_decay_scheduler"):
            saved = state_dict[key] is not None
            if saved != (getattr(self, key) is not None):
                here = "this one has none" if saved else "this one has one"
                raise CheckpointError(
                    f"the saved driver {'had' if saved else 'had no'} {key}, {here}: build the "
                    "driver with the same schedulers to resume"
                )
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state_dict["scheduler"])
        if self.weight_decay_scheduler is not None:
            self.weight_decay_scheduler.load_state_dict(state_dict["weight_decay_scheduler"])
        self._micro_steps = int(state_dict["micro_steps"])

    # ---- evaluation and saving -------------------------------------------------------
    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Inside: the weights to evaluate (schedule-free: the averaged x sequence).

        On exit the optimizer returns to the mode it was in (training, or the final eval
        weights after ``finish()``), so nesting and saving after training are safe.
        """
        was_training = self._training_mode
        self._set_mode(training=False)
        try:
            yield
        finally:
            self._set_mode(training=was_training)

    #: Saving needs the same weights as evaluation: what the averaged iterate says.
    saving = evaluating

    def finish(self) -> None:
        """Leave the model in its final weights (schedule-free: eval weights) for good."""
        self._set_mode(training=False)

    def _set_mode(self, *, training: bool) -> None:
        if self.schedule_free and training != self._training_mode:
            (self.optimizer.train if training else self.optimizer.eval)()
        self._training_mode = training


def check_loop_contract(
    spec: OptimizerSpec,
    *,
    layerwise: bool = False,
    max_grad_norm: float | None = None,
    gradient_accumulation_steps: int = 1,
    has_closure: bool = False,
) -> None:
    """Refuse a loop this optimizer cannot honour, from its spec alone.

    Callable before the optimizer exists (the Trainer integration does so: building LOMO
    hooks the model for good), and used by every :class:`TrainingDriver`.
    """
    check_layerwise_allowed(spec, layerwise)
    fused = spec.has(Capability.FUSED_BACKWARD)
    in_backward = (None if not spec.updates_in_backward(layerwise)
                   else "fused backward" if fused else "layerwise")
    where = f"optimizer {spec.name!r} updates parameters inside backward ({in_backward}), so"
    if in_backward and gradient_accumulation_steps > 1:
        raise CapabilityError(
            f"{where} gradients cannot accumulate over {gradient_accumulation_steps} steps; "
            "use gradient_accumulation_steps=1 (and a larger batch), or a non-fused optimizer"
        )
    if in_backward and max_grad_norm:
        clip = ("; to clip, give the backend its own threshold, e.g. "
                "optim_args='clip_grad_norm=1.0' (it clips during its fused backward)"
                if "clip_grad_norm" in spec.args else "")
        raise CapabilityError(
            f"{where} the loop cannot clip gradients to max_grad_norm={max_grad_norm} (HF's "
            f"TrainingArguments default is 1.0): set max_grad_norm=0 (or None){clip}"
        )
    if in_backward and has_closure:
        raise CapabilityError(
            f"{where} step() never runs and a closure would be silently ignored; drop "
            "closure= (call backward(loss) on the driver instead)"
        )
    if spec.has(Capability.CLOSURE_REQUIRED) and not has_closure:
        raise CapabilityError(
            f"optimizer {spec.name!r} needs step(closure): pass closure= (a function that "
            "recomputes and returns the loss, calling backward) to the driver"
        )


def _check_driver_inputs(optimizer: Any, scheduler: Any, model: Any, closure: Any) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise OptimArgsTypeError(
            f"drive() needs a torch.optim.Optimizer (from optimhub.create_optimizer), got "
            f"{type(optimizer).__name__}"
        )
    if scheduler is not None:
        if isinstance(scheduler, str) or not callable(getattr(scheduler, "step", None)):
            raise OptimArgsTypeError(
                f"scheduler must be a scheduler object (see optimhub.create_scheduler), got "
                f"{type(scheduler).__name__} {shown(scheduler)}"
            )
        bound = getattr(scheduler, "optimizer", optimizer)
        if bound is not optimizer:
            raise OptimArgsError(
                f"the {type(scheduler).__name__} given is bound to another optimizer "
                f"({type(bound).__name__}); build it for this one: "
                "optimhub.create_scheduler(name, optimizer, ...)"
            )
    if closure is not None and not callable(closure):
        raise OptimArgsTypeError(
            f"closure must be a function that recomputes the loss, got "
            f"{type(closure).__name__} {shown(closure)}"
        )
    if model is not None and not isinstance(model, nn.Module):
        raise OptimArgsTypeError(
            f"model must be an nn.Module or None, got {type(model).__name__} {shown(model)}"
        )


def _check_weight_decay_scheduler(optimizer: torch.optim.Optimizer, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, WeightDecayScheduler):
        raise OptimArgsTypeError(
            "weight_decay_scheduler must be a WeightDecayScheduler (see "
            f"optimhub.create_weight_decay_scheduler), got {type(value).__name__} {value!r}"
        )
    value.check_free_for(optimizer, what="weight_decay_scheduler")


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _grad_norm(value: float | None) -> float | None:
    """None or 0 (HF's spelling) mean no clipping; otherwise a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptimArgsTypeError(f"max_grad_norm must be a number or None, got {shown(value)}")
    if not math.isfinite(value) or value < 0:
        raise OptimArgsError(
            f"max_grad_norm must be a finite number > 0 (or None / 0 for no clipping), "
            f"got {shown(value)}"
        )
    return float(value) or None


def _accumulation(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptimArgsTypeError(f"gradient_accumulation_steps must be an int, got {shown(value)}")
    if value < 1:
        raise OptimArgsError(f"gradient_accumulation_steps must be >= 1, got {shown(value)}")
    return value
