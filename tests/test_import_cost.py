"""``import optimhub`` and listing optimizers must not import any backend.

apollo-torch, galore-torch, bitsandbytes and torchao take 1-2.5 s each to import (and
print log lines); transformers and accelerate are not light either. A backend is imported
only when an optimizer that needs it is built. Each check runs in a fresh interpreter, so
nothing an earlier test imported can hide a regression.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

HEAVY_MODULES = (
    "transformers",
    "accelerate",
    "bitsandbytes",
    "apollo_torch",
    "galore_torch",
    "torchao",
    "lomo_optim",
    "schedulefree",
    "grokadamw",
    "optimi",
    "pytorch_optimizer",
    "heavyball",
    "adam_mini",
    "came_pytorch",
    "prodigyopt",
)

_PROBE = """
import json, sys
HEAVY = {heavy!r}
{code}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & set(HEAVY))))
"""


def _heavy_after(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY_MODULES, code=code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import optimhub", id="import"),
        pytest.param("import optimhub\noptimhub.list_optimizers()", id="list_optimizers"),
        pytest.param("from optimhub.cli import main\nmain(['list'])", id="optimhub-list"),
        pytest.param("from optimhub.cli import main\nmain(['list', '--backend', 'pto', "
                     "'--pattern', '*adam*'])", id="optimhub-list-backend"),
        pytest.param("from optimhub.cli import main\nmain(['info', 'heavyball_soap'])",
                     id="optimhub-info"),
        pytest.param("import optimhub\ntry:\n    optimhub.get_spec('AdamW')\n"
                     "except optimhub.UnknownOptimizerError:\n    pass", id="unknown-name"),
        pytest.param("import optimhub\noptimhub.estimate('pto_adan', "
                     "'llama:hidden=64,layers=1,vocab=99,intermediate=128,heads=4')",
                     id="estimate-dense"),
    ],
)
def test_no_backend_is_imported(code: str) -> None:
    assert _heavy_after(code) == [], f"heavy modules imported by: {code!r}"


# ---------------------------------------------------------------- the catalog commands
#: The catalog commands: they read specs only, so they must not import torch (about a
#: second), numpy, or any backend (benchmarks/import_time.py times them against the floor).
CATALOG_COMMANDS = [["--help"], ["--version"], ["list"], ["list", "--available"],
                    ["info", "galore_adamw"], ["info", "adalomo"], ["plugins"]]

_COMMAND_PROBE = """
import contextlib, io, json, sys
before = set(sys.modules)
from optimhub.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main({argv!r})
    except SystemExit:
        pass
new = {{name.split(".")[0] for name in set(sys.modules) - before}}
print(json.dumps(sorted(new - set(sys.stdlib_module_names))))
"""


@pytest.mark.parametrize("argv", CATALOG_COMMANDS, ids=" ".join)
def test_catalog_commands_import_only_the_standard_library_pluggy_and_optimhub(argv):
    """Third-party plugins are not loaded here (OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD): one that
    imports torch at module level makes these commands import it, which is that plugin's
    cost (docs/writing-plugins.md: import heavy things inside the builder)."""
    result = subprocess.run(
        [sys.executable, "-c", _COMMAND_PROBE.format(argv=argv)], capture_output=True,
        text=True, check=False, env={**os.environ, "OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert imported <= {"optimhub", "pluggy", "tomli"}, imported


def test_import_optimhub_imports_no_torch_and_names_load_on_first_use():
    code = ("import sys, optimhub\n"
            "assert 'torch' not in sys.modules, 'import optimhub imported torch'\n"
            "assert set(optimhub.__all__) <= set(dir(optimhub))\n"
            "optimhub.Capability, optimhub.OptimArgsError, optimhub.list_optimizers\n"
            "assert 'torch' not in sys.modules, 'the catalog API imported torch'\n"
            "from optimhub import create_optimizer\n"
            "assert 'torch' in sys.modules and callable(create_optimizer)\n"
            "try:\n    optimhub.no_such_name\nexcept AttributeError as e:\n"
            "    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, env={**os.environ,
                                              "OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "has no attribute 'no_such_name'" in result.stdout


@pytest.mark.parametrize(
    ("version_py", "expected"),
    [("cuda: Optional[str] = None\nhip: Optional[str] = None\n", False),
     ("cuda: Optional[str] = '12.4'\nhip: Optional[str] = None\n", True),
     ("cuda = None\nhip = '6.2.41133'\n", True),
     ("__version__ = '9.9'\n", True)],  # unknown layout: ask torch itself
    ids=["cpu-build", "cuda-build", "rocm-build", "unknown"],
)
def test_a_cpu_build_of_torch_has_no_cuda_without_importing_it(tmp_path, monkeypatch,
                                                                version_py, expected):
    from optimhub import backends

    package = tmp_path / "torch"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "version.py").write_text(version_py)
    fake = importlib.util.spec_from_file_location("torch", package / "__init__.py")
    monkeypatch.setattr(backends.importlib.util, "find_spec",
                        lambda name: fake if name == "torch" else None)
    assert backends._torch_build_supports_gpus() is expected


def test_the_cuda_answer_without_torch_is_torch_s_answer():
    import torch

    from optimhub import backends

    if backends._torch_build_supports_gpus():
        pytest.skip("this torch build has CUDA or ROCm: torch is asked, nothing to compare")
    assert torch.cuda.is_available() is False
