"""The whole catalog side by side: every name, one model, one run.

Every catalog name (built-in, routed, a third-party plugin's: whatever ``optimhub list``
shows; a matrix-only name in its routed form) is trained on the tiny causal LM of
``optimhub compare`` (``optimhub.compare``: a Llama-shaped model built in code, a
synthetic language, the same initial weights, batches and seed for every name), in
lockstep: step 1 of every name, then step 2 of every name...,
so that the step times are taken under the same machine load. Per name:

- **state B/param**: every tensor the optimizer object holds after training, counted once
  per storage (``optimhub.state_size.state_bytes``), per trainable parameter, and
  relative to ``adamw_torch``'s;
- **step vs AdamW**: the median time of one training step (forward, backward, update)
  relative to ``adamw_torch``'s median in the same run (interleaved steps; the first
  steps, which allocate the state, are left out);
- **loss after N steps**: the training loss (mean of the last tenth of the steps, at most
  20) and the loss on held-out sequences with the weights the optimizer says to keep
  (schedule-free: its averaged iterate);
- the learning rate each name was given (``optimhub compare``'s per-capability default).

A name that cannot run here (backend not installed, CUDA only) is listed with the reason.

    .venv/bin/python benchmarks/catalog_table.py [--steps 200] [--names a,b] [--json]

Always exits 0 when the settings are valid: it measures, the reader judges.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch
from tables import table

import optimhub
from optimhub.compare import Comparison, compare
from optimhub.compare.report import table_rows
from optimhub.compare.results import final_window
from optimhub.routing import matrix_only_routes

DEFAULT_STEPS = 200


def catalog_names() -> list[str]:
    """Every name in the catalog, as ``optimhub list`` shows them; a matrix-only name (the
    Muon family: it needs a fallback for the vectors) in its routed form, as the
    conformance suite runs it (``matrix, conv -> NAME; * -> adamw_torch``)."""
    return [str(matrix_only_routes(spec.name))
            if spec.has(optimhub.Capability.MATRIX_ONLY) and not spec.routed else spec.name
            for spec in optimhub.list_optimizers()]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def rows(comparison: Comparison) -> list[tuple[str, ...]]:
    baseline = next(r for r in comparison.results if r.optimizer == comparison.baseline)
    adamw_state = baseline.state_bytes_per_param
    header = ("name", "state B/param", "state vs AdamW", "step vs AdamW",
              f"loss after {comparison.problem.steps}", "eval loss", "lr", "status")
    out = [header]
    for result in comparison.results:
        state = result.state_bytes_per_param
        relative = state / adamw_state if state is not None and adamw_state else None
        out.append((
            result.name, _fmt(state, ".2f"), _fmt(relative, ".2f"),
            _fmt(result.relative_step_time, ".2f", "x"), _fmt(result.final_loss, ".3f"),
            _fmt(result.eval_loss, ".3f"), _fmt(result.lr, "g"), result.status,
        ))
    return out


def report(comparison: Comparison, seconds: float) -> str:
    problem, model = comparison.problem, comparison.problem.model
    ran = [r for r in comparison.results if r.trained]
    lines = [
        f"optimhub catalog table: {len(comparison.results)} names, {len(ran)} trained here; "
        f"{problem.steps} steps each, in lockstep",
        f"model: optimhub compare's causal LM, {model.num_layers} layers, width "
        f"{model.hidden_size}, {comparison.parameters:,} parameters; batch "
        f"{problem.batch_size} x {problem.language.length - 1} tokens of a synthetic "
        f"language (loss floor {comparison.entropy_floor:.3f} nats/token)",
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({comparison.threads} "
        f"thread), load average (1 min) {os.getloadavg()[0]:.1f} at the end; took "
        f"{seconds:.0f} s",
        f"loss after {problem.steps}: training loss, mean of the last "
        f"{final_window(problem.steps)} steps; eval loss: held-out sequences, the weights "
        "the optimizer keeps",
        f"step vs AdamW: median step (forward+backward+update) / {comparison.baseline}'s "
        "median, same run",
        "",
        table(rows(comparison)),
    ]
    explained = [r for r in comparison.results if r.reason]
    if explained:
        lines += ["", "not run here (or stopped):"]
        lines += [f"  {r.name}: {r.reason}" for r in explained]
    return "\n".join(lines)


def _progress(label: str, total: int) -> Any:
    """Prints one line every tenth of the steps on stderr (a long run shows it is alive)."""

    class Bar:
        def __init__(self) -> None:
            self.done = 0

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, text: str) -> None:
            self.done += 1
            if self.done % max(1, total // 10) == 0 or self.done == total:
                print(f"  {label}: step {self.done}/{total} ({text})", file=sys.stderr,
                      flush=True)

    return Bar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", help="comma-separated names (default: the whole catalog)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"training steps per name (default {DEFAULT_STEPS})")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="the rows as JSON")
    options = parser.parse_args(argv)
    names = ([n.strip() for n in options.names.split(",") if n.strip()] if options.names
             else catalog_names())
    started = time.perf_counter()
    try:
        comparison = compare(names, steps=options.steps, batch_size=options.batch_size,
                             progress=_progress)
    except optimhub.OptimHubError as exc:
        print(f"catalog_table.py: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    if options.json:
        print(json.dumps({"steps": options.steps, "rows": table_rows(comparison)}, indent=2,
                         default=str))
        return 0
    print(report(comparison, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
