"""Plugin faults beyond tests/test_plugins.py: malformed specs, slow imports, and where each
fault shows (one warning, ``optimhub plugins``, ``optimhub doctor``, the name's own error).

tests/test_plugins.py already covers an import error, a hook error, a name collision, a
misspelled hook, builders that raise or return a non-optimizer, strict mode, the allow
and block lists and one-time loading from threads; this file adds only what it lacks.
"""

from __future__ import annotations

import builtins
import json
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import PluginFactory, lm_batch, lm_loss, make_tiny_lm, sign_sgd_plugin

import optimhub
from optimhub.cli import main
from optimhub.errors import OptimHubWarning, PluginLoadError, UnknownOptimizerError
from optimhub.plugin_host import PluginHost

ROOT = Path(__file__).resolve().parents[1]

#: Faulty plugins, each as (entry-point name, source, the name it tries to provide, stage
#: at which it fails, what its message must say).
FAULTS = {
    "wrong_types": ("""
        import torch, optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            register.optimizer({"name": "typed_wrong", "summary": 42, "distribution": "d",
                                "import_name": "torch"},
                               lambda r: torch.optim.SGD(r.param_groups, lr=1))
    """, "typed_wrong", "register", "field 'summary' must be str, got int 42"),
    "unknown_capability_dict": ("""
        import torch, optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            register.optimizer({"name": "teleporting", "summary": "s", "distribution": "d",
                                "import_name": "torch", "capabilities": ["teleport"]},
                               lambda r: torch.optim.SGD(r.param_groups, lr=1))
    """, "teleporting", "register", "unknown capability 'teleport'"),
    "unknown_capability_spec": ("""
        import torch, optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            spec = optimhub.OptimizerSpec(name="warping", summary="s", plugin="x",
                                          distribution="d", import_name="torch",
                                          capabilities={"warp_drive"})
            register.optimizer(spec, lambda r: torch.optim.SGD(r.param_groups, lr=1))
    """, "warping", "register", "unknown capability 'warp_drive'"),
    "slow_and_broken": ("""
        import time
        time.sleep(0.3)
        raise RuntimeError("gave up after a slow start")
    """, "slow_opt", "import", "RuntimeError: gave up after a slow start"),
}


def _catalog_free_host(factory: PluginFactory, **environ: str) -> PluginHost:
    """Only the factory's entry-point plugins (no built-ins): fast to load and to doctor."""
    return PluginHost(catalog={}, entry_points=factory.entry_points(), environ=environ)


def _load(host: PluginHost) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ = host.registry
        _ = host.registry  # a second use loads nothing and warns nothing
    return [w for w in caught if issubclass(w.category, OptimHubWarning)]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimHubWarning)
        assert main(list(argv)) == code
    return capsys.readouterr().out


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_reported_once_and_shown_everywhere(
    fault: str, plugin_factory: PluginFactory, use_host, capsys
) -> None:
    source, _, stage, says = FAULTS[fault]
    plugin_factory.add(fault, source, distribution=f"optimhub-{fault}", version="0.9")
    plugin_factory.add("healthy", sign_sgd_plugin("healthy_opt"))
    host = use_host(_catalog_free_host(plugin_factory))

    caught = _load(host)
    assert len(caught) == 1, [str(w.message) for w in caught]
    warning = str(caught[0].message)
    assert f"plugin {fault!r} (distribution optimhub-{fault} 0.9) failed at {stage}" in warning
    assert says in warning

    # Everything else keeps working.
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("healthy_opt", model, lr=0.1)
    lm_loss(model, lm_batch()).backward()
    before = model.lm_head.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.lm_head.weight)

    # A plugin fault is a problem found: plugins and doctor exit 1 (--exit-zero: 0).
    text = _cli(capsys, "plugins", code=1)
    errors = text[text.index("load errors:"):]
    row = next(line.split() for line in errors.splitlines() if line.strip().startswith(fault))
    assert row[:4] == [fault, f"optimhub-{fault}", "0.9", stage], row
    assert says in text
    failures = json.loads(_cli(capsys, "plugins", "--json", code=1))["failures"]
    assert [(f["plugin"], f["distribution"], f["stage"]) for f in failures] == [
        (fault, f"optimhub-{fault}", stage)]
    doctor = _cli(capsys, "doctor", "--exit-zero")
    assert f"plugin fault: plugin {fault!r} (distribution optimhub-{fault} 0.9)" in doctor
    assert json.loads(_cli(capsys, "doctor", "--json", code=1))["plugin_failures"] == [
        str(host.registry.failures[0])]
    assert len(host.registry.failures) == 1  # the commands reported it, they did not add it


