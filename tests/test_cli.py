"""The optimhub command: list, info, plugins, doctor (text and --json)."""

from __future__ import annotations

import json

import pytest
from conftest import sign_sgd_plugin

from optimhub.cli import main
from optimhub.plugin_host import get_registry


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_json_has_every_name_and_filters(capsys):
    code, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert {r["name"] for r in rows} == set(get_registry().names())
    sgd = next(r for r in rows if r["name"] == "sgd")
    assert sgd == {"name": "sgd", "aliases": [], "backend": "torch", "installed": True,
                   "capabilities": ["deepspeed_zero", "deepspeed_zero3",
                                    "layerwise_capable"], "summary": sgd["summary"]}
    code, out, _ = run(capsys, "list", "adamw_torch_f*", "--json")
    assert [r["name"] for r in json.loads(out)] == ["adamw_torch_fused"]
    code, out, _ = run(capsys, "list", "--capability", "layerwise_capable", "--available")
    assert code == 0 and "sgd" in out and "optimizers." in out


def test_list_unknown_capability_is_an_error(capsys):
    code, _, err = run(capsys, "list", "--capability", "schedulefree")
    assert code == 2 and "unknown capability 'schedulefree'" in err


def test_info_text_and_json(capsys):
    code, out, _ = run(capsys, "info", "sgd")
    assert code == 0
    for text in ("sgd: PyTorch SGD", "install: pip install torch", "momentum", "nesterov",
                 'optimhub.create_optimizer("sgd", model', "OptimHubTrainer"):
        assert text in out
    code, out, _ = run(capsys, "info", "sgd", "--json")
    data = json.loads(out)
    assert [a["key"] for a in data["optim_args"]] == ["momentum", "dampening", "nesterov"]
    assert data["backend"]["usable_here"] is True
    assert data["hyperparameters"] == ["lr", "weight_decay"]
    assert data["based_on"] is None
    code, out, _ = run(capsys, "info", "apollo_mini")
    assert "based on: apollo_adamw" in out


def test_info_unknown_name_suggests(capsys):
    code, _, err = run(capsys, "info", "adamw_torh")
    assert code == 2 and "'adamw_torch'" in err


def test_plugins_reports_load_errors(capsys, plugin_factory, use_host):
    plugin_factory.add("broken", "raise ImportError('no such thing')",
                       distribution="optimhub-broken", version="0.3")
    plugin_factory.add("fine", sign_sgd_plugin("fine_opt"), distribution="optimhub-fine")
    use_host(plugin_factory.host())
    with pytest.warns(Warning, match="broken"):
        code, out, _ = run(capsys, "plugins", "--json")
    data = json.loads(out)
    assert code == 1  # a plugin failed to load (tests/test_cli_contracts.py: exit codes)
    fine = next(p for p in data["plugins"] if p["name"] == "fine")
    assert fine["optimizers"] == ["fine_opt"] and fine["distribution"] == "optimhub-fine"
    assert data["failures"] == [{"plugin": "broken", "distribution": "optimhub-broken",
                                 "version": "0.3", "stage": "import",
                                 "message": "ImportError: no such thing", "names": []}]
    code, out, _ = run(capsys, "plugins")
    row = next(line for line in out.splitlines() if line.strip().startswith("broken "))
    assert row.split() == ["broken", "optimhub-broken", "0.3", "import", "ImportError:", "no",
                           "such", "thing"]


def test_doctor_json_names_the_fix_for_each_problem(capsys):
    code, out, _ = run(capsys, "doctor", "--json")
    data = json.loads(out)
    assert code == 0
    torch_row = next(r for r in data["backends"] if r["backend"] == "torch")
    assert torch_row["installed"] and torch_row["importable"] and not torch_row["unusable"]
    for row in data["backends"]:
        if row["unusable"]:
            assert row["fix"], row
