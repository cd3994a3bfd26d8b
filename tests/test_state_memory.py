"""The hub adds no memory: the optimizer it builds holds exactly the bytes of state that
the backend class holds when constructed by hand, without optimhub.

The hand construction is ``benchmarks/direct.py`` (shared with
``benchmarks/state_memory.py``, which prints the same comparison for every runnable name
next to the estimate and AdamW); this test keeps the benchmark's claim true on every run,
for a representative name of each backend class and each loop contract.
"""

from __future__ import annotations

import pytest
import torch
from script_modules import load_script
from torch import nn

from optimhub.model_shapes import parse_model_spec
from optimhub.testing import readiness

direct = load_script("benchmarks/direct.py", "optimhub_benchmarks_direct")

REFERENCE = "llama:hidden=64,layers=2,vocab=99,intermediate=128,heads=4,kv_heads=2"
RANK = 8

#: One name per backend class and loop contract: plain, factored, low-rank (random, SVD,
#: Mini, layerwise), fused backward, schedule-free, bnb 8-bit (the embedding kept in 32
#: bits), AdEMAMix's double buffer, paged, torchao's tensor subclasses, state kept outside
#: optimizer.state (GrokAdamW), Kahan-capable optimi, and the routed names.
REPRESENTATIVE = [
    "adamw_torch", "adafactor", "adafactor_torch", "apollo_adamw", "apollo_mini",
    "apollo_adamw_layerwise", "galore_adamw", "galore_adafactor_layerwise", "grokadamw",
    "lomo", "adamw_bnb_8bit", "ademamix_8bit", "paged_lion_8bit", "rmsprop_bnb",
    "adamw_torch_8bit", "stable_adamw", "schedule_free_adamw", "schedule_free_sgd",
    # routed: one optimizer per route, the state the sum of the routes'
    "muon", "muon_torch", "galore_plus_adamw_8bit",
    # The catalogs beyond HF: dense, preconditioned (probe estimates), closure (SAM),
    # fused, and the single-package backends. (Sophia-H: the reference model's CPU SDPA has
    # no double backward; tests/test_backend_pytorch_optimizer.py covers create_graph.)
    "pto_adan", "pto_soap", "pto_sam", "pto_adalomo", "heavyball_adamw",
    "heavyball_soap", "adam_mini", "came", "prodigy",
]

pytestmark = [
    pytest.mark.filterwarnings("ignore"),
    # bnb's process-wide override table (see conftest.isolated_bnb_overrides).
    pytest.mark.usefixtures("isolated_bnb_overrides"),
]


def _case(name: str):
    state = readiness(name)
    marks = [] if state.action == "run" else [pytest.mark.skip(reason=state.reason)]
    return pytest.param(name, id=name, marks=marks)


def _square_loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return model(inputs).square().mean()


def _setup(name: str):
    """A fresh model per build (LOMO hooks it for good); torchao on the three shapes its
    accuracy test compiles for (torch.compile runs per shape)."""
    if name.startswith("adamw_torch_") and name[-4:] in ("4bit", "8bit"):
        data = [torch.randn(4, 64, generator=torch.Generator().manual_seed(s)) for s in range(2)]

        def model() -> nn.Module:
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 99))

        return model, data, _square_loss
    shape = parse_model_spec(REFERENCE)

    def llama() -> nn.Module:
        torch.manual_seed(0)
        return shape.build("cpu")

    return llama, direct.batches(shape.vocab), direct.lm_loss



@pytest.mark.parametrize("name", [_case(n) for n in REPRESENTATIVE])
def test_hub_holds_exactly_what_the_backend_built_by_hand_holds(name):
    """To the byte; for GaLore, less by exactly the part of each SVD factor that
    galore-torch's projector keeps alive behind a view and never uses."""
    model, data, loss = _setup(name)
    via_hub = direct.measure_hub(name, model(), data, RANK, loss)
    by_hand = direct.measure_direct(name, model(), data, RANK, loss)
    saved = direct.whole_factor_surplus(name, model(), RANK)
    assert via_hub > 0 or name in ("lomo", "pto_sam")  # SAM over momentum-free SGD
    assert saved > 0 or name not in direct.SVD_PROJECTED
    assert via_hub == by_hand - saved, (
        f"{name}: hub {via_hub:,} B, direct {by_hand:,} B, factor surplus {saved:,} B")


def test_the_benchmark_builds_every_runnable_name_by_hand():
    missing = sorted(set(direct.runnable_names()) - set(direct.DIRECT))
    assert missing == []


def test_direct_groups_refuse_a_rank_the_hub_would_cap():
    with pytest.raises(ValueError, match="smaller side"):
        direct.hf_groups(parse_model_spec(REFERENCE).build(), {"rank": 64})