@pytest.mark.parametrize("fault", list(FAULTS))
def test_asking_for_the_faulty_name_says_which_plugin_failed(
    fault: str, plugin_factory: PluginFactory
) -> None:
    source, name, _, says = FAULTS[fault]
    plugin_factory.add(fault, source, distribution=f"optimhub-{fault}", version="0.9")
    host = _catalog_free_host(plugin_factory)
    _load(host)
    with pytest.raises((PluginLoadError, UnknownOptimizerError)) as info:
        host.registry.get(name)
    message = str(info.value)
    assert f"plugin {fault!r} (distribution optimhub-{fault} 0.9)" in message
    assert says in message


def test_strict_mode_makes_a_malformed_spec_fatal(plugin_factory: PluginFactory) -> None:
    source, _, _, says = FAULTS["unknown_capability_dict"]
    plugin_factory.add("unknown_capability_dict", source)
    host = _catalog_free_host(plugin_factory, OPTIMHUB_STRICT_PLUGINS="1")
    with pytest.raises(PluginLoadError, match=re.escape(says)) as info:
        _ = host.registry
    assert "OPTIMHUB_STRICT_PLUGINS" in str(info.value)


# ---------------------------------------------------------------------------- slow imports
SLOW_PLUGIN = sign_sgd_plugin("slow_opt") + """
import builtins, time
builtins.optimhub_slow_imports = getattr(builtins, "optimhub_slow_imports", 0) + 1
time.sleep(1.0)  # a plugin whose import is slow (a heavy backend): other threads must wait
"""


def test_a_slow_plugin_is_imported_once_while_other_threads_wait(
    plugin_factory: PluginFactory, use_host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builtins, "optimhub_slow_imports", 0, raising=False)
    module = plugin_factory.add("slow", SLOW_PLUGIN, distribution="optimhub-slow")
    use_host(plugin_factory.host())
    started = threading.Barrier(8)

    def build(seed: int) -> tuple[str, bool]:
        started.wait()  # all eight ask at once, while the first is still importing
        model = make_tiny_lm(seed)
        optimizer = optimhub.create_optimizer("slow_opt", model, lr=0.01)
        before = model.lm_head.weight.detach().clone()
        lm_loss(model, lm_batch(seed)).backward()
        optimizer.step()
        return type(optimizer).__name__, bool((before - model.lm_head.weight).abs().max() > 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(build, range(8)))
    assert results == [("SignSGD", True)] * 8
    assert builtins.optimhub_slow_imports == 1  # type: ignore[attr-defined]
    assert module in __import__("sys").modules
    assert [w for w in caught if issubclass(w.category, OptimHubWarning)] == []
    assert optimhub.get_spec("slow_opt").plugin == "slow"
    assert type(optimhub.create_optimizer("sgd", make_tiny_lm(), lr=0.1)).__name__ == "SGD"


def test_a_slow_plugin_that_fails_is_reported_once_to_all_threads(
    plugin_factory: PluginFactory, use_host
) -> None:
    source, name, _, says = FAULTS["slow_and_broken"]
    plugin_factory.add("slow_and_broken", source, distribution="optimhub-slow-and-broken")
    plugin_factory.add("healthy", sign_sgd_plugin("healthy_opt"))
    use_host(_catalog_free_host(plugin_factory))
    started = threading.Barrier(8)

    def ask(index: int) -> str:
        started.wait()
        if index % 2:
            return type(optimhub.create_optimizer("healthy_opt", make_tiny_lm())).__name__
        with pytest.raises(UnknownOptimizerError) as info:
            optimhub.create_optimizer(name, make_tiny_lm())
        return str(info.value)

    begun = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(ask, range(8)))
    assert time.perf_counter() - begun >= 0.3  # every thread waited for the one slow import
    faults = [str(w.message) for w in caught if issubclass(w.category, OptimHubWarning)]
    assert len(faults) == 1 and says in faults[0]
    assert results[1::2] == ["SignSGD"] * 4
    for message in results[0::2]:
        assert "plugin 'slow_and_broken' (distribution optimhub-slow-and-broken" in message
        assert says in message


# ---------------------------------------------------------------------------- switches
def test_every_switch_is_documented() -> None:
    """docs/plugins-loading.md explains each OPTIMHUB_* variable the plugin host reads."""
    read = set(re.findall(r'"(OPTIMHUB_[A-Z_]+)"', (ROOT / "hub/plugin_host.py").read_text()))
    assert read == {"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD", "OPTIMHUB_LOAD_PLUGINS",
                    "OPTIMHUB_BLOCK_PLUGINS", "OPTIMHUB_STRICT_PLUGINS"}
    doc = (ROOT / "docs/plugins-loading.md").read_text()
    for switch in read:
        assert re.search(rf"^#+ `{switch}`$", doc, re.MULTILINE), switch
