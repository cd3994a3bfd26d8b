"""``OptimHubTrainer`` asked for FSDP2 on CPU processes (tools/trainer_fsdp2_probe.py).

accelerate 1.16 enables FSDP only for GPU-type distributed types, so on 2 gloo CPU
processes each supported way of asking for FSDP2 (TrainingArguments' ``fsdp`` /
``fsdp_config``, ``ACCELERATE_USE_FSDP``, a model already sharded with ``fully_shard``)
ends in DistributedDataParallel: silently for the first two (measured with the stock
Trainer: ``is_fsdp_enabled=False``, ``MULTI_CPU``, the model wrapped in DDP), with torch's
"mixed torch.Tensor and DTensor" error inside DDP's constructor for the third.
``OptimHubTrainer`` refuses all three when it is constructed, with the hub's error naming
what happened and what to do. One spawn of 2 processes, about 17 s on 2 cores.
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


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list[str]]:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    return load_script("tools/trainer_fsdp2_probe.py", "optimhub_trainer_fsdp2_probe",
                       with_siblings=True).measure()


@pytest.mark.parametrize(("case", "asked"), [
    ("args", "TrainingArguments(fsdp=..., fsdp_config version 2)"),
    ("env", "ACCELERATE_USE_FSDP=true"),
    ("presharded", "a model already sharded with fully_shard (DTensor parameters)"),
])
def test_asking_for_fsdp_and_getting_ddp_is_refused_up_front(
    outcomes: dict[str, list[str]], case: str, asked: str
) -> None:
    for outcome in outcomes[case]:  # every rank, at construction (nothing trained)
        assert outcome.startswith(f"CapabilityError: OptimHubTrainer: {asked}"), outcome
        assert ("asked for FSDP, but accelerate did not enable it (distributed type "
                "MULTI_CPU, world_size=2" in outcome), outcome
        assert "would wrap the model in DistributedDataParallel" in outcome, outcome
        assert "fully_shard, then optimhub.create_optimizer" in outcome, outcome
