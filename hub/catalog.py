"""registry.toml -> ``OptimizerSpec`` objects, with the file itself validated.

The catalog is data, never code: it is parsed with ``tomllib`` and every field is checked
against the schema below, so a typo in registry.toml (or in a third-party plugin's spec
mapping) is an error naming the entry and the field, raised at load, not a surprise at
the first ``step()``.

Layout of the file::

    schema_version = 1
    [backends.<backend>]          # shared by the optimizers of one package
    plugin = "..."                # the built-in plugin module optimhub.plugins.<plugin>
    distribution = "..."          # what pip installs
    import_name = "..."           # what Python imports (checked before building)
    extra = "..."                 # pip install "optimhub[<extra>]"; omit when none is needed
    namespace = "..."             # optional: every name of this backend is "<namespace>_..."
    [optimizers.<name>]
    backend = "<backend>"
    summary = "..."               # plus optional fields, see _OPTIMIZER_FIELDS
    [optimizers.<name>.args.<key>]  # or an inline table: one typed optim_args option
    type = "float"
    doc = "..."                   # plus default, bounds, choices...; example: a value the
                                  # `optimhub info` snippets write for an option the backend
                                  # needs and has no default for
    [option_sets.<set>.<key>]     # options shared by several entries: option_sets = ["<set>"]

Each fact is stated once. An entry with ``base = "<name>"`` (a layerwise mode, a preset, a
precision variant) inherits every field of its base except ``summary``, ``aliases`` and
``base`` itself, and states only what differs; its ``args`` tables are merged key by key
and field by field over the base's (``rank = { default = 1 }`` changes one default), and
its ``fixed`` keywords over the base's. ``option_sets`` bring shared options into entries
that are not derived from each other (the same projection options on GaLore's three
classes); the entry's own ``args`` are merged over them the same way.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import CatalogError, CatalogTypeError, OptimArgsError, closest
from .optim_args import coerce_value
from .selectors import Selector
from .spec import (
    ARG_TYPES,
    HYPERPARAMETERS,
    ROUTE_ARGUMENT_KEYS,
    ArgSpec,
    Capability,
    OptimizerSpec,
    RouteTemplate,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "check_spec",
    "load_catalog",
    "parse_catalog",
    "reserved_namespace",
    "spec_from_mapping",
]

SCHEMA_VERSION = 1
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CATALOG_RESOURCE = "registry.toml"

# field -> (accepted Python types, required?)
_BACKEND_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "plugin": ((str,), True),
    "distribution": ((str,), True),
    "import_name": ((str,), True),
    "extra": ((str,), False),
    "min_version": ((str,), False),
    "install_hint": ((str,), False),
    "namespace": ((str,), False),
}
_OPTIMIZER_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "summary": ((str,), True),
    "backend": ((str,), False),
    "plugin": ((str,), False),
    "distribution": ((str,), False),
    "import_name": ((str,), False),
    "extra": ((str,), False),
    "min_version": ((str,), False),
    "install_hint": ((str,), False),
    "aliases": ((list,), False),
    "capabilities": ((list,), False),
    "hyperparameters": ((list,), False),
    "args": ((dict,), False),
    "fixed": ((dict,), False),
    "base": ((str,), False),
    "paper": ((str,), False),
    "state_bytes_per_param": ((int, float), False),
    "without_cuda": ((dict,), False),
    "constructor_weight_decay": ((bool,), False),
    "routes": ((list,), False),
    "namespace": ((str,), False),
}
_ROUTE_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "select": ((str, list), True),
    "optimizer": ((str,), True),
}
_ARG_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "type": ((str,), True),
    "doc": ((str,), True),
    "default": ((object,), False),
    "choices": ((list,), False),
    "nullable": ((bool,), False),
    "minimum": ((int, float), False),
    "maximum": ((int, float), False),
    "exclusive_minimum": ((int, float), False),
    "exclusive_maximum": ((int, float), False),
    "length": ((int,), False),
    "target_group": ((bool,), False),
    "backend_key": ((str,), False),
    "route": ((str,), False),
    "example": ((object,), False),
}
# Fields an optimizer entry inherits from its [backends.X] table.
_INHERITED = ("plugin", "distribution", "import_name", "extra", "min_version", "install_hint",
              "namespace")
# Fields a derived entry does not inherit from its base: what makes it another name.
_NOT_FROM_BASE = ("summary", "aliases", "base")
# Fields merged key by key over the base's rather than replaced.
_MERGED = ("fixed", "without_cuda")


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, OptimizerSpec]:
    """The built-in catalog, read once from the registry.toml shipped inside the package."""
    source = resources.files(__package__).joinpath(CATALOG_RESOURCE)
    return parse_catalog(source.read_text(encoding="utf-8"), origin=CATALOG_RESOURCE)


def parse_catalog(text: str, *, origin: str = "<catalog>") -> dict[str, OptimizerSpec]:
    """Parse and validate catalog text; every error names ``origin`` and the entry."""
    if not isinstance(text, str):
        raise CatalogTypeError(
            f"{origin}: catalog text must be a str (decode bytes first), got "
            f"{type(text).__name__}"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{origin}: not valid TOML: {exc}") from exc
    _check_fields(data, {"schema_version": ((int,), True), "backends": ((dict,), False),
                         "option_sets": ((dict,), False), "optimizers": ((dict,), True)},
                  where=origin)
    if data["schema_version"] != SCHEMA_VERSION:
        raise CatalogError(
            f"{origin}: schema_version {data['schema_version']!r} is not supported "
            f"(this optimhub reads version {SCHEMA_VERSION})"
        )
    backends = data.get("backends", {})
    for backend_name, backend in backends.items():
        _check_table(backend, where=f"{origin}: [backends.{backend_name}]")
        _check_fields(backend, _BACKEND_FIELDS, where=f"{origin}: [backends.{backend_name}]")
    option_sets = data.get("option_sets", {})
    for set_name, options in option_sets.items():
        _check_table(options, where=f"{origin}: [option_sets.{set_name}]")
    entries = data["optimizers"]
    for name, entry in entries.items():
        _check_table(entry, where=f"{origin}: [optimizers.{name}]")
    specs: dict[str, OptimizerSpec] = {}
    for name in entries:
        where = f"{origin}: [optimizers.{name}]"
        resolved = _resolve_entry(name, entries, option_sets, origin=origin, chain=())
        merged = _inherit_backend(resolved, backends, where=where)
        specs[name] = spec_from_mapping(name, merged, where=where)
    _check_cross_references(specs, origin=origin)
    return specs


def spec_from_mapping(
    name: str, entry: Mapping[str, Any], *, where: str | None = None
) -> OptimizerSpec:
    """Build one validated spec from a registry.toml-style mapping.

    Third-party plugins may use this too: the mapping format is the catalog's entry format
    with the backend fields (plugin, distribution, import_name, extra) given inline.
    """
    where = where or f"optimizer {name!r}"
    _check_table(entry, where=where)
    _check_fields(entry, _OPTIMIZER_FIELDS, where=where)
    for required in ("plugin", "distribution", "import_name"):
        if required not in entry:
            raise CatalogError(
                f"{where}: no {required!r}; give it in the entry or through its "
                "'backend' table ([backends.<name>])"
            )
    args = {
        key: _arg_from_mapping(name, key, value, where=f"{where}.args.{key}")
        for key, value in entry.get("args", {}).items()
    }
    try:
        return OptimizerSpec(
            name=_identifier(name, where=where),
            summary=entry["summary"],
            plugin=entry["plugin"],
            distribution=entry["distribution"],
            import_name=entry["import_name"],
            extra=entry.get("extra") or None,
            min_version=entry.get("min_version"),
            install_hint=entry.get("install_hint"),
            aliases=tuple(_identifier(a, where=f"{where}.aliases") for a in
                          _strings(entry.get("aliases", []), where=f"{where}.aliases")),
            capabilities=_capabilities(entry.get("capabilities", []), where=where),
            hyperparameters=_hyperparameters(entry, where=where),
            args=args,
            fixed=dict(entry.get("fixed", {})),
            base=entry.get("base"),
            paper=entry.get("paper"),
            state_bytes_per_param=entry.get("state_bytes_per_param"),
            without_cuda=dict(entry.get("without_cuda", {})),
            constructor_weight_decay=entry.get("constructor_weight_decay", False),
            routes=_routes(entry.get("routes", []), where=where),
            namespace=_namespace(name, entry.get("namespace"), where=where),
        )
    except ValueError as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"{where}: {exc}") from exc


def check_spec(spec: OptimizerSpec, *, where: str) -> None:
    """The checks a spec built in Python skipped: arg keys match names, defaults are valid."""
    for key, arg in spec.args.items():
        if key != arg.name:
            raise CatalogError(f"{where}: args key {key!r} holds the option named {arg.name!r}")
        _option_name(key, where=f"{where}.args")
        _check_arg_consistency(spec.name, arg, where=f"{where}.args.{key}")
        if arg.has_default:
            _typed_default(spec.name, arg, arg.default, where=f"{where}.args.{key}")


def _resolve_entry(
    name: str,
    entries: Mapping[str, Any],
    option_sets: Mapping[str, Any],
    *,
    origin: str,
    chain: tuple[str, ...],
) -> dict[str, Any]:
    """An entry with its option sets expanded and its base's fields inherited."""
    where = f"{origin}: [optimizers.{name}]"
    if name in chain:
        raise CatalogError(f"{where}: base chain loops: {' -> '.join((*chain, name))}")
    entry = entries[name]
    inherited: dict[str, Any] = {}
    base = entry.get("base")
    if base is not None:
        if not isinstance(base, str) or base not in entries:
            raise CatalogError(f"{where}: base {base!r} is not in the catalog")
        parent = _resolve_entry(base, entries, option_sets, origin=origin,
                                chain=(*chain, name))
        inherited = {k: v for k, v in parent.items() if k not in _NOT_FROM_BASE}
    resolved = {**inherited, **{k: v for k, v in entry.items() if k != "option_sets"}}
    for key in _MERGED:
        if key in inherited and key in entry:
            _check_table(entry[key], where=f"{where}.{key}")
            resolved[key] = {**inherited[key], **entry[key]}
    args = dict(inherited.get("args", {}))
    for set_name in _strings(entry.get("option_sets", []), where=f"{where}.option_sets"):
        if set_name not in option_sets:
            raise CatalogError(
                f"{where}: option set {set_name!r} has no [option_sets.{set_name}] table "
                f"(known: {', '.join(sorted(option_sets)) or 'none'})"
            )
        args = _merge_args(args, option_sets[set_name], where=f"{where}.option_sets")
    if "args" in entry:
        _check_table(entry["args"], where=f"{where}.args")
        args = _merge_args(args, entry["args"], where=f"{where}.args")
    if args:
        resolved["args"] = args
    return resolved


