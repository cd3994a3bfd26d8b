"""``OptimHubTrainer`` on FSDP2 (tools/trainer_fsdp2.py): a tiny Llama that transformers
shards as it loads it (``DistributedConfig(fsdp_size=2)``), on two gloo CPU processes,
trained as on DDP.

Per case, the FSDP2 run against its reference (the same Trainer on DDP; for LOMO, which DDP
refuses, one process with the global batch; for layerwise mode, the same optimizer stepped
after backward on DDP), or the hub's refusal before anything is built. Three spawns (DDP,
FSDP2, one process), about 30 s on 2 cores.
"""

from __future__ import annotations

import pytest
import torch.distributed as dist
from script_modules import load_script

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

tool = load_script("tools/trainer_fsdp2.py", "optimhub_trainer_fsdp2", with_siblings=True)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[str, object]]:
    try:
        from transformers.distributed import DistributedConfig  # noqa: F401
    except ImportError:
        pytest.skip("this transformers cannot shard a model at load time (DistributedConfig)")
    return tool.measure()


@pytest.mark.parametrize("case", [c for c, (kind, _) in tool.EXPECTED.items()
                                  if kind != "refused"])
def test_the_trainer_on_fsdp2_trains_as_its_reference(
    outcomes: dict[str, tuple[str, object]], case: str
) -> None:
    kind, bound = tool.EXPECTED[case]
    outcome, difference = outcomes[case]
    assert outcome in ("equal", "close"), f"{case}: {outcome}: {difference}"
    if kind == "equal":
        assert difference == 0.0, f"{case}: expected bit for bit, {difference:.3g} off"
    else:
        assert difference <= bound, f"{case}: {difference:.3g} off, bound {bound:.3g}"


@pytest.mark.parametrize("case", [c for c, (kind, _) in tool.EXPECTED.items()
                                  if kind == "refused"])
def test_what_fsdp2_cannot_train_is_refused_before_building(
    outcomes: dict[str, tuple[str, object]], case: str
) -> None:
    outcome, message = outcomes[case]
    assert outcome == "refused", f"{case}: {outcome}: {message}"
    start, *says = tool.EXPECTED[case][1]
    assert str(message).startswith(start), message
    for part in says:
        assert part in str(message), f"{case}: {part!r} missing from: {message}"
