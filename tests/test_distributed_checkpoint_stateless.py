"""``optimhub.distributed_checkpoint`` for an optimizer with no state and no ``step()``
(``fused_backward``: LOMO), in one process (no spawn).

DCP's ``get_state_dict`` primes an empty optimizer state with a zero-gradient ``step()``,
which LOMO does not have (it updates inside its own backward), so saving it failed with the
hub's "has no step()" error (tools/distributed_checkpoint.py over every FSDP2 name). There is
nothing in its state to save: the checkpoint holds the model, and the param groups' values
(its lr, clipping settings) ride in the stamp entry. Resuming at another world size is
measured by tests/test_distributed_checkpoint.py (``lomo``: bit for bit both ways).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from script_modules import load_script

from optimhub import CapabilityError, distributed_checkpoint

pytest.importorskip("lomo_optim")
checkpoint_tool = load_script("tools/distributed_checkpoint.py",
                              "optimhub_distributed_checkpoint_stateless", with_siblings=True)


def _lomo(steps: int) -> tuple[torch.nn.Module, Any]:
    model = sys.modules["distributed_matrix"].new_model()
    optimizer = checkpoint_tool._build("lomo", model)
    checkpoint_tool._train(model, optimizer, range(steps), None)
    return model, optimizer


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_lomo_saves_its_model_and_group_values_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    model, optimizer = _lomo(steps=2)
    assert not optimizer.state  # nothing to save but the model and the groups
    distributed_checkpoint.save(model, optimizer, tmp_path)
    checkpoint_tool._train(model, optimizer, range(2, 4), None)  # uninterrupted
    fresh_model, fresh = _lomo(steps=0)
    rate = fresh.param_groups[0]["lr"]
    fresh.param_groups[0]["lr"] = rate * 3  # the checkpoint's value must come back
    distributed_checkpoint.load(fresh_model, fresh, tmp_path)
    assert fresh.param_groups[0]["lr"] == rate
    checkpoint_tool._train(fresh_model, fresh, range(2, 4), None)
    assert all(torch.equal(a, b) for a, b in
               zip(_weights(fresh_model), _weights(model), strict=True))


def test_a_group_value_the_stamp_entry_cannot_hold_is_refused_before_writing(
    tmp_path: Path
) -> None:
    model, optimizer = _lomo(steps=0)
    optimizer.param_groups[0]["schedule"] = torch.tensor([1.0])  # not JSON
    says = r"param group #0 of this stateless optimizer holds schedule=tensor\(\[1\.\]\) \(Tensor\)"
    with pytest.raises(CapabilityError, match=says):
        distributed_checkpoint.save(model, optimizer, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
