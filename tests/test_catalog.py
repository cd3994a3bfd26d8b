"""registry.toml is validated on load: each malformed entry is an error naming it."""

from __future__ import annotations

import pytest

import optimhub
from optimhub.catalog import load_catalog, parse_catalog, spec_from_mapping
from optimhub.errors import CatalogError
from optimhub.spec import UNSET, Capability

HEADER = """
schema_version = 1
[backends.pkg]
plugin = "pkg"
distribution = "pkg-dist"
import_name = "pkg_mod"
extra = "pkg"
"""


def entry(body: str, name: str = "opt") -> str:
    return HEADER + f'\n[optimizers.{name}]\nbackend = "pkg"\nsummary = "s"\n' + body


def test_a_valid_entry_inherits_its_backend_fields():
    specs = parse_catalog(entry("""
capabilities = ["low_rank", "target_modules"]
hyperparameters = ["lr", "weight_decay"]
aliases = ["opt_alias"]
fixed = { optim_bits = 8 }
[optimizers.opt.args]
rank = { type = "int", default = 128, minimum = 1, target_group = true, doc = "rank" }
proj = { type = "str", default = "random", choices = ["random", "svd"], doc = "projection" }
max_lr = { type = "float", nullable = true, default = "none", doc = "cap" }
"""))
    spec = specs["opt"]
    assert (spec.plugin, spec.distribution, spec.import_name, spec.extra) == (
        "pkg", "pkg-dist", "pkg_mod", "pkg")
    assert spec.install_command == 'pip install "optimhub[pkg]"'
    assert spec.capabilities == {Capability.LOW_RANK, Capability.TARGET_MODULES}
    assert spec.hyperparameters == {"lr", "weight_decay"}
    assert dict(spec.fixed) == {"optim_bits": 8}
    assert spec.args["rank"].default == 128 and spec.args["rank"].target_group
    assert spec.args["proj"].choices == ("random", "svd")
    assert spec.args["max_lr"].default is None
    assert [a.name for a in spec.target_group_args] == ["rank"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('sumary = "typo"', "unknown field 'sumary'"),
        ("aliases = 3", "field 'aliases' must be list"),
        ('capabilities = ["schedule-free"]', "unknown capability 'schedule-free'.*schedule_free"),
        ('hyperparameters = ["momentum"]', "unknown hyperparameter 'momentum'"),
        ('backend = "nowhere"', "backend 'nowhere' has no \\[backends.nowhere\\]"),
        ('base = "ghost"', "base 'ghost' is not in the catalog"),
        ('[optimizers.opt.args]\nrank = { type = "integer", doc = "d" }', "unknown type 'integer'"),
        ('[optimizers.opt.args]\nrank = { type = "int" }', "missing required field 'doc'"),
        ('[optimizers.opt.args]\nrank = { type = "int", doc = "d", default = "many" }',
         "default 'many' is not valid"),
        ('[optimizers.opt.args]\np = { type = "str", doc = "d", choices = ["a"], default = "b" }',
         "default 'b' is not valid"),
        ('[optimizers.opt.args]\nr = { type = "int", doc = "d", default = 0, minimum = 1 }',
         "default 0 is not valid"),
        ('[optimizers.opt.args]\nr = { type = "int", doc = "d", length = 2 }',
         "'length' applies only to tuple types"),
    ],
)
def test_malformed_entries_name_the_entry_and_field(body, expected):
    if body.startswith("backend ="):
        text = HEADER + f"\n[optimizers.opt]\nsummary = \"s\"\n{body}\n"
    else:
        text = entry(body)
    with pytest.raises(CatalogError, match=expected) as info:
        parse_catalog(text, origin="my.toml")
    assert "my.toml" in str(info.value)
    assert "optimizers.opt" in str(info.value)


def test_entry_without_plugin_is_an_error():
    text = '\nschema_version = 1\n[optimizers.lonely]\nsummary = "s"\ndistribution = "d"\n' \
           'import_name = "d"\n'
    with pytest.raises(CatalogError, match=r"optimizers.lonely.*no 'plugin'"):
        parse_catalog(text)


def test_file_level_errors():
    with pytest.raises(CatalogError, match="not valid TOML"):
        parse_catalog("schema_version = = 1")
    with pytest.raises(CatalogError, match="schema_version 2 is not supported"):
        parse_catalog("schema_version = 2\n[optimizers]\n")
    with pytest.raises(CatalogError, match="missing required field 'optimizers'"):
        parse_catalog("schema_version = 1\n")
    clash = entry('aliases = ["other"]') + '\n[optimizers.other]\nbackend = "pkg"\nsummary = "s"\n'
    with pytest.raises(CatalogError, match="alias 'other' of 'opt' is already"):
        parse_catalog(clash)


def test_spec_mapping_for_third_party_plugins():
    spec = spec_from_mapping("mine", {"summary": "s", "plugin": "p", "distribution": "d",
                                      "import_name": "m"})
    assert spec.name == "mine" and spec.args == {}
    with pytest.raises(CatalogError, match="'mine'.*unknown field 'capability'"):
        spec_from_mapping("mine", {"summary": "s", "plugin": "p", "distribution": "d",
                                   "import_name": "m", "capability": []})
    with pytest.raises(CatalogError, match="not a valid name"):
        spec_from_mapping("has space", {"summary": "s", "plugin": "p", "distribution": "d",
                                        "import_name": "m"})


def test_the_shipped_catalog_is_valid_and_complete():
    catalog = load_catalog()
    for name in ("adamw_torch", "adamw_torch_fused", "sgd", "adagrad", "rmsprop",
                 "adafactor_torch"):
        assert name in catalog
    for spec in catalog.values():
        assert spec.summary and spec.paper and spec.paper.startswith("https://")
        for arg in spec.args.values():
            assert arg.doc, (spec.name, arg.name)
            assert arg.default is UNSET or arg.has_default


def test_get_spec_and_list_filters():
    assert optimhub.get_spec("adamw_torch").capabilities == {
        Capability.LAYERWISE_CAPABLE, Capability.DEEPSPEED_ZERO, Capability.DEEPSPEED_ZERO3}
    assert optimhub.get_spec("adamw_torch_fused").fixed["fused"] is True
    names = [s.name for s in optimhub.list_optimizers("adamw_torch_f*")]
    assert names == ["adamw_torch_fused"]
    capable = optimhub.list_optimizers(capability="layerwise_capable")
    assert {"sgd", "adamw_torch"} <= {s.name for s in capable}
    assert all(s.has(Capability.LAYERWISE_CAPABLE) for s in capable)
    assert "sgd" in {s.name for s in optimhub.list_optimizers(available=True)}
    with pytest.raises(optimhub.OptimArgsError, match="unknown capability 'schedulefree'"):
        optimhub.list_optimizers(capability="schedulefree")
