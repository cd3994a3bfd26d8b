"""``create_scheduler``: Hugging Face's learning-rate schedule names, checked before training.

    scheduler = optimhub.create_scheduler("cosine", optimizer, num_warmup_steps=0.05,
                                          num_training_steps=10_000)

The twelve names of ``transformers.SchedulerType`` give, step for step, the learning rates
``transformers.get_scheduler`` gives (the same formulas, the same ``LambdaLR`` multipliers,
``optimizer.defaults["lr"]`` as the initial lr where HF uses it), plus
``adafactor_relative``, which reports the step size of an Adafactor that computes its own.
transformers is not imported: the formulas and ``GreedyLR`` are reimplemented here and a
test compares every one of them with transformers itself.

Where this is stricter than HF, it is so that a mistake fails here rather than after hours
of training with the wrong learning rate:

- a float warmup is a ratio only below 1, and only with ``num_training_steps`` (HF's rule,
  but never guessed: ``2.5`` or a ratio without a total is an error);
- a warmup the schedule would ignore (``constant``, ``reduce_lr_on_plateau``, ``greedy``)
  is an error, not silently dropped;
- a warmup longer than training, a decay phase that cannot fit, an unknown keyword, a
  missing required one and a value of the wrong type name the value and the fix;
- a schedule-free optimizer gets only ``constant`` (its warmup is its own) unless the
  caller says ``allow_decay_with_schedule_free=True``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from .arguments import resolve_warmup_steps
from .checkpoint import spec_or_none
from .errors import (
    CapabilityError,
    CheckpointError,
    OptimArgsError,
    OptimArgsTypeError,
    OptimHubError,
    closest,
)
from .group_selection import check_group_mapping, resolve_group_keys
from .layerwise import LayerwiseOptimizer
from .spec import ArgSpec, Capability
from .weight_decay_schedules import (
    WeightDecayScheduler,
    check_weight_decay_schedule_name,
    create_weight_decay_scheduler,
)

__all__ = [
    "HF_SCHEDULE_NAMES",
    "SCHEDULE_NAMES",
    "AdafactorRelativeLR",
    "GreedyLR",
    "ScheduledLR",
    "check_schedule_forms",
    "create_scheduler",
    "resolve_warmup_steps",
]


# --------------------------------------------------------------------------- warmup
# ----------------------------------------------------------------- the formulas (HF's)
# Each is the LambdaLR multiplier of the step; bound with functools.partial, as HF does,
# so a scheduler's state_dict is the same plain data as HF's.
def _ramp(step: int, warmup: int) -> float:
    """Linear warmup from 0 towards 1: the warmup of every HF schedule but one."""
    return float(step) / float(max(1, warmup))


def _half_cosine(progress: float, cycles: float) -> float:
    """1 -> 0 over half a wave per 0.5 cycle: ``0.5 (1 + cos(2 pi cycles progress))``."""
    return 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress))


def _lift(factor: float, floor: float) -> float:
    """Rescale a factor in [0, 1] to [floor, 1] (floor = min_lr_rate or min_lr_ratio)."""
    return max(0.0, factor * (1.0 - floor) + floor)


def _constant(step: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, *, warmup: int) -> float:
    return _ramp(step, warmup) if step < warmup else 1.0


def _linear(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return _ramp(step, warmup)
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def _progress(step: int, warmup: int, total: int) -> float:
    """Fraction of the post-warmup steps done (above 1 past ``total``)."""
    return float(step - warmup) / float(max(1, total - warmup))


def _cosine(step: int, *, warmup: int, total: int, num_cycles: float,
            min_lr_rate: float = 0.0) -> float:
    """``cosine`` (floor 0) and ``cosine_with_min_lr``. Past ``total`` it climbs back (HF)."""
    if step < warmup:
        return _ramp(step, warmup)
    return _lift(_half_cosine(_progress(step, warmup, total), num_cycles), min_lr_rate)


def _cosine_with_restarts(step: int, *, warmup: int, total: int, num_cycles: float) -> float:
    """A hard restart per cycle: the first half-wave of the cosine, ``num_cycles`` times."""
    if step < warmup:
        return _ramp(step, warmup)
    progress = _progress(step, warmup, total)
    if progress >= 1.0:
        return 0.0
    return _lift(_half_cosine((num_cycles * progress) % 1.0, 0.5), 0.0)


def _polynomial(step: int, *, warmup: int, total: int, lr_end: float, power: float,
                lr_init: float) -> float:
    if step < warmup:
        return _ramp(step, warmup)
    if step > total:
        return lr_end / lr_init
    remaining = 1 - (step - warmup) / (total - warmup)
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def _inverse_sqrt(step: int, *, warmup: int, timescale: int) -> float:
    if step < warmup:
        return _ramp(step, warmup)
    return 1.0 / math.sqrt((step + timescale - warmup) / timescale)


def _cosine_warmup_with_min_lr(step: int, *, warmup: int, total: int, num_cycles: float,
                               min_lr_rate: float, warmup_lr_rate: float | None) -> float:
    """HF's variant: warmup starts above 0 (at ``1/W`` or ``warmup_lr_rate``) and reaches
    1 at its last step; the cosine then reaches the floor at step ``total - 1``."""
    s, w, t = float(step), float(warmup), float(total)
    if s < w:
        if warmup_lr_rate is None:
            return (s + 1.0) / max(1.0, w)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * s / max(1, w - 1)
    progress = (s - w + 1.0) / max(1.0, t - w)
    return _lift(_half_cosine(progress, num_cycles), min_lr_rate)


_WSD_WARMUPS: dict[str, Callable[[float], float]] = {
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1.0 - math.sqrt(1.0 - p),
}
_WSD_DECAYS: dict[str, Callable[[float, float], float]] = {
    "linear": lambda p, cycles: 1.0 - p,
    "cosine": _half_cosine,
    "1-sqrt": lambda p, cycles: 1.0 - math.sqrt(p),
}


def _warmup_stable_decay(step: int, *, warmup: int, num_stable_steps: int,
                         num_decay_steps: int, warmup_type: str, decay_type: str,
                         min_lr_ratio: float, num_cycles: float) -> float:
    if step < warmup:
        return _lift(_WSD_WARMUPS[warmup_type](_ramp(step, warmup)), min_lr_ratio)
    if step < warmup + num_stable_steps:
        return 1.0
    if step < warmup + num_stable_steps + num_decay_steps:
        progress = float(step - warmup - num_stable_steps) / float(max(1, num_decay_steps))
        return _lift(_WSD_DECAYS[decay_type](progress, num_cycles), min_lr_ratio)
    return min_lr_ratio


# ------------------------------------------------------------------------ GreedyLR
class GreedyLR(ReduceLROnPlateau):
    """HF's ``greedy`` schedule (``transformers.optimization.GreedyLR``), reimplemented.

    Driven by a metric like ``ReduceLROnPlateau``: after more than ``patience`` steps
    without improvement the lr is multiplied by ``factor`` (not below ``min_lr``), after
    more than ``patience`` improving steps it is divided by ``factor`` (not above
    ``max_lr``); ``cooldown`` / ``warmup`` steps follow a decrease / increase; with
    ``smooth`` the metric is a moving average over ``window_size`` values; after
    ``reset_start`` decreases with every group at its ``min_lr`` everything restarts from
    the initial lrs. Arguments and defaults are HF's (arXiv:2512.14527).

    Why a reimplementation: HF's class is importable only with all of transformers
    (about 1.5 s), and this one is small. Why a ``ReduceLROnPlateau`` subclass: every loop
    that special-cases metric-driven schedulers does it with that isinstance check (HF's
    Trainer steps ``(ReduceLROnPlateau, GreedyLR)`` with the eval metric, Lightning asks
    for a monitor), and GreedyLR is one: the same ``step(metrics)`` and the same fields
    (``mode``, ``factor``, ``patience``, ``best``, ``num_bad_epochs``...), which torch's
    initialiser sets and checks. Its state_dict is plain data (loads with
    ``weights_only=True``).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.95,
        patience: int = 10,
        threshold: float = 1e-6,
        threshold_mode: str = "abs",
        cooldown: int = 0,
        warmup: int = 0,
        min_lr: float | list[float] = 1e-3,
        max_lr: float | list[float] = 1.0,
        eps: float = 1e-8,
        verbose: bool = False,
        smooth: bool = False,
        window_size: int = 50,
        reset_start: int = 500,
    ) -> None:
        if not factor > 0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}: the lr is divided by it")
        if smooth and window_size < 1:
            raise ValueError(f"window_size must be >= 1 with smooth=True, got {window_size!r}")
        super().__init__(optimizer, mode=mode, factor=factor, patience=patience,  # type: ignore[arg-type]
                         threshold=threshold, threshold_mode=threshold_mode,  # type: ignore[arg-type]
                         cooldown=cooldown, min_lr=min_lr, eps=eps)
        self.max_lrs = _per_group(max_lr, optimizer, "max_lr")
        self.warmup = warmup
        self.warmup_counter = 0
        self.num_good_epochs = 0
        self.verbose = verbose
        self.smooth = smooth
        self.window_size = window_size
        self.window: list[float] = []
        self.window_sum = 0.0
        self.reset_start = reset_start
        self.reset_start_original = reset_start
        self._init_lrs = [group["lr"] for group in optimizer.param_groups]

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """One evaluation: compare ``metrics`` with the best so far and adapt the lr."""
        current = self._smoothed(float(metrics))
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        elif self.warmup_counter > 0:
            self.warmup_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        else:
            self._count(current)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _count(self, current: float) -> None:
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
            self.num_good_epochs += 1
        else:
            self.num_bad_epochs += 1
            self.num_good_epochs = 0
        if self.num_good_epochs > self.patience:
            self._increase()
            self.warmup_counter = self.warmup
            self.num_good_epochs = 0
        elif self.num_bad_epochs > self.patience:
            self._decrease()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _smoothed(self, value: float) -> float:
        """The moving average over the last ``window_size`` values (HF's running sum)."""
        if not self.smooth:
            return value
        self.window.append(value)
        self.window_sum += value
        if len(self.window) > self.window_size:
            self.window_sum -= self.window.pop(0)
        return self.window_sum / len(self.window)

    def _decrease(self) -> None:
        all_at_min = True
        for i, group in enumerate(self.optimizer.param_groups):
            old = float(group["lr"])
            new = max(old * self.factor, self.min_lrs[i])
            if old - new > self.eps:
                group["lr"] = new
                self._say(f"reducing learning rate of group {i} to {new:.4e}.")
            if group["lr"] > self.min_lrs[i]:
                all_at_min = False
        if all_at_min:
            self.reset_start -= 1
            if self.reset_start <= 0:
                self._restart()

    def _increase(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            old = float(group["lr"])
            new = min(old / self.factor, self.max_lrs[i])
            if new - old > self.eps:
                group["lr"] = new
                self._say(f"increasing learning rate of group {i} to {new:.4e}.")
        self.reset_start = self.reset_start_original

    def _restart(self) -> None:
        """Back to the initial lrs and a fresh start (HF's ``_reset``)."""
        for group, lr in zip(self.optimizer.param_groups, self._init_lrs, strict=True):
            group["lr"] = lr
        self.best = self.mode_worse
        self.num_bad_epochs = self.num_good_epochs = 0
        self.cooldown_counter = self.warmup_counter = 0
        self.reset_start = self.reset_start_original
        self.window, self.window_sum = [], 0.0
        self._say("scheduler reset to its initial state.")

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"Epoch {self.last_epoch}: {message}")


