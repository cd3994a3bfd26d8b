"""Is a spec's backend here, importable, recent enough, and usable on this device?

Backends are imported only here, when an optimizer is built (or when ``optimhub doctor``
asks), never at ``import optimhub``: several take seconds to import. Importing one must
not change the user's process either, so the root logger is restored afterwards (some
backends call ``logging.basicConfig`` at import).

Python imports one module at a time per module, but two threads importing two backends
that import each other's dependencies (torch._dynamo, transformers, bitsandbytes.optim...)
can each be handed the other's half-initialised module, which Python does to break the
deadlock: a wrong ``ImportError`` or an ``AttributeError`` at random. So everything the hub
runs that may import on first use (a backend's import, a builder's call: builders and the
backend constructors they call import lazily, plugin loading) runs under one process-wide
lock, :func:`build_lock`; claiming parameters for an optimizer that updates them inside
backward uses the same lock, so there is one lock and no lock order to get wrong. Building
an optimizer is a constructor call, so serialising builds costs nothing measurable; a step
never takes the lock.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import BackendUnavailableError, MissingBackendError, OptimHubWarning
from .spec import Capability, OptimizerSpec
from .versions import installed_version, version_tuple

__all__ = [
    "BackendStatus",
    "backend_status",
    "build_lock",
    "cuda_available",
    "ensure_usable",
    "import_backend",
    "is_installed",
    "preserve_root_logger",
]


#: Held while the hub imports a backend, calls a builder, loads plugins or claims
#: parameters (see above). An RLock: a builder may build through the hub again (a
#: layerwise optimizer builds one optimizer per parameter; a plugin may compose others).
_BUILD_LOCK = threading.RLock()


@contextmanager
def build_lock() -> Iterator[None]:
    """Run the block under the process-wide build lock: of several threads, one at a time
    imports a backend or builds, so none sees a half-imported module."""
    with _BUILD_LOCK:
        yield


def is_installed(spec: OptimizerSpec) -> bool:
    """Cheap presence check by import name (no import): what listing uses."""
    try:
        return importlib.util.find_spec(spec.import_name) is not None
    except (ImportError, ValueError):
        return False


def spec_version(spec: OptimizerSpec) -> str | None:
    """The installed version of the spec's distribution (None: not installed)."""
    return installed_version(spec.distribution)


@contextmanager
def preserve_root_logger() -> Iterator[None]:
    """Undo changes a backend's import makes to the root logger (level and handlers)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def import_backend(spec: OptimizerSpec) -> ModuleType:
    """Import the backend, or raise ``MissingBackendError`` with the exact install command."""
    with build_lock():
        return _import_backend(spec)


def _import_backend(spec: OptimizerSpec) -> ModuleType:
    if not is_installed(spec):
        raise MissingBackendError(
            f"optimizer {spec.name!r} needs the package {spec.distribution!r} (import name "
            f"{spec.import_name!r}), which is not installed. Install it with: "
            f"{spec.install_command}"
        )
    try:
        if spec.import_name in sys.modules:  # imported before: nothing left to guard against
            module = importlib.import_module(spec.import_name)
        else:
            with preserve_root_logger():
                module = importlib.import_module(spec.import_name)
    except ImportError as exc:
        raise MissingBackendError(
            f"optimizer {spec.name!r}: importing {spec.import_name!r} failed with "
            f"{type(exc).__name__}: {exc}. It usually means a dependency of the backend is "
            f"missing; install everything it needs with: {spec.install_command}"
        ) from exc
    _check_version(spec)
    return module


def _check_version(spec: OptimizerSpec) -> None:
    if spec.min_version is None:
        return
    version = spec_version(spec)
    if version is not None and version_tuple(version) < version_tuple(spec.min_version):
        raise BackendUnavailableError(
            f"optimizer {spec.name!r} needs {spec.distribution}>={spec.min_version}, but "
            f"{version} is installed. Upgrade with: pip install -U "
            f"'{spec.distribution}>={spec.min_version}'"
        )


def cuda_available() -> bool:
    """Can torch use a CUDA (or ROCm) device here?

    A build of torch without CUDA or ROCm support answers False without importing torch:
    ``optimhub info`` and ``list --available`` ask this for CUDA-only names, and torch's
    import takes a second where the answer is written in one small file.
    """
    if "torch" not in sys.modules and not _torch_build_supports_gpus():
        return False
    import torch

    return bool(torch.cuda.is_available())


_GPU_BUILD = re.compile(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(?P<value>.+?)\s*$", re.MULTILINE)


def _torch_build_supports_gpus() -> bool:
    """False only when torch's ``version.py``, read as text, says ``cuda = None`` and
    ``hip = None`` (a CPU build, or no torch at all); anything unreadable counts as True,
    so torch itself is asked."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if not spec.origin:
        return True
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return True
    values = {m[1]: m["value"] for m in _GPU_BUILD.finditer(text)}
    return set(values) != {"cuda", "hip"} or any(v != "None" for v in values.values())


_paged_warned: set[str] = set()


def ensure_usable(spec: OptimizerSpec) -> ModuleType:
    """Import the backend and check the device before anything is built."""
    if spec.has(Capability.CUDA_ONLY) and not cuda_available():
        raise BackendUnavailableError(
            f"optimizer {spec.name!r} runs only on a CUDA device and none is available "
            "(torch.cuda.is_available() is False). Use it on a machine with an NVIDIA GPU "
            "and a CUDA build of torch, or pick another optimizer (`optimhub list "
            "--available`)."
        )
    module = import_backend(spec)
    if spec.has(Capability.PAGED) and not cuda_available() and spec.name not in _paged_warned:
        _paged_warned.add(spec.name)
        warnings.warn(
            f"optimhub: {spec.name!r} pages its state through CUDA unified memory; without "
            "CUDA it runs as the same optimizer without paging (same results, no memory "
            "relief).",
            OptimHubWarning,
            stacklevel=3,
        )
    return module


@dataclass(frozen=True)
class BackendStatus:
    """What ``optimhub doctor`` and ``list --available`` report for one spec."""

    installed: bool
    version: str | None
    usable: bool
    problem: str | None


def backend_status(spec: OptimizerSpec, *, import_it: bool = False) -> BackendStatus:
    """Installed? usable here? and if not, the fix. Imports only when ``import_it``."""
    installed = is_installed(spec)
    version = spec_version(spec) if installed else None
    if not installed:
        return BackendStatus(False, None, False, f"not installed: {spec.install_command}")
    if spec.has(Capability.CUDA_ONLY) and not cuda_available():
        return BackendStatus(True, version, False, "needs a CUDA device; none is available")
    if import_it:
        try:
            import_backend(spec)
        except (MissingBackendError, BackendUnavailableError) as exc:
            return BackendStatus(True, version, False, str(exc))
    return BackendStatus(True, version, True, None)
