"""Build every run, then train them all in lockstep: step 1 of each, step 2 of each...

Why lockstep rather than one run after the other: the step times are compared with
each other, and a machine's load changes over minutes (other processes, thermal
limits). Interleaved steps see the same conditions, so the median step time of each
run, and their ratio to ``adamw_torch``, measure the optimizers and not the moment.
(Run one after the other on a loaded 2-core machine, GaLore's SVD-refreshing steps
came out at 0.63x AdamW's.) Each run keeps its own RNG stream, seeded identically,
so interleaving changes no result.

Every optimizer is built before any is trained: a name that cannot run here (backend
missing, CUDA-only, plugin failed to load) becomes a row with the hub's reason, and a
misconfiguration (a bad ``optim_args`` value...) stops the command before a single
step is spent.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import (
    BackendUnavailableError,
    BuildError,
    MissingBackendError,
    OptimHubError,
    PluginLoadError,
)
from ..factory import create_optimizer
from ..layerwise import LayerwiseOptimizer
from ..schedules import create_scheduler
from ..spec import Capability
from ..state_size import state_bytes
from ..training import TrainingDriver, drive
from .data import SyntheticLanguage
from .model import build_model
from .results import Problem, Progress, RunResult, final_window
from .settings import RunPlan

__all__ = ["UNAVAILABLE", "lm_loss", "run_all"]

#: The hub's exceptions that mean "this name cannot run on this machine", not "you
#: configured it wrongly": such a name is listed with the reason and the rest goes on.
UNAVAILABLE = (MissingBackendError, BackendUnavailableError, PluginLoadError)

#: Steps left out of the step-time median: the first steps allocate optimizer state.
TIMING_WARMUP = 3


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (nats per token)."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


@dataclass
class _Run:
    """One optimizer's run while it trains."""

    result: RunResult
    model: nn.Module
    optimizer: torch.optim.Optimizer
    driver: TrainingDriver
    rng: torch.Tensor  # this run's CPU RNG state between its steps
    batch: list[torch.Tensor] = field(default_factory=list)  # what a closure reads
    times: list[float] = field(default_factory=list)
    started: float = 0.0

    @property
    def active(self) -> bool:
        return self.result.status == "ok"


def run_all(plans: Sequence[RunPlan], problem: Problem,
            progress: Progress | None = None) -> list[RunResult]:
    """One result per plan, in order: built (or refused) first, then trained together.
    The caller's RNG state is left as it was."""
    language = SyntheticLanguage(problem.language)
    batches = language.batches(problem.steps, problem.batch_size, seed=problem.seed + 1)
    held_out = language.held_out(problem.eval_sequences, seed=problem.seed + 2)
    with torch.random.fork_rng(devices=[]):
        results = [_result(plan) for plan in plans]
        runs = [run for plan, result in zip(plans, results, strict=True)
                if (run := _build(plan, result, problem)) is not None]
        try:
            _train(runs, batches, progress)
        finally:
            for run in runs:
                _finish(run, held_out, problem)
    return results


# ---- building ----------------------------------------------------------------------------
def _result(plan: RunPlan) -> RunResult:
    result = RunResult(
        name=plan.name, optimizer=plan.optimizer, status="ok", lr=plan.lr,
        lr_source=plan.lr_source, optim_args=dict(plan.optim_args),
        target_modules=list(plan.target_modules) if plan.target_modules else None,
    )
    if plan.unavailable:
        result.status, result.reason = "unavailable", plan.unavailable
    return result


