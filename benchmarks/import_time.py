"""What ``import optimhub`` costs on top of ``import torch``, and what it drags in.

Runs ``python -c "import torch"`` and ``python -c "import torch, optimhub"`` in fresh
interpreters (alternating, so drift hits both alike), prints the median wall times and
their difference (target: optimhub adds < 100 ms), then lists which backend / heavy
modules are in ``sys.modules`` after ``import optimhub`` and after
``optimhub.list_optimizers()`` (target: none). Always exits 0: it measures, the tests judge.

    .venv/bin/python benchmarks/import_time.py [--runs 7] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TARGET_MS = 100.0
HEAVY_MODULES = (
    "transformers",
    "accelerate",
    "bitsandbytes",
    "apollo_torch",
    "galore_torch",
    "torchao",
    "lomo_optim",
    "schedulefree",
    "grokadamw",
    "optimi",
    "pytorch_optimizer",
)


def wall_time(python: str, code: str) -> float:
    """Seconds for one fresh interpreter to run ``code`` (start-up included)."""
    started = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


_IN_PROCESS = (
    "import time, torch\n"
    "started = time.perf_counter()\n"
    "import optimhub\n"
    "print(time.perf_counter() - started)"
)


def in_process_time(python: str) -> float:
    """Seconds ``import optimhub`` takes in a fresh process that has already imported torch.

    Free of torch's own (large, noisy) import time, so it is the sharper number on a busy
    machine; the wall-time difference is what a user sees.
    """
    result = subprocess.run([python, "-c", _IN_PROCESS], check=True, capture_output=True)
    return float(result.stdout.decode().strip().splitlines()[-1])


def heavy_modules(python: str, code: str) -> list[str] | str:
    heavy = set(HEAVY_MODULES)
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r})))"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        return f"failed: {lines[-1]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    options = parser.parse_args(argv)

    commands = {"torch": "import torch", "torch + optimhub": "import torch, optimhub"}
    try:  # warm the file-system cache so the first sample is not an outlier
        for code in commands.values():
            wall_time(options.python, code)
    except subprocess.CalledProcessError as error:
        print(f"cannot measure: {error.cmd[-1]!r} failed with exit code {error.returncode}")
        return 0

    samples: dict[str, list[float]] = {label: [] for label in commands}
    in_process: list[float] = []
    for _ in range(options.runs):
        for label, code in commands.items():
            samples[label].append(wall_time(options.python, code))
        in_process.append(in_process_time(options.python))

    medians = {label: statistics.median(times) * 1000 for label, times in samples.items()}
    added = medians["torch + optimhub"] - medians["torch"]
    own = statistics.median(in_process) * 1000
    print(f"import time, median of {options.runs} fresh processes ({options.python})\n")
    print(
        table(
            [
                ("command", "median ms", "min ms", "max ms"),
                *(
                    (
                        f'python -c "{commands[label]}"',
                        f"{medians[label]:.0f}",
                        f"{min(samples[label]) * 1000:.0f}",
                        f"{max(samples[label]) * 1000:.0f}",
                    )
                    for label in commands
                ),
                ("difference: optimhub adds", f"{added:+.0f}", "", ""),
                (
                    "import optimhub after torch (in-process)",
                    f"{own:.0f}",
                    f"{min(in_process) * 1000:.0f}",
                    f"{max(in_process) * 1000:.0f}",
                ),
            ]
        )
    )
    print(f"\ntarget: optimhub adds < {TARGET_MS:.0f} ms")
    print(f"  wall-time difference  {added:+5.0f} ms  {'ok' if added < TARGET_MS else 'OVER'}")
    print(f"  in-process            {own:5.0f} ms  {'ok' if own < TARGET_MS else 'OVER'}")
    print("  (the in-process number excludes torch's noisy import; trust it on a busy machine)")

    print("\nbackend / heavy modules in sys.modules afterwards (target: none)\n")
    rows: list[tuple[str, ...]] = [("after", "heavy modules", "verdict")]
    for label, code in (
        ("import optimhub", "import optimhub"),
        ("optimhub.list_optimizers()", "import optimhub\noptimhub.list_optimizers()"),
    ):
        found = heavy_modules(options.python, code)
        if isinstance(found, str):
            rows.append((label, found, "?"))
        else:
            rows.append((label, ", ".join(found) or "none", "ok" if not found else "HEAVY"))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
