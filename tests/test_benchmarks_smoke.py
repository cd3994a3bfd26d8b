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
    "overhead": ["overhead.py", "--names", "adamw_torch,sgd", "--rounds", "1",
                 "--scaling-layers", "1,2,4", "--moe", "1x4", "--scaling-names", "adamw_torch"],
    "import_time": ["import_time.py", "--runs", "1", "--no-warmup"],
    "gpu_peak_memory": ["gpu_peak_memory.py", "--names", "adamw_torch,apollo_mini"],
    "gpu_dry_run": ["gpu_peak_memory.py", "--dry-run", "--names", "adamw_torch,adalomo",
                    "--steps", "1"],
    "catalog_table": ["catalog_table.py", "--names",
                      "adamw_torch,sgd,galore_adamw,adalomo,muon", "--steps", "3"],
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


def test_overhead_scales_the_build_over_model_sizes(runs):
    output = finished(runs, "overhead")
    assert "build-cost scaling" in output
    header = table_row(output, "model")
    assert header[:3] == ["model", "tensors", "name"]
    tensors = []
    for model in ("llama 1 layers", "llama 2 layers", "llama 4 layers", "MoE 1x4 experts"):
        row = dict(zip(header, table_row(output, model), strict=True))
        assert row["name"] == "adamw_torch"
        for column in ("hub ms", "hand ms", "HF ms", "hub/hand", "hub/HF"):
            assert float(row[column]) > 0, (model, column, row)
        tensors.append(int(row["tensors"]))
    assert tensors == [12, 21, 39, 3 + 1 * (2 + 4 + 1 + 4 * 3)]  # 9 per Llama layer
    assert re.search(r"adamw_torch: hub [\d.]+, by hand [\d.]+, HF Trainer [\d.]+", output)
    assert re.search(r"goal hub/by-hand <= 1.50 on MoE 1x4 experts", output)


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


def test_gpu_dry_run_takes_every_names_path_on_the_cpu(runs):
    """The rehearsal a GPU session can run first: the worker subprocess, the result line,
    the table; a name that cannot run here is a 'fails' row with the hub's reason."""
    output = finished(runs, "gpu_dry_run")
    row = table_row(output, "adamw_torch")
    assert row[1] == "-" and float(row[6]) > 0  # no peak on the CPU; the state measured
    assert re.fullmatch(r"[\d.]+ -> [\d.]+", row[7])
    assert table_row(output, "adalomo")[1] == "fails"
    assert "adalomo: optimhub.errors.BackendUnavailableError" in output or torch.cuda.is_available()


def test_catalog_table_puts_every_name_side_by_side(runs):
    output = finished(runs, "catalog_table")
    header = table_row(output, "name")
    rows = {name: dict(zip(header, table_row(output, name), strict=False))
            for name in ("adamw_torch", "sgd", "galore_adamw", "muon")}
    assert rows["adamw_torch"]["state B/param"] == "8.00"
    assert rows["adamw_torch"]["state vs AdamW"] == "1.00"
    assert rows["adamw_torch"]["step vs AdamW"] == "1.00x"
    assert float(rows["sgd"]["state B/param"]) == 0.0  # no momentum by default
    assert 0 < float(rows["galore_adamw"]["state vs AdamW"]) < 0.5
    assert 0 < float(rows["muon"]["state vs AdamW"]) < 1  # routed: momentum on matrices
    for row in rows.values():
        assert float(row["loss after 3"]) > 0 and float(row["eval loss"]) > 0
        assert row["status"] == "ok"
    adalomo = table_row(output, "adalomo")
    assert adalomo[-1] == ("ok" if torch.cuda.is_available() else "unavailable")


def test_the_catalog_table_covers_routed_names_and_matrix_only_ones_routed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import catalog_table

    names = catalog_table.catalog_names()
    assert {"muon", "galore_plus_adamw_8bit"} <= set(names)
    assert "muon_torch" not in names  # refused alone: its vectors need a fallback
    assert "matrix, conv -> muon_torch; * -> adamw_torch" in names


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
