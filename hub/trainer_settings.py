"""What an optimizer's loop contract asks of ``TrainingArguments``, from its spec alone.

One source for three users: the Trainer integration (which refuses an explicit value the
optimizer cannot honour, and replaces HF's untouched default with one warning), the
snippets ``optimhub info`` prints (which write the value, so they run without that
warning), and the docs. Nothing here imports torch or transformers.

The rule for HF's defaults (docs/differences-from-transformers.md, "HF's defaults"): a
``TrainingArguments`` field still equal to its dataclass default (``max_grad_norm=1.0``,
``lr_scheduler_type="linear"``) is not a choice the user made, so for an optimizer that
cannot honour it the Trainer runs with the value below and says so once; any other value
the optimizer cannot honour stays an error. A dataclass cannot tell an untouched default
from the same value typed in, so ``max_grad_norm=1.0`` written out for LOMO gets the
warning too, never a silent change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .spec import Capability, OptimizerSpec

__all__ = [
    "RequiredSetting",
    "hf_default",
    "required_settings",
    "setting_name",
    "stock_trainer_problem",
    "trainer_problem",
]


@dataclass(frozen=True)
class RequiredSetting:
    """A ``TrainingArguments`` field whose value the optimizer's loop contract fixes."""

    field: str
    value: Any
    reason: str

    def satisfied_by(self, value: Any) -> bool:
        if self.field == "max_grad_norm":
            return not value  # 0 or None: no clipping by the loop
        return setting_name(value) == self.value


def required_settings(spec: OptimizerSpec, *, layerwise: bool = False
                      ) -> tuple[RequiredSetting, ...]:
    """The fields this optimizer needs set, in the order a snippet writes them."""
    settings = []
    if spec.has(Capability.SCHEDULE_FREE):
        settings.append(RequiredSetting(
            "lr_scheduler_type", "constant",
            "it is schedule-free: its iterate averaging replaces a decaying learning rate "
            "(a warmup goes to the optimizer itself, through warmup_steps)",
        ))
    if spec.updates_in_backward(layerwise):
        mode = "fused backward" if spec.has(Capability.FUSED_BACKWARD) else "layerwise"
        clip = (" (it clips through optim_args='clip_grad_norm=1.0')"
                if "clip_grad_norm" in spec.args else "")
        settings.append(RequiredSetting(
            "max_grad_norm", 0,
            f"it updates the parameters inside backward ({mode}): the gradients are applied "
            f"and freed there, so the loop has none left to clip{clip}",
        ))
    return tuple(settings)


def trainer_problem(spec: OptimizerSpec) -> str | None:
    """Why ``OptimHubTrainer`` cannot train this optimizer at all (None: it can)."""
    if spec.has(Capability.CLOSURE_REQUIRED):
        return ("it needs step(closure), and the Trainer calls step() without one: drive it "
                "with optimhub.drive(optimizer, closure=...) in your own loop")
    if not spec.has_hyperparameter("lr"):
        return ("it takes no learning rate (it computes its own step size), and every "
                "Trainer builds a learning-rate scheduler over param_groups' lr: drive it "
                "with optimhub.drive(optimizer) in your own loop")
    return None


def stock_trainer_problem(spec: OptimizerSpec) -> str | None:
    """Why the stock ``transformers.Trainer`` (through ``hub_optimizer``) cannot train this
    optimizer (None: it can)."""
    problem = trainer_problem(spec)
    if problem is not None:
        return problem
    if spec.updates_in_backward():
        mode = "fused backward" if spec.has(Capability.FUSED_BACKWARD) else "layerwise"
        return (f"it updates the parameters inside backward ({mode}), which the stock "
                "Trainer's loop does not drive: use OptimHubTrainer")
    return None


def hf_default(args: Any, field: str) -> Any:
    """The dataclass default of ``field`` on the class of ``args`` (a ``TrainingArguments``
    or a subclass), or ``dataclasses.MISSING`` where there is none."""
    if not dataclasses.is_dataclass(args):
        return dataclasses.MISSING
    for item in dataclasses.fields(args):
        if item.name == field:
            return item.default
    return dataclasses.MISSING


def setting_name(value: Any) -> Any:
    """HF keeps names as str enums (OptimizerNames, SchedulerType): their plain value."""
    return getattr(value, "value", value)
