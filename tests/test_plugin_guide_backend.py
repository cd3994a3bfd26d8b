"""docs/writing-plugins.md section 10 shows a complete backend as one module and one TOML
entry: load exactly those two blocks, as the hub loads a built-in backend, and train."""

from __future__ import annotations

import re
import types
from pathlib import Path

import torch
from conftest import lm_batch, lm_loss, make_tiny_lm

from optimhub.catalog import load_catalog, parse_catalog
from optimhub.memory import describe_model, estimate_from_request
from optimhub.plugin import EstimateRequest
from optimhub.plugin_host import PluginHost, get_registry
from optimhub.state_size import state_bytes

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"


def _block(marker: str) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(rf"<!-- docs: guide-backend {marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"no '{marker}' block in {GUIDE.name}"
    return match.group(1)


def _host() -> PluginHost:
    backends = '[backends.torch]\nplugin = "torch"\ndistribution = "torch"\nimport_name = "torch"\n'
    catalog = parse_catalog("schema_version = 1\n" + backends + _block("catalog"))
    module = types.ModuleType("nadam_plugin")
    exec(compile(_block("module"), "plugins/nadam.py", "exec"), module.__dict__)
    return PluginHost(catalog=catalog, environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
                      extra_plugins=[("nadam", module)])


def test_the_guide_backend_registers_both_names_with_one_builder():
    registry = _host().registry
    assert registry.failures == []
    assert set(registry.entries) == {"nadam_torch", "nadamw_torch"}
    base, derived = registry.entries["nadam_torch"], registry.entries["nadamw_torch"]
    assert derived.builder is base.builder and derived.estimator is base.estimator
    assert derived.spec.args["decoupled_weight_decay"].default is True
    assert derived.spec.args["momentum_decay"] == base.spec.args["momentum_decay"]
    assert "nadam_torch" not in load_catalog()  # an example, not a built-in name


def test_the_guide_backend_builds_trains_and_estimates_exactly(use_host):
    use_host(_host())
    import optimhub

    for name, decoupled in (("nadam_torch", False), ("nadamw_torch", True)):
        model = make_tiny_lm()
        optimizer = optimhub.create_optimizer(name, model, {"learning_rate": 1e-2,
                                                            "weight_decay": 0.1})
        assert isinstance(optimizer, torch.optim.NAdam)
        assert optimizer.param_groups[0]["decoupled_weight_decay"] is decoupled
        before = [p.detach().clone() for p in model.parameters()]
        for _ in range(3):
            lm_loss(model, lm_batch()).backward()
            optimizer.step()
            optimizer.zero_grad()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(),
                                                          strict=True))
        entry = get_registry().get(name)
        request = EstimateRequest(spec=entry.spec, options={}, params=describe_model(model))
        assert estimate_from_request(request, entry.estimator).state_bytes == (
            state_bytes(optimizer))
