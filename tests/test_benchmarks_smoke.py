"""The benchmark scripts run, exit 0 and print their tables (their numbers are not judged
here: timings belong in benchmarks/, never in timed tests).

Each script runs in its own process, as a user runs it: they set process-wide state
(torch threads, warning filters, a frozen garbage-collector heap) that must not leak into
the rest of the suite. They are started together and awaited one by one, so the suite
pays for the slowest rather than for the sum.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TIMEOUT = 300

COMMANDS = {
    "overhead": ["overhead.py", "--names", "adamw_torch,sgd", "--rounds", "1"],
    "import_time": ["import_time.py", "--runs", "1", "--no-warmup"],
    "gpu_peak_memory": ["gpu_peak_memory.py", "--names", "adamw_torch,apollo_mini"],
    "layerwise_memory": ["layerwise_memory.py", "--layers", "2", "--hidden", "64",
                         "--vocab", "256"],
    "adamweightdecay_foreach": ["adamweightdecay_foreach.py", "--rounds", "1"],
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    started = {
        key: subprocess.Popen([sys.executable, str(BENCHMARKS / script), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for key, (script, *args) in COMMANDS.items()
    }
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def finished(runs: dict[str, subprocess.Popen[str]], key: str) -> str:
    """The script's stdout, after checking it exited 0."""
    stdout, stderr = runs[key].communicate(timeout=TIMEOUT)
    assert runs[key].returncode == 0, f"{key} exited {runs[key].returncode}:\n{stderr[-3000:]}"
    return stdout


def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with ``first_cell`` (cells: 2+ spaces apart)."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{output}")


def test_overhead_measures_hub_by_hand_and_hf_side_by_side(runs):
    output = finished(runs, "overhead")
    header = table_row(output, "name")
    for name in ("adamw_torch", "sgd"):
        row = dict(zip(header, table_row(output, name), strict=True))
        for column in ("build hub ms", "build hand ms", "build HF ms", "build hub/hand",
                       "build hub/HF", "step hub ms", "step hand ms", "step hub/hand"):
            assert float(row[column]) > 0, (name, column, row)
        assert row["timed"] == "step()"
        assert row["same obj"] == "yes", f"hub and by-hand {name} differ: {output}"
    assert "hub first call in a process" in output
    assert re.search(r"cpu : first call [\d.]+ ms; later builds: [\d.]+ ms", output)
    assert "build hub/by-hand <= 1.20:" in output and "step hub/by-hand" in output
    assert re.search(r"control \(A/A\): adamw_torch by hand vs adamw_torch by hand, step "
                     r"ratio [\d.]+", output)
    assert "skipped:" not in output  # both names run on any machine


def test_import_time_adds_the_command_line_to_its_table(runs):
    output = finished(runs, "import_time")
    for command in ("python -c pass", 'python -c "import torch"',
                    'python -c "import torch, optimhub"', "optimhub --help", "optimhub list"):
        row = table_row(output, command)
        assert float(row[1]) > 0, row
    assert "import optimhub after torch (in-process)" in output
    assert table_row(output, "optimhub list (the command's code)")[1] == "none"
    floor = table_row(output, "floor: pluggy + registry.toml + entry points")
    assert float(floor[1]) > 0 and floor[3] == "1.00"
    assert float(table_row(output, "optimhub info galore_adamw")[5]) > 0  # cpu / floor
    assert "target: each catalog command <= 2.5x the floor" in output


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="with CUDA the script measures for real (minutes on a 1B model)")
def test_gpu_peak_memory_says_why_it_measures_nothing_without_cuda(runs):
    output = finished(runs, "gpu_peak_memory")
    assert output.startswith("CUDA is not available")
    assert "nothing measured" in output
    assert "torch.cuda.max_memory_allocated()" in output
    assert "names it would measure: adamw_torch,apollo_mini" in output


def test_layerwise_memory_shows_gradients_freed_during_backward(runs):
    output = finished(runs, "layerwise_memory")
    normal = table_row(output, "adamw_torch")
    hub = table_row(output, "adamw_torch, layerwise=True (hub)")
    hand = table_row(output, "AdamW layerwise by hand (torchtune recipe)")
    all_grads = float(re.search(r"all gradients together: ([\d.]+) MiB", output).group(1))
    assert float(normal[1]) == pytest.approx(all_grads, abs=0.01)
    assert float(normal[2]) == pytest.approx(all_grads, abs=0.01)  # kept until step()
    assert float(hub[1]) < 0.5 * float(normal[1])
    assert float(hub[2]) == 0.0 and float(hand[2]) == 0.0  # every gradient freed in backward
    assert hub[1] == hand[1]
    assert "hub vs by hand, peak live .grad: 1.000" in output


def test_adamweightdecay_foreach_times_both_paths_beside_torch(runs):
    output = finished(runs, "adamweightdecay_foreach")
    header = table_row(output, "parameters")
    assert header[3] == "loop/foreach" and header[-1] == "ours/torch (foreach)"
    for label in ("200 x (64, 64)", "8 x (1024, 1024)", "200 x (64, 64) bf16"):
        assert all(float(cell) > 0 for cell in table_row(output, label)[1:]), label