def _per_group(value: float | list[float], optimizer: Optimizer, name: str) -> list[float]:
    groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(f"expected {groups} {name}s (one per param group), got {len(value)}")
        return list(value)
    return [value] * groups


# -------------------------------------------------------------- adafactor_relative
class AdafactorRelativeLR(LRScheduler):
    """Reports the step size an Adafactor with ``relative_step=True`` computes itself.

    Such an Adafactor ignores ``group["lr"]``: its step is ``min(1e-2, 1/sqrt(t))``
    (``1e-6 t`` with ``warmup_init``), times the parameter's RMS with
    ``scale_parameter``. This scheduler changes nothing; it reads that value from the
    optimizer (its own ``_get_lr``, for the first parameter of each group, as HF's
    ``AdafactorSchedule`` does) so that loops and loggers reading ``get_last_lr()`` or
    ``group["lr"]`` see the real step size; before the first step, ``initial_lr``.
    Unlike HF's, a group whose first parameter has no state yet reports ``initial_lr``
    instead of being dropped from the list (current torch rejects the short list: HF's
    fails as soon as one group is idle), and the value is a float, not the 0-d tensor HF
    leaves in ``group["lr"]``.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float = 0.0) -> None:
        _require_relative_step(optimizer)
        for group in optimizer.param_groups:
            group["initial_lr"] = initial_lr
        super().__init__(optimizer)
        for group in optimizer.param_groups:
            del group["initial_lr"]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        optimizer = self.optimizer
        lrs = []
        for group, base in zip(optimizer.param_groups, self.base_lrs, strict=True):
            state = optimizer.state.get(group["params"][0], {})
            lrs.append(float(type(optimizer)._get_lr(group, state)) if "step" in state else base)
        return lrs


def _require_relative_step(optimizer: Optimizer) -> None:
    if not callable(getattr(type(optimizer), "_get_lr", None)):
        raise OptimArgsError(
            f"schedule 'adafactor_relative' reports the step size HF's Adafactor computes "
            f"itself; {type(optimizer).__name__} is not an Adafactor with relative_step. Build "
            "one with optimhub.create_optimizer('adafactor', model, "
            "optim_args='relative_step=true'), or use another schedule"
        )
    absolute = [i for i, g in enumerate(optimizer.param_groups) if not g.get("relative_step")]
    if absolute:
        raise OptimArgsError(
            f"schedule 'adafactor_relative' needs relative_step=True, but param group(s) "
            f"{absolute} use an absolute lr (relative_step=False): schedule that lr with any "
            "other schedule ('constant', 'linear'...), or build Adafactor with relative_step=true"
        )


# ------------------------------------------------------------------- the schedules
@dataclass(frozen=True)
class _Plan:
    """What a schedule is built from, after every argument was checked."""

    name: str
    warmup: int
    total: int | None
    options: dict[str, Any]
    #: A param group's own initial lr (its own schedule); None: ``defaults["lr"]``, as HF.
    initial_lr: float | None = None

    def describe(self) -> str:
        """The schedule as plain text: what a checkpoint records and compares."""
        given = {k: v for k, v in self.options.items() if v is not None}
        parts = [f"warmup={self.warmup}", f"total={self.total}",
                 *(f"{k}={v!r}" for k, v in sorted(given.items()))]
        return f"{self.name}({', '.join(parts)})"


def _float(name: str, doc: str, default: Any = None, **bounds: Any) -> ArgSpec:
    return ArgSpec(name, "float", doc, default=default, nullable=default is None, **bounds)


def _int(name: str, doc: str, default: Any = None, **bounds: Any) -> ArgSpec:
    return ArgSpec(name, "int", doc, default=default, nullable=default is None, **bounds)


def _choice(name: str, doc: str, default: str, choices: tuple[str, ...]) -> ArgSpec:
    return ArgSpec(name, "str", doc, default=default, choices=choices)


_CYCLES = _float("num_cycles", "cosine waves; 0.5 is a half-wave from 1 to the floor",
                 0.5, exclusive_minimum=0.0)
_MIN_LR = _float("min_lr", "the lr the cosine ends at (exclusive with min_lr_rate)",
                 minimum=0.0)
_MIN_LR_RATE = _float("min_lr_rate", "the final lr as a fraction of the initial lr",
                      minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class _Schedule:
    """One schedule name: its multiplier (or scheduler class), options and needs.

    ``lr_lambda`` schedules are ``LambdaLR``s; ``prepare`` checks what the formula needs
    and returns the keywords bound to it (default: the warmup, the total and the options).
    ``scheduler`` schedules are classes taking ``(optimizer, **options)``; their keywords
    are the class's own, and so are the checks of their values.
    """

    name: str
    lr_lambda: Callable[..., float] | None = None
    scheduler: type | None = None
    options: tuple[ArgSpec, ...] = ()
    required: tuple[str, ...] = ()
    needs_total: bool = False
    takes_warmup: bool = True
    warmup_fix: str = "pass num_warmup_steps=0 (or None)"
    #: False only where the lr never changes: all a schedule-free optimizer accepts.
    changes_lr: bool = True
    #: False only where the schedule reports an lr the optimizer computes itself.
    scales_group_lr: bool = True
    prepare: Callable[[_Plan, Optimizer], dict[str, Any]] | None = None

    @property
    def option_names(self) -> tuple[str, ...]:
        if self.scheduler is None:
            return tuple(a.name for a in self.options)
        params = inspect.signature(self.scheduler.__init__).parameters
        return tuple(p for p in params if p not in ("self", "optimizer"))

    def build(self, optimizer: Optimizer, plan: _Plan) -> LRScheduler:
        if self.scheduler is not None:
            return _construct(self.scheduler, optimizer, plan)
        return LambdaLR(optimizer, self.multiplier(optimizer, plan))

    def multiplier(self, optimizer: Optimizer, plan: _Plan) -> Callable[[int], float]:
        """The ``LambdaLR`` multiplier of a formula schedule, bound to its checked plan."""
        assert self.lr_lambda is not None
        bound = self.prepare(plan, optimizer) if self.prepare else _warmup_and_total(plan)
        return partial(self.lr_lambda, **bound)


def _warmup_and_total(plan: _Plan) -> dict[str, Any]:
    return {"warmup": plan.warmup, "total": plan.total, **plan.options}


#: Choice options of the metric-driven schedules, checked up front so the error can list
#: the allowed values (torch only says "mode minimum is unknown!").
_METRIC_CHOICES = {"mode": ("min", "max"), "threshold_mode": ("rel", "abs")}


def _construct(cls: type, optimizer: Optimizer, plan: _Plan) -> LRScheduler:
    """Build a scheduler class; its own value checks become errors naming the schedule."""
    for key, allowed in _METRIC_CHOICES.items():
        if key in plan.options and plan.options[key] not in allowed:
            raise OptimArgsError(
                f"schedule {plan.name!r}: {key}={plan.options[key]!r} is not valid; use one of "
                f"{', '.join(repr(a) for a in allowed)}"
            )
    try:
        return cls(optimizer, **plan.options)
    except OptimArgsError:
        raise
    except (ValueError, TypeError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in plan.options.items()) or "no options"
        raise OptimArgsError(f"schedule {plan.name!r} ({given}): {exc}") from exc


def _initial_lr(optimizer: Optimizer, plan: _Plan, why: str) -> float:
    """``optimizer.defaults["lr"]``: HF's initial lr for polynomial and the min_lr schedules
    (a group's own lr for a schedule of its own: its ``min_lr`` / ``lr_end`` are its own)."""
    if plan.initial_lr is not None:
        return plan.initial_lr
    lr = optimizer.defaults.get("lr")
    if isinstance(lr, torch.Tensor):
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise OptimArgsError(
            f"schedule {plan.name!r} {why}, which it takes from optimizer.defaults['lr'] (as "
            f"HF does), but that is {lr!r}; build the optimizer with a positive lr"
        )
    return lr


def _prepare_polynomial(plan: _Plan, optimizer: Optimizer) -> dict[str, Any]:
    lr_init = _initial_lr(optimizer, plan, "decays from the initial lr")
    lr_end = plan.options["lr_end"]
    if not lr_init > lr_end:
        raise OptimArgsError(
            f"schedule 'polynomial' decays from the initial lr {lr_init!r} "
            f"(optimizer.defaults['lr']) down to lr_end={lr_end!r}, so lr_end must be smaller; "
            "lower lr_end or raise the learning rate"
        )
    if plan.total == plan.warmup:
        raise OptimArgsError(
            f"schedule 'polynomial' with num_warmup_steps == num_training_steps "
            f"({plan.total}) has no decay steps (HF divides by zero at step {plan.total}); "
            "shorten the warmup or use 'constant_with_warmup'"
        )
    return {**_warmup_and_total(plan), "lr_init": lr_init}


def _prepare_inverse_sqrt(plan: _Plan, optimizer: Optimizer) -> dict[str, Any]:
    timescale = plan.options["timescale"]
    if timescale is None:
        timescale = plan.warmup or 10_000
    return {"warmup": plan.warmup, "timescale": timescale}


def _prepare_min_lr(plan: _Plan, optimizer: Optimizer) -> dict[str, Any]:
    """Exactly one of min_lr / min_lr_rate; min_lr becomes a rate of defaults['lr']."""
    options = dict(plan.options)
    min_lr, rate = options.pop("min_lr"), options.pop("min_lr_rate")
    if (min_lr is None) == (rate is None):
        which = "both were" if min_lr is not None else "neither was"
        raise OptimArgsError(
            f"schedule {plan.name!r} needs exactly one of min_lr (the final lr) or min_lr_rate "
            f"(the final lr as a fraction of the initial lr), but {which} given; e.g. "
            f"create_scheduler({plan.name!r}, ..., min_lr_rate=0.1)"
        )
    if min_lr is not None:
        lr = _initial_lr(optimizer, plan, "turns min_lr into a fraction of the initial lr")
        if min_lr > lr:
            raise OptimArgsError(
                f"schedule {plan.name!r}: min_lr={min_lr!r} is above the initial lr {lr!r} "
                "(optimizer.defaults['lr']), so the lr would rise; give a smaller min_lr"
            )
        rate = min_lr / lr
    return {"warmup": plan.warmup, "total": plan.total, **options, "min_lr_rate": rate}


def _prepare_wsd(plan: _Plan, optimizer: Optimizer) -> dict[str, Any]:
    """The stable length: given, or what remains of num_training_steps."""
    options = dict(plan.options)
    decay, stable = options["num_decay_steps"], options["num_stable_steps"]
    total, warmup = plan.total, plan.warmup
    if stable is None and total is None:
        raise OptimArgsError(
            "schedule 'warmup_stable_decay' needs num_training_steps (the stable phase is what "
            "remains after warmup and decay) or num_stable_steps"
        )
    if stable is None:
        stable = total - warmup - decay  # type: ignore[operator]
        if stable < 0:
            raise OptimArgsError(
                f"schedule 'warmup_stable_decay': num_warmup_steps ({warmup}) + num_decay_steps "
                f"({decay}) = {warmup + decay} exceeds num_training_steps ({total}); shorten "
                "the warmup or the decay"
            )
    elif total is not None and warmup + stable + decay > total:
        raise OptimArgsError(
            f"schedule 'warmup_stable_decay': warmup ({warmup}) + num_stable_steps ({stable}) "
            f"+ num_decay_steps ({decay}) = {warmup + stable + decay} exceeds "
            f"num_training_steps ({total}), so the decay would not finish; shorten a phase"
        )
    options["num_stable_steps"] = stable
    return {"warmup": warmup, **options}


_SCHEDULES: tuple[_Schedule, ...] = (
    # HF's twelve, in transformers.SchedulerType's order.
    _Schedule("linear", _linear, needs_total=True),
    _Schedule("cosine", _cosine, options=(_CYCLES,), needs_total=True),
    _Schedule("cosine_with_restarts", _cosine_with_restarts,
              options=(_float("num_cycles", "number of hard restarts", 1.0,
                              exclusive_minimum=0.0),),
              needs_total=True),
    _Schedule("polynomial", _polynomial,
              options=(_float("lr_end", "the final lr", 1e-7, minimum=0.0),
                       _float("power", "exponent of the decay (1 = linear)", 1.0,
                              exclusive_minimum=0.0)),
              needs_total=True, prepare=_prepare_polynomial),
    _Schedule("constant", _constant, takes_warmup=False, changes_lr=False,
              warmup_fix="use 'constant_with_warmup' for a warmup",
              prepare=lambda plan, optimizer: {}),
    _Schedule("constant_with_warmup", _constant_with_warmup,
              prepare=lambda plan, optimizer: {"warmup": plan.warmup}),
    _Schedule("inverse_sqrt", _inverse_sqrt,
              options=(_int("timescale", "steps per unit of decay (default: the warmup, or "
                                         "10000 without one)", minimum=1),),
              prepare=_prepare_inverse_sqrt),
    _Schedule("reduce_lr_on_plateau", scheduler=ReduceLROnPlateau, takes_warmup=False),
    _Schedule("cosine_with_min_lr", _cosine, options=(_CYCLES, _MIN_LR, _MIN_LR_RATE),
              needs_total=True, prepare=_prepare_min_lr),
    _Schedule("cosine_warmup_with_min_lr", _cosine_warmup_with_min_lr,
              options=(_CYCLES, _MIN_LR, _MIN_LR_RATE,
                       _float("warmup_lr_rate", "the first warmup step's lr as a fraction of "
                                                "the initial lr", minimum=0.0, maximum=1.0)),
              needs_total=True, prepare=_prepare_min_lr),
    _Schedule("warmup_stable_decay", _warmup_stable_decay,
              options=(_int("num_decay_steps", "length of the decay phase", minimum=0),
                       _int("num_stable_steps", "length of the stable phase (default: "
                                                "num_training_steps - warmup - decay)",
                            minimum=0),
                       _choice("warmup_type", "shape of the warmup", "linear",
                               tuple(_WSD_WARMUPS)),
                       _choice("decay_type", "shape of the decay", "cosine",
                               tuple(_WSD_DECAYS)),
                       _float("min_lr_ratio", "floor as a fraction of the initial lr", 0.0,
                              minimum=0.0, maximum=1.0),
                       _float("num_cycles", "cosine decay waves (decay_type='cosine')", 0.5,
                              exclusive_minimum=0.0)),
              required=("num_decay_steps",), prepare=_prepare_wsd),
    _Schedule("greedy", scheduler=GreedyLR, takes_warmup=False),
    # optimhub's own.
    _Schedule("adafactor_relative", scheduler=AdafactorRelativeLR, takes_warmup=False,
              warmup_fix="Adafactor's own warmup is optim_args warmup_init=true",
              changes_lr=False, scales_group_lr=False),
)

_BY_NAME: dict[str, _Schedule] = {s.name: s for s in _SCHEDULES}
#: Every name ``create_scheduler`` accepts: HF's twelve, then optimhub's own.
SCHEDULE_NAMES: tuple[str, ...] = tuple(_BY_NAME)
#: The names of ``transformers.SchedulerType`` (5.x), in its order (a test checks it).
HF_SCHEDULE_NAMES: tuple[str, ...] = SCHEDULE_NAMES[:12]


# ------------------------------------------------------------------ create_scheduler
def create_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: float | None = None,
    num_training_steps: int | None = None,
    *,
    allow_decay_with_schedule_free: bool = False,
    group_schedules: Mapping[Any, Any] | None = None,
    weight_decay_schedule: Any = None,
    **kwargs: Any,
) -> LRScheduler:
    """The learning-rate scheduler ``name`` (a ``transformers.SchedulerType`` name) for
    ``optimizer``, giving HF's learning rates step for step.

    ``num_warmup_steps`` is a whole number of steps or a ratio of ``num_training_steps`` in
    (0, 1) (None: no warmup). ``kwargs`` are the schedule's own options (HF's
    ``lr_scheduler_kwargs``). Everything is checked here, before training: see the module
    docstring and docs/user-guide.md (learning-rate schedules) for the rules and where
    they differ from HF.
    Metric-driven schedules (``reduce_lr_on_plateau``, ``greedy``) are stepped with the
    evaluation metric, ``scheduler.step(metric)``; the others once per optimizer step.

    ``group_schedules`` gives param groups a schedule of their own, keyed by group (an
    index, ``"group:N"``, ``"route:NAME"`` or a regex of parameter names: see
    :mod:`optimhub.group_selection`): a schedule name, or a dict with ``name`` and any of
    ``num_warmup_steps``, ``num_training_steps`` and that schedule's options. Unset, the
    warmup is the global one (for schedules that take one) and so is the length; the other
    groups follow ``name``. ``weight_decay_schedule`` (a
    :class:`~optimhub.weight_decay_schedules.WeightDecayScheduler`, a name, or a dict of
    ``create_weight_decay_scheduler``'s arguments) is then stepped and saved with this
    scheduler. Both need a formula schedule, and return a :class:`ScheduledLR`.
    """
    schedule = _lookup(name)
    _check_optimizer(optimizer)
    if not isinstance(allow_decay_with_schedule_free, bool):
        raise OptimArgsTypeError(
            "allow_decay_with_schedule_free must be True or False, got "
            f"{type(allow_decay_with_schedule_free).__name__} "
            f"{allow_decay_with_schedule_free!r}"
        )
    plan = _checked_plan(schedule, optimizer, kwargs, num_warmup_steps, num_training_steps,
                         allow_decay_with_schedule_free)
    if group_schedules is None and weight_decay_schedule is None:
        scheduler = schedule.build(optimizer, plan)
    else:
        scheduler = _scheduled(schedule, plan, optimizer, group_schedules,
                               weight_decay_schedule, allow_decay_with_schedule_free)
    _mark_stepped_in_backward(optimizer)
    return scheduler


