"""The distribution as a user gets it: sdist -> wheel -> installed somewhere else.

The source layout maps the top-level folders ``hub/`` and ``plugins/`` onto the import
packages ``optimhub`` and ``optimhub.plugins``, and ships the catalog through the link
``hub/registry.toml -> ../registry.toml``. An editable install hides mistakes in all
three, so these tests build the real artifacts from a copy of the source tree and import
the installed wheel with the repository out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What a copy of the source tree leaves out: environments, build outputs, caches.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "out",
    "compare-out",
)


def _run(*command: str | os.PathLike[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built the way a package index builds one: source tree -> sdist -> wheel.

    Building from the sdist also proves the sdist carries everything the wheel needs
    (registry.toml included). The source is a copy, so the repository gets no build/ dir.
    """
    pytest.importorskip("build", reason="the dev extra (python -m build) is not installed")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=_NOT_SOURCE)
    # --no-isolation: build with this environment's setuptools (no index access needed);
    # -x: skip build's dependency check (setuptools >= 70.1 no longer needs `wheel`).
    _run(sys.executable, "-m", "build", "--no-isolation", "-x", "--outdir", root / "dist", source)
    wheels = sorted((root / "dist").glob("optimhub-*.whl"))
    assert len(wheels) == 1, wheels
    assert sorted((root / "dist").glob("optimhub-*.tar.gz")), "no sdist was built"
    return wheels[0]


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def test_wheel_layout(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        names = set(infos)

        # The catalog is a real file with the catalog's content, not a (dangling) link.
        assert "optimhub/registry.toml" in names, sorted(names)
        assert not _is_link(infos["optimhub/registry.toml"])
        assert archive.read("optimhub/registry.toml") == (REPO / "registry.toml").read_bytes()

        assert "optimhub/py.typed" in names
        assert "optimhub/plugins/__init__.py" in names

        # Every module of hub/ and plugins/ lands under optimhub/ (a subpackage missing
        # from [tool.setuptools] packages would silently drop out of the wheel).
        for folder, package in (("hub", "optimhub"), ("plugins", "optimhub/plugins")):
            for path in (REPO / folder).rglob("*.py"):
                if "__pycache__" in path.parts:
                    continue
                expected = f"{package}/{path.relative_to(REPO / folder).as_posix()}"
                assert expected in names, f"{folder}/{path.name} is not in the wheel"

        # Neither source folder name may become a top-level import package.
        top_level = {name.split("/", 1)[0] for name in names}
        assert "hub" not in top_level
        assert "plugins" not in top_level
        assert {t for t in top_level if not t.endswith(".dist-info")} == {"optimhub"}

        dist_info = next(t for t in top_level if t.endswith(".dist-info"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        assert "optimhub = optimhub.cli:main" in entry_points


_PROBE = r"""
import importlib.resources, json, sys
import optimhub
specs = optimhub.list_optimizers()
catalog = importlib.resources.files("optimhub").joinpath("registry.toml")
print(json.dumps({
    "file": optimhub.__file__,
    "catalog": str(catalog),
    "count": len(specs),
    "modules": sorted(
        str(getattr(m, "__file__", None)) for m in list(sys.modules.values())
        if getattr(m, "__file__", None)
    ),
}))
"""


def test_installed_wheel_works_without_the_repository(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    _run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel
    )

    # -S: no .pth processing, so the editable install's finder (which maps optimhub to this
    # repository's hub/) never runs. The target comes first; this environment's
    # site-packages only provide torch and pluggy.
    site_packages = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "OPTIMHUB_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(target), *site_packages])
    # The example plugin's editable install needs .pth files, which -S skips.
    env["OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    result = _run(sys.executable, "-S", "-c", _PROBE, cwd=tmp_path, env=env)
    probe = json.loads(result.stdout.strip().splitlines()[-1])

    assert Path(probe["file"]).resolve().is_relative_to(target.resolve()), probe["file"]
    assert Path(probe["catalog"]).resolve().is_relative_to(target.resolve()), probe["catalog"]
    assert probe["count"] > 0, "list_optimizers() is empty: the catalog was not found"
    leaked = [
        module
        for module in probe["modules"]
        if Path(module).resolve().is_relative_to((REPO / "hub").resolve())
        or Path(module).resolve().is_relative_to((REPO / "plugins").resolve())
    ]
    assert not leaked, f"modules imported from the repository instead of the wheel: {leaked}"


def test_console_script_is_installed() -> None:
    script = Path(sysconfig.get_path("scripts")) / (
        "optimhub.exe" if os.name == "nt" else "optimhub"
    )
    assert script.exists(), (
        f"{script} is missing: install the project (make test does: pip install -e .[all,dev])"
    )
    result = _run(script, "list")
    assert result.stdout.strip(), "`optimhub list` printed nothing"
