"""``optimhub compare``: the command-line glue around :func:`optimhub.compare.compare`.

Checks the arguments, prepares the output folder, runs the comparison with a progress
bar on stderr, then prints the table (or ``--json``) and writes ``results.json`` and
``compare.png`` into ``--out``. Exit status: 0 when every name ran or was reported as
unavailable here; 1 when a run failed with an unexpected error (a bug to report); 2 (by
the CLI) for bad input, before any training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import MissingBackendError, OptimArgsError
from .plot import write_png
from .progress import make_progress
from .report import format_table, results_document, write_results
from .runner import DEFAULT_STEPS, compare
from .settings import parse_lr_overrides, parse_optim_args_overrides

__all__ = ["DEFAULT_OUT", "DEFAULT_STEPS", "PNG_NAME", "RESULTS_NAME", "run"]

DEFAULT_OUT = "compare-out"
PNG_NAME = "compare.png"
RESULTS_NAME = "results.json"


def run(args: argparse.Namespace) -> int:
    """Run ``optimhub compare`` for the parsed ``args`` (see hub/cli.py for the options)."""
    lr, lr_by_name = parse_lr_overrides(args.lr or [])
    optim_args = parse_optim_args_overrides(args.optim_args or [])
    out = _output_folder(args.out or DEFAULT_OUT)
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    comparison = compare(
        args.names, steps=steps, lr=lr, lr_by_name=lr_by_name, optim_args_by_name=optim_args,
        batch_size=args.batch_size, seed=args.seed, threads=args.threads,
        progress=None if args.no_progress else make_progress(),
    )
    results = write_results(comparison, out / RESULTS_NAME)
    try:
        png: Path | None = write_png(comparison, out / PNG_NAME)
        note = ""
    except MissingBackendError as exc:
        png, note = None, f"no plot: {exc}"
    if args.json:
        document = results_document(comparison, losses=False)
        document.update(png=str(png) if png else None, results=str(results), note=note)
        print(json.dumps(document, indent=2, default=str))
    else:
        print(format_table(comparison))
        print()
        print(f"plot:    {png}" if png else note)
        print(f"results: {results}")
    return 1 if comparison.failed else 0


def _output_folder(text: str) -> Path:
    """Create ``--out`` now, so a path that cannot be written fails before training."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".optimhub-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OptimArgsError(f"--out {text!r}: cannot write there ({exc.strerror or exc}); "
                             "give a folder you can write to") from None
    return path