def _checked_plan(schedule: _Schedule, optimizer: Optimizer, given: Mapping[str, Any],
                  num_warmup_steps: Any, num_training_steps: Any, allow_decay: bool,
                  initial_lr: float | None = None) -> _Plan:
    """One schedule's arguments, every rule checked, as the plan it is built from."""
    options = _options(schedule, given)
    total = _training_steps(num_training_steps, schedule)
    warmup = resolve_warmup_steps(num_warmup_steps, total)
    _check_schedule_free(schedule, optimizer, warmup, allow_decay)
    _check_warmup(schedule, warmup, total)
    if schedule.scales_group_lr:
        _check_group_lrs(optimizer, schedule.name)
    return _Plan(schedule.name, warmup, total, options, initial_lr)


# ------------------------------------------------------------- per-group schedules
class ScheduledLR(LambdaLR):
    """HF's formulas with a schedule per param group, optionally carrying a weight-decay
    schedule.

    A ``LambdaLR`` (so every loop, logger and ``isinstance`` check that knows torch's
    schedulers knows it) whose multiplier differs per group. ``schedules`` describes each
    group's schedule; ``state_dict()`` records it (a checkpoint resumed under other
    schedules is refused, not silently re-timed) and, when a
    :class:`~optimhub.weight_decay_schedules.WeightDecayScheduler` is carried, its state:
    ``step()`` moves both to the same optimizer step. All plain data: loads with
    ``torch.load(weights_only=True)``.
    """

    def __init__(self, optimizer: Optimizer, lr_lambdas: list[Callable[[int], float]],
                 schedules: list[str], weight_decay: WeightDecayScheduler | None = None
                 ) -> None:
        self.schedules = list(schedules)
        self.weight_decay_scheduler: WeightDecayScheduler | None = None
        super().__init__(optimizer, lr_lambdas)
        if weight_decay is not None:
            weight_decay.carried_by = self
            weight_decay.set_step(self.last_epoch)
            self.weight_decay_scheduler = weight_decay

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        super().step(epoch)
        if self.weight_decay_scheduler is not None:
            self.weight_decay_scheduler.set_step(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        carried = state.pop("weight_decay_scheduler", None)
        if carried is not None:
            state["weight_decay_scheduler"] = carried.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.get("schedules")
        if saved != self.schedules:
            where = ("by a scheduler without per-group schedules (a plain LambdaLR)"
                     if saved is None else f"with the schedules {saved}")
            raise CheckpointError(
                f"this lr scheduler state was saved {where}; this scheduler has "
                f"{self.schedules} (one per param group). Build it with the same schedules "
                "(group_schedules, warmup, length and options) to resume"
            )
        carried = state.pop("weight_decay_scheduler", None)
        if (carried is None) != (self.weight_decay_scheduler is None):
            which = ("carries a weight-decay schedule and this scheduler has none"
                     if carried is not None
                     else "carries no weight-decay schedule and this scheduler carries one")
            raise CheckpointError(
                f"this lr scheduler state {which}: build it with the same "
                "weight_decay_schedule to resume"
            )
        super().load_state_dict(state)
        if carried is not None:
            assert self.weight_decay_scheduler is not None
            self.weight_decay_scheduler.load_state_dict(carried)
            self.weight_decay_scheduler.set_step(self.last_epoch)


def _scheduled(schedule: _Schedule, plan: _Plan, optimizer: Optimizer,
               group_schedules: Mapping[Any, Any] | None, weight_decay_schedule: Any,
               allow_decay: bool) -> ScheduledLR:
    if schedule.lr_lambda is None:
        wd = ("; to schedule the weight decay beside it, step a WeightDecayScheduler yourself "
              "or give it to optimhub.drive(..., weight_decay_scheduler=...)"
              if weight_decay_schedule is not None else "")
        raise OptimArgsError(
            f"schedule {schedule.name!r} is not a formula of the step (it is driven by "
            f"{'a metric' if schedule.changes_lr else 'the optimizer'}), so it cannot take "
            f"group_schedules or carry a weight_decay_schedule: use a formula schedule "
            f"({', '.join(s.name for s in _SCHEDULES if s.lr_lambda is not None)}){wd}"
        )
    plans = [plan] * len(optimizer.param_groups)
    if group_schedules is not None:
        what = "group_schedules"
        check_group_mapping(group_schedules, what=what)
        for index, key in resolve_group_keys(optimizer, list(group_schedules), what=what).items():
            where = f"group_schedules[{key!r}] (param group {index})"
            try:
                plans[index] = _group_plan(group_schedules[key], optimizer, index, plan,
                                           allow_decay)
            except OptimHubError as exc:
                raise type(exc)(f"{where}: {exc}") from exc
    multipliers = [_BY_NAME[p.name].multiplier(optimizer, p) for p in plans]
    carried = _weight_decay_scheduler(weight_decay_schedule, optimizer, plan.total)
    return ScheduledLR(optimizer, multipliers, [p.describe() for p in plans], carried)


#: The keys of a per-group schedule given as a dict, besides the schedule's own options.
_GROUP_KEYS = ("name", "num_warmup_steps", "num_training_steps")


def _group_plan(value: Any, optimizer: Optimizer, index: int, default: _Plan,
                allow_decay: bool) -> _Plan:
    """One group's own schedule, checked like a global one; its lr is its own initial lr."""
    if isinstance(value, (str, Enum)):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise OptimArgsTypeError(
            f"give a schedule name or a dict such as {{'name': 'cosine', "
            f"'num_warmup_steps': 100}}; got {type(value).__name__} {value!r}"
        )
    if "name" not in value:
        raise OptimArgsError(
            f"the dict needs 'name', a schedule name ({', '.join(SCHEDULE_NAMES)})"
        )
    schedule = _lookup(value["name"])
    if schedule.lr_lambda is None:
        raise OptimArgsError(
            f"schedule {schedule.name!r} acts on every group at once (it is not a formula of "
            "the step), so it cannot be one group's schedule"
        )
    options = {k: v for k, v in value.items() if k not in _GROUP_KEYS}
    warmup = value.get("num_warmup_steps", default.warmup if schedule.takes_warmup else None)
    total = value.get("num_training_steps", default.total)
    group = optimizer.param_groups[index]
    initial = group.get("initial_lr", group.get("lr"))
    if isinstance(initial, torch.Tensor):
        initial = initial.item()
    # A group whose lr is not a number is refused by the plan's own check of group lrs.
    initial_lr = (float(initial) if isinstance(initial, numbers.Real)
                  and not isinstance(initial, bool) else None)
    return _checked_plan(schedule, optimizer, options, warmup, total, allow_decay, initial_lr)


def _weight_decay_scheduler(value: Any, optimizer: Optimizer, total: int | None
                            ) -> WeightDecayScheduler | None:
    """``weight_decay_schedule`` as a scheduler of this optimizer, not yet carried."""
    if value is None:
        return None
    if isinstance(value, WeightDecayScheduler):
        value.check_free_for(optimizer, what="weight_decay_schedule")
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or "name" not in value:
        raise OptimArgsTypeError(
            "weight_decay_schedule must be a WeightDecayScheduler, a schedule name or a dict "
            "of create_weight_decay_scheduler's arguments with 'name', e.g. {'name': "
            f"'cosine', 'end_factor': 0.1}}; got {type(value).__name__} {value!r}"
        )
    arguments = {k: v for k, v in value.items() if k != "name"}
    unknown = sorted(set(arguments) - set(_WEIGHT_DECAY_KEYS))
    if unknown:
        raise OptimArgsError(
            f"weight_decay_schedule has no key {unknown[0]!r}; its keys: name, "
            f"{', '.join(_WEIGHT_DECAY_KEYS)}"
        )
    if value["name"] in ("linear", "cosine"):
        arguments.setdefault("num_training_steps", total)
    return create_weight_decay_scheduler(value["name"], optimizer, **arguments)


_WEIGHT_DECAY_KEYS = ("num_warmup_steps", "num_training_steps", "start_factor", "end_factor",
                      "group_schedules")


def check_schedule_forms(group_schedules: Any = None, weight_decay_schedule: Any = None
                         ) -> None:
    """What can be checked of ``group_schedules`` and ``weight_decay_schedule`` before the
    optimizer exists (the Trainer calls it when it is built): their forms, group keys and
    schedule names."""
    if group_schedules is not None:
        check_group_mapping(group_schedules, what="group_schedules")
        for key, value in group_schedules.items():
            name = value.get("name") if isinstance(value, Mapping) else value
            try:
                _lookup(name)
            except OptimHubError as exc:
                raise type(exc)(f"group_schedules[{key!r}]: {exc}") from exc
    if isinstance(weight_decay_schedule, (str, Mapping)):
        name = (weight_decay_schedule.get("name") if isinstance(weight_decay_schedule, Mapping)
                else weight_decay_schedule)
        check_weight_decay_schedule_name(name, what="weight_decay_schedule")
    elif weight_decay_schedule is not None and not isinstance(
            weight_decay_schedule, WeightDecayScheduler):
        raise OptimArgsTypeError(
            "weight_decay_schedule must be a schedule name, a dict of "
            "create_weight_decay_scheduler's arguments or a WeightDecayScheduler; got "
            f"{type(weight_decay_schedule).__name__} {weight_decay_schedule!r}"
        )


def _lookup(name: Any) -> _Schedule:
    if isinstance(name, Enum):  # transformers.SchedulerType is a str enum
        name = name.value
    if not isinstance(name, str):
        raise OptimArgsTypeError(
            f"the schedule name must be a str such as 'cosine', got {type(name).__name__} "
            f"{name!r}; names: {', '.join(SCHEDULE_NAMES)}"
        )
    if name not in _BY_NAME:
        near = closest(name, SCHEDULE_NAMES)
        hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        raise OptimArgsError(
            f"unknown schedule {name!r}.{hint} Schedules: {', '.join(SCHEDULE_NAMES)}"
        )
    return _BY_NAME[name]


def _check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise OptimArgsTypeError(
            f"create_scheduler needs a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )


def _options(schedule: _Schedule, given: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule's keywords: known names only, typed, defaults filled (for formulas)."""
    valid = schedule.option_names
    for key in given:
        if key not in valid:
            raise _unknown_option(schedule, key, valid)
    for key in schedule.required:
        if given.get(key) is None:
            raise OptimArgsError(
                f"schedule {schedule.name!r} needs {key}: "
                f"create_scheduler({schedule.name!r}, ..., {key}=N)"
            )
    if schedule.scheduler is not None:
        return dict(given)  # the class checks its own values
    return {a.name: _typed(schedule.name, a, given.get(a.name, a.default))
            for a in schedule.options}


def _unknown_option(schedule: _Schedule, key: str, valid: tuple[str, ...]) -> OptimArgsError:
    near = closest(key, valid)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    known = ", ".join(valid) if valid else "none"
    extra = ""
    if key == "last_epoch":
        extra = " To resume, load the saved scheduler.state_dict() instead."
    elif key in ("num_warmup_steps", "num_training_steps"):
        extra = f" Give {key} as an argument of create_scheduler."
    return OptimArgsError(
        f"schedule {schedule.name!r} has no option {key!r}.{hint} Its options: {known}.{extra}"
    )


def _typed(schedule: str, arg: ArgSpec, value: Any) -> Any:
    """One option value checked against its ArgSpec: type, bounds, choices."""
    if value is None and arg.nullable:
        return None
    where = f"schedule {schedule!r}: {arg.name}={value!r}"
    if arg.choices is not None:
        if value not in arg.choices:
            raise OptimArgsError(f"{where} is not valid. Allowed: {arg.describe_allowed()}.")
        return value
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (integral if arg.type == "int" else real):
        raise OptimArgsTypeError(
            f"{where} ({type(value).__name__}) is not valid. Allowed: {arg.describe_allowed()}."
        )
    typed = int(value) if arg.type == "int" else float(value)
    problem = arg.bound_violation(typed)
    if problem is not None:
        raise OptimArgsError(f"{where} is not valid: {problem}.")
    return typed


def _training_steps(total: Any, schedule: _Schedule) -> int | None:
    if total is None:
        if schedule.needs_total:
            raise OptimArgsError(
                f"schedule {schedule.name!r} needs num_training_steps (the total number of "
                "optimizer steps, e.g. TrainingArguments.max_steps): it decays to its end there"
            )
        return None
    if isinstance(total, bool) or not isinstance(total, numbers.Integral):
        raise OptimArgsTypeError(
            f"num_training_steps={total!r} ({type(total).__name__}) must be a whole number of "
            "optimizer steps (an int)"
        )
    if total <= 0:
        raise OptimArgsError(
            f"num_training_steps={total!r} must be >= 1: it is the total number of optimizer "
            "steps (with HF's max_steps=-1, compute it from the epochs and the data)"
        )
    return int(total)


def _check_warmup(schedule: _Schedule, warmup: int, total: int | None) -> None:
    if warmup and not schedule.takes_warmup:
        raise OptimArgsError(
            f"schedule {schedule.name!r} has no warmup, but num_warmup_steps={warmup} was given "
            f"(HF ignores it silently); {schedule.warmup_fix}"
        )
    if total is not None and warmup > total:
        raise OptimArgsError(
            f"num_warmup_steps={warmup} is longer than training (num_training_steps={total}): "
            "the lr would never reach its peak; shorten the warmup"
        )


def _check_group_lrs(optimizer: Optimizer, name: str) -> None:
    """Every schedule but adafactor_relative scales ``group['lr']``: it must be a number."""
    for i, group in enumerate(optimizer.param_groups):
        lr = group.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (numbers.Real, torch.Tensor)):
            raise OptimArgsError(
                f"schedule {name!r} scales each param group's lr, but group {i} has lr={lr!r} "
                "(an Adafactor with relative_step=True computes its own step size: use "
                "'adafactor_relative' to report it, or build it with an absolute lr)"
            )




def _mark_stepped_in_backward(optimizer: Optimizer) -> None:
    """Silence torch's false "lr_scheduler.step() before optimizer.step()" warning.

    An optimizer that updates inside backward (fused backward, layerwise) never has
    ``step()`` called by its loop, so torch's order check (the flag its LRScheduler's
    ``step`` wrapper sets) would warn that the first lr is skipped, which is not true:
    the update already happened in backward, with the scheduled lr.
    """
    spec = spec_or_none(optimizer)
    fused = spec is not None and spec.has(Capability.FUSED_BACKWARD)
    if fused or isinstance(optimizer, LayerwiseOptimizer):
        optimizer._opt_called = True  # type: ignore[attr-defined]


def _check_schedule_free(schedule: _Schedule, optimizer: Optimizer, warmup: int,
                         allow_decay: bool) -> None:
    """Schedule-free wants a constant lr; its warmup is the optimizer's own."""
    spec = spec_or_none(optimizer)
    if spec is None or not spec.has(Capability.SCHEDULE_FREE):
        return
    if warmup:
        raise CapabilityError(
            f"optimizer {spec.name!r} is schedule-free: its warmup belongs to the optimizer, "
            f"not the schedule. Build it with warmup_steps={warmup} "
            f"(create_optimizer({spec.name!r}, model, warmup_steps={warmup})) and pass "
            "num_warmup_steps=0 here; two warmups would multiply"
        )
    if schedule.changes_lr and not allow_decay:
        raise CapabilityError(
            f"optimizer {spec.name!r} is schedule-free: it intends a constant learning rate "
            f"(its iterate averaging replaces the decay, and its warmup is the optimizer's own "
            f"warmup_steps), so schedule {schedule.name!r} would change what it computes. Use "
            "'constant', or pass allow_decay_with_schedule_free=True if you mean to schedule "
            "it anyway"
        )
