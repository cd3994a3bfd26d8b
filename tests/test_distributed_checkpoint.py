"""Resharding checkpoints with ``torch.distributed.checkpoint`` (tools/distributed_checkpoint.py):
saved by one process and loaded by two FSDP2 ranks (1 -> 2), saved by two and loaded by one
(2 -> 1), each then trained on to the end, against the uninterrupted one-process run.

Three spawns (1, 2 and 1 processes) for every catalog name that runs under FSDP2 (its
stored matrix cell is equal or close) and lacks ``no_dcp``: 108 names, about 70 s on 2 idle
cores (the whole file). Each must resume bit for bit, or within the matrix's bound where its
FSDP2 run is only close to one process. What is asserted per kind of state, and what it
found:

- plain Adam moments (``adamw_torch``): both directions continue **bit for bit** like the
  uninterrupted run;
- APOLLO's low-rank projector state (whole tensors under FSDP2, see
  plugins/_whole_tensors.py) too, bit for bit, once the fresh optimizer's state is primed
  before loading (``_prime``); without that, DCP loads only APOLLO's per-parameter seed
  and the resumed run ends 3.3e-2 off;
- layerwise state too, bit for bit: ``LayerwiseOptimizer.state_dict`` has torch's layout
  (state by parameter position), which DCP's ``get_state_dict`` needs;
- a routed optimizer (``muon``: Muon on the matrices, AdamW on the rest) too, bit for bit:
  ``RoutedOptimizer.state_dict`` has torch's layout over its routes (it was refused before,
  with a ``CapabilityError``: DCP's ``get_state_dict`` failed with ``KeyError: 'state'``);
- heavyball's PSGD-Kron too, bit for bit (``RESHARDS_BECAUSE`` says what it needed; it
  adds about 1.5 s);
- the hub's checkpoint stamp: DCP's ``get_state_dict`` keeps only ``state`` and
  ``param_groups`` (loading then warns, naming the helpers), so
  ``optimhub.distributed_checkpoint.save`` stores it as one more checkpoint entry and
  ``.load`` checks it first: an ``adamw_torch`` checkpoint loaded into ``sgd`` at the other
  world size is refused with the hub's error, the weights untouched. The in-process tests
  below (no spawn, a second or two) check each refusal and warning.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from script_modules import load_script

import optimhub
from optimhub import Capability, OptimHubWarning
from optimhub.backends import is_installed

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


checkpoint_tool = load_script("tools/distributed_checkpoint.py",
                              "optimhub_distributed_checkpoint", with_siblings=True)
STORED_MATRIX = Path(__file__).resolve().parent.parent / "docs" / "distributed_matrix.json"


def _fsdp2_cells() -> dict[str, dict[str, Any]]:
    """The stored FSDP2 cells (docs/distributed_matrix.json, re-measured by
    tests/test_distributed_matrix.py) of the names that run under FSDP2: equal or close."""
    cells = json.loads(STORED_MATRIX.read_text())["matrix"]["fsdp2"]
    return {name: cell for name, cell in cells.items() if cell["outcome"] in ("equal", "close")}


def _resumable() -> list[str]:
    """Every catalog name that runs under FSDP2 and whose spec does not say ``no_dcp``."""
    specs = {s.name: s for s in optimhub.list_optimizers()}
    return sorted(name for name in _fsdp2_cells()
                  if name in specs and not specs[name].has(Capability.NO_DCP))


RESUMABLE = _resumable()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One measurement (three spawns) for every resumable name that is installed."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    names = {n for n in RESUMABLE if is_installed(optimhub.get_spec(n))}
    return checkpoint_tool.measure(sorted(names | set(checkpoint_tool.NAMES)),
                                   workdir=tmp_path_factory.mktemp("dcp"))


def test_the_resumable_names_are_the_fsdp2_names_without_no_dcp() -> None:
    """A floor, so that a broken derivation cannot pass by testing nothing."""
    assert len(RESUMABLE) >= 100, RESUMABLE
    assert {"adamw_torch", "apollo_adamw", "galore_adamw_layerwise", "schedule_free_adamw",
            "heavyball_psgdkron", "muon", "lomo", "grokadamw"} <= set(RESUMABLE)


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
@pytest.mark.parametrize("name", RESUMABLE)
def test_every_fsdp2_name_resumes_at_another_world_size(
    resumed: dict[str, dict[str, Any]], name: str, direction: str
) -> None:
    """Bit for bit like the uninterrupted one-process run, or, where the FSDP2 run itself
    is only close to one process, within the matrix's bound for that cell."""
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


