"""What ``import optimhub`` and the ``optimhub`` command cost, and what they drag in.

Runs, in fresh processes and in rounds (every command once per round, so drift hits all
alike): ``python -c pass`` (the interpreter alone), ``python -c "import torch"``,
``python -c "import torch, optimhub"``, and the console script: ``optimhub --help`` and
``optimhub list``. For each it prints the median wall time and the median CPU time of the
child process (user + system, from ``getrusage``), each also relative to
``import torch``. On a shared machine the wall time also counts waiting for a CPU; the CPU
time does not, so it is the steadier figure. Then ``import optimhub`` alone, timed inside
a process that has already imported torch (target: < 100 ms), and which backend / heavy
modules are in ``sys.modules`` after ``import optimhub``, ``optimhub.list_optimizers()``
and the ``optimhub list`` command's code (target: none). Always exits 0: it measures, the
tests judge.

    .venv/bin/python benchmarks/import_time.py [--runs 7] [--python PATH] [--no-warmup]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tables import table

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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) one fresh process takes to run ``command``."""
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started, _children_cpu() - cpu


def console_script(python: str) -> str | None:
    """The ``optimhub`` command installed next to ``python`` (else the one on PATH)."""
    beside = Path(python).parent / "optimhub"
    return str(beside) if beside.is_file() else shutil.which("optimhub")


_IN_PROCESS = (
    "import time, torch\n"
    "wall, cpu = time.perf_counter(), time.process_time()\n"
    "import optimhub\n"
    "print(time.perf_counter() - wall, time.process_time() - cpu)"
)


def in_process_time(python: str) -> tuple[float, float]:
    """(wall, CPU) seconds ``import optimhub`` takes in a fresh process that has already
    imported torch: free of torch's own (large, noisy) import time."""
    result = subprocess.run([python, "-c", _IN_PROCESS], check=True, capture_output=True)
    wall, cpu = result.stdout.decode().strip().splitlines()[-1].split()
    return float(wall), float(cpu)


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




def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="run every command once first, untimed (warms the file cache)")
    options = parser.parse_args(argv)
    python = options.python

    torch_label = 'python -c "import torch"'
    hub_label = 'python -c "import torch, optimhub"'
    commands: dict[str, list[str]] = {
        "python -c pass": [python, "-c", "pass"],
        torch_label: [python, "-c", "import torch"],
        hub_label: [python, "-c", "import torch, optimhub"],
    }
    script = console_script(python)
    if script is not None:
        commands["optimhub --help"] = [script, "--help"]
        commands["optimhub list"] = [script, "list"]
    wall: dict[str, list[float]] = {label: [] for label in commands}
    cpu: dict[str, list[float]] = {label: [] for label in commands}
    in_process: list[tuple[float, float]] = []
    try:
        for command in commands.values() if options.warmup else ():
            run_timed(command)  # warms the file-system cache: no outlier first sample
        for _ in range(options.runs):
            for label, command in commands.items():
                seconds, cpu_seconds = run_timed(command)
                wall[label].append(seconds)
                cpu[label].append(cpu_seconds)
            in_process.append(in_process_time(python))
    except subprocess.CalledProcessError as error:
        print(f"cannot measure: {' '.join(error.cmd)!r} failed with exit code "
              f"{error.returncode}")
        return 0
    except OSError as error:
        print(f"cannot measure: {error}")
        return 0

    wall_median = {label: statistics.median(v) for label, v in wall.items()}
    cpu_median = {label: statistics.median(v) for label, v in cpu.items()}
    print(f"import and command time, median of {options.runs} fresh processes ({python})\n")
    rows: list[tuple[str, ...]] = [("command", "wall ms", "wall min-max", "wall vs torch",
                                    "cpu ms", "cpu vs torch")]
    for label in commands:
        relative = label != torch_label
        rows.append((
            label,
            _ms(wall_median[label]),
            f"{_ms(min(wall[label]))}-{_ms(max(wall[label]))}",
            f"{(wall_median[label] - wall_median[torch_label]) * 1000:+.0f}" if relative else "",
            _ms(cpu_median[label]),
            f"{(cpu_median[label] - cpu_median[torch_label]) * 1000:+.0f}" if relative else "",
        ))
    own_wall = [w for w, _ in in_process]
    own_cpu = [c for _, c in in_process]
    rows.append((
        "import optimhub after torch (in-process)",
        _ms(statistics.median(own_wall)),
        f"{_ms(min(own_wall))}-{_ms(max(own_wall))}",
        "",
        _ms(statistics.median(own_cpu)),
        "",
    ))
    print(table(rows))
    if script is None:
        print("\n(no `optimhub` console script next to the interpreter or on PATH: "
              "install the package to measure it)")

    added = {
        "wall-time difference": (wall_median[hub_label] - wall_median[torch_label]) * 1000,
        "cpu-time difference": (cpu_median[hub_label] - cpu_median[torch_label]) * 1000,
        "in-process, wall": statistics.median(own_wall) * 1000,
        "in-process, cpu": statistics.median(own_cpu) * 1000,
    }
    print(f"\ntarget: import optimhub adds < {TARGET_MS:.0f} ms to import torch")
    for label, value in added.items():
        print(f"  {label:22s} {value:+6.0f} ms  {'ok' if value < TARGET_MS else 'OVER'}")
    print("  (the in-process figures exclude torch's own import, and the cpu ones the waiting "
          "for a CPU: trust those on a busy machine)")

    print("\nbackend / heavy modules in sys.modules afterwards (target: none)\n")
    heavy_rows: list[tuple[str, ...]] = [("after", "heavy modules", "verdict")]
    for label, code in (
        ("import optimhub", "import optimhub"),
        ("optimhub.list_optimizers()", "import optimhub\noptimhub.list_optimizers()"),
        ("optimhub list (the command's code)",
         "from optimhub.cli import main\nimport contextlib, io\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])"),
    ):
        found = heavy_modules(python, code)
        if isinstance(found, str):
            heavy_rows.append((label, found, "?"))
        else:
            heavy_rows.append((label, ", ".join(found) or "none",
                               "ok" if not found else "HEAVY"))
    print(table(heavy_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
