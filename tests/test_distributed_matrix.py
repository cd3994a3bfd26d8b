"""The measured matrix of every catalog name under DDP and FSDP2 (tools/distributed_matrix.py).

Three things must agree, and these tests say which one is behind when they do not:

- **the measurement**: the matrix is run again here, for the whole catalog, in one pair of
  gloo CPU processes (about 25-40 s on 2 cores for ~50 names);
- **the stored matrix**, docs/distributed_matrix.json, and the section of
  docs/distributed.md rendered from it (``--write`` updates both);
- **the spec data**: a name is refused under FSDP2 exactly when it declares ``no_fsdp2``,
  and under DDP exactly when it declares ``no_ddp`` or runs layerwise.

Every "equal" cell is bit for bit equal to one process (both replicas too) and trained;
every "close" cell is within the bound ``TOLERANCES`` states; every "refused" cell was
refused by ``create_optimizer`` inside ``optimhub.prepare``, i.e. before anything was
built, and the same run with the refusal bypassed fails or trains differently (so the
refusal is still needed). A cell that fails after building, or trains differently from
one process, fails here: that is what a capability must turn into a refusal.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch.distributed as dist
from script_modules import load_script

import optimhub
from optimhub import Capability

matrix_tool = load_script("tools/distributed_matrix.py", "optimhub_distributed_matrix")
CATALOG = [s.name for s in optimhub.list_optimizers()]
CELLS = [(engine, name) for engine in matrix_tool.ENGINES for name in CATALOG]
CELL_IDS = [f"{engine}-{name}" for engine, name in CELLS]

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The matrix, measured now for the whole catalog (one spawn of two processes)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    return matrix_tool.measure(CATALOG, workdir=tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="module")
def stored() -> dict[str, Any]:
    return matrix_tool.load_stored()


# ----------------------------------------------------------------------------- stored data
def test_the_stored_matrix_has_every_catalog_name(stored: dict[str, Any]) -> None:
    for engine in matrix_tool.ENGINES:
        missing = sorted(set(CATALOG) - set(stored["matrix"][engine]))
        gone = sorted(set(stored["matrix"][engine]) - set(CATALOG))
        assert not missing and not gone, (
            f"{engine}: names not measured {missing}, measured names no longer in the "
            f"catalog {gone}: run .venv/bin/python tools/distributed_matrix.py --write"
        )


def test_the_docs_section_is_rendered_from_the_stored_matrix(stored: dict[str, Any]) -> None:
    page = matrix_tool.PAGE.read_text(encoding="utf-8")
    expected = matrix_tool.page_with_section(page, matrix_tool.render_section(stored))
    assert page == expected, (
        "docs/distributed.md's matrix section is stale: run .venv/bin/python "
        "tools/distributed_matrix.py --write"
    )


def test_no_stored_cell_is_a_defect(stored: dict[str, Any]) -> None:
    defects = [(e, n, c["outcome"]) for e, cells in stored["matrix"].items()
               for n, c in cells.items() if c["outcome"] in matrix_tool.DEFECTS]
    assert not defects, defects


# ----------------------------------------------------------------------------- spec data
def _declared(engine: str, name: str) -> bool:
    """Whether the spec says ``name`` is refused under ``engine``."""
    spec = optimhub.get_spec(name)
    if engine == "ddp":
        return spec.has(Capability.NO_DDP) or spec.runs_layerwise()
    routes = [optimhub.get_spec(r.optimizer) for r in spec.routes]
    return any(s.has(Capability.NO_FSDP2) for s in [spec, *routes])


@pytest.mark.parametrize(("engine", "name"), CELLS, ids=CELL_IDS)
def test_the_spec_declares_what_was_measured(stored: dict[str, Any], engine: str,
                                             name: str) -> None:
    cell = stored["matrix"][engine][name]
    if cell["outcome"] in matrix_tool.NOT_RUN:
        pytest.skip(f"{name}: {cell['outcome']} when the matrix was measured")
    capability = "no_ddp (or layerwise)" if engine == "ddp" else "no_fsdp2"
    if cell["outcome"] == "refused":
        assert _declared(engine, name), f"{name} is refused under {engine} but lacks {capability}"
        if engine == "fsdp2":  # the refusal names DDP only where DDP matches bit for bit
            ddp = stored["matrix"]["ddp"][name]["outcome"]
            assert ddp == "equal" or (ddp == "refused" and _declared("ddp", name)), name
    else:
        assert not _declared(engine, name), (
            f"{name} declares {capability} but trains under {engine} ({cell['outcome']}): "
            "drop the capability"
        )


# ----------------------------------------------------------------------------- measured now
@needs_gloo
@pytest.mark.parametrize(("engine", "name"), CELLS, ids=CELL_IDS)
def test_every_cell_still_has_its_stored_outcome(
    measured: dict[str, dict[str, Any]], stored: dict[str, Any], engine: str, name: str
) -> None:
    cell = measured[engine][name]
    outcome = cell["outcome"]
    detail = f"{name} under {engine}: {cell}"
    assert outcome not in matrix_tool.DEFECTS, detail
    if outcome in matrix_tool.NOT_RUN:
        pytest.skip(f"{name}: {outcome}")
    if outcome == "equal":
        assert cell["max_difference"] == 0.0 and "replicas_apart" not in cell, detail
    if outcome in ("equal", "close"):
        assert cell["moved"] > 0, f"{name} did not train: the comparison means nothing"
    if outcome == "close":
        tolerance = matrix_tool.TOLERANCES[(engine, name)]
        assert cell["max_difference"] <= tolerance.atol, detail
    if outcome == "refused":
        assert cell["before_building"], f"{detail}: not refused in optimhub.prepare"
        engine_that_works = "DistributedDataParallel" if engine == "fsdp2" else "one process"
        assert engine_that_works in cell["error"], detail
        unguarded = cell["unguarded"]["outcome"]
        assert unguarded in matrix_tool.DEFECTS, (
            f"{name} under {engine}, with the refusal bypassed, is {unguarded!r}: the "
            "refusal is no longer needed; drop the capability and run "
            ".venv/bin/python tools/distributed_matrix.py --write"
        )
    expected = stored["matrix"][engine][name]["outcome"]
    assert outcome == expected, (
        f"{name} under {engine} is now {outcome!r}, stored {expected!r}: if that is right, "
        "run .venv/bin/python tools/distributed_matrix.py --write (and fix the spec)"
    )
