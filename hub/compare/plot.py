"""The comparison as a picture: loss curves of every run, and state memory per parameter.

matplotlib is imported here and only here, when a PNG is asked for (``import optimhub``
and every other command never pay for it), and through its object API with the Agg
canvas: no pyplot, so the backend of a caller's own matplotlib session is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MissingBackendError
from .results import Comparison, RunResult

__all__ = ["INSTALL_HINT", "smooth", "write_png"]

INSTALL_HINT = 'pip install "optimhub[compare]"'


def smooth(values: list[float], span: int) -> list[float]:
    """Exponential moving average with the given span, bias-corrected from step one
    (a batch-to-batch noisy loss becomes a readable curve; step one is unchanged)."""
    alpha = 2.0 / (span + 1.0)
    average, weight, out = 0.0, 0.0, []
    for value in values:
        average = (1 - alpha) * average + alpha * value
        weight = (1 - alpha) * weight + alpha
        out.append(average / weight)
    return out


def write_png(comparison: Comparison, path: Path) -> Path:
    """Draw the figure into ``path`` (PNG). Raises MissingBackendError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingBackendError(
            f"the compare plot needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc

    trained = [r for r in comparison.results if r.trained and r.losses]
    figure = Figure(figsize=(15, 5.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    curves, memory = figure.subplots(1, 2, width_ratios=(1.7, 1))
    # Ten colours, then the same ten dashed (curves) or hatched (bars): every run distinct.
    colors = {r.name: (f"C{i % 10}", i >= 10) for i, r in enumerate(trained)}
    _loss_curves(curves, trained, colors, comparison)
    _memory_bars(memory, trained, [r.name for r in comparison.results if not r.trained],
                 colors)
    problem = comparison.problem
    figure.suptitle(
        f"optimhub compare: {problem.steps} steps, {comparison.parameters:,}-parameter "
        f"causal LM on a synthetic language (batch {problem.batch_size}, seed {problem.seed})",
        fontsize=12,
    )
    figure.savefig(path, format="png")
    return path


def _loss_curves(axes: Any, runs: list[RunResult], colors: dict[str, tuple[str, bool]],
                 comparison: Comparison) -> None:
    span = max(1, comparison.problem.steps // 25)
    first = []
    for run in runs:
        curve = smooth(run.losses, span)
        first.append(curve[0])
        label = (f"{run.name}  {run.final_loss:.3f}" if run.final_loss is not None
                 else run.name)
        width = 2.4 if run.optimizer == comparison.baseline else 1.5
        color, second = colors[run.name]
        axes.plot(range(1, len(curve) + 1), curve, color=color, linewidth=width,
                  linestyle="--" if second else "-", label=label)
    floor = comparison.entropy_floor
    axes.axhline(floor, color="0.3", linestyle="--", linewidth=1,
                 label=f"entropy floor {floor:.3f}")
    top = max(first) if first else floor + 1
    axes.set_ylim(floor - 0.15, top + 0.1)
    axes.set_xlim(1, comparison.problem.steps)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss, nats/token"
                    + (f" (EMA over {span} steps)" if span > 1 else ""))
    axes.set_title("loss (legend: final loss, mean of the last steps)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _memory_bars(axes: Any, runs: list[RunResult], skipped: list[str],
                 colors: dict[str, tuple[str, bool]]) -> None:
    """One bar per trained run; names that did not run get an empty row saying so."""
    names = [r.name for r in runs] + skipped
    values = [r.state_bytes_per_param or 0.0 for r in runs]
    positions = list(range(len(names)))
    bars = axes.barh(positions[:len(runs)], values, color=[colors[r.name][0] for r in runs])
    for bar, run in zip(bars, runs, strict=True):
        if colors[run.name][1]:
            bar.set_hatch("//")
    axes.set_yticks(positions, names)
    axes.invert_yaxis()
    right = max(values, default=1.0) or 1.0
    for position, value in zip(positions, values, strict=False):
        axes.text(value + right * 0.01, position, f"{value:.2f}", va="center", fontsize=9)
    for position in positions[len(runs):]:
        axes.text(right * 0.01, position, "not run here (see the table)", va="center",
                  fontsize=9, color="0.4", style="italic")
    axes.set_xlim(0, right * 1.15)
    axes.set_xlabel("optimizer state, bytes per model parameter")
    axes.set_title("state memory (fp32 AdamW: 8 bytes/param)")
    axes.grid(axis="x", alpha=0.3)
