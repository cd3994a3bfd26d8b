"""The comparison as a person reads it (a text table) and as a program reads it (JSON).

The table's columns: the learning rate used, the final training loss (mean of the last
steps), the loss on held-out sequences with the weights the optimizer says to keep
(schedule-free: its averaged iterate), optimizer state per parameter (every tensor the
optimizer object holds, measured by ``optimhub.testing.state_bytes``), the median time
of one training step (forward, backward, update) relative to the ``adamw_torch`` run of
the same command, and the status, with the reason for a name that could not run.
"""

from __future__ import annotations

import json
import platform
import textwrap
from pathlib import Path
from typing import Any

import torch

from ..tables import render_table, terminal_width
from .results import Comparison, RunResult, final_window

__all__ = ["COLUMNS", "format_table", "results_document", "table_rows", "write_results"]

#: The table's columns, in order (also the keys of the --json rows, with a few more).
COLUMNS = ("name", "lr", "final loss", "eval loss", "state B/param", "step time", "status")
#: Names and status left-aligned, numbers right-aligned.
_ALIGN = "<" + ">" * (len(COLUMNS) - 2) + "<"


def table_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One plain dict per run: what ``--json`` prints (no loss curves)."""
    return [_row(result, comparison) for result in comparison.results]


def _row(result: RunResult, comparison: Comparison) -> dict[str, Any]:
    return {
        "name": result.name,
        "optimizer": result.optimizer,
        "baseline": result.optimizer == comparison.baseline,
        "status": result.status,
        "reason": result.reason,
        "lr": result.lr,
        "lr_source": result.lr_source,
        "optim_args": {k: _plain(v) for k, v in result.optim_args.items()},
        "optim_target_modules": result.target_modules,
        "final_loss": result.final_loss,
        "eval_loss": result.eval_loss,
        "state_bytes": result.state_bytes,
        "state_bytes_per_param": result.state_bytes_per_param,
        "step_seconds": result.step_seconds,
        "relative_step_time": result.relative_step_time,
        "optimizer_type": result.optimizer_type,
        "steps_run": len(result.losses),
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def results_document(comparison: Comparison, *, losses: bool = True) -> dict[str, Any]:
    """Everything about the comparison, for results.json (``losses``: the per-step
    training loss of every run) and for ``--json`` (without them)."""
    from .. import __version__

    problem = comparison.problem
    rows = table_rows(comparison)
    if losses:
        for row, result in zip(rows, comparison.results, strict=True):
            row["losses"] = result.losses
    return {
        "optimhub_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": "cpu",
        "steps": problem.steps,
        "batch_size": problem.batch_size,
        "seed": problem.seed,
        "threads": comparison.threads,
        "final_loss_window": final_window(problem.steps),
        "model": {**vars(problem.model), "parameters": comparison.parameters},
        "language": {**vars(problem.language), "entropy_floor": comparison.entropy_floor},
        "baseline": comparison.baseline,
        "baseline_added": comparison.baseline_added,
        "columns": list(COLUMNS),
        "rows": rows,
    }


def write_results(comparison: Comparison, path: Path) -> Path:
    """results.json: the whole comparison, loss curves included."""
    path.write_text(json.dumps(results_document(comparison), indent=2, default=str) + "\n")
    return path


def format_table(comparison: Comparison) -> str:
    """The header lines, the aligned table, and why each name that did not train."""
    problem, model = comparison.problem, comparison.problem.model
    tokens = problem.language.length - 1
    threads = comparison.threads
    added = (f" ({comparison.baseline} was added as the baseline)"
             if comparison.baseline_added else "")
    width = terminal_width()
    header = [
        f"optimhub compare: {problem.steps} steps per optimizer; a {model.num_layers}-layer "
        f"causal LM ({comparison.parameters:,} parameters, width {model.hidden_size})",
        f"on a synthetic language (batch {problem.batch_size} x {tokens} tokens, seed "
        f"{problem.seed}); torch {torch.__version__}, CPU, {threads} "
        f"thread{'s' if threads != 1 else ''}",
        f"loss floor (entropy of the language): {comparison.entropy_floor:.3f} nats/token; "
        f"final loss: mean of the last {final_window(problem.steps)} steps",
        f"step time: median of forward+backward+update, relative to {comparison.baseline}"
        + added,
    ]
    lines = [part for line in header for part in _prose(line, width)] + [""]
    rows = [[_cell_name(r, comparison), _num(r.lr, "g"), _num(r.final_loss, ".3f"),
             _num(r.eval_loss, ".3f"), _num(r.state_bytes_per_param, ".2f"),
             _times(r.relative_step_time), r.status] for r in comparison.results]
    lines.append(render_table(list(COLUMNS), rows, align=_ALIGN, width=width))
    explained = [r for r in comparison.results if r.reason]
    if explained:
        lines += ["", "not run (or stopped):"]
        for r in explained:
            lines += _prose(f"  {r.name}: {r.reason}", width, indent="    ")
    return "\n".join(lines)


def _prose(text: str, width: int | None, indent: str = "") -> list[str]:
    """A line of text fitted to the terminal, wrapped only at spaces."""
    if width is None or len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def _cell_name(result: RunResult, comparison: Comparison) -> str:
    name = result.name
    if result.optimizer != name:
        name += f" ({result.optimizer})"
    if result.optimizer == comparison.baseline and comparison.baseline_added:
        name += " [added]"
    return name


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
