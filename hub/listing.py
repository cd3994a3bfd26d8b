"""Looking optimizers up without building them: ``get_spec`` and ``list_optimizers``.

Both read only specs (and, for ``available=``, a file-system lookup of the import name),
so listing never imports a backend.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from .backends import backend_status
from .errors import OptimArgsError, closest
from .plugin_host import get_registry
from .spec import Capability, OptimizerSpec

__all__ = ["get_spec", "list_optimizers"]


def get_spec(name: str) -> OptimizerSpec:
    """The spec of ``name`` (or one of its aliases)."""
    return get_registry().get(name).spec


def list_optimizers(
    pattern: str | None = None,
    *,
    capability: Capability | str | Iterable[Capability | str] | None = None,
    available: bool | None = None,
) -> list[OptimizerSpec]:
    """Specs sorted by name, filtered by an fnmatch ``pattern`` (matched against the name
    and aliases), by one or several capabilities (all required), and by whether the
    backend is installed and usable on this machine (``available=True`` / ``False``)."""
    wanted = _capabilities(capability)
    result = []
    for entry in get_registry():
        spec = entry.spec
        if pattern is not None and not any(
            fnmatch.fnmatchcase(n, pattern) for n in (spec.name, *spec.aliases)
        ):
            continue
        if not wanted <= spec.capabilities:
            continue
        if available is not None and backend_status(spec).usable != available:
            continue
        result.append(spec)
    return result


def _capabilities(
    capability: Capability | str | Iterable[Capability | str] | None,
) -> frozenset[Capability]:
    if capability is None:
        return frozenset()
    if isinstance(capability, (str, Capability)):
        capability = [capability]
    result = set()
    for item in capability:
        try:
            result.add(Capability(item))
        except ValueError:
            known = [c.value for c in Capability]
            near = closest(str(item), known)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise OptimArgsError(
                f"unknown capability {item!r}.{hint} Known: {', '.join(known)}"
            ) from None
    return frozenset(result)
