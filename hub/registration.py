"""What plugins register into: the ``Register`` handed to each plugin's hook, and the
``Registry`` that collects specs and builders from all of them.

Each plugin gets its own ``Register``, so every spec is stamped with the plugin that
provided it, a plugin that fails half-way can be rolled back as a whole, and two plugins
claiming one name are both known by name when the clash is reported.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .build import Builder
from .catalog import check_spec, reserved_namespace, spec_from_mapping
from .errors import (
    CatalogError,
    OptimArgsTypeError,
    PluginLoadError,
    UnknownOptimizerError,
    shorten,
)
from .estimator import Estimator
from .spec import OptimizerSpec

__all__ = ["PluginFailure", "PluginInfo", "Register", "RegisteredOptimizer", "Registry"]


@dataclass(frozen=True)
class PluginInfo:
    """A loaded (or attempted) plugin: its name and, for entry points, its distribution."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False

    def describe(self) -> str:
        if not self.distribution:
            return f"plugin {self.name!r}"
        version = f" {self.version}" if self.version else ""
        return f"plugin {self.name!r} (distribution {self.distribution}{version})"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin fault, recorded instead of taking the whole hub down."""

    plugin: PluginInfo
    stage: str  # "import", "register", "validate", "conflict", "blocked", "missing-builder"
    message: str
    names: tuple[str, ...] = ()
    error: BaseException | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.plugin.describe()} failed at {self.stage}: {self.message}"


@dataclass(frozen=True)
class RegisteredOptimizer:
    """A spec, the builder that makes it, the plugin both came from, and the plugin's
    memory estimator for it (None: ``optimhub.estimate`` falls back to the spec's
    ``state_bytes_per_param``)."""

    spec: OptimizerSpec
    builder: Builder
    plugin: PluginInfo
    estimator: Estimator | None = None


class Registry:
    """Every optimizer name known after plugin loading, with the faults met on the way."""

    def __init__(self, catalog: Mapping[str, OptimizerSpec]) -> None:
        self.catalog = dict(catalog)
        self.entries: dict[str, RegisteredOptimizer] = {}
        self.aliases: dict[str, str] = {}
        self.failures: list[PluginFailure] = []
        self.plugins: list[PluginInfo] = []
        # name -> the failure that makes it unusable (conflict, blocked, failed plugin)
        self.unusable: dict[str, PluginFailure] = {}

    # ---- lookup -------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name for a name or alias: exact first, then ignoring case where
        that is unambiguous (``AdamW`` finds ``adamw``); otherwise ``name`` unchanged."""
        if name in self.entries or name in self.unusable:
            return name
        if name in self.aliases:
            return self.aliases[name]
        matches = self._case_matches(name)
        return matches[0] if len(matches) == 1 else name

    def _case_matches(self, name: str) -> list[str]:
        """Registered names whose name or an alias equals ``name`` ignoring case."""
        folded = name.casefold()
        found = {n for n in (*self.entries, *self.unusable) if n.casefold() == folded}
        found |= {target for alias, target in self.aliases.items() if alias.casefold() == folded}
        return sorted(found)

    @property
    def namespaces(self) -> set[str]:
        """The name prefixes the built-in catalog reserves (``pto`` for ``pto_*``)."""
        return {s.namespace for s in self.catalog.values() if s.namespace}

    def suggestions(self, name: str, n: int = 4) -> list[str]:
        """What an unknown ``name`` most likely meant, across every namespace and ignoring
        case: a name whose namespace-less form is ``name`` first (``adan`` -> ``pto_adan``),
        then names that start with it, then close spellings."""
        word = name.casefold()
        scored: dict[str, float] = {}
        for entry in self.entries.values():
            spec = entry.spec
            for candidate, shown in ((spec.name, spec.name), (spec.bare_name, spec.name),
                                     *((a, a) for a in spec.aliases)):
                score = _likeness(word, candidate.casefold())
                if score > scored.get(shown, 0.0):
                    scored[shown] = score
        ranked = sorted(scored, key=lambda s: (-scored[s], len(s), s))
        return [s for s in ranked if scored[s] >= _CUTOFF][:n]

    def get(self, name: str) -> RegisteredOptimizer:
        """The registered optimizer for a name or alias, or a precise error."""
        if not isinstance(name, str):
            raise OptimArgsTypeError(
                f"an optimizer name is a str such as 'adamw_torch', got "
                f"{type(name).__name__} {shorten(repr(name))}; see `optimhub list`"
            )
        matches = [] if name in self.entries or name in self.aliases else self._case_matches(name)
        if len(matches) > 1:
            raise UnknownOptimizerError(
                name, [], f" Ignoring case, it matches {', '.join(map(repr, matches))}: "
                "give the exact spelling.", suggestions=matches)
        key = self.canonical(name)
        if key in self.unusable:
            failure = self.unusable[key]
            raise PluginLoadError(
                f"optimizer {name!r} cannot be used: {failure}. "
                f"{_REMEDY.get(failure.stage, _REMEDY['import'])}"
            ) from failure.error
        if key not in self.entries:
            raise UnknownOptimizerError(name, [], self._load_note(),
                                        suggestions=self.suggestions(name))
        return self.entries[key]

    def _load_note(self) -> str:
        """Plugins that failed before registering everything may have provided the name."""
        failed = [f for f in self.failures if f.stage in ("import", "validate", "register")]
        if not failed:
            return ""
        return " Note: " + "; ".join(str(f) for f in failed) + " (it may provide this name)."

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __iter__(self) -> Iterator[RegisteredOptimizer]:
        return iter(self.entries[name] for name in self.names())

    # ---- registration (used by Register) --------------------------------------------------
    def claim(self, name: str, plugin: PluginInfo) -> PluginLoadError | None:
        """Whether ``plugin`` may register ``name``; an error naming both owners if not."""
        owner_name = self.canonical(name)
        owner = self.entries.get(owner_name)
        if owner is None and name in self.unusable:
            return None
        if owner is not None:
            return PluginLoadError(
                f"optimizer name {name!r} is claimed by both {owner.plugin.describe()} and "
                f"{plugin.describe()}. Block one of them with "
                f"OPTIMHUB_BLOCK_PLUGINS={plugin.name} (or ={owner.plugin.name})."
            )
        return None

    def inherit_builders(self) -> None:
        """A derived catalog name (``base = ...``) whose plugin registered no builder of its
        own gets its base's builder and estimator: the core calls the builder once per
        parameter for a layerwise name, and a preset only changes option defaults."""
        for name in self.catalog:
            self._inherit(name)

    def _inherit(self, name: str) -> RegisteredOptimizer | None:
        if name in self.entries:
            return self.entries[name]
        spec = self.catalog[name]
        if spec.base is None or name in self.unusable:
            return None
        base = self._inherit(spec.base)
        if base is None or base.plugin.name != spec.plugin:
            return None
        entry = RegisteredOptimizer(spec, base.builder, base.plugin, base.estimator)
        self.entries[name] = entry
        for alias in spec.aliases:
            self.aliases[alias] = name
        return entry

    def mark_unusable(self, names: tuple[str, ...], failure: PluginFailure) -> None:
        for name in names:
            self.entries.pop(name, None)
            self.unusable[name] = failure


