"""Every catalog name under DeepSpeed ZeRO 1, 2 and 3 (tools/deepspeed_matrix.py).

DeepSpeed is not a dependency (see docs/distributed.md, "DeepSpeed via the HF Trainer", for
why). So the tests are in two parts:

- **always**: the stored matrix (docs/deepspeed_matrix.json) has every catalog name, the
  docs section is rendered from it, no stored cell is a defect, every refused cell was
  needed (with the refusal bypassed it failed or trained differently; the few names in
  ``REFUSED_ANYWAY`` say why they are refused anyway), and the spec data
  says what was measured: ``OptimHubTrainer``'s DeepSpeed check (``check_deepspeed``, from
  the capabilities ``deepspeed_zero`` / ``deepspeed_zero3``) refuses exactly the refused
  cells;
- **where DeepSpeed is installed**: a subset is measured again (two gloo CPU processes,
  ZeRO 1 and 3; about 15 s on 2 cores) and must keep its stored outcome, bit for bit.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from script_modules import load_script

import optimhub
from optimhub import CapabilityError
from optimhub.integrations.transformers import check_deepspeed

matrix_tool = load_script("tools/deepspeed_matrix.py", "optimhub_deepspeed_matrix")
DEFECTS = matrix_tool.matrix.DEFECTS
NOT_RUN = matrix_tool.matrix.NOT_RUN
CATALOG = [s.name for s in optimhub.list_optimizers()]
CELLS = [(engine, name) for engine in matrix_tool.ENGINES for name in CATALOG]
CELL_IDS = [f"{engine}-{name}" for engine, name in CELLS]
#: Measured again where DeepSpeed is installed: the plain baseline, a name refused only
#: under ZeRO 3 (it counts steps per group), a blockwise 8-bit one and a low-rank one
#: (refused everywhere), an allowed torchao 8-bit one.
SUBSET = ("adamw_torch", "schedule_free_adamw", "adamw_bnb_8bit", "galore_adamw",
          "adamw_torch_8bit")
SUBSET_ENGINES = ("zero1", "zero3")


def _stage(engine: str) -> int:
    return int(engine.removeprefix("zero"))


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
            f"catalog {gone}: pip install deepspeed=={matrix_tool.MEASURED_WITH}, then "
            ".venv/bin/python tools/deepspeed_matrix.py --write"
        )


def test_the_docs_section_is_rendered_from_the_stored_matrix(stored: dict[str, Any]) -> None:
    page = matrix_tool.PAGE.read_text(encoding="utf-8")
    assert page == matrix_tool.page_with_section(page, matrix_tool.render_section(stored)), (
        "docs/distributed.md's DeepSpeed section is stale: run .venv/bin/python "
        "tools/deepspeed_matrix.py --write"
    )


def test_the_stored_matrix_was_measured_with_the_documented_version(
        stored: dict[str, Any]) -> None:
    assert stored["deepspeed"] == matrix_tool.MEASURED_WITH


def test_no_stored_cell_is_a_defect_and_every_refusal_was_needed(
        stored: dict[str, Any]) -> None:
    defects = [(e, n, c["outcome"]) for e, cells in stored["matrix"].items()
               for n, c in cells.items() if c["outcome"] in DEFECTS]
    assert not defects, defects
    unneeded = [(e, n, c["unguarded"]["outcome"]) for e, cells in stored["matrix"].items()
                for n, c in cells.items()
                if c["outcome"] == "refused" and c["unguarded"]["outcome"] not in DEFECTS
                and n not in matrix_tool.REFUSED_ANYWAY]
    assert not unneeded, f"refused, but they train like one process: {unneeded}"


def _refused(engine: str, name: str) -> bool:
    try:
        check_deepspeed(optimhub.get_spec(name), _stage(engine))
    except CapabilityError:
        return True
    return False


@pytest.mark.parametrize(("engine", "name"), CELLS, ids=CELL_IDS)
def test_the_spec_declares_what_was_measured(stored: dict[str, Any], engine: str,
                                             name: str) -> None:
    cell = stored["matrix"][engine][name]
    refused = _refused(engine, name)
    if cell["outcome"] in NOT_RUN:
        # Not measured here: refused, since only measured names are allowed.
        assert refused, f"{name} was not measured ({cell['outcome']}) but is allowed"
        return
    capability = "deepspeed_zero3" if engine == "zero3" else "deepspeed_zero"
    if cell["outcome"] == "refused":
        assert refused, f"{name} is stored as refused under {engine}, but is allowed"
    else:
        assert not refused, (
            f"{name} trains like one process under {engine} ({cell['outcome']}): declare "
            f"{capability!r} in registry.toml (or its catalog generator)"
        )


# ----------------------------------------------------------------------------- measured now
@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed (not a dependency: docs/distributed.md, "
                    "'DeepSpeed via the HF Trainer')")
    return matrix_tool.measure(SUBSET, SUBSET_ENGINES, timeout_s=600,
                               workdir=tmp_path_factory.mktemp("deepspeed"))


@pytest.mark.parametrize("engine", SUBSET_ENGINES)
@pytest.mark.parametrize("name", SUBSET)
def test_a_subset_still_has_its_stored_outcome(measured: dict[str, dict[str, Any]],
                                               stored: dict[str, Any], engine: str,
                                               name: str) -> None:
    cell = measured[engine][name]
    detail = f"{name} under {engine}: {cell}"
    assert cell["outcome"] not in DEFECTS, detail
    if cell["outcome"] == "equal":
        assert cell["max_difference"] == 0.0 and "replicas_apart" not in cell, detail
        assert cell["moved"] > 0, f"{name} did not train: the comparison means nothing"
    if cell["outcome"] == "refused":
        assert cell["unguarded"]["outcome"] in DEFECTS, (
            f"{name} under {engine}, with the refusal bypassed, is "
            f"{cell['unguarded']['outcome']!r}: the refusal is no longer needed")
    assert cell["outcome"] == stored["matrix"][engine][name]["outcome"], detail
