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

__all__ = ["backend_names", "get_spec", "is_backend", "list_optimizers"]


def get_spec(name: str) -> OptimizerSpec:
    """The spec of ``name`` (or one of its aliases)."""
    return get_registry().get(name).spec


def list_optimizers(
    pattern: str | None = None,
    *,
    capability: Capability | str | Iterable[Capability | str] | None = None,
    available: bool | None = None,
    backend: str | None = None,
) -> list[OptimizerSpec]:
    """Specs sorted by name, filtered by an fnmatch ``pattern`` (``*``, ``?``, ``[...]``;
    matched ignoring case against the name, its namespace-less form and the aliases), by
    one or several capabilities (all required), by ``backend`` (its plugin, pip
    distribution, import name, extra or namespace, ignoring case and ``-``/``_``), and by
    whether the backend is installed and usable on this machine (``available=True`` /
    ``False``)."""
    wanted = _capabilities(capability)
    if backend is not None:
        _check_backend(backend)
    result = []
    for entry in get_registry():
        spec = entry.spec
        if pattern is not None and not any(
            fnmatch.fnmatchcase(n.casefold(), pattern.casefold())
            for n in (spec.name, spec.bare_name, *spec.aliases)
        ):
            continue
        if backend is not None and not is_backend(spec, backend):
            continue
        if not wanted <= spec.capabilities:
            continue
        if available is not None and backend_status(spec).usable != available:
            continue
        result.append(spec)
    return result


def backend_names(spec: OptimizerSpec) -> set[str]:
    """Every spelling that names ``spec``'s backend: plugin, distribution, import name,
    extra and namespace, folded (lower case, ``-`` as ``_``)."""
    names = (spec.plugin, spec.distribution, spec.import_name, spec.extra, spec.namespace)
    return {_fold(n) for n in names if n}


def is_backend(spec: OptimizerSpec, backend: str) -> bool:
    """Whether ``backend`` names ``spec``'s backend (see :func:`backend_names`)."""
    return _fold(backend) in backend_names(spec)


def _check_backend(backend: str) -> None:
    """An unknown backend is an error naming the known ones, not an empty list."""
    specs = [e.spec for e in get_registry()]
    if any(is_backend(spec, backend) for spec in specs):
        return
    plugins = sorted({spec.plugin for spec in specs})
    near = closest(_fold(backend), {n for spec in specs for n in backend_names(spec)})
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise OptimArgsError(
        f"no optimizer comes from a backend named {backend!r}.{hint} Backends (by plugin): "
        f"{', '.join(plugins)}; a pip distribution, import name or namespace works too"
    )


def _fold(name: str) -> str:
    return name.casefold().replace("-", "_")


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
