"""Weight-decay schedules: each param group's ``weight_decay`` as a function of the step.

    wd = optimhub.create_weight_decay_scheduler(
        "cosine", optimizer, num_training_steps=10_000, end_factor=10.0)  # 0.04 -> 0.4 (DINO)
    scheduler = optimhub.create_scheduler("cosine", optimizer, num_warmup_steps=500,
                                          num_training_steps=10_000, weight_decay_schedule=wd)

A schedule multiplies each group's weight decay (the value the group had when the first such
scheduler was built, kept in ``group["initial_weight_decay"]`` as torch keeps
``"initial_lr"``: its *base*) by a factor of the optimizer step, as a learning-rate schedule
multiplies the lr. So HF's no-decay group (weight decay 0) stays at 0, and groups with their
own decay (``param_group_rules``) keep their ratios. The factor, for ``W`` warmup steps and
``T`` training steps:

- warmup (``step < W``): linear from ``start_factor`` (default 0) to 1;
- ``constant``: 1;
- ``linear``: from 1 to ``end_factor`` at step ``T``;
- ``cosine``: a half cosine from 1 to ``end_factor`` at step ``T``;

and ``end_factor`` after ``T`` (unlike HF's lr cosine, it does not climb back). ``end_factor``
may exceed 1: weight decay that grows during training is common for vision transformers.

Like the lr, the weight decay is read by most backends from the param group at every step.
An optimizer that reads it once (LOMO takes it as a constructor argument; a spec says so with
the ``static_weight_decay`` capability) is refused: scheduling it would silently change
nothing. Per group, a different schedule can be given by group key (see
:mod:`optimhub.group_selection`): ``group_schedules={"lm_head": "constant"}``.

Stepping and checkpoints: give the scheduler to ``create_scheduler(...,
weight_decay_schedule=wd)``, and stepping or saving the lr scheduler steps and saves both
(every loop that drives the lr scheduler, the HF Trainer's included, then drives this one);
or step it yourself after each optimizer step (``wd.step()``) and save its
``state_dict()`` (plain data, loads with ``weights_only=True``), or hand it to
``optimhub.drive(..., weight_decay_scheduler=wd)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from .arguments import resolve_warmup_steps
from .checkpoint import spec_or_none
from .errors import CapabilityError, CheckpointError, OptimArgsError, OptimArgsTypeError, closest
from .group_selection import check_group_mapping, describe_group, resolve_group_keys
from .spec import Capability

__all__ = [
    "WEIGHT_DECAY_SCHEDULE_NAMES",
    "WeightDecayPlan",
    "WeightDecayScheduler",
    "check_weight_decay_schedule_name",
    "create_weight_decay_scheduler",
    "make_plan",
]

#: The group key holding a group's weight decay before any schedule (torch's "initial_lr").
INITIAL_KEY = "initial_weight_decay"
#: The shapes a weight-decay schedule can have (each with an optional warmup).
WEIGHT_DECAY_SCHEDULE_NAMES: tuple[str, ...] = ("constant", "linear", "cosine")
_DECAYING = ("linear", "cosine")
#: The keys of a per-group schedule given as a dict.
_GROUP_KEYS = ("name", "num_warmup_steps", "num_training_steps", "start_factor", "end_factor")


@dataclass(frozen=True)
class WeightDecayPlan:
    """One group's schedule, checked: its shape, warmup and length, and its factors."""

    name: str
    warmup: int = 0
    total: int | None = None
    start_factor: float = 0.0
    end_factor: float = 1.0

    def factor(self, step: int) -> float:
        """The multiplier of the group's base weight decay at optimizer step ``step``."""
        if step < self.warmup:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup
        if self.name == "constant":
            return 1.0
        assert self.total is not None  # checked when the plan was made
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.name == "linear":
            return 1.0 + (self.end_factor - 1.0) * progress
        wave = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.end_factor + (1.0 - self.end_factor) * wave

    def describe(self) -> str:
        """The plan as plain text: what a checkpoint records and compares."""
        parts = [f"warmup={self.warmup}"]
        if self.warmup:
            parts.append(f"start_factor={self.start_factor!r}")
        if self.name in _DECAYING:
            parts += [f"total={self.total}", f"end_factor={self.end_factor!r}"]
        return f"{self.name}({', '.join(parts)})"


