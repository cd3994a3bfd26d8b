"""What ``import optimhub`` and the ``optimhub`` command cost, next to the floor, and what
they drag in.

Runs, in fresh processes and in rounds (every command once per round, so drift hits all
alike):

- ``python -c pass`` (the interpreter alone);
- the **floor** of a catalog command: a process that only imports pluggy, reads
  registry.toml and scans the ``optimhub`` entry points (what any plugin-based listing
  must do);
- ``import torch``, ``import optimhub``, ``import torch, optimhub``;
- the console script: ``optimhub --help``, ``--version``, ``list``, ``info NAME`` and
  ``plugins``, with the installed third-party plugins blocked
  (``OPTIMHUB_BLOCK_PLUGINS``: their entry points are scanned, as in the floor, but not
  imported; a plugin that imports torch at module level would measure itself, not
  optimhub), and ``optimhub list`` once more with them loaded.

For each: the median wall time and the median CPU time of the child (user + system, from
``getrusage``), each relative to the floor. The children run with bytecode caching on
(``PYTHONDONTWRITEBYTECODE`` removed), as an installed package has its ``.pyc`` files, and
the warm-up round writes them. On a shared machine the wall time also counts
waiting for a CPU; the CPU time does not, so it is the steadier figure. Then ``import
optimhub`` alone, timed inside a process that has already imported torch, and which of
torch and the backends each command leaves in ``sys.modules``. Targets: every catalog
command <= 2.5x the floor and without torch; ``import torch, optimhub`` within noise of
``import torch``. Always exits 0: it measures, the tests judge.

    .venv/bin/python benchmarks/import_time.py [--runs 7] [--python PATH] [--no-warmup]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tables import table

TARGET_MS = 100.0
FLOOR_RATIO = 2.5
INFO_NAME = "galore_adamw"
HEAVY_MODULES = (
    "torch",
    "numpy",
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
FLOOR_LABEL = "floor: pluggy + registry.toml + entry points"
TORCH_LABEL = 'python -c "import torch"'
HUB_LABEL = 'python -c "import torch, optimhub"'
CATALOG_COMMANDS = (["--help"], ["--version"], ["list"], ["info", INFO_NAME], ["plugins"])

_FLOOR = (
    "import importlib.metadata, pluggy\n"
    "try:\n    import tomllib\nexcept ImportError:\n    import tomli as tomllib\n"
    "with open({registry!r}, 'rb') as f:\n    tomllib.load(f)\n"
    "list(importlib.metadata.entry_points(group='optimhub'))\n"
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit code) of one fresh process running ``command``."""
    cpu = _children_cpu()
    started = time.perf_counter()
    code = subprocess.run(command, check=False, capture_output=True, env=env).returncode
    return time.perf_counter() - started, _children_cpu() - cpu, code


def console_script(python: str) -> str | None:
    """The ``optimhub`` command installed next to ``python`` (else the one on PATH)."""
    beside = Path(python).parent / "optimhub"
    return str(beside) if beside.is_file() else shutil.which("optimhub")