def _merge_args(
    inherited: Mapping[str, Any], given: Mapping[str, Any], *, where: str
) -> dict[str, Any]:
    """Options merged key by key; an option given again is merged field by field."""
    merged = dict(inherited)
    for key, table in given.items():
        _check_table(table, where=f"{where}.{key}")
        merged[key] = {**inherited.get(key, {}), **table}
    return merged


def _inherit_backend(
    entry: Mapping[str, Any], backends: Mapping[str, Any], *, where: str
) -> dict[str, Any]:
    merged = dict(entry)
    backend_name = entry.get("backend")
    if backend_name is None:
        return merged
    if backend_name not in backends:
        raise CatalogError(
            f"{where}: backend {backend_name!r} has no [backends.{backend_name}] table "
            f"(known backends: {', '.join(sorted(backends)) or 'none'})"
        )
    for key in _INHERITED:
        if key in backends[backend_name]:
            merged.setdefault(key, backends[backend_name][key])
    return merged


def _arg_from_mapping(optimizer: str, key: str, value: Any, *, where: str) -> ArgSpec:
    _check_table(value, where=where)
    _check_fields(value, _ARG_FIELDS, where=where)
    if value["type"] not in ARG_TYPES:
        raise CatalogError(
            f"{where}: unknown type {value['type']!r}; use one of {', '.join(ARG_TYPES)}"
        )
    fields = {k: v for k, v in value.items() if k not in ("default", "example")}
    if "choices" in fields:
        fields["choices"] = tuple(fields["choices"])
    try:
        arg = ArgSpec(name=_option_name(key, where=where), **fields)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    _check_arg_consistency(optimizer, arg, where=where)
    typed = {field: _typed_default(optimizer, arg, value[field], where=f"{where}.{field}")
             for field in ("default", "example") if field in value}
    return ArgSpec(**{**arg.__dict__, **typed}) if typed else arg


