"""Resharding checkpoints with ``torch.distributed.checkpoint`` (tools/distributed_checkpoint.py):
saved by one process and loaded by two FSDP2 ranks (1 -> 2), saved by two and loaded by one
(2 -> 1), each then trained on to the end, against the uninterrupted one-process run.

Three spawns (1, 2 and 1 processes) for one name per kind of optimizer state; about 35 s
on 2 cores. What is asserted, and what it found:

- plain Adam moments (``adamw_torch``): both directions continue **bit for bit** like the
  uninterrupted run;
- APOLLO's low-rank projector state (whole tensors under FSDP2, see
  plugins/_whole_tensors.py) too, bit for bit, once the fresh optimizer's state is primed
  before loading (``_prime``); without that, DCP loads only APOLLO's per-parameter seed
  and the resumed run ends 3.3e-2 off;
- layerwise state too, bit for bit: ``LayerwiseOptimizer.state_dict`` has torch's layout
  (state by parameter position), which DCP's ``get_state_dict`` needs;
- the hub's checkpoint stamp does not survive either: DCP's ``get_state_dict`` keeps only
  ``state`` and ``param_groups``, and loading warns that the state could not be checked.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch.distributed as dist

from optimhub import OptimHubWarning

TOOL = Path(__file__).resolve().parent.parent / "tools" / "distributed_checkpoint.py"

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def _tool() -> ModuleType:
    sys.path.insert(0, str(TOOL.parent))
    spec = importlib.util.spec_from_file_location("optimhub_distributed_checkpoint", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


checkpoint_tool = _tool()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    return checkpoint_tool.measure(list(checkpoint_tool.NAMES),
                                   workdir=tmp_path_factory.mktemp("dcp"))


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
def test_adam_state_reshards_and_continues_bit_for_bit(
    resumed: dict[str, dict[str, Any]], direction: str
) -> None:
    cell = resumed["adamw_torch"]
    assert "error" not in cell, cell
    assert cell["fsdp2"] == 0.0, cell  # the uninterrupted FSDP2 run is one process's
    assert cell[direction] == 0.0, f"adamw_torch {direction}: {cell}"


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
def test_apollo_projector_state_reshards_once_primed(
    resumed: dict[str, dict[str, Any]], direction: str
) -> None:
    """APOLLO's constructor stores a seed per parameter, so DCP's get_state_dict does not
    prime its state (it does only for an empty one) and would load nothing else; the
    tool primes it first (``_prime``: DCP's zero-gradient, lr 0 step, done always)."""
    cell = resumed["apollo_adamw"]
    assert "error" not in cell, cell
    assert cell["fsdp2"] == 0.0 and cell[direction] == 0.0, f"apollo_adamw {direction}: {cell}"


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
def test_layerwise_state_reshards_bit_for_bit(
    resumed: dict[str, dict[str, Any]], direction: str
) -> None:
    """The layerwise optimizer's state dict has torch's layout (state by position) and its
    ``state`` is a view of the inner states, so DCP keys, primes and loads it as any
    optimizer's."""
    cell = resumed["adamw_torch_layerwise"]
    assert "error" not in cell, cell
    assert cell["fsdp2"] == 0.0 and cell[direction] == 0.0, f"layerwise {direction}: {cell}"


def test_the_stamp_does_not_survive_dcp_and_loading_says_so() -> None:
    """DCP's get_state_dict keeps "state" and "param_groups" only; set_state_dict then
    loads an unstamped state, which the hub loads with a warning."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    matrix = sys.modules["distributed_matrix"]
    model = matrix.new_model()
    optimizer = checkpoint_tool._build("adamw_torch", model)
    checkpoint_tool._train(model, optimizer, range(1), None)
    assert "optimhub" in optimizer.state_dict()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    assert set(optimizer_state) == {"state", "param_groups"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        set_state_dict(model, optimizer, model_state_dict=model_state,
                       optim_state_dict=optimizer_state)
    assert any(issubclass(w.category, OptimHubWarning) and "stamp" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