#: What each kind of state needed to reshard bit for bit.
RESHARDS_BECAUSE = {
    "adamw_torch": "Adam's moments are sharded like their parameters",
    "apollo_adamw": "APOLLO's constructor stores a seed per parameter, so DCP's "
                    "get_state_dict does not prime its state (only an empty one) and would "
                    "load nothing else: load() primes it whenever an entry is missing",
    "schedule_free_adamw": "a fresh schedule-free optimizer is primed in train mode (its "
                           "step() refuses otherwise: the load failed with schedulefree's "
                           "own exception before)",
    "heavyball_adamw": "heavyball's nested per-transform state ({0: {...}}, with a set) "
                       "is saved with text keys (plugins/_text_state_keys.py): under int "
                       "keys DCP loaded the set as None and the next step failed",
    "heavyball_psgdkron": "heavyball's 'heavyball' entry (the preconditioner schedule's "
                          "step count) travels in the param groups, PSGD's zero-gradient "
                          "priming step takes scale 1, the scalars heavyball's bucketing "
                          "reshapes are saved 0-d, its float64 state is kept under DCP's "
                          "names, and the tool restores the RNG state (plugins/_heavyball_dcp"
                          ".py, _entry_in_groups.py, _saved_dtypes.py)",
    "adamw_torch_layerwise": "the layerwise state dict has torch's layout (state by "
                             "position) and its state is a view of the inner states, so "
                             "DCP keys, primes and loads it as any optimizer's",
    "muon": "the routed state dict has torch's layout over its routes (state by position "
            "in param_groups, route order) and its state is a view of the routes' states, "
            "so DCP keys, primes and loads it as any optimizer's; the hub's Muon steps a "
            "sharded matrix whole",
}


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
@pytest.mark.parametrize("name", sorted(RESHARDS_BECAUSE))
def test_each_kind_of_state_reshards_and_continues_bit_for_bit(
    resumed: dict[str, dict[str, Any]], name: str, direction: str
) -> None:
    cell = resumed[name]
    assert "error" not in cell, (cell, RESHARDS_BECAUSE[name])
    assert cell["fsdp2"] == 0.0, cell  # the uninterrupted FSDP2 run is one process's
    assert cell[direction] == 0.0, f"{name} {direction}: {cell} ({RESHARDS_BECAUSE[name]})"


@pytest.mark.parametrize("direction", ["1->2", "2->1"])
def test_the_stamp_refuses_another_optimizer_across_world_sizes(
    resumed: dict[str, dict[str, Any]], direction: str
) -> None:
    """An ``adamw_torch`` checkpoint loaded into ``sgd`` at the other world size: the hub's
    error, and the fresh model's weights untouched (the check reads the stamp alone)."""
    refused = resumed["adamw_torch"][f"refused {direction}"]
    assert refused.startswith("CheckpointError (weights untouched: True): this optimizer "
                              "state was saved by optimizer 'adamw_torch' and is being "
                              "loaded into 'sgd'"), refused


# ---------------------------------------------------------------- in one process, no spawn
def _trained(name: str, steps: int = 2) -> tuple[Any, Any]:
    """The matrix's model (the same initial weights every time), ``steps`` steps on."""
    model = sys.modules["distributed_matrix"].new_model()
    optimizer = checkpoint_tool._build(name, model)
    checkpoint_tool._train(model, optimizer, range(steps), None)
    return model, optimizer


def _snapshot(model: Any, optimizer: Any) -> list[Any]:
    import torch

    tensors = [p.detach().clone() for p in model.parameters()]
    for entry in optimizer.state.values():
        tensors += [v.clone() for v in entry.values() if isinstance(v, torch.Tensor)]
    return tensors


def _same(a: list[Any], b: list[Any]) -> bool:
    import torch

    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_helpers_keep_the_stamp_and_load_without_a_warning(tmp_path: Path) -> None:
    from torch.distributed.checkpoint import FileSystemReader

    from optimhub import distributed_checkpoint

    model, optimizer = _trained("adamw_torch")
    distributed_checkpoint.save(model, optimizer, tmp_path)
    assert "optimhub" in FileSystemReader(str(tmp_path)).read_metadata().state_dict_metadata
    fresh_model, fresh = _trained("adamw_torch", steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptimHubWarning)
        distributed_checkpoint.load(fresh_model, fresh, tmp_path)
    assert _same(_snapshot(fresh_model, fresh), _snapshot(model, optimizer))


