"""``compare()``: plan the runs, train them, and put the results side by side.

Every run gets the same initial weights, the same batches in the same order and the
same seed; each optimizer is built by ``optimhub.create_optimizer``, given a constant
schedule by ``optimhub.create_scheduler`` and driven by ``optimhub.drive``
(:mod:`.lockstep`), so plain, schedule-free, fused-backward and layerwise optimizers
are each trained by their own contract. Step times are relative to the ``adamw_torch``
run of the same call, which is always included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..errors import OptimArgsError
from .data import SyntheticLanguage
from .lockstep import run_all
from .model import build_model
from .results import Comparison, Problem, Progress, RunResult
from .settings import BASELINE, plan_runs

__all__ = ["DEFAULT_STEPS", "compare"]

#: Steps per optimizer: on this problem the curves have separated and flattened by then,
#: and nine optimizers take about 1.5 minutes on two busy CPU cores (measured).
DEFAULT_STEPS = 300


def compare(
    names: Sequence[str],
    *,
    steps: int = DEFAULT_STEPS,
    lr: float | None = None,
    lr_by_name: dict[str, float] | None = None,
    optim_args_by_name: dict[str, str] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    threads: int | None = 1,
    progress: Progress | None = None,
) -> Comparison:
    """Train the compare model once per name (``adamw_torch`` always included, as the
    baseline of the step times) and return the results.

    Settings are checked and every optimizer is built before any training: an unknown
    name or a bad override raises the hub's error; a name that cannot run here becomes
    an ``unavailable`` row with the reason.

    ``threads``: torch's intra-op threads while training (restored afterwards; None
    leaves them alone). One by default: the model is so small that a second thread buys
    little, while on a busy machine two threads per process made steps 5-10x slower
    (measured: 54-72 ms with one thread, 370-700 ms with two, on 2 loaded cores) and
    the step-time ratios noise.
    """
    problem = Problem(steps=steps, batch_size=batch_size, seed=seed)
    plans = plan_runs(names, lr=lr, lr_by_name=lr_by_name,
                      optim_args_by_name=optim_args_by_name)
    with _threads(threads):
        used = torch.get_num_threads()
        results = run_all(plans, problem, progress)
    _relative_step_times(results)
    return Comparison(
        problem=problem,
        results=results,
        baseline=BASELINE,
        baseline_added=any(p.added for p in plans),
        entropy_floor=SyntheticLanguage(problem.language).entropy_floor,
        parameters=sum(p.numel() for p in build_model(seed, problem.model).parameters()),
        threads=used,
    )


def _relative_step_times(results: list[RunResult]) -> None:
    baseline = next((r for r in results if r.optimizer == BASELINE), None)
    if baseline is None or not baseline.step_seconds:
        return
    for result in results:
        if result.step_seconds is not None:
            result.relative_step_time = result.step_seconds / baseline.step_seconds


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise OptimArgsError(f"threads must be a whole number >= 1 or None, got {count!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


