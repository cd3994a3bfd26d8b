"""`optimhub compare` with routed optimizers: `muon`, the `galore_plus_adamw_8bit` preset and
a route set given as text train beside AdamW on the compare model (a short run: the loss
table of a full run is in the closing note of the routing issue)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from optimhub.compare.runner import compare
from optimhub.compare.settings import ADAPTIVE_LR, LOW_RANK_LR, plan_runs

ROUTE_SET = "matrix -> muon_torch(adjust_lr_fn=match_rms_adamw); * -> adamw_torch"


def test_routed_names_get_spec_defaults_and_no_targets():
    plans = {p.name: p for p in plan_runs(["muon", "galore_plus_adamw_8bit", ROUTE_SET])}
    assert plans["muon"].lr == ADAPTIVE_LR and plans["muon"].target_modules is None
    preset = plans["galore_plus_adamw_8bit"]
    assert preset.lr == LOW_RANK_LR and preset.optim_args == {"rank": 8}
    assert preset.target_modules is None  # its GaLore route targets its own Linear weights
    assert plans[ROUTE_SET].optimizer == ROUTE_SET  # the canonical text


@pytest.mark.skipif(importlib.util.find_spec("galore_torch") is None
                    or importlib.util.find_spec("bitsandbytes") is None,
                    reason="galore-torch and bitsandbytes are needed for the GaLore preset")
def test_routed_optimizers_train_beside_adamw():
    result = compare(["muon", "galore_plus_adamw_8bit", ROUTE_SET], steps=12)
    rows = {r.name: r for r in result.results}
    assert list(rows) == ["adamw_torch", "muon", "galore_plus_adamw_8bit", ROUTE_SET]
    for name, row in rows.items():
        assert row.status == "ok", (name, row.reason)
        assert math.isfinite(row.final_loss) and row.final_loss < row.losses[0], name
        assert (row.state_bytes and row.state_bytes_per_param < 8.0) or name == "adamw_torch"
    assert rows["muon"].optimizer_type == "optimhub.routed.RoutedOptimizer"