@pytest.mark.parametrize(("saved", "loaded", "says"), [
    ("adamw_torch", "sgd", "saved by optimizer 'adamw_torch' and is being loaded into 'sgd'"),
    ("adamw_torch", "adamw_torch_layerwise", "holds the state of a plain .*this one is "
                                             "layerwise"),
    ("adamw_torch_layerwise", "adamw_torch", "holds the state of a layerwise optimizer, and "
                                             "this one is not"),
])
def test_a_mismatched_checkpoint_is_refused_before_any_tensor_changes(
    tmp_path: Path, saved: str, loaded: str, says: str
) -> None:
    from optimhub import CheckpointError, distributed_checkpoint

    model, optimizer = _trained(saved)
    distributed_checkpoint.save(model, optimizer, tmp_path)
    target_model, target = _trained(loaded, steps=1)
    before = _snapshot(target_model, target)
    with pytest.raises(CheckpointError, match=says):
        distributed_checkpoint.load(target_model, target, tmp_path)
    assert _same(_snapshot(target_model, target), before)
    for closable in (optimizer, target):
        getattr(closable, "close", lambda: None)()


def test_a_checkpoint_for_other_parameters_is_refused(tmp_path: Path) -> None:
    import torch

    from optimhub import CheckpointError, distributed_checkpoint

    model, optimizer = _trained("adamw_torch")
    distributed_checkpoint.save(model, optimizer, tmp_path)
    wider = torch.nn.Sequential(torch.nn.Linear(8, 16))
    other = checkpoint_tool._build("adamw_torch", wider)
    with pytest.raises(CheckpointError, match="saved for other parameters"):
        distributed_checkpoint.load(wider, other, tmp_path)


