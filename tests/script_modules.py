"""The project's scripts (tools/, benchmarks/) loaded by the tests as modules, under a
private name, without making them a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str, *, with_siblings: bool = False) -> ModuleType:
    """``ROOT / relative`` as module ``name``, registered in ``sys.modules`` (dataclasses
    look their module up by name). ``with_siblings``: the script imports scripts of its
    own folder by their plain names, so that folder goes on ``sys.path``."""
    path = ROOT / relative
    if with_siblings:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
