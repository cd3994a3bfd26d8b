"""heavyball behind the hub: the generated section, eager mode on the CPU, parity with the
class built by hand, the dense estimator in heavyball's storage dtype."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from parity import conformance_steps

import optimhub
import optimhub.testing as ot

heavyball = pytest.importorskip("heavyball")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore")


def test_generated_section_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_heavyball_catalog.py"), "--check"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_every_exported_optimizer_but_the_wrappers_is_a_name() -> None:
    names = {s.name for s in optimhub.list_optimizers(backend="heavyball")}
    exported = {n.lower() for n in heavyball.__all__
                if isinstance(getattr(heavyball, n), type)
                and issubclass(getattr(heavyball, n), torch.optim.Optimizer)}
    assert {n.removeprefix("heavyball_") for n in names} == exported - {"splitopt", "samwrapper"}
    assert optimhub.get_spec("HeavyBall_SOAP").name == "heavyball_soap"  # any case


@pytest.mark.parametrize(("name", "cls"), [("heavyball_adamw", "AdamW"),
                                           ("heavyball_soap", "SOAP")])
def test_hub_matches_the_class_built_by_hand(name, cls) -> None:
    args = {"learning_rate": 3e-3, "adam_beta1": 0.8, "adam_beta2": 0.95}
    hub_model, hand_model = ot.conformance_model(), ot.conformance_model()
    hub = optimhub.create_optimizer(name, hub_model, args)
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
              for g in hub.param_groups]
    index = {id(p): i for i, p in enumerate(hub_model.parameters())}
    hand_params = list(hand_model.parameters())
    hand_groups = [{**g, "params": [hand_params[index[id(p)]] for p in g["params"]]}
                   for g in groups]
    kwargs = {"lr": 3e-3, "betas": (0.8, 0.95)}
    if optimhub.get_spec(name).has_hyperparameter("eps"):
        kwargs["eps"] = 1e-8
    hand = getattr(heavyball, cls)(hand_groups, **kwargs)
    conformance_steps(hub_model, hub)
    conformance_steps(hand_model, hand)
    for a, b in zip(hub_model.parameters(), hand_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_cpu_runs_heavyball_eagerly_and_says_so() -> None:
    import heavyball.utils

    heavyball.utils.compile_mode = "max-autotune-no-cudagraphs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimhub.create_optimizer("heavyball_adamw", ot.conformance_model())
    assert heavyball.utils.compile_mode is None
    assert any("eagerly" in str(w.message) for w in caught)


def test_dense_estimate_follows_the_storage_dtype_not_the_parameters() -> None:
    model = ot.conformance_model().to(torch.bfloat16)
    count = sum(p.numel() for p in model.parameters())
    assert optimhub.estimate("heavyball_adamw", model).state_bytes == 8 * count
    half = optimhub.estimate("heavyball_adamw", model, optim_args="storage_dtype=bfloat16")
    assert half.state_bytes == 4 * count


def _float64_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    found, stack = [], [optimizer.state_dict()["state"]]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor) and item.dtype == torch.float64:
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_psgd_float64_state_keeps_its_dtype_and_values_through_a_checkpoint() -> None:
    """torch's load_state_dict casts floating state to the parameter's dtype; PSGD keeps
    float64 running bounds, which must come back as saved (plugins/_saved_dtypes.py)."""
    model = ot.conformance_model()
    optimizer = optimhub.create_optimizer("heavyball_psgdkron", model, lr=1e-2)
    for seed in range(2):
        optimizer.zero_grad()
        ot.conformance_loss(model, ot.conformance_batch(seed=seed)).backward()
        optimizer.step()
    saved = _float64_state(optimizer)
    assert saved  # the case this guards: PSGD keeps float64 state next to float32 weights
    fresh = optimhub.create_optimizer("heavyball_psgdkron", ot.conformance_model(seed=1),
                                      lr=1e-2)
    fresh.load_state_dict(optimizer.state_dict())
    loaded = _float64_state(fresh)
    assert len(loaded) == len(saved)
    assert sorted(t.item() for t in loaded) == sorted(t.item() for t in saved)


def test_nested_state_is_saved_with_text_keys_and_int_keys_still_load() -> None:
    """heavyball's per-parameter state nests dicts under int keys ({0: {...}}), which DCP
    could not bring back (plugins/_text_state_keys.py): ``state_dict()`` gives them as
    text, ``load_state_dict`` takes text or int keys, and the live state keeps ints."""
    model = ot.conformance_model()
    optimizer = optimhub.create_optimizer("heavyball_adamw", model, lr=1e-3)
    driver = optimhub.drive(optimizer, model=model)
    for _ in range(2):
        driver.backward(ot.conformance_loss(model, ot.conformance_batch()))
        driver.step()
    saved = optimizer.state_dict()
    entry = saved["state"][0]
    assert set(entry) == {"0"} and isinstance(entry["0"]["is_initialized"], set)
    assert all(isinstance(k, int) for v in optimizer.state.values() for k in v)
    as_before = {**saved, "state": {i: {int(k): v for k, v in e.items()}
                                    for i, e in saved["state"].items()}}
    for state in (saved, as_before):
        fresh_model = ot.conformance_model()
        fresh = optimhub.create_optimizer("heavyball_adamw", fresh_model, lr=1e-3)
        fresh.load_state_dict(state)
        assert all(isinstance(k, int) for v in fresh.state.values() for k in v)
        assert fresh.state_dict()["state"][0]["0"].keys() == entry["0"].keys()