def test_dcp_alone_drops_the_stamp_and_loading_says_what_to_use() -> None:
    """DCP's get_state_dict keeps "state" and "param_groups" only; set_state_dict then
    loads an unstamped state keyed by name: the hub loads it with a warning that names
    the helpers that keep the stamp."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model, optimizer = _trained("adamw_torch")
    assert "optimhub" in optimizer.state_dict()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    assert set(optimizer_state) == {"state", "param_groups"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        set_state_dict(model, optimizer, model_state_dict=model_state,
                       optim_state_dict=optimizer_state)
    said = [str(w.message) for w in caught if issubclass(w.category, OptimHubWarning)]
    assert any("stamp" in m and "optimhub.distributed_checkpoint.save" in m for m in said), said


def test_a_checkpoint_saved_by_dcp_alone_loads_through_the_helper_with_a_warning(
    tmp_path: Path
) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from optimhub import distributed_checkpoint

    model, optimizer = _trained("adamw_torch")
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp_path)
    fresh_model, fresh = _trained("adamw_torch", steps=0)
    with pytest.warns(OptimHubWarning, match="has no 'optimhub' entry"):
        distributed_checkpoint.load(fresh_model, fresh, tmp_path)
    assert _same(_snapshot(fresh_model, fresh), _snapshot(model, optimizer))


class _StateByName(torch.optim.SGD):
    """An optimizer of one's own whose state_dict is not torch's layout (its state by
    parameter name under a key of its own, no 'state'): what DCP cannot rekey."""

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"by_name": {}, "param_groups": super().state_dict()["param_groups"]}


def test_an_optimizer_without_torchs_layout_is_refused_by_name(tmp_path: Path) -> None:
    """DCP's get_state_dict would fail with KeyError: 'state'; the helpers say what to do
    instead, before writing anything."""
    from optimhub import CapabilityError, distributed_checkpoint

    model = sys.modules["distributed_matrix"].new_model()
    optimizer = _StateByName(model.parameters(), lr=0.1)
    with pytest.raises(CapabilityError, match="_StateByName's state dict does not have "
                                              "torch's layout"):
        distributed_checkpoint.save(model, optimizer, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_routed_optimizer_goes_through_the_helpers_bit_for_bit(tmp_path: Path) -> None:
    """Muon's routes (Muon on the matrices, AdamW on the rest): its state dict has torch's
    layout over the routes, so DCP rekeys it by name; the routes table travels in the stamp
    entry. Saved, loaded into a fresh model and optimizer (primed by DCP's step), both
    trained 2 more steps: bit for bit."""
    from optimhub import distributed_checkpoint

    model, optimizer = _trained("muon")
    distributed_checkpoint.save(model, optimizer, tmp_path)
    fresh_model, fresh = _trained("muon", steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptimHubWarning)
        distributed_checkpoint.load(fresh_model, fresh, tmp_path)
    assert _same(_snapshot(fresh_model, fresh), _snapshot(model, optimizer))
    for m, o in ((model, optimizer), (fresh_model, fresh)):
        checkpoint_tool._train(m, o, range(2, 4), None)
    assert _same(_snapshot(fresh_model, fresh), _snapshot(model, optimizer))


def test_another_route_set_is_refused_before_any_tensor_changes(tmp_path: Path) -> None:
    """The same name (``muon``) with another optimizer on a route: the stamp's name and
    parameters match, the routes table does not."""
    from optimhub import CheckpointError, create_optimizer, distributed_checkpoint

    model, optimizer = _trained("muon")
    distributed_checkpoint.save(model, optimizer, tmp_path)
    target_model = sys.modules["distributed_matrix"].new_model()
    target = create_optimizer("muon", target_model, lr=1e-2, optim_args="fallback=sgd")
    checkpoint_tool._train(target_model, target, range(1), None)
    before = _snapshot(target_model, target)
    with pytest.raises(CheckpointError, match="route 'fallback' was stepped by "
                                              "'adamw_torch', here by 'sgd'"):
        distributed_checkpoint.load(target_model, target, tmp_path)
    assert _same(_snapshot(target_model, target), before)


def test_a_name_declared_not_to_resume_is_refused_before_saving_or_loading(
        plugin_factory: Any, use_host: Any, tmp_path: Path) -> None:
    """``no_dcp``: an optimizer whose state does not come back through DCP (every catalog
    name measured so resumes since: tests/test_distributed_checkpoint.py; a
    third-party plugin can still declare it) is refused by name, nothing written, nothing
    read."""
    from conftest import sign_sgd_plugin

    from optimhub import CapabilityError, create_optimizer, distributed_checkpoint

    plugin_factory.add("nodcp", sign_sgd_plugin("sign_no_dcp").replace(
        '"hyperparameters"', '"capabilities": ["no_dcp"], "hyperparameters"'))
    use_host(plugin_factory.host())
    model = sys.modules["distributed_matrix"].new_model()
    optimizer = create_optimizer("sign_no_dcp", model, lr=1e-2)
    checkpoint_tool._train(model, optimizer, range(1), None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(CapabilityError, match="'sign_no_dcp' cannot be checkpointed through "
                                              "torch.distributed.checkpoint"):
        distributed_checkpoint.save(model, optimizer, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    with pytest.raises(CapabilityError, match="no_dcp"):
        distributed_checkpoint.load(model, optimizer, tmp_path / "saved")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_routed_optimizer_with_a_schedule_free_route_is_primed_in_train_mode(
        tmp_path: Path) -> None:
    """A fresh schedule-free route refuses ``step()`` outside train mode; the routed spec
    inherits ``schedule_free``, so ``load`` primes the whole routed optimizer in train
    mode, and the resumed run continues bit for bit."""
    pytest.importorskip("schedulefree")
    from optimhub import create_optimizer, distributed_checkpoint, drive

    name = "matrix -> muon_torch; * -> schedule_free_adamw"
    new_model = sys.modules["distributed_matrix"].new_model
    runs = []
    for steps in (2, 0):
        model = new_model()
        optimizer = create_optimizer(name, model, lr=1e-2)
        checkpoint_tool._train(model, optimizer, range(steps), None)
        runs.append((model, optimizer))
    (model, optimizer), (fresh_model, fresh) = runs
    distributed_checkpoint.save(model, optimizer, tmp_path)
    fresh.eval()  # a fresh one's mode: its step() would refuse
    distributed_checkpoint.load(fresh_model, fresh, tmp_path)
    assert _same(_snapshot(fresh_model, fresh), _snapshot(model, optimizer))
    for m, o in runs:
        driver = drive(o, model=m)
        for step in range(2, 4):
            driver.backward(sys.modules["distributed_matrix"]._loss_fn(m, step, None)())
            driver.step()
    assert _same(_snapshot(fresh_model, fresh), _snapshot(model, optimizer))