def _option_name(key: Any, *, where: str) -> str:
    """An option must be writable in optim_args text, whose keys are ASCII identifiers."""
    if not isinstance(key, str) or not _OPTION_NAME.fullmatch(key):
        raise CatalogError(
            f"{where}: option name {key!r} cannot be written in optim_args; use ASCII "
            "letters, digits and _ (not starting with a digit)"
        )
    return key


def _check_arg_consistency(optimizer: str, arg: ArgSpec, *, where: str) -> None:
    """Bounds and choices that would make the option refuse (or accept) everything."""
    bounds = {k: getattr(arg, k) for k in
              ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum")}
    for key, bound in bounds.items():
        if bound is not None and not math.isfinite(bound):
            raise CatalogError(f"{where}: {key} = {bound!r} is not a finite number")
    low = [b for b in (bounds["minimum"], bounds["exclusive_minimum"]) if b is not None]
    high = [b for b in (bounds["maximum"], bounds["exclusive_maximum"]) if b is not None]
    if low and high and max(low) > min(high):
        raise CatalogError(
            f"{where}: the minimum ({max(low)!r}) is above the maximum ({min(high)!r}), so no "
            "value is allowed"
        )
    if arg.choices is not None:
        if not arg.choices:
            raise CatalogError(f"{where}: choices is empty, so no value is allowed")
        for choice in arg.choices:
            _typed_default(optimizer, dataclasses.replace(arg, choices=None), choice,
                           where=f"{where}: choices")


def _typed_default(optimizer: str, arg: ArgSpec, default: Any, *, where: str) -> Any:
    """A default must itself be a valid value of its option (TOML has no None: use "none")."""
    try:
        return coerce_value(arg, default, optimizer=optimizer)
    except OptimArgsError as exc:
        raise CatalogError(f"{where}: default {default!r} is not valid: {exc}") from exc


def _check_table(value: Any, *, where: str) -> None:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{where}: expected a table, got {type(value).__name__} {value!r}")


def _check_fields(
    table: Mapping[str, Any], schema: Mapping[str, tuple[tuple[type, ...], bool]], *, where: str
) -> None:
    for key, value in table.items():
        if key not in schema:
            near = closest(key, schema)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise CatalogError(
                f"{where}: unknown field {key!r}{hint}; allowed: {', '.join(schema)}"
            )
        types, _ = schema[key]
        if types != (object,) and (not isinstance(value, types) or (isinstance(value, bool)
                                   and bool not in types)):
            wanted = " or ".join(t.__name__ for t in types)
            raise CatalogError(
                f"{where}: field {key!r} must be {wanted}, got {type(value).__name__} {value!r}"
            )
    for key, (_, required) in schema.items():
        if required and key not in table and key not in _INHERITED:
            raise CatalogError(f"{where}: missing required field {key!r}")


def _strings(values: list[Any], *, where: str) -> list[str]:
    for value in values:
        if not isinstance(value, str):
            raise CatalogError(f"{where}: expected strings, got {value!r}")
    return values


def _capabilities(values: list[Any], *, where: str) -> frozenset[Capability]:
    known = {c.value: c for c in Capability}
    result = set()
    for value in _strings(values, where=f"{where}.capabilities"):
        if value not in known:
            near = closest(value, known)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise CatalogError(
                f"{where}: unknown capability {value!r}{hint}; known: {', '.join(known)}"
            )
        result.add(known[value])
    return frozenset(result)


def _hyperparameters(entry: Mapping[str, Any], *, where: str) -> frozenset[str]:
    values = _strings(entry.get("hyperparameters", list(HYPERPARAMETERS)),
                      where=f"{where}.hyperparameters")
    for value in values:
        if value not in HYPERPARAMETERS:
            raise CatalogError(
                f"{where}: unknown hyperparameter {value!r}; allowed: {', '.join(HYPERPARAMETERS)}"
            )
    return frozenset(values)


def _routes(values: list[Any], *, where: str) -> tuple[RouteTemplate, ...]:
    """A routed entry's routes: each a table with a unique name, selector terms and an
    optimizer name (checked against the catalog in ``_check_routes``)."""
    templates: list[RouteTemplate] = []
    for index, value in enumerate(values):
        at = f"{where}.routes[{index}]"
        _check_table(value, where=at)
        _check_fields(value, _ROUTE_FIELDS, where=at)
        terms = value["select"] if isinstance(value["select"], list) else [value["select"]]
        try:
            select = Selector.parse(_strings(terms, where=f"{at}.select")).terms
        except OptimArgsError as exc:
            raise CatalogError(f"{at}: {exc}") from exc
        name = _identifier(value["name"], where=f"{at}.name")
        if any(t.name == name for t in templates):
            raise CatalogError(f"{at}: route name {name!r} is used twice")
        templates.append(RouteTemplate(name, select, value["optimizer"]))
    return tuple(templates)


def _identifier(name: Any, *, where: str) -> str:
    if not isinstance(name, str) or not name.replace("_", "a").replace("-", "a").isalnum():
        raise CatalogError(
            f"{where}: {name!r} is not a valid name (letters, digits, '_' and '-' only)"
        )
    return name


def _namespace(name: str, namespace: str | None, *, where: str) -> str | None:
    """A namespace is a plain identifier, and the name must carry it as its prefix."""
    if namespace is None:
        return None
    if not _OPTION_NAME.fullmatch(namespace) or namespace.endswith("_"):
        raise CatalogError(
            f"{where}: namespace {namespace!r} is not valid (letters, digits and '_', not "
            "ending in '_')"
        )
    if not name.startswith(f"{namespace}_"):
        raise CatalogError(
            f"{where}: {name!r} belongs to namespace {namespace!r}, so its name must start "
            f"with {namespace + '_'!r}"
        )
    return namespace


def reserved_namespace(name: str, namespaces: Iterable[str]) -> str | None:
    """The namespace whose prefix ``name`` carries (``pto_x`` -> ``pto``), or None: a name
    in a namespace belongs to that namespace's backend alone."""
    for namespace in namespaces:
        if name.startswith(f"{namespace}_"):
            return namespace
    return None


def _check_cross_references(specs: Mapping[str, OptimizerSpec], *, origin: str) -> None:
    namespaces = {s.namespace for s in specs.values() if s.namespace}
    for spec in specs.values():
        claimed = reserved_namespace(spec.name, namespaces)
        if claimed is not None and spec.namespace != claimed:
            raise CatalogError(
                f"{origin}: [optimizers.{spec.name}] starts with {claimed + '_'!r}, the "
                f"namespace of another backend; rename it"
            )
    seen: dict[str, str] = {}
    for spec in specs.values():
        if spec.base is not None and spec.base not in specs:
            raise CatalogError(
                f"{origin}: [optimizers.{spec.name}] base {spec.base!r} is not in the catalog"
            )
        for alias in spec.aliases:
            owner = seen.get(alias) or (alias if alias in specs else None)
            if owner is not None:
                raise CatalogError(
                    f"{origin}: alias {alias!r} of {spec.name!r} is already the name or "
                    f"alias of {owner!r}"
                )
            seen[alias] = spec.name
        if spec.routes:
            _check_routes(spec, specs, where=f"{origin}: [optimizers.{spec.name}]")


def _check_routes(spec: OptimizerSpec, specs: Mapping[str, OptimizerSpec], *, where: str
                  ) -> None:
    """Each route names a plain catalog optimizer; each option reaches one route (its
    ``route`` field, or the route whose optimizer is the entry's base) and is a route
    argument or an option of that route's optimizer."""
    from_base = [t for t in spec.routes if t.optimizer == spec.base]
    for template in spec.routes:
        target = specs.get(template.optimizer)
        if target is None:
            raise CatalogError(
                f"{where}: route {template.name!r} names optimizer {template.optimizer!r}, "
                "which is not in the catalog"
            )
        if target.routes:
            raise CatalogError(
                f"{where}: route {template.name!r} names {template.optimizer!r}, which is "
                "itself routed; write its routes here instead"
            )
    names = {t.name: t for t in spec.routes}
    for arg in spec.args.values():
        if arg.route is not None and arg.route not in names:
            raise CatalogError(
                f"{where}.args.{arg.name}: route {arg.route!r} is not one of this entry's "
                f"routes ({', '.join(names)})"
            )
        if arg.route is None and len(from_base) != 1:
            raise CatalogError(
                f"{where}.args.{arg.name}: give it a 'route' (no single route uses the base "
                f"{spec.base!r}, where options without one go)"
            )
        template = names[arg.route] if arg.route is not None else from_base[0]
        key = arg.key
        inner = specs[template.optimizer]
        if key not in ROUTE_ARGUMENT_KEYS and key not in inner.args:
            raise CatalogError(
                f"{where}.args.{arg.name}: {key!r} is neither a route argument "
                f"({', '.join(ROUTE_ARGUMENT_KEYS)}) nor an option of {inner.name!r}"
            )
