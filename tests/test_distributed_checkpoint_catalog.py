"""Every name that runs under FSDP2 resumes through ``torch.distributed.checkpoint`` at
another world size (tools/distributed_checkpoint.py, one measurement for all of them).

The names: every catalog name whose FSDP2 cell of the stored matrix
(docs/distributed_matrix.json, re-measured by tests/test_distributed_matrix.py) is equal or
close, except those whose spec says ``no_dcp`` (refused before saving or loading:
tests/test_distributed_checkpoint.py), each with the matrix's settings and seeds. One process
trains 2 steps, saves, trains 2 more; two FSDP2 ranks load that checkpoint (1 -> 2) and
train the last 2 steps; one process loads the two ranks' checkpoint (2 -> 1) and does the
same. Both must end where the uninterrupted one-process run ends: bit for bit, or, for the
names whose FSDP2 run itself is only close to one process, within the matrix's bound for
that cell. Three spawns for about 90 names: about 60 s on 2 idle cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
from script_modules import load_script

import optimhub
from optimhub import Capability
from optimhub.backends import is_installed

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

checkpoint_tool = load_script("tools/distributed_checkpoint.py",
                              "optimhub_distributed_checkpoint_catalog", with_siblings=True)
STORED = Path(__file__).resolve().parent.parent / "docs" / "distributed_matrix.json"


def _fsdp2_cells() -> dict[str, dict[str, Any]]:
    """The stored FSDP2 cells of the names that run under FSDP2 (equal or close)."""
    cells = json.loads(STORED.read_text())["matrix"]["fsdp2"]
    return {name: cell for name, cell in cells.items() if cell["outcome"] in ("equal", "close")}


def _resumable() -> list[str]:
    specs = {s.name: s for s in optimhub.list_optimizers()}
    return sorted(name for name in _fsdp2_cells()
                  if name in specs and not specs[name].has(Capability.NO_DCP))


NAMES = _resumable()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    installed = [n for n in NAMES if is_installed(optimhub.get_spec(n))]
    return checkpoint_tool.measure(installed, workdir=tmp_path_factory.mktemp("dcp-all"))


def test_the_names_are_the_fsdp2_names_without_no_dcp() -> None:
    """A floor, so that a broken derivation cannot pass by testing nothing."""
    assert len(NAMES) >= 80, NAMES
    assert {"adamw_torch", "apollo_adamw", "galore_adamw", "muon", "schedule_free_adamw",
            "adamw_torch_layerwise", "lomo"} <= set(NAMES)


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
@pytest.mark.parametrize("name", NAMES)
def test_every_fsdp2_name_resumes_at_another_world_size(
    resumed: dict[str, dict[str, Any]], name: str, direction: str
) -> None:
    if not is_installed(optimhub.get_spec(name)):
        pytest.skip(f"{optimhub.get_spec(name).distribution} is not installed")
    cell = resumed[name]
    assert "error" not in cell, f"{name}: {cell['error']}"
    bound = _fsdp2_cells()[name].get("tolerance", 0.0)
    if bound == 0.0:
        assert cell["fsdp2"] == 0.0, cell  # the uninterrupted FSDP2 run is one process's
        assert cell[direction] == 0.0, f"{name} {direction}: {cell}"
    else:
        assert cell[direction] <= bound, f"{name} {direction}: {cell}, bound {bound}"
