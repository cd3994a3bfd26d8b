"""Finding a name in a catalog of hundreds: case, namespaces, suggestions, list filters."""

from __future__ import annotations

import pytest

import optimhub
from optimhub.catalog import parse_catalog
from optimhub.cli import main
from optimhub.errors import CatalogError, UnknownOptimizerError

BACKEND = """
schema_version = 1
[backends.lib]
plugin = "lib"
distribution = "lib"
import_name = "lib"
namespace = "lib"
"""


def test_names_match_ignoring_case_where_unambiguous() -> None:
    assert optimhub.get_spec("AdamW_Torch").name == "adamw_torch"
    assert optimhub.get_spec("ADAMW_8BIT").name == "adamw_bnb_8bit"  # an alias, too
    assert optimhub.get_spec("PTO_Adan").name == "pto_adan"


@pytest.mark.parametrize(("typed", "expected"), [
    ("AdamW", "adamw_torch"),
    ("adan", "pto_adan"),  # the namespace-less name of another namespace
    ("soap", "heavyball_soap"),
    ("sophia", "pto_sophiah"),
])
def test_unknown_names_get_suggestions_across_namespaces(typed, expected) -> None:
    with pytest.raises(UnknownOptimizerError) as info:
        optimhub.get_spec(typed)
    assert expected in info.value.suggestions
    assert expected in str(info.value)


def test_adam_is_no_longer_answered_with_unrelated_names() -> None:
    with pytest.raises(UnknownOptimizerError) as info:
        optimhub.get_spec("adam")
    assert all("adam" in s for s in info.value.suggestions)


def test_a_namespace_is_the_prefix_of_every_name_and_reserved() -> None:
    ok = parse_catalog(BACKEND + '[optimizers.lib_x]\nbackend = "lib"\nsummary = "x"\n')
    assert ok["lib_x"].namespace == "lib" and ok["lib_x"].bare_name == "x"
    with pytest.raises(CatalogError, match="must start with 'lib_'"):
        parse_catalog(BACKEND + '[optimizers.x]\nbackend = "lib"\nsummary = "x"\n')
    squatter = ('[optimizers.lib_y]\nsummary = "y"\nplugin = "p"\ndistribution = "p"\n'
                'import_name = "p"\n')
    with pytest.raises(CatalogError, match="namespace of another backend"):
        parse_catalog(BACKEND + '[optimizers.lib_x]\nbackend = "lib"\nsummary = "x"\n' + squatter)


def test_a_third_party_plugin_cannot_register_into_a_namespace() -> None:
    from optimhub.registration import PluginInfo, Register

    registry = optimhub.plugin_host.get_registry()
    register = Register(registry, PluginInfo("thirdparty"))
    spec = optimhub.OptimizerSpec(name="pto_mine", summary="s", plugin="thirdparty",
                                  distribution="d", import_name="d")
    with pytest.raises(CatalogError, match="namespace 'pto'"):
        register.optimizer(spec, lambda request: None)


def test_list_filters_by_backend_pattern_and_capability() -> None:
    assert {s.plugin for s in optimhub.list_optimizers(backend="PTO")} == {"pytorch_optimizer"}
    assert optimhub.list_optimizers(backend="pytorch-optimizer") == optimhub.list_optimizers(
        backend="pytorch_optimizer")
    names = [s.name for s in optimhub.list_optimizers("*SOAP*", backend="heavyball")]
    assert "heavyball_soap" in names and all("soap" in n for n in names)
    closure = optimhub.list_optimizers(capability="closure_required", backend="pto")
    assert [s.name for s in closure] == ["pto_alig", "pto_friendlysam", "pto_looksam",
                                         "pto_sam", "pto_wsam"]
    with pytest.raises(optimhub.OptimArgsError, match="Did you mean 'heavyball'"):
        optimhub.list_optimizers(backend="heavyballl")


def test_cli_list_backend_and_pattern(capsys) -> None:
    assert main(["list", "--backend", "came", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"name": "came"' in out and "pto_" not in out
    assert main(["list", "--pattern", "pto_ada*", "--backend", "pto"]) == 0
    out = capsys.readouterr().out
    assert "pto_adan" in out and "heavyball" not in out
    assert main(["info", "pto_sophiah"]) == 0
    assert "create_graph" in capsys.readouterr().out


def test_info_describes_every_name(capsys) -> None:
    """`optimhub info` for each of the catalog's names (no backend imported: the spec, the
    install line, every option typed)."""
    import json

    names = [spec.name for spec in optimhub.list_optimizers()]
    assert len(names) > 200
    for name in names:
        assert main(["info", name, "--json"]) == 0, name
        data = json.loads(capsys.readouterr().out)
        assert data["name"] == name and data["backend"]["install"].startswith("pip install")
        assert all(option["type"] and option["doc"] for option in data["optim_args"]), name


#: A run of the command line in which the new backends are not importable (a meta-path
#: finder refuses them), as on a machine where they are not installed.
_WITHOUT_BACKENDS = """
import json, sys
BLOCKED = {"heavyball", "pytorch_optimizer", "came_pytorch", "prodigyopt", "adam_mini"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Blocker())
from optimhub.cli import main
main(["list", "--backend", "heavyball", "--json"])
print("@@")
main(["info", "pto_adan", "--json"])
"""


def test_a_backend_that_is_not_installed_is_listed_with_its_install_line() -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _WITHOUT_BACKENDS], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    listed, info = out.split("@@")
    rows = json.loads(listed)
    rows = rows["optimizers"] if isinstance(rows, dict) else rows
    assert len(rows) == 37 and not any(row["installed"] for row in rows)
    backend = json.loads(info)["backend"]
    assert backend["installed"] is False
    assert backend["install"] == 'pip install "optimhub[pytorch_optimizer]"'
