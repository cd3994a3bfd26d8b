"""heavyball through ``torch.distributed.checkpoint`` (DCP), in one process (no spawn): what
DCP dropped or could not load, each fixed in the plugin and measured across world sizes by
tools/distributed_checkpoint.py (every heavyball name bit for bit, 1 -> 2 and 2 -> 1).

Each test saves after 2 steps with ``optimhub.distributed_checkpoint.save``, loads into a
fresh model and optimizer, trains 2 more steps and compares with the uninterrupted run.
The one-process round trip already showed each defect:

- the ``"heavyball"`` entry of ``state_dict()`` (the preconditioner schedule's step count,
  ``inner_group``) was dropped by DCP's ``get_state_dict``: SOAP resumed 2.8e-2 off;
- SOAP-NAdam's ``mu_product`` is 0-d after one step and ``(1,)`` after two: DCP's planner
  refused the primed template ("Size mismatch");
- PSGD's priming step (zero gradients) raised ``PrecondInitError``; past it, its float64
  state came back float32 (DCP's ``set_state_dict`` keys the state by name) and 7.5e-9 off;
- Muon (and Scion, KL-Shampoo) draw from torch's global RNG in every step (stochastic
  rounding): their state came back bit for bit, and the run 7.6e-4 off until the RNG state
  was restored too, as a training loop restores it (tools/distributed_checkpoint.py does).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from script_modules import load_script

pytest.importorskip("heavyball")
pytestmark = pytest.mark.filterwarnings("ignore")

checkpoint_tool = load_script("tools/distributed_checkpoint.py",
                              "optimhub_distributed_checkpoint", with_siblings=True)
SAVE_AFTER, STEPS = 2, 4


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _resumed_difference(name: str, where: Path) -> float:
    """The largest difference of the run resumed from a DCP checkpoint (with the RNG state,
    as the tool and a training loop restore it) from the uninterrupted one."""
    matrix = sys.modules["distributed_matrix"]
    matrix.seed_everything()
    model = matrix.new_model()
    optimizer = checkpoint_tool._build(name, model)
    checkpoint_tool._train(model, optimizer, range(SAVE_AFTER), None)
    checkpoint_tool._save(model, optimizer, where)
    checkpoint_tool._train(model, optimizer, range(SAVE_AFTER, STEPS), None)
    reference = _weights(model)
    matrix.seed_everything()
    fresh_model = matrix.new_model()
    fresh = checkpoint_tool._build(name, fresh_model)
    checkpoint_tool._load(fresh_model, fresh, where)
    checkpoint_tool._train(fresh_model, fresh, range(SAVE_AFTER, STEPS), None)
    return max((a - b).abs().max().item()
               for a, b in zip(_weights(fresh_model), reference, strict=True))


@pytest.mark.parametrize(("name", "needed"), [
    ("heavyball_soap", "the 'heavyball' entry (inner_group's step count) in the groups"),
    ("heavyball_soapnadam", "mu_product given to state_dict() 0-d"),
    ("heavyball_psgdkron", "a priming step at scale 1; float64 state kept under DCP's names"),
    ("heavyball_muon", "the RNG state restored: its stochastic rounding draws from it"),
])
def test_resumes_through_dcp_bit_for_bit(name: str, needed: str, tmp_path: Path) -> None:
    assert _resumed_difference(name, tmp_path) == 0.0, needed


def _trained(name: str, steps: int = 2) -> tuple[Any, Any]:
    import optimhub.testing as ot
    from optimhub import create_optimizer, drive

    model = ot.conformance_model()
    optimizer = create_optimizer(name, model, lr=1e-2)
    driver = drive(optimizer, model=model)
    for seed in range(steps):
        driver.backward(ot.conformance_loss(model, ot.conformance_batch(seed=seed)))
        driver.step()
    return model, optimizer


def test_the_heavyball_entry_travels_in_the_groups_and_still_loads_from_the_top() -> None:
    """DCP keeps ``param_groups`` only: the entry is in each group as one object (a
    1-tuple, which DCP loads whole), taken back out by ``load_state_dict``; a state dict
    with the entry at its top level (saved before) loads as it did."""
    _, optimizer = _trained("heavyball_soap")
    saved = optimizer.state_dict()
    assert saved["heavyball"]["inner_group"]["cumulative_prob_prob_step"] == 2
    assert all(g["heavyball_entry"] == (saved["heavyball"],) for g in saved["param_groups"])
    earlier = {**saved, "param_groups": [{k: v for k, v in g.items() if k != "heavyball_entry"}
                                         for g in saved["param_groups"]]}
    from_groups = {k: v for k, v in saved.items() if k != "heavyball"}
    for state in (earlier, from_groups):
        _, fresh = _trained("heavyball_soap", steps=0)
        fresh.load_state_dict(state)
        assert fresh.inner_group == saved["heavyball"]["inner_group"]
        assert all("heavyball_entry" not in g for g in fresh.param_groups)


def test_a_priming_step_initializes_psgd_and_leaves_its_automatic_scale_alone() -> None:
    """Zero gradients at lr 0 (DCP's priming step) initialize PSGD's state at scale 1;
    the group's ``precond_init_scale`` is ``None`` again after it. Zero gradients at a
    real lr still meet heavyball's own error."""
    from heavyball.utils import PrecondInitError

    model, optimizer = _trained("heavyball_psgdkron", steps=0)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    with pytest.raises(PrecondInitError, match="all 0s"):
        optimizer.step()
    _, optimizer = _trained("heavyball_psgdkron", steps=0)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for param in optimizer.param_groups[0]["params"]:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    assert optimizer.state
    assert all(group["precond_init_scale"] is None for group in optimizer.param_groups)


def test_a_scalar_state_is_saved_0d_and_resumes_bit_for_bit() -> None:
    """SOAP-NAdam's ``mu_product`` is ``(1,)`` live after two steps and 0-d in
    ``state_dict()`` (a view: what DCP loads into it lands in the live tensor); a
    ``torch.save``-style round trip continues bit for bit."""
    import copy

    import optimhub.testing as ot

    model, optimizer = _trained("heavyball_soapnadam")
    live = [v for entry in optimizer.state.values() for k, v in entry[0].items()
            if "mu_product" in k]
    saved = optimizer.state_dict()
    given = [v for entry in saved["state"].values() for k, v in entry["0"].items()
             if "mu_product" in k]
    assert live and all(t.shape == (1,) for t in live)
    assert all(t.shape == () and t.data_ptr() == s.data_ptr()
               for t, s in zip(given, live, strict=True))
    fresh_model, fresh = _trained("heavyball_soapnadam", steps=0)
    fresh_model.load_state_dict(model.state_dict())
    fresh.load_state_dict(copy.deepcopy(saved))
    for run_model, run in ((model, optimizer), (fresh_model, fresh)):
        for seed in (2, 3):
            ot.conformance_loss(run_model, ot.conformance_batch(seed=seed)).backward()
            run.step()
            run.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters(),
                                                   strict=True))
