"""The shape of the code, as tests: the core's imports form a DAG, and a plugin imports only
the ``optimhub.plugin`` façade (built-in plugins, their private helper modules, and the
example third-party plugin alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "hub"
PLUGINS = ROOT / "plugins"
EXAMPLE_PLUGIN = ROOT / "examples" / "optimhub-example-plugin" / "optimhub_example_plugin"

#: What the façade is: the one optimhub module a plugin may import.
FACADE = "optimhub.plugin"


def _module_name(path: Path) -> str:
    """``hub/compare/runner.py`` -> ``optimhub.compare.runner``."""
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["optimhub", *parts])


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-local and
    ``TYPE_CHECKING`` imports included: a cycle hidden in a function is still a cycle),
    resolved to absolute names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _core_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # A package's __init__ re-exports its modules: it is the graph's entry, not a node
        # other modules may depend on (``from . import x`` names the submodule).
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name
                       and not (m == "optimhub" or modules[m].name == "__init__.py")}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_core_imports_form_a_dag():
    graph = _core_graph()
    assert len(graph) > 20  # the walk found the core
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def _plugin_files() -> list[Path]:
    return [*sorted(PLUGINS.glob("*.py")), *sorted(EXAMPLE_PLUGIN.glob("*.py"))]


@pytest.mark.parametrize("path", _plugin_files(), ids=lambda p: p.name)
def test_a_plugin_imports_only_the_facade(path):
    in_builtins = path.parent == PLUGINS
    module = f"optimhub.plugins.{path.stem}" if in_builtins else "optimhub_example_plugin"
    wrong = []
    for name in _imports(path, module):
        if not name.startswith("optimhub") or name.startswith("optimhub_example_plugin"):
            continue
        if name == FACADE or name.startswith(FACADE + "."):
            continue
        # a built-in plugin may use a private helper module beside it (never another plugin)
        helper = name.removeprefix("optimhub.plugins.").split(".")[0]
        if in_builtins and name.startswith("optimhub.plugins.") and helper.startswith("_"):
            continue
        if in_builtins and name == "optimhub.plugins":  # `from . import _helper`
            continue
        wrong.append(name)
    assert not wrong, f"{path.name} imports {sorted(wrong)}; import them from {FACADE}"


def test_private_helper_modules_register_nothing():
    """A ``plugins/_*.py`` module is shared code, not a plugin: no hook implementation."""
    for path in PLUGINS.glob("_*.py"):
        if path.name == "__init__.py":
            continue
        assert "optimhub_register_optimizers" not in path.read_text(encoding="utf-8"), path


def test_the_facade_exports_what_it_lists():
    import optimhub.plugin as facade

    missing = [name for name in facade.__all__ if not hasattr(facade, name)]
    assert missing == []
    # the builder and estimator contracts, the hook, and the shared helpers are all there
    for name in ("hookimpl", "Register", "BuildRequest", "EstimateRequest", "StateEstimate",
                 "low_rank_groups", "ObjectCodec", "version_tuple", "OptimArgsError"):
        assert name in facade.__all__


def test_the_walk_sees_a_forbidden_import(tmp_path):
    """The façade check would catch a plugin reaching into the core."""
    bad = tmp_path / "bad.py"
    bad.write_text("from optimhub.factory import create_optimizer\n"
                   "def f():\n    from optimhub import memory\n")
    assert {"optimhub.factory", "optimhub.memory"} <= _imports(bad, "bad")
