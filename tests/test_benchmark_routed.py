"""benchmarks/routed.py runs, exits 0 and prints its two tables; the state columns are not
noise, so they are checked: a routed optimizer holds exactly the sum of its routes', what the
same optimizers built by hand hold, and what optimhub.estimate says. (Timings are only
printed: they belong in benchmarks/, never in timed tests.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "routed.py"


def test_routed_benchmark_prints_step_ratios_and_equal_state():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1", "--warmup", "1", "--steps", "1",
         "--layers", "2"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    step, state = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()
                   if line.startswith("muon ")]
    assert float(step[4]) > 0  # routed/sum, printed for the reader
    assert state[-3:] == ["yes", "yes", "yes"], result.stdout
    assert "NO" not in result.stdout, result.stdout
