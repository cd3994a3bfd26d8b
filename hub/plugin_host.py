"""Loading plugins: the built-ins first, then the ``optimhub`` entry points, each isolated.

Loading is lazy (nothing happens at ``import optimhub``) and happens once per process,
under a lock (and under ``build_lock``, the lock of every first-use import), so the
first ``create_optimizer`` calls from several threads see one consistent registry. A
plugin that fails to import, fails in its hook, registers a malformed spec or claims a
name another plugin owns is recorded as a ``PluginFailure``, warned about once, shown by
``optimhub plugins``, and everything else keeps working.

Environment switches (read when plugins load):

- ``OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (built-ins only).
- ``OPTIMHUB_LOAD_PLUGINS=a,b``: load only these entry-point plugins (empty: none).
- ``OPTIMHUB_BLOCK_PLUGINS=a,b``: never load these plugins (built-in or entry point).
- ``OPTIMHUB_STRICT_PLUGINS=1``: any plugin fault raises ``PluginLoadError`` at load.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .backends import build_lock
from .catalog import load_catalog
from .errors import OptimHubWarning, PluginLoadError
from .registration import PluginFailure, PluginInfo, Register, Registry
from .spec import OptimizerSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "get_registry",
    "reset_plugins",
]

ENTRY_POINT_GROUP = "optimhub"
BUILTIN_PACKAGE = __package__ + ".plugins"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class PluginSettings:
    """The environment switches, parsed once per load."""

    autoload: bool = True
    allowlist: frozenset[str] | None = None
    blocked: frozenset[str] = frozenset()
    strict: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PluginSettings:
        allow = environ.get("OPTIMHUB_LOAD_PLUGINS")
        return cls(
            autoload=environ.get("OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in _TRUE,
            allowlist=None if allow is None else _names(allow),
            blocked=_names(environ.get("OPTIMHUB_BLOCK_PLUGINS", "")),
            strict=environ.get("OPTIMHUB_STRICT_PLUGINS", "").lower() in _TRUE,
        )


def _names(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


class PluginHost:
    """Owns one pluggy PluginManager and the Registry it fills.

    ``entry_points`` and ``environ`` are injectable so tests (and ``optimhub.testing``)
    can load a controlled set of plugins without touching the process's environment.
    """

    def __init__(
        self,
        *,
        catalog: Mapping[str, OptimizerSpec] | None = None,
        entry_points: Callable[[], Iterable[EntryPoint]] | None = None,
        environ: Mapping[str, str] | None = None,
        extra_plugins: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._catalog = catalog
        self._entry_points = entry_points or _optimhub_entry_points
        self._environ = environ
        self._extra_plugins = tuple(extra_plugins)
        self._lock = threading.Lock()
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """The loaded registry; the first access loads every plugin (once)."""
        registry = self._registry
        if registry is None:
            # Plugins (a third party's may import its backend at import) load under the
            # lock of every first-use import, taken first, as every builder takes it.
            with build_lock(), self._lock:
                if self._registry is None:
                    self._registry = self._load()
                registry = self._registry
        return registry

    # ---- loading ----------------------------------------------------------------------
    def _load(self) -> Registry:
        import pluggy

        from . import hookspecs

        settings = PluginSettings.from_environ(
            os.environ if self._environ is None else self._environ
        )
        registry = Registry(load_catalog() if self._catalog is None else self._catalog)
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        loader = _Loader(registry, manager, settings)
        given = {name for name, _ in self._extra_plugins}
        for plugin_name in sorted({spec.plugin for spec in registry.catalog.values()}):
            if plugin_name in given:  # a catalog plugin supplied as an object: loaded below
                continue
            info = PluginInfo(plugin_name, builtin=True)
            loader.load(info, lambda name=plugin_name: importlib.import_module(
                f"{BUILTIN_PACKAGE}.{name}"))
        for name, plugin in self._extra_plugins:
            loader.load(PluginInfo(name), lambda plugin=plugin: plugin)
        if settings.autoload:
            for entry_point in self._entry_points():
                loader.load_entry_point(entry_point)
        registry.inherit_builders()
        loader.check_builders()
        loader.report()
        return registry


class _Loader:
    """One pass of plugin loading, recording each fault against its plugin."""

    def __init__(self, registry: Registry, manager: Any, settings: PluginSettings) -> None:
        self.registry = registry
        self.manager = manager
        self.settings = settings

    def load_entry_point(self, entry_point: EntryPoint) -> None:
        dist = getattr(entry_point, "dist", None)
        info = PluginInfo(
            entry_point.name,
            distribution=getattr(dist, "name", None),
            version=getattr(dist, "version", None),
        )
        if self.settings.allowlist is not None and info.name not in self.settings.allowlist:
            return
        self.load(info, entry_point.load)

    def load(self, info: PluginInfo, importer: Callable[[], Any]) -> None:
        if info.name in self.settings.blocked:
            self._block(info)
            return
        try:
            plugin = importer()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self.fail(info, "import", f"{type(exc).__name__}: {exc}",
                      names=self._catalog_names(info), error=exc)
            return
        if not self._add_to_manager(info, plugin):
            return
        self.registry.plugins.append(info)
        self._call_hook(info, plugin)

    def _add_to_manager(self, info: PluginInfo, plugin: Any) -> bool:
        try:
            self.manager.register(plugin, name=info.name)
            self.manager.check_pending()
        except Exception as exc:
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            self.fail(info, "validate", f"{type(exc).__name__}: {exc}",
                      names=self._catalog_names(info), error=exc)
            return False
        if not self.manager.get_hookcallers(plugin):
            self.fail(info, "validate", "it implements no optimhub_register_optimizers hook "
                      "(check the spelling and the @optimhub.hookimpl marker)",
                      names=self._catalog_names(info))
            self.manager.unregister(plugin)
            return False
        return True

    def _call_hook(self, info: PluginInfo, plugin: Any) -> None:
        register = Register(self.registry, info)
        try:
            plugin.optimhub_register_optimizers(register=register)
        except Exception as exc:
            names = (*register.staged_names, *self._catalog_names(info))
            self.fail(info, "register", f"{type(exc).__name__}: {exc}", names=names, error=exc)
            return
        register.commit()
        for name, error in register.conflicts:
            # Neither side may use a contested name until the user blocks one plugin:
            # silently picking one would train with an optimizer nobody chose.
            self.fail(info, "conflict", str(error), names=(name,), error=error)

    def _catalog_names(self, info: PluginInfo) -> tuple[str, ...]:
        """The catalog names a plugin owns: unusable, with its fault, if it cannot load."""
        return tuple(s.name for s in self.registry.catalog.values() if s.plugin == info.name)

    def _block(self, info: PluginInfo) -> None:
        names = self._catalog_names(info)
        failure = PluginFailure(info, "blocked", "blocked by OPTIMHUB_BLOCK_PLUGINS", names)
        self.registry.mark_unusable(names, failure)

    def check_builders(self) -> None:
        """Every catalog entry has exactly one builder (its plugin must register it)."""
        for spec in self.registry.catalog.values():
            if spec.name in self.registry.entries or spec.name in self.registry.unusable:
                continue
            owner = next((p for p in self.registry.plugins if p.name == spec.plugin),
                         PluginInfo(spec.plugin, builtin=True))
            self.fail(owner, "missing-builder",
                      f"registry.toml lists {spec.name!r} but the plugin registered no builder",
                      names=(spec.name,))

    def fail(
        self,
        info: PluginInfo,
        stage: str,
        message: str,
        *,
        names: tuple[str, ...] = (),
        error: BaseException | None = None,
    ) -> None:
        failure = PluginFailure(info, stage, message, names, error)
        if self.settings.strict:
            raise PluginLoadError(
                f"{failure} (OPTIMHUB_STRICT_PLUGINS is set, so plugin faults are fatal)"
            ) from error
        self.registry.failures.append(failure)
        self.registry.mark_unusable(names, failure)

    def report(self) -> None:
        for failure in self.registry.failures:
            warnings.warn(
                f"optimhub: {failure}. Everything else keeps working; `optimhub plugins` "
                "shows the details.",
                OptimHubWarning,
                stacklevel=4,
            )


def _optimhub_entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


_default_host = PluginHost()
_default_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return _default_host.registry


def reset_plugins(host: PluginHost | None = None) -> PluginHost:
    """Replace the process-wide plugin host (a fresh load on next use); returns the old one.

    For tests and for long-lived processes that installed a plugin after first use.
    """
    global _default_host
    with _default_lock:
        previous, _default_host = _default_host, host or PluginHost()
    return previous