class WeightDecayScheduler:
    """Sets ``group["weight_decay"] = base * plan.factor(step)`` for every param group.

    Built by :func:`create_weight_decay_scheduler`; applies step 0's values at once (as a
    torch LR scheduler applies its first lr). ``step()`` after each optimizer step; or let
    the lr scheduler from ``create_scheduler(..., weight_decay_schedule=...)`` drive it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, plans: list[WeightDecayPlan]) -> None:
        self.optimizer = optimizer
        self.plans = plans
        # As torch keeps a group's first lr in "initial_lr": a scheduler built again for the
        # same optimizer (the HF Trainer does, at each train()) starts from the first value,
        # not from wherever the last schedule left the weight decay.
        for group in optimizer.param_groups:
            group.setdefault(INITIAL_KEY, group["weight_decay"])
        self.base_weight_decays = [float(g[INITIAL_KEY]) for g in optimizer.param_groups]
        self.last_step = 0
        #: Set by the lr scheduler that carries this one (it steps it, and saves it).
        self.carried_by: Any = None
        self._apply()

    def step(self) -> None:
        """Advance one optimizer step."""
        if self.carried_by is not None:
            raise CapabilityError(
                "this weight-decay scheduler is stepped by the lr scheduler that carries it "
                f"({type(self.carried_by).__name__}); step that one only, or the weight decay "
                "would advance twice per step"
            )
        self.set_step(self.last_step + 1)

    def check_free_for(self, optimizer: torch.optim.Optimizer, *, what: str) -> None:
        """Raise unless this scheduler belongs to ``optimizer`` and no lr scheduler carries
        it yet: a scheduler stepped by two owners would advance the decay twice a step."""
        if self.optimizer is not optimizer:
            raise OptimArgsError(
                f"{what} is bound to another optimizer; build it for this one: "
                "optimhub.create_weight_decay_scheduler(name, optimizer, ...)"
            )
        if self.carried_by is not None:
            raise OptimArgsError(
                f"{what} is already carried by an lr scheduler (create_scheduler(..., "
                "weight_decay_schedule=...)), which steps it: give the driver that lr "
                "scheduler only, and carry it by one lr scheduler, or the weight decay would "
                "advance twice per step"
            )

    def set_step(self, step: int) -> None:
        """Go to optimizer step ``step`` (the carrying lr scheduler's ``last_epoch``)."""
        self.last_step = int(step)
        self._apply()

    def get_last_weight_decay(self) -> list[float]:
        """Each group's weight decay for the next optimizer step."""
        return [float(g["weight_decay"]) for g in self.optimizer.param_groups]

    def _apply(self) -> None:
        for group, base, plan in zip(self.optimizer.param_groups, self.base_weight_decays,
                                     self.plans, strict=True):
            group["weight_decay"] = base * plan.factor(self.last_step)

    # ---- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data: the step, the base decays and each group's schedule."""
        return {"last_step": self.last_step, "base_weight_decays": list(self.base_weight_decays),
                "schedules": [plan.describe() for plan in self.plans]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume: the saved step and base decays; the schedules must be the same."""
        if not isinstance(state_dict, Mapping) or not {
                "last_step", "base_weight_decays", "schedules"} <= set(state_dict):
            raise CheckpointError(
                "this is not a weight-decay scheduler state (expected last_step, "
                f"base_weight_decays and schedules); got {_short(state_dict)}"
            )
        saved, here = list(state_dict["schedules"]), [p.describe() for p in self.plans]
        if saved != here:
            raise CheckpointError(
                f"this weight-decay scheduler state was saved with the schedules {saved} (one "
                f"per param group), this scheduler has {here}: build it with the same "
                "schedule, warmup, length and factors to resume, or resume without the "
                "weight-decay state on purpose by building a new scheduler"
            )
        self.base_weight_decays = [float(v) for v in state_dict["base_weight_decays"]]
        self.set_step(int(state_dict["last_step"]))

    def __repr__(self) -> str:
        kinds = sorted({plan.describe() for plan in self.plans})
        return f"WeightDecayScheduler(step {self.last_step}: {'; '.join(kinds)})"


# ------------------------------------------------------------------ building one
def create_weight_decay_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: float | None = None,
    num_training_steps: int | None = None,
    *,
    start_factor: float | None = None,
    end_factor: float | None = None,
    group_schedules: Mapping[Any, Any] | None = None,
) -> WeightDecayScheduler:
    """A :class:`WeightDecayScheduler` for ``optimizer``: ``name`` (``constant``,
    ``linear``, ``cosine``) with an optional warmup for every param group, except the
    groups ``group_schedules`` gives their own (a name, or a dict with ``name`` and any of
    ``num_warmup_steps``, ``num_training_steps``, ``start_factor``, ``end_factor``; unset
    lengths are the global ones).

    ``num_warmup_steps`` is a whole number of steps or a ratio of ``num_training_steps``;
    ``linear`` and ``cosine`` need ``num_training_steps`` and ``end_factor`` (the factor
    reached at its end, >= 0); ``start_factor`` (>= 0, default 0) is where a warmup starts.
    Everything is checked here, before any step.
    """
    what = "weight-decay schedule"
    _check_optimizer(optimizer)
    plan = make_plan(name, num_warmup_steps, num_training_steps, start_factor=start_factor,
                     end_factor=end_factor, what=what)
    plans = [plan] * len(optimizer.param_groups)
    if group_schedules is not None:
        check_group_mapping(group_schedules, what=f"{what} group_schedules")
        chosen = resolve_group_keys(optimizer, list(group_schedules),
                                    what=f"{what} group_schedules")
        for index, key in chosen.items():
            own = _group_plan(group_schedules[key], plan, what=f"{what} for group key {key!r}")
            group = optimizer.param_groups[index]
            if float(group.get(INITIAL_KEY, group["weight_decay"])) == 0.0:
                raise OptimArgsError(
                    f"{what} for group key {key!r}: param group {index} "
                    f"({describe_group(optimizer, index)}) has weight_decay 0 (HF's no-decay "
                    "group, or a rule's 0), and a schedule multiplies it: give the group a "
                    "weight decay (a param group rule) or drop its schedule"
                )
            plans[index] = own
    return WeightDecayScheduler(optimizer, plans)


def make_plan(
    name: Any,
    num_warmup_steps: Any = None,
    num_training_steps: Any = None,
    *,
    start_factor: Any = None,
    end_factor: Any = None,
    what: str = "weight-decay schedule",
) -> WeightDecayPlan:
    """One schedule's arguments, checked, as a :class:`WeightDecayPlan`."""
    check_weight_decay_schedule_name(name, what=what)
    total = _total(num_training_steps, name, what)
    warmup = resolve_warmup_steps(num_warmup_steps, total)
    if total is not None and warmup > total:
        raise OptimArgsError(
            f"{what}: num_warmup_steps={warmup} is longer than num_training_steps={total}; "
            "shorten the warmup"
        )
    plan = WeightDecayPlan(name, warmup=warmup, total=total if name in _DECAYING else None)
    if start_factor is not None:
        if not warmup:
            raise OptimArgsError(
                f"{what}: start_factor={start_factor!r} is where a warmup starts, but there is "
                "no warmup; give num_warmup_steps, or drop start_factor"
            )
        plan = replace(plan, start_factor=_factor("start_factor", start_factor, what))
    if name in _DECAYING:
        if end_factor is None:
            raise OptimArgsError(
                f"{what}: {name!r} needs end_factor, the multiple of each group's weight decay "
                f"reached at num_training_steps (0: decays to nothing; 10: grows tenfold)"
            )
        plan = replace(plan, end_factor=_factor("end_factor", end_factor, what))
    elif end_factor is not None:
        raise OptimArgsError(
            f"{what}: 'constant' keeps the weight decay, so end_factor={end_factor!r} would be "
            "ignored; use 'linear' or 'cosine' to change it"
        )
    return plan


def check_weight_decay_schedule_name(name: Any, *, what: str = "weight-decay schedule") -> None:
    """A known schedule name, or an error with the close ones and the list."""
    if not isinstance(name, str):
        raise OptimArgsTypeError(
            f"{what}: the schedule name must be a str, one of "
            f"{', '.join(WEIGHT_DECAY_SCHEDULE_NAMES)}; got {type(name).__name__} {name!r}"
        )
    if name not in WEIGHT_DECAY_SCHEDULE_NAMES:
        near = closest(name, WEIGHT_DECAY_SCHEDULE_NAMES)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise OptimArgsError(
            f"{what}: unknown schedule {name!r}.{hint} Weight-decay schedules: "
            f"{', '.join(WEIGHT_DECAY_SCHEDULE_NAMES)} (each with an optional warmup)"
        )


def _group_plan(value: Any, default: WeightDecayPlan, *, what: str) -> WeightDecayPlan:
    """A per-group schedule: a name, or a dict; lengths default to the global plan's."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise OptimArgsTypeError(
            f"{what}: give a schedule name or a dict such as {{'name': 'cosine', "
            f"'end_factor': 0.1}}; got {type(value).__name__} {value!r}"
        )
    unknown = [k for k in value if k not in _GROUP_KEYS]
    if unknown:
        near = closest(str(unknown[0]), _GROUP_KEYS)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise OptimArgsError(
            f"{what}: unknown key {unknown[0]!r}.{hint} Keys: {', '.join(_GROUP_KEYS)}"
        )
    if "name" not in value:
        raise OptimArgsError(f"{what}: the dict needs 'name' (one of "
                             f"{', '.join(WEIGHT_DECAY_SCHEDULE_NAMES)})")
    total = value.get("num_training_steps", default.total)
    return make_plan(value["name"], value.get("num_warmup_steps"), total,
                     start_factor=value.get("start_factor"), end_factor=value.get("end_factor"),
                     what=what)


def _check_optimizer(optimizer: Any) -> None:
    """Refuse what a schedule cannot change: the check is the spec's, never a name's."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise OptimArgsTypeError(
            "a weight-decay schedule needs a torch.optim.Optimizer (from "
            f"optimhub.create_optimizer), got {type(optimizer).__name__}"
        )
    spec = spec_or_none(optimizer)
    if spec is not None and not spec.has_hyperparameter("weight_decay"):
        raise OptimArgsError(
            f"optimizer {spec.name!r} has no weight decay, so there is nothing to schedule"
        )
    if spec is not None and spec.has(Capability.STATIC_WEIGHT_DECAY):
        raise CapabilityError(
            f"optimizer {spec.name!r} reads its weight decay once, when it is built "
            f"({Capability.STATIC_WEIGHT_DECAY.value}): a schedule would change "
            "group['weight_decay'] and the optimizer would silently ignore it. Train it with "
            "a constant weight_decay, or choose an optimizer that reads it every step"
        )
    for index, group in enumerate(optimizer.param_groups):
        value = group.get(INITIAL_KEY, group.get("weight_decay"))
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise OptimArgsError(
                f"param group {index} has weight_decay={value!r}: a weight-decay schedule "
                "multiplies each group's number (build the optimizer with a weight_decay)"
            )
        if not math.isfinite(value) or value < 0:
            raise OptimArgsError(
                f"param group {index} has weight_decay={value!r}; it must be finite and >= 0"
            )


def _total(value: Any, name: str, what: str) -> int | None:
    if value is None:
        if name in _DECAYING:
            raise OptimArgsError(
                f"{what}: {name!r} needs num_training_steps (the optimizer step at which it "
                "reaches end_factor)"
            )
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise OptimArgsError(
            f"{what}: num_training_steps={value!r} must be a whole number of optimizer steps >= 1"
        )
    return int(value)


def _factor(key: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptimArgsTypeError(f"{what}: {key} must be a number, got "
                                 f"{type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise OptimArgsError(
            f"{what}: {key}={value!r} must be finite and >= 0 (a negative weight decay would "
            "push the weights away from zero)"
        )
    return float(value)


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
