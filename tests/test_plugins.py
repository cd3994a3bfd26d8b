"""The plugin manager: built-ins, real entry points, isolation of faults, switches, threads."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import make_tiny_lm, sign_sgd_plugin

import optimhub
from optimhub.catalog import load_catalog
from optimhub.errors import PluginLoadError, UnknownOptimizerError
from optimhub.plugin_host import PluginHost


def _loaded(host: PluginHost):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = host.registry
    return registry, [w for w in caught if issubclass(w.category, optimhub.OptimHubWarning)]


def test_every_catalog_entry_has_exactly_one_builder():
    registry, caught = _loaded(PluginHost(environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    assert caught == []
    assert registry.failures == []
    assert set(registry.entries) == set(load_catalog())
    for name, entry in registry.entries.items():
        assert entry.spec.plugin == entry.plugin.name == load_catalog()[name].plugin
        assert entry.plugin.builtin


def test_builder_for_a_name_outside_the_catalog_is_a_recorded_fault(plugin_factory):
    plugin_factory.add("stray", """
        import optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            register.builder("not_in_catalog", lambda request: None)
    """)
    registry, caught = _loaded(plugin_factory.host())
    assert [f.stage for f in registry.failures] == ["register"]
    assert "not_in_catalog" in str(registry.failures[0])
    assert len(caught) == 1 and "stray" in str(caught[0].message)


def test_third_party_plugin_through_a_real_entry_point(plugin_factory, use_host):
    plugin_factory.add("signs", sign_sgd_plugin("sign_descent"),
                       distribution="optimhub-signs", version="2.5")
    use_host(plugin_factory.host())
    assert "sign_descent" in [s.name for s in optimhub.list_optimizers()]
    spec = optimhub.get_spec("sign_descent")
    assert spec.plugin == "signs"
    model = make_tiny_lm()
    before = model.lm_head.weight.detach().clone()
    optimizer = optimhub.create_optimizer("sign_descent", model, lr=0.01)
    assert type(optimizer).__name__ == "SignSGD"
    assert optimhub.spec_of(optimizer) is spec
    model.lm_head.weight.sum().backward()
    optimizer.step()
    assert torch.allclose(model.lm_head.weight, before - 0.01)
    registry = optimhub.plugin_host.get_registry()
    info = registry.entries["sign_descent"].plugin
    assert (info.distribution, info.version, info.builtin) == ("optimhub-signs", "2.5", False)


def test_plugin_that_fails_to_import_is_contained(plugin_factory, use_host):
    plugin_factory.add("broken", "raise RuntimeError('boom at import')",
                       distribution="optimhub-broken", version="0.1")
    plugin_factory.add("good", sign_sgd_plugin("still_works"))
    host = use_host(plugin_factory.host())
    registry, caught = _loaded(host)
    assert [(f.plugin.name, f.stage) for f in registry.failures] == [("broken", "import")]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "optimhub-broken" in message and "boom at import" in message
    optimhub.create_optimizer("still_works", make_tiny_lm())
    optimhub.create_optimizer("sgd", make_tiny_lm())
    with pytest.raises(UnknownOptimizerError) as info:
        optimhub.get_spec("from_the_broken_plugin")
    assert "broken" in str(info.value) and "optimhub-broken" in str(info.value)


def test_plugin_that_raises_in_its_hook_is_rolled_back(plugin_factory, use_host):
    plugin_factory.add("halfway", """
        import torch, optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            spec = {"name": "first_one", "summary": "s", "distribution": "d",
                    "import_name": "torch"}
            register.optimizer(spec, lambda r: torch.optim.SGD(r.param_groups, lr=1))
            raise ValueError("crash after the first registration")
    """, distribution="optimhub-halfway")
    host = use_host(plugin_factory.host())
    registry, _ = _loaded(host)
    assert [f.stage for f in registry.failures] == ["register"]
    assert "first_one" not in registry.entries
    with pytest.raises(PluginLoadError) as info:
        optimhub.create_optimizer("first_one", make_tiny_lm())
    message = str(info.value)
    assert "halfway" in message and "optimhub-halfway" in message and "crash after" in message


def test_two_plugins_claiming_one_name_is_an_error_naming_both(plugin_factory, use_host):
    plugin_factory.add("alpha", sign_sgd_plugin("contested"), distribution="optimhub-alpha")
    plugin_factory.add("beta", sign_sgd_plugin("contested"), distribution="optimhub-beta")
    host = use_host(plugin_factory.host())
    registry, _ = _loaded(host)
    assert [f.stage for f in registry.failures] == ["conflict"]
    with pytest.raises(PluginLoadError) as info:
        optimhub.create_optimizer("contested", make_tiny_lm())
    message = str(info.value)
    assert "alpha" in message and "beta" in message and "OPTIMHUB_BLOCK_PLUGINS" in message
    # Blocking one side resolves it.
    host = use_host(plugin_factory.host(OPTIMHUB_BLOCK_PLUGINS="beta"))
    assert optimhub.get_spec("contested").plugin == "alpha"


def test_a_third_party_cannot_take_a_builtin_name(plugin_factory):
    plugin_factory.add("usurper", sign_sgd_plugin("sgd"))
    registry, _ = _loaded(plugin_factory.host())
    assert [f.stage for f in registry.failures] == ["register"]
    assert "built-in" in str(registry.failures[0])
    assert registry.entries["sgd"].plugin.builtin


def test_misspelled_hook_is_reported(plugin_factory):
    plugin_factory.add("typo", """
        import optimhub
        @optimhub.hookimpl
        def optimhub_register_optimisers(register):
            pass
    """)
    registry, _ = _loaded(plugin_factory.host())
    assert [f.stage for f in registry.failures] == ["validate"]
    assert "optimhub_register_optimisers" in str(registry.failures[0])


def test_autoload_switch_allowlist_and_blocklist(plugin_factory):
    plugin_factory.add("one", sign_sgd_plugin("opt_one"))
    plugin_factory.add("two", sign_sgd_plugin("opt_two"))
    assert {"opt_one", "opt_two"} <= set(plugin_factory.host().registry.entries)
    off = plugin_factory.host(OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD="1").registry
    assert not {"opt_one", "opt_two"} & set(off.entries)
    only = plugin_factory.host(OPTIMHUB_LOAD_PLUGINS="two").registry
    assert "opt_two" in only.entries and "opt_one" not in only.entries
    none = plugin_factory.host(OPTIMHUB_LOAD_PLUGINS="").registry
    assert not {"opt_one", "opt_two"} & set(none.entries)
    blocked = plugin_factory.host(OPTIMHUB_BLOCK_PLUGINS="one, torch").registry
    assert "opt_one" not in blocked.entries and "opt_two" in blocked.entries
    with pytest.raises(PluginLoadError, match="OPTIMHUB_BLOCK_PLUGINS"):
        blocked.get("sgd")


def test_strict_mode_makes_load_errors_fatal(plugin_factory):
    plugin_factory.add("broken", "import not_a_module_anywhere")
    host = plugin_factory.host(OPTIMHUB_STRICT_PLUGINS="1")
    with pytest.raises(PluginLoadError, match="not_a_module_anywhere"):
        _ = host.registry


def test_builder_faults_name_the_plugin(plugin_factory, use_host):
    plugin_factory.add("faulty", """
        import optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            base = {"summary": "s", "distribution": "d", "import_name": "torch"}
            register.optimizer({"name": "raises", **base}, lambda r: 1 / 0)
            register.optimizer({"name": "not_an_optimizer", **base}, lambda r: "nope")
    """, distribution="optimhub-faulty")
    use_host(plugin_factory.host())
    with pytest.raises(optimhub.BuildError, match="faulty.*ZeroDivisionError"):
        optimhub.create_optimizer("raises", make_tiny_lm())
    with pytest.raises(optimhub.BuildError, match="returned str.*not a torch.optim.Optimizer"):
        optimhub.create_optimizer("not_an_optimizer", make_tiny_lm())


def test_loading_is_once_and_thread_safe(plugin_factory, use_host):
    module = plugin_factory.add("counted", sign_sgd_plugin("counted_opt") + """