#: How alike two names must be (0..1) to be suggested: difflib's usual cutoff.
_CUTOFF = 0.6


def _likeness(word: str, candidate: str) -> float:
    """3 for the same name, 2+ for a name that starts with the word (what was typed is a
    prefix), else difflib's similarity ratio."""
    if word == candidate:
        return 3.0
    ratio = difflib.SequenceMatcher(None, word, candidate).ratio()
    if len(word) >= 3 and candidate.startswith(word):
        return 2.0 + ratio
    return ratio


_REMEDY = {
    "import": "Fix or reinstall that plugin's distribution, or block it with "
    "OPTIMHUB_BLOCK_PLUGINS; `optimhub plugins` shows the full error.",
    "register": "Fix or reinstall that plugin's distribution, or block it with "
    "OPTIMHUB_BLOCK_PLUGINS; `optimhub plugins` shows the full error.",
    "conflict": "Block one of the two plugins with OPTIMHUB_BLOCK_PLUGINS=<plugin name>.",
    "blocked": "Remove the plugin's name from OPTIMHUB_BLOCK_PLUGINS to use it.",
    "missing-builder": "This is a bug in that plugin: every catalog entry needs a builder.",
}


class Register:
    """The object a plugin's ``optimhub_register_optimizers(register)`` hook calls.

    Registrations are staged and only committed when the hook returns normally, so a
    plugin that raises half-way leaves nothing behind.
    """

    def __init__(self, registry: Registry, plugin: PluginInfo) -> None:
        self._registry = registry
        self.plugin = plugin
        self._staged: dict[str, RegisteredOptimizer] = {}
        self.conflicts: list[tuple[str, PluginLoadError]] = []

    def optimizer(
        self,
        spec: OptimizerSpec | Mapping[str, Any],
        builder: Builder,
        *,
        estimator: Estimator | None = None,
    ) -> None:
        """Register a new optimizer: its spec (object or registry.toml-style mapping), the
        callable that builds it and, optionally, the one that estimates its memory
        (``EstimateRequest -> StateEstimate``, see ``optimhub.estimate``)."""
        if isinstance(spec, Mapping):
            name = spec.get("name")
            if not isinstance(name, str):
                raise CatalogError(
                    f"{self.plugin.describe()}: a spec mapping needs a 'name' string"
                )
            body = {k: v for k, v in spec.items() if k != "name"}
            body.setdefault("plugin", self.plugin.name)
            spec = spec_from_mapping(name, body, where=f"{self.plugin.describe()}: {name!r}")
        if not isinstance(spec, OptimizerSpec):
            raise CatalogError(
                f"{self.plugin.describe()} registered {type(spec).__name__} {spec!r}; "
                "expected an optimhub.OptimizerSpec or a mapping"
            )
        if spec.name in self._registry.catalog:
            raise CatalogError(
                f"{self.plugin.describe()}: {spec.name!r} is a built-in catalog name; "
                "choose another name"
            )
        namespace = reserved_namespace(spec.name, self._registry.namespaces)
        if namespace is not None:
            raise CatalogError(
                f"{self.plugin.describe()}: {spec.name!r} is in the namespace {namespace!r}, "
                f"which the built-in catalog reserves for one backend (names "
                f"{namespace + '_*'!r}); choose a name without that prefix"
            )
        check_spec(spec, where=f"{self.plugin.describe()}: {spec.name!r}")
        spec = dataclasses.replace(spec, plugin=self.plugin.name)
        self._stage(spec, builder, estimator)

    def builder(
        self, name: str, builder: Builder, *, estimator: Estimator | None = None
    ) -> None:
        """Attach a builder (and optionally a memory estimator) to a spec of the built-in
        catalog that names this plugin."""
        spec = self._registry.catalog.get(name)
        if spec is None:
            raise CatalogError(
                f"{self.plugin.describe()} registered a builder for {name!r}, which is not in "
                "registry.toml; add a catalog entry or use register.optimizer(spec, builder)"
            )
        if spec.plugin != self.plugin.name:
            raise CatalogError(
                f"{self.plugin.describe()} registered a builder for {name!r}, but registry.toml "
                f"assigns it to plugin {spec.plugin!r}"
            )
        self._stage(spec, builder, estimator)

    def catalog_names(self) -> list[str]:
        """The built-in catalog's names assigned to this plugin, for a plugin whose names
        are generated data (a library of a hundred optimizers behind one builder)."""
        return sorted(n for n, s in self._registry.catalog.items()
                      if s.plugin == self.plugin.name)

    def _stage(
        self, spec: OptimizerSpec, builder: Builder, estimator: Estimator | None = None
    ) -> None:
        if not callable(builder):
            raise CatalogError(
                f"{self.plugin.describe()}: the builder for {spec.name!r} is not callable "
                f"({builder!r})"
            )
        if estimator is not None and not callable(estimator):
            raise CatalogError(
                f"{self.plugin.describe()}: the estimator for {spec.name!r} is not callable "
                f"({estimator!r})"
            )
        if spec.name in self._staged:
            raise CatalogError(
                f"{self.plugin.describe()} registered {spec.name!r} twice; each name needs "
                "exactly one builder"
            )
        for claimed in (spec.name, *spec.aliases):
            error = self._registry.claim(claimed, self.plugin)
            if error is not None:
                self.conflicts.append((claimed, error))
                return
        self._staged[spec.name] = RegisteredOptimizer(spec, builder, self.plugin, estimator)

    @property
    def staged_names(self) -> tuple[str, ...]:
        return tuple(self._staged)

    def commit(self) -> None:
        for name, entry in self._staged.items():
            self._registry.entries[name] = entry
            for alias in entry.spec.aliases:
                self._registry.aliases[alias] = name

