"""The data of a comparison: the problem every run trains on, one result per run, and
the comparison that holds them (what the report, the plot and the JSON read)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..errors import OptimArgsError
from .data import LanguageConfig
from .model import ModelConfig

__all__ = ["Comparison", "Problem", "Progress", "RunResult", "final_window"]

#: ``progress(label, total)``: a context manager whose object has ``update(text)``,
#: called once per step with a short status text.
Progress = Callable[[str, int], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Problem:
    """What every run trains on: one model shape, one data stream, one seed."""

    steps: int
    batch_size: int = 16
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    eval_sequences: int = 64

    def __post_init__(self) -> None:
        for label, value in (("steps", self.steps), ("batch_size", self.batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptimArgsError(f"{label} must be a whole number >= 1, got {value!r}")


@dataclass
class RunResult:
    """One row of the comparison. ``status``: ``ok``, ``diverged`` (the loss became
    NaN/inf: training stopped there), ``unavailable`` (cannot run here; ``reason`` says
    why and how to fix it) or ``error`` (an unexpected exception: a bug somewhere)."""

    name: str
    optimizer: str
    status: str
    reason: str = ""
    lr: float | None = None
    lr_source: str = ""
    optim_args: dict[str, Any] = field(default_factory=dict)
    target_modules: list[str] | None = None
    optimizer_type: str = ""
    losses: list[float] = field(default_factory=list)
    final_loss: float | None = None
    eval_loss: float | None = None
    state_bytes: int | None = None
    state_bytes_per_param: float | None = None
    step_seconds: float | None = None
    relative_step_time: float | None = None
    seconds: float = 0.0

    @property
    def trained(self) -> bool:
        return self.status in ("ok", "diverged")


def final_window(steps: int) -> int:
    """How many last steps the final loss averages: a tenth of the run, 1 to 20."""
    return max(1, min(20, steps // 10))


@dataclass
class Comparison:
    """The outcome of one ``optimhub compare``: a result per name, in the order run."""

    problem: Problem
    results: list[RunResult]
    baseline: str
    baseline_added: bool
    entropy_floor: float
    parameters: int
    threads: int  # torch intra-op threads during training

    @property
    def failed(self) -> list[RunResult]:
        """Runs that raised an unexpected error (a bug somewhere, not a missing backend)."""
        return [r for r in self.results if r.status == "error"]
