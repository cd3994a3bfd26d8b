"""``import optimhub`` and listing optimizers must not import any backend.

apollo-torch, galore-torch, bitsandbytes and torchao take 1-2.5 s each to import (and
print log lines); transformers and accelerate are not light either. A backend is imported
only when an optimizer that needs it is built. Each check runs in a fresh interpreter, so
nothing an earlier test imported can hide a regression.
"""

from __future__ import annotations

import json
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
