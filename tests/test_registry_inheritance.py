"""registry.toml states each fact once: derived names (``base = ...``) and option sets.

The resolved specs are compared with a snapshot of optimhub 0.1's catalog, in which every
derived name still repeated its base's options: the same options, defaults, docs, fixed
keywords and backends, with the differences listed below and each one deliberate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from optimhub.catalog import load_catalog, parse_catalog
from optimhub.errors import CatalogError
from optimhub.plugin import StateEstimate
from optimhub.plugin_host import PluginHost
from optimhub.registration import PluginInfo, Register, Registry
from optimhub.spec import UNSET

SNAPSHOT = Path(__file__).parent / "data" / "resolved_specs_v0.1.json"

#: What changed on purpose since the snapshot (name -> field -> new value).
DELIBERATE = {
    # LOMO's "one lr and one decay" became a capability the core enforces, and so did
    # "reads its weight decay once" (weight-decay schedules are refused for it).
    "lomo": {"capabilities": ["fused_backward", "needs_model", "no_ddp", "single_group",
                              "static_weight_decay"]},
    "adalomo": {"capabilities": ["cuda_only", "fused_backward", "needs_model", "no_ddp",
                                 "single_group", "static_weight_decay"]},
    # Precision and paging variants now say what they are derived from.
    "adamw_torch_fused": {"base": "adamw_torch"},
    "paged_adamw_8bit": {"base": "adamw_bnb_8bit"},
    "paged_lion_8bit": {"base": "lion_8bit"},
    "paged_lion_32bit": {"base": "lion_32bit"},
    "rmsprop_bnb_8bit": {"base": "rmsprop_bnb"},
    "rmsprop_bnb_32bit": {"base": "rmsprop_bnb"},
    "ademamix_8bit": {"base": "ademamix"},
    "paged_ademamix_32bit": {"base": "ademamix"},
    "paged_ademamix_8bit": {"base": "ademamix"},
}


def _plain(value):
    if value is UNSET:
        return "<UNSET>"
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _facts(spec) -> dict:
    """The snapshot's view of a spec (tests/data/resolved_specs_v0.1.json)."""
    arg_fields = ("type", "doc", "default", "choices", "nullable", "minimum", "maximum",
                  "exclusive_minimum", "exclusive_maximum", "length", "target_group",
                  "backend_key")
    return {
        "summary": spec.summary, "plugin": spec.plugin, "distribution": spec.distribution,
        "import_name": spec.import_name, "extra": spec.extra,
        "min_version": spec.min_version, "install_hint": spec.install_hint,
        "aliases": list(spec.aliases),
        "capabilities": sorted(c.value for c in spec.capabilities),
        "hyperparameters": sorted(spec.hyperparameters),
        "fixed": {k: _plain(v) for k, v in spec.fixed.items()},
        "base": spec.base, "paper": spec.paper,
        "state_bytes_per_param": spec.state_bytes_per_param,
        "args": {k: {f: _plain(getattr(a, f)) for f in arg_fields}
                 for k, a in spec.args.items()},
    }


def test_resolved_specs_equal_the_v0_1_catalog_except_the_deliberate_changes():
    before = json.loads(SNAPSHOT.read_text())
    now = {name: _facts(spec) for name, spec in load_catalog().items()}
    assert set(before) <= set(now)
    for name, facts in before.items():
        expected = {**facts, **DELIBERATE.get(name, {})}
        # no_fsdp2, deepspeed_zero(3) and no_dcp are new, and measured by
        # tools/distributed_matrix.py, deepspeed_matrix.py and distributed_checkpoint.py
        # (their tests check them): not part of 0.1's catalog.
        now[name]["capabilities"] = [c for c in now[name]["capabilities"]
                                     if c not in ("no_fsdp2", "deepspeed_zero",
                                                  "deepspeed_zero3", "no_dcp")]
        assert now[name] == expected, name


def test_derived_names_state_less_than_they_resolve_to():
    """The point of inheritance: the file has far fewer option lines than the specs. Counted
    over the hand-written entries: a generated section (between its ``# ---- <backend>``
    and ``# ---- end <backend>`` markers, written by a tools/ script) states every option
    of every class, and is kept equal to its script's output instead."""
    text = (Path(__file__).parent.parent / "registry.toml").read_text()
    generated = set(re.findall(r"^# -{76} end (\w+)$", text, flags=re.M))
    for backend in generated:
        text = re.sub(rf"^# -{{76}} {backend}\n.*?^# -{{76}} end {backend}\n", "", text,
                      flags=re.M | re.S)
    stated = sum(1 for line in text.splitlines() if line.split("=")[0].strip()
                 and "= {" in line and ("type =" in line or "default =" in line
                                        or "doc =" in line))
    resolved = sum(len(spec.args) for spec in load_catalog().values()
                   if spec.plugin not in generated)
    # 0.1 stated all 135 of its options; inheritance states well under two thirds
    assert generated and resolved >= 135 and stated * 1.5 < resolved