def registry_path(python: str) -> str:
    """registry.toml of the optimhub that ``python`` imports (found without importing it)."""
    probe = ("import importlib.util, pathlib\n"
             "spec = importlib.util.find_spec('optimhub')\n"
             "print(pathlib.Path(spec.origin).parent / 'registry.toml')")
    result = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def third_party_plugins() -> list[str]:
    """The names of the installed ``optimhub`` entry points (blocked for the catalog rows)."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group="optimhub")})


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


def heavy_modules(python: str, code: str, env: dict[str, str]) -> list[str] | str:
    heavy = set(HEAVY_MODULES)
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r})))"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                            check=False, env=env)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        return f"failed: {lines[-1]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _command_code(argv: list[str]) -> str:
    """The command's code run in-process, as the console script runs it."""
    return ("import contextlib, io\nfrom optimhub.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass")


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
    try:
        registry = registry_path(python)
    except (subprocess.CalledProcessError, OSError) as error:
        print(f"cannot measure: optimhub is not importable by {python} ({error})")
        return 0

    # Bytecode caching on, as for an installed package (pip writes the .pyc files): where
    # PYTHONDONTWRITEBYTECODE is set (this sandbox), every process would otherwise compile
    # optimhub's sources again, while the floor's modules come precompiled.
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    blocked_plugins = third_party_plugins()
    blocked = {**plain, "OPTIMHUB_BLOCK_PLUGINS": ",".join(blocked_plugins)}
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([python, "-c", "pass"], plain),
        FLOOR_LABEL: ([python, "-c", _FLOOR.format(registry=registry)], plain),
        TORCH_LABEL: ([python, "-c", "import torch"], plain),
        'python -c "import optimhub"': ([python, "-c", "import optimhub"], plain),
        HUB_LABEL: ([python, "-c", "import torch, optimhub"], plain),
    }
    script = console_script(python)
    catalog_labels = []
    if script is not None:
        for command in CATALOG_COMMANDS:
            label = "optimhub " + " ".join(command)
            commands[label] = ([script, *command], blocked)
            catalog_labels.append(label)
        commands["optimhub list (third-party plugins loaded)"] = ([script, "list"], plain)
    wall: dict[str, list[float]] = {label: [] for label in commands}
    cpu: dict[str, list[float]] = {label: [] for label in commands}
    in_process: list[tuple[float, float]] = []
    failed: dict[str, int] = {}
    try:
        for command, env in commands.values() if options.warmup else ():
            run_timed(command, env)  # warms the file-system cache: no outlier first sample
        for _ in range(options.runs):
            for label, (command, env) in commands.items():
                seconds, cpu_seconds, code = run_timed(command, env)
                if code:
                    failed[label] = code
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
    print(f"import and command time, median of {options.runs} fresh processes ({python}; "
          "bytecode caching on)")
    print(f"catalog commands run with the installed third-party plugins blocked: "
          f"OPTIMHUB_BLOCK_PLUGINS={','.join(blocked_plugins) or '(none installed)'}\n")
    rows: list[tuple[str, ...]] = [("command", "wall ms", "wall min-max", "wall / floor",
                                    "cpu ms", "cpu / floor")]
    for label in commands:
        rows.append((
            label,
            _ms(wall_median[label]),
            f"{_ms(min(wall[label]))}-{_ms(max(wall[label]))}",
            f"{wall_median[label] / wall_median[FLOOR_LABEL]:.2f}",
            _ms(cpu_median[label]),
            f"{cpu_median[label] / cpu_median[FLOOR_LABEL]:.2f}",
        ))
    own_wall = [w for w, _ in in_process]
    own_cpu = [c for _, c in in_process]
    rows.append(("import optimhub after torch (in-process)", _ms(statistics.median(own_wall)),
                 f"{_ms(min(own_wall))}-{_ms(max(own_wall))}", "",
                 _ms(statistics.median(own_cpu)), ""))
    print(table(rows))
    for label, code in failed.items():
        print(f"(`{label}` exited with {code}: timed all the same)")
    if script is None:
        print("\n(no `optimhub` console script next to the interpreter or on PATH: "
              "install the package to measure it)")

    print(f"\ntarget: each catalog command <= {FLOOR_RATIO}x the floor")
    for label in catalog_labels:
        ratios = (wall_median[label] / wall_median[FLOOR_LABEL],
                  cpu_median[label] / cpu_median[FLOOR_LABEL])
        verdict = "ok" if min(ratios) <= FLOOR_RATIO else "OVER"
        print(f"  {label:32s} wall {ratios[0]:5.2f}x  cpu {ratios[1]:5.2f}x  {verdict}")
    added = {
        "wall-time difference": (wall_median[HUB_LABEL] - wall_median[TORCH_LABEL]) * 1000,
        "cpu-time difference": (cpu_median[HUB_LABEL] - cpu_median[TORCH_LABEL]) * 1000,
        "in-process, wall": statistics.median(own_wall) * 1000,
        "in-process, cpu": statistics.median(own_cpu) * 1000,
    }
    print(f"\ntarget: import optimhub adds < {TARGET_MS:.0f} ms to import torch")
    for label, value in added.items():
        print(f"  {label:22s} {value:+6.0f} ms  {'ok' if value < TARGET_MS else 'OVER'}")
    print("  (the in-process figures exclude torch's own import, and the cpu ones the waiting "
          "for a CPU: trust those on a busy machine)")

    print("\ntorch / backend / heavy modules in sys.modules afterwards (target: none)\n")
    heavy_rows: list[tuple[str, ...]] = [("after", "heavy modules", "verdict")]
    probes = [
        ("import optimhub", "import optimhub"),
        ("optimhub.list_optimizers()", "import optimhub\noptimhub.list_optimizers()"),
        ("optimhub list (the command's code)", _command_code(["list"])),
    ]
    probes += [(f"optimhub {' '.join(c)} (the command's code)", _command_code(c))
               for c in CATALOG_COMMANDS if c != ["list"]]
    for label, code in probes:
        found = heavy_modules(python, code, blocked)
        if isinstance(found, str):
            heavy_rows.append((label, found, "?"))
        else:
            heavy_rows.append((label, ", ".join(found) or "none",
                               "ok" if not found else "HEAVY"))
    print(table(heavy_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