def _build(plan: RunPlan, result: RunResult, problem: Problem) -> _Run | None:
    """The run, ready to train; None (with the reason in ``result``) if it cannot be."""
    if plan.spec is None or result.status != "ok":
        return None
    model = build_model(problem.seed, problem.model)
    torch.manual_seed(problem.seed)  # backends may draw at build time (projections)
    try:
        # The run's length, as a Trainer gives it: Ranger21's warm-down needs it.
        optimizer = create_optimizer(plan.spec.name, model, max_steps=problem.steps,
                                     **plan.create_kwargs())
    except UNAVAILABLE as exc:
        result.status, result.reason = "unavailable", _first_line(exc)
        return None
    except BuildError as exc:  # the backend refused what the hub built: that name's row
        result.status, result.reason = "error", _first_line(exc)
        return None
    except OptimHubError:
        raise  # bad settings: refused before any training
    except Exception as exc:  # a backend or plugin bug: reported, the others still run
        result.status, result.reason = "error", _describe(exc)
        return None
    batch: list[torch.Tensor] = []
    closure = (_closure(model, optimizer, batch)
               if plan.spec.has(Capability.CLOSURE_REQUIRED) else None)
    # A constant schedule, as a Trainer would drive it; none for an optimizer that takes no
    # lr (AliG, A2Grad: its groups have no lr to schedule).
    scheduler = (create_scheduler("constant", optimizer)
                 if plan.spec.has_hyperparameter("lr") else None)
    driver = drive(optimizer, scheduler, model=model, closure=closure)
    result.optimizer_type = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    torch.manual_seed(problem.seed)
    return _Run(result, model, optimizer, driver, rng=torch.get_rng_state(), batch=batch)


def _closure(model: nn.Module, optimizer: torch.optim.Optimizer,
             batch: list[torch.Tensor]) -> Callable[[], torch.Tensor]:
    """For optimizers that need step(closure): recompute the loss of the current batch."""
    def closure() -> torch.Tensor:
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            loss = lm_loss(model, batch[0])
            loss.backward()
        return loss

    return closure


# ---- training ----------------------------------------------------------------------------
def _train(runs: list[_Run], batches: torch.Tensor, progress: Progress | None) -> None:
    for run in runs:
        run.model.train()
        run.started = time.perf_counter()
    label = f"{len(runs)} optimizer{'s' if len(runs) != 1 else ''}"
    bar_context = progress(label, len(batches)) if progress is not None else nullcontext()
    with bar_context as bar:
        for tokens in batches:
            for run in runs:
                if run.active:
                    _step(run, tokens)
            if bar is not None:
                bar.update(_status(runs))


def _step(run: _Run, tokens: torch.Tensor) -> None:
    """One training step of one run, timed: forward, backward, update."""
    result = run.result
    torch.set_rng_state(run.rng)
    run.batch[:] = [tokens]
    try:
        begin = time.perf_counter()
        loss = lm_loss(run.model, tokens)
        run.driver.backward(loss)
        run.driver.step()
        run.times.append(time.perf_counter() - begin)
    except Exception as exc:  # a backend failing mid-run: report it, keep comparing
        result.status, result.reason = "error", _describe(exc)
        return
    finally:
        run.rng = torch.get_rng_state()
    value = float(loss.detach())
    result.losses.append(value)
    if not math.isfinite(value):
        result.status = "diverged"
        result.reason = f"the loss became {value} at step {len(result.losses)}; try a lower --lr"


def _status(runs: list[_Run]) -> str:
    """The progress text: the lowest current loss."""
    live = [r for r in runs if r.active and r.result.losses]
    if not live:
        return ""
    best = min(live, key=lambda r: r.result.losses[-1])
    return f"lowest loss: {best.result.name} {best.result.losses[-1]:.3f}"


def _finish(run: _Run, held_out: torch.Tensor, problem: Problem) -> None:
    """Final loss, held-out loss (with the weights to keep), state memory, step time."""
    result = run.result
    result.seconds = time.perf_counter() - run.started if run.started else 0.0
    if result.losses:
        tail = result.losses[-final_window(problem.steps):]
        result.final_loss = sum(tail) / len(tail)
    if run.times:
        result.step_seconds = statistics.median(run.times[TIMING_WARMUP:] or run.times)
    try:
        if result.status == "ok":
            run.driver.finish()  # schedule-free: the averaged weights, the ones to keep
            run.model.eval()
            with torch.no_grad():
                result.eval_loss = float(lm_loss(run.model, held_out))
        result.state_bytes = state_bytes(run.optimizer)
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        result.state_bytes_per_param = result.state_bytes / trainable
    except Exception as exc:
        if result.status == "ok":
            result.status, result.reason = "error", _describe(exc)
    finally:
        if isinstance(run.optimizer, LayerwiseOptimizer):
            run.optimizer.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