HEADER = """
schema_version = 1
[backends.pkg]
plugin = "pkg"
distribution = "pkg-dist"
import_name = "pkg_mod"
[option_sets.shared]
beta = { type = "float", default = 0.5, doc = "shared beta" }
[optimizers.base_opt]
backend = "pkg"
summary = "the base"
capabilities = ["layerwise_capable"]
hyperparameters = ["lr", "weight_decay"]
fixed = { bits = 32, paged = false }
paper = "https://example.org/paper"
option_sets = ["shared"]
[optimizers.base_opt.args]
rank = { type = "int", default = 128, minimum = 1, doc = "the rank" }
"""


def test_a_derived_entry_inherits_and_overrides_field_by_field():
    specs = parse_catalog(HEADER + """
[optimizers.preset]
base = "base_opt"
summary = "a preset"
fixed = { bits = 8 }
[optimizers.preset.args]
rank = { default = 1 }
""")
    base, preset = specs["base_opt"], specs["preset"]
    assert (preset.plugin, preset.distribution, preset.paper) == ("pkg", "pkg-dist",
                                                                 base.paper)
    assert preset.capabilities == base.capabilities  # inherited when not stated
    assert preset.hyperparameters == {"lr", "weight_decay"}
    assert dict(preset.fixed) == {"bits": 8, "paged": False}
    assert preset.args["rank"].default == 1 and base.args["rank"].default == 128
    assert preset.args["rank"].doc == "the rank" and preset.args["rank"].minimum == 1
    assert preset.args["beta"] == base.args["beta"]  # from the option set, through the base
    assert preset.summary == "a preset" and preset.aliases == ()


@pytest.mark.parametrize(("body", "message"), [
    ('[optimizers.a]\nbase = "b"\nsummary = "s"\n[optimizers.b]\nbase = "a"\nsummary = "s"',
     "base chain loops"),
    ('[optimizers.a]\nbackend = "pkg"\nsummary = "s"\noption_sets = ["nope"]',
     "option set 'nope' has no \\[option_sets.nope\\] table"),
    ('[optimizers.a]\nbase = "base_opt"\nsummary = "s"\n[optimizers.a.args]\n'
     'rank = { default = 0 }', "default 0 is not valid"),
    ('[optimizers.a]\nbase = "base_opt"\nsummary = "s"\n[optimizers.a.args]\n'
     'fresh = { default = 1 }', "missing required field 'type'"),
])
def test_inheritance_mistakes_are_catalog_errors(body, message):
    with pytest.raises(CatalogError, match=message):
        parse_catalog(HEADER + body)


def test_a_derived_name_inherits_its_base_builder_and_estimator_unless_its_plugin_registers_one():
    def build_base(request):
        return torch.optim.SGD(request.param_groups, lr=0.1)

    def build_own(request):
        return torch.optim.SGD(request.param_groups, lr=0.2)

    def estimate(request):
        return StateEstimate(7)

    registry = Registry(parse_catalog(HEADER + """
[optimizers.preset]
base = "base_opt"
summary = "inherits"
[optimizers.own]
base = "base_opt"
summary = "registers its own"
[optimizers.preset_of_preset]
base = "preset"
summary = "inherits through two levels"
"""))
    register = Register(registry, PluginInfo("pkg", builtin=True))
    register.builder("base_opt", build_base, estimator=estimate)
    register.builder("own", build_own)
    register.commit()
    registry.inherit_builders()
    for name in ("preset", "preset_of_preset"):
        assert registry.entries[name].builder is build_base
        assert registry.entries[name].estimator is estimate
        assert registry.entries[name].spec.name == name
    assert registry.entries["own"].builder is build_own
    assert registry.entries["own"].estimator is None


def test_every_builtin_derived_name_runs_its_base_builder():
    registry = PluginHost(environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"}).registry
    for name, spec in load_catalog().items():
        if spec.base is None or name not in registry.entries:
            continue
        entry, base = registry.entries[name], registry.entries[spec.base]
        if entry.builder is not base.builder:  # the plugin registered its own: say so
            assert spec.plugin == entry.plugin.name
        assert entry.plugin.name == base.plugin.name