import builtins
builtins.optimhub_test_import_count = getattr(builtins, "optimhub_test_import_count", 0) + 1
""")
    import builtins

    builtins.optimhub_test_import_count = 0
    use_host(plugin_factory.host())
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(
            lambda i: type(optimhub.create_optimizer("counted_opt", make_tiny_lm(i))).__name__,
            range(16),
        ))
    assert results == ["SignSGD"] * 16
    assert builtins.optimhub_test_import_count == 1
    assert module in __import__("sys").modules


def test_a_malformed_spec_from_a_plugin_is_a_recorded_fault(plugin_factory):
    plugin_factory.add("malformed", """
        import torch, optimhub
        @optimhub.hookimpl
        def optimhub_register_optimizers(register):
            bad = optimhub.ArgSpec("rank", "int", "rank", default=0, minimum=1)
            spec = optimhub.OptimizerSpec(name="bad_default", summary="s", plugin="malformed",
                                          distribution="d", import_name="torch",
                                          args={"rank": bad})
            register.optimizer(spec, lambda r: torch.optim.SGD(r.param_groups, lr=1))
    """)
    registry, _ = _loaded(plugin_factory.host())
    assert [f.stage for f in registry.failures] == ["register"]
    assert "default 0 is not valid" in str(registry.failures[0])
    assert "bad_default" not in registry.entries
