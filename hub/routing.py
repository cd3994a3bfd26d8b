"""Route sets: which optimizer steps which parameters, in Python and as text.

A route set is an ordered list of routes, each a selector (:mod:`optimhub.selectors`) and
a catalog optimizer with its own arguments::

    Route("matrix, conv", "muon_torch", lr=0.02, optim_args={"momentum": 0.95})
    Route("*", "adamw_torch", lr=3e-4, weight_decay=0.1)

The first route that selects a parameter takes it; every trainable parameter must be
taken (a final ``*`` route is the usual catch-all) and every route must take something
(torchtitan's exactly-once rule, checked in :mod:`optimhub.route_plan`).

The same set as text, for ``TrainingArguments``-style configuration, the command line and
``create_optimizer``'s name argument (a name is an identifier, so text holding ``->``
can never be mistaken for one)::

    matrix, conv -> muon_torch(lr=0.02,momentum=0.95); * -> adamw_torch(lr=0.0003,weight_decay=0.1)

The grammar is in :mod:`optimhub.route_text`; a pattern holding ``, ; ( ) =`` or spaces
is quoted: ``re:'.*(attn|mlp).*'``. Inside the parentheses, the keys of
:data:`ROUTE_ARGUMENTS` (HF's ``TrainingArguments`` vocabulary: ``lr``/``learning_rate``,
``weight_decay``, ``betas``, ``adam_epsilon``, ...) are the route's arguments; every other
key is an option of the route's optimizer (its ``optim_args``). ``optim_args='k=v'`` is
accepted too, and is how an option whose name is also an argument is written.
``str(route_set)`` writes the canonical text, which parses back to an equal route set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import OptimArgsError, OptimArgsTypeError, RoutingError, closest, shorten
from .optim_args import coerce_value, format_optim_args, resolve_optim_args, split_optim_args
from .param_groups import WEIGHT_DECAY_POLICIES
from .plugin_host import get_registry
from .route_text import (
    ARROW,
    RouteText,
    format_term,
    parse_route_text,
    quote,
    split_terms,
)
from .selectors import Selector
from .spec import ROUTE_ARGUMENT_KEYS, ArgSpec, Capability, OptimizerSpec

__all__ = [
    "ROUTE_ARGUMENTS",
    "Route",
    "RouteSet",
    "matrix_only_routes",
]

#: The fallback of :func:`matrix_only_routes`: what takes everything a matrix-only
#: optimizer cannot.
DEFAULT_FALLBACK = "adamw_torch"

#: A route's own arguments, typed (the keys of its text form that are not optim_args).
#: The HF ``TrainingArguments`` names, plus ``lr``/``betas`` as short forms and
#: ``lr_scale`` (a factor on the learning rate the route would otherwise get).
ROUTE_ARGUMENTS: Mapping[str, ArgSpec] = MappingProxyType({
    a.name: a for a in (
        ArgSpec("learning_rate", "float", "the route's learning rate", exclusive_minimum=0.0),
        ArgSpec("lr", "float", "short for learning_rate", exclusive_minimum=0.0),
        ArgSpec("lr_scale", "float", "a factor on the learning rate it would get",
                exclusive_minimum=0.0),
        ArgSpec("weight_decay", "float", "the route's weight decay", minimum=0.0),
        ArgSpec("betas", "float_tuple", "(adam_beta1, adam_beta2)", length=2, minimum=0.0,
                exclusive_maximum=1.0),
        ArgSpec("adam_beta1", "float", "first-moment decay", minimum=0.0,
                exclusive_maximum=1.0),
        ArgSpec("adam_beta2", "float", "second-moment decay", minimum=0.0,
                exclusive_maximum=1.0),
        ArgSpec("adam_epsilon", "float", "Adam's epsilon", exclusive_minimum=0.0),
        ArgSpec("weight_decay_policy", "str", "which parameters decay",
                choices=WEIGHT_DECAY_POLICIES),
        ArgSpec("layer_decay", "float", "timm's layer-wise lr decay", exclusive_minimum=0.0,
                maximum=1.0),
        ArgSpec("layerwise", "bool", "step each parameter inside backward"),
        ArgSpec("optim_target_modules", "str", "the low-rank targets (a regex)"),
        ArgSpec("warmup_steps", "float", "an optimizer-side warmup", minimum=0.0),
        ArgSpec("max_steps", "int", "total steps (for a warmup ratio)"),
        ArgSpec("optim_args", "str", "the optimizer's options as text"),
    )
})
#: Route arguments that only the Python form can carry (no text form).
_PYTHON_ONLY_ARGUMENTS = ("param_group_rules",)
_SHORT = {"lr": "learning_rate"}


# ============================================================================ one route
class Route:
    """One route: a selector, the catalog optimizer that steps what it selects, and that
    optimizer's arguments.

    ``select`` is a selector or its terms (``"matrix, conv"``, ``["re:.*attn.*"]``,
    ``"*"``). ``optim_args`` (text or dict) are the optimizer's options; ``arguments``
    are the route's own training hyperparameters in HF's vocabulary (``lr`` /
    ``learning_rate``, ``weight_decay``, ``betas``, ``adam_epsilon``,
    ``weight_decay_policy``, ``layer_decay``, ``layerwise``...); what a route leaves unset
    comes from the top-level arguments. ``lr_scale`` multiplies the learning rate the
    route would get. ``name`` labels it (default: its optimizer's name).

    Everything is checked here, against the catalog: an unknown optimizer, an unknown
    option or argument, a value of the wrong type.
    """

    __slots__ = ("_key", "arguments", "name", "optimizer", "options", "select")

    def __init__(self, select: str | Iterable[str] | Selector, optimizer: str, *,
                 name: str | None = None, optim_args: str | Mapping[str, Any] | None = None,
                 **arguments: Any) -> None:
        self.select = Selector.parse(_terms(select))
        spec = _route_spec(optimizer)
        self.optimizer = spec.name
        if name is not None and not (isinstance(name, str) and name.isidentifier()):
            raise RoutingError(
                f"a route name is an identifier (letters, digits, _), got {name!r}"
            )
        self.name = name
        typed = _typed_arguments(arguments, spec)
        nested = typed.pop("optim_args", None)
        if nested is not None and optim_args is not None:
            raise OptimArgsError(
                f"route to {spec.name!r}: optim_args given twice (as a keyword and inside "
                "the arguments); give them once"
            )
        self.options = MappingProxyType(_typed_options(spec, optim_args
                                                       if nested is None else nested))
        self.arguments = MappingProxyType(typed)
        self._key = (self.select, self.optimizer, self.name,
                     tuple(sorted(self.arguments.items(), key=lambda kv: kv[0])),
                     tuple(sorted(self.options.items(), key=lambda kv: kv[0])))

    @property
    def spec(self) -> OptimizerSpec:
        """The spec of the route's optimizer."""
        return _route_spec(self.optimizer)

    @property
    def lr_scale(self) -> float | None:
        return self.arguments.get("lr_scale")

    def to_text(self, label: str | None = None) -> str:
        """The route in the text grammar (with ``label =`` in front when given)."""
        terms = ", ".join(format_term(t) for t in self.select.terms)
        entries = _text_entries(self)
        body = f"({format_optim_args(entries)})" if entries else ""
        prefix = f"{label} = " if label else ""
        return f"{prefix}{terms} {ARROW} {self.optimizer}{body}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and self._key == other._key

    def __hash__(self) -> int:
        return hash(_hashable(self._key))

    def __repr__(self) -> str:
        return f"Route({self.to_text(self.name)!r})"


def _terms(select: str | Iterable[str] | Selector) -> str | Iterable[str] | Selector:
    """A comma-separated str is a list of terms (``"matrix, conv"``), quotes respected."""
    if isinstance(select, str) and ("," in select or "'" in select or '"' in select):
        return split_terms(select)
    return select


def _route_spec(name: object) -> OptimizerSpec:
    """The spec of a route's optimizer; refused where it cannot be a route."""
    if not isinstance(name, str):
        raise OptimArgsTypeError(
            f"a route's optimizer is a catalog name (str), got {type(name).__name__} {name!r}"
        )
    spec = get_registry().get(name).spec
    if spec.routed:
        raise RoutingError(
            f"route optimizer {name!r} is itself routed (its routes: "
            f"{', '.join(t.name for t in spec.routes)}); a route takes a plain optimizer. "
            "Write its routes into this route set instead"
        )
    if spec.has(Capability.FUSED_BACKWARD):
        raise RoutingError(
            f"optimizer {name!r} cannot be a route: it is fused-backward (it replaces "
            "loss.backward() and updates every parameter of the model itself), so it cannot "
            "share a model with other optimizers. Train it alone"
        )
    if spec.has(Capability.CLOSURE_REQUIRED):
        raise RoutingError(
            f"optimizer {name!r} cannot be a route: it needs step(closure) to re-evaluate "
            "the loss, which one closure shared by several optimizers cannot give it. "
            "Train it alone"
        )
    return spec


def _typed_arguments(arguments: Mapping[str, Any], spec: OptimizerSpec) -> dict[str, Any]:
    """A route's arguments, typed, short names resolved (``lr``, ``betas``)."""
    typed: dict[str, Any] = {}
    for key, value in arguments.items():
        if key in _PYTHON_ONLY_ARGUMENTS:
            typed[key] = value  # checked where the route is applied
            continue
        arg = ROUTE_ARGUMENTS.get(key)
        if arg is None:
            valid = [*ROUTE_ARGUMENTS, *_PYTHON_ONLY_ARGUMENTS, "name"]
            near = closest(key, valid)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            options = (f" {key!r} is an option of {spec.name!r}: give it in optim_args."
                       if key in spec.args else "")
            raise OptimArgsError(
                f"route to {spec.name!r}: unknown argument {key!r}.{hint}{options} Route "
                f"arguments: {', '.join(valid)}"
            )
        if key == "optim_target_modules" and not isinstance(value, str) and value is not None:
            typed[key] = _target_list(value)
            continue
        value = coerce_value(arg, value, optimizer=f"route to {spec.name}")
        if value is None:
            continue
        if key == "betas":
            typed["adam_beta1"], typed["adam_beta2"] = value
        else:
            typed[_SHORT.get(key, key)] = value
    if "learning_rate" in typed and "lr_scale" in typed:
        raise OptimArgsError(
            f"route to {spec.name!r}: give lr or lr_scale, not both (lr_scale multiplies "
            "the top-level learning rate)"
        )
    return typed


def _target_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable) or not all(
            isinstance(v, str) for v in value):
        raise OptimArgsTypeError(
            f"a route's optim_target_modules is a str or a list of str, got {value!r}"
        )
    return tuple(value)


def _typed_options(spec: OptimizerSpec, optim_args: str | Mapping[str, Any] | None
                   ) -> dict[str, Any]:
    """The options given (not the defaults), typed by the optimizer's schema."""
    if optim_args is None:
        return {}
    raw = (split_optim_args(optim_args, optimizer=spec.name)
           if isinstance(optim_args, str) else dict(optim_args))
    typed = resolve_optim_args(spec, raw)  # refuses unknown keys and bad values
    return {key: typed[key] for key in raw}


def _text_entries(route: Route) -> dict[str, Any]:
    """A route's arguments then options, as the text form writes them: an option whose
    name is also an argument goes into a nested ``optim_args='...'``."""
    entries: dict[str, Any] = {}
    for key, value in route.arguments.items():
        if key in _PYTHON_ONLY_ARGUMENTS:
            raise OptimArgsError(
                f"a route with {key} has no text form; write it in Python (optimhub.Route)"
            )
        if isinstance(value, tuple):  # optim_target_modules as a list
            if len(value) != 1:
                raise OptimArgsError(
                    f"optim_target_modules={list(value)!r} has no text form (one regex only); "
                    "join the patterns with '|' or write the route in Python"
                )
            value = value[0]
        entries[key] = value
    inline = {k: v for k, v in route.options.items() if k not in ROUTE_ARGUMENTS}
    nested = {k: v for k, v in route.options.items() if k in ROUTE_ARGUMENTS}
    entries.update(inline)
    if nested:
        entries["optim_args"] = format_optim_args(nested)
    return entries


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


# ============================================================================ the set
@dataclass(frozen=True)
class RouteSet:
    """An ordered, checked list of routes, each with a unique label.

    Built from routes (``RouteSet.of([...])``), from text (``RouteSet.parse(text)``) or
    from a routed catalog entry and its options (``RouteSet.from_spec``). ``str()`` is
    the canonical text.
    """

    routes: tuple[Route, ...]
    labels: tuple[str, ...]

    @classmethod
    def of(cls, routes: Iterable[Route] | RouteSet | str) -> RouteSet:
        """A route set from routes, text, or a route set (returned as is)."""
        if isinstance(routes, RouteSet):
            return routes
        if isinstance(routes, str):
            return cls.parse(routes)
        if isinstance(routes, Route) or not isinstance(routes, Iterable):
            raise OptimArgsTypeError(
                f"a route set is a list of optimhub.Route or route text, got "
                f"{type(routes).__name__} {shorten(repr(routes))}"
            )
        items = list(routes)
        bad = [r for r in items if not isinstance(r, Route)]
        if bad:
            raise OptimArgsTypeError(
                f"a route set holds optimhub.Route objects, got {type(bad[0]).__name__} "
                f"{shorten(repr(bad[0]))}"
            )
        return cls._checked(items, [r.name for r in items])

    @classmethod
    def _checked(cls, routes: Sequence[Route], names: Sequence[str | None]) -> RouteSet:
        if not routes:
            raise RoutingError("a route set needs at least one route, e.g. '* -> adamw_torch'")
        seen: dict[Selector, int] = {}
        for index, route in enumerate(routes):
            first = seen.get(route.select)
            if first is not None:
                raise RoutingError(
                    f"routes #{first} and #{index} have the same selector "
                    f"({route.select}): the first takes everything it selects, so the "
                    "second could never take a parameter. Merge them, or narrow one"
                )
            seen[route.select] = index
            if route.select.everything and index != len(routes) - 1:
                raise RoutingError(
                    f"route #{index} ('* -> {route.optimizer}') takes every parameter, so "
                    f"the {len(routes) - index - 1} route(s) after it could take nothing: "
                    "put the catch-all last"
                )
        return cls(tuple(routes), _labels(routes, names))

    @classmethod
    def parse(cls, text: str) -> RouteSet:
        """A route set from its text form (see the module docstring)."""
        if not isinstance(text, str):
            raise OptimArgsTypeError(f"route text is a str, got {type(text).__name__}")
        written = parse_route_text(text)
        return cls._checked([_route_from_text(w) for w in written], [w.label for w in written])

    @classmethod
    def from_spec(cls, spec: OptimizerSpec, options: Mapping[str, Any]) -> RouteSet:
        """A routed catalog entry's routes, with its typed options (defaults filled in, as
        ``resolve_optim_args`` gives them) sent to their routes."""
        arguments: dict[str, dict[str, Any]] = {t.name: {} for t in spec.routes}
        optim_args: dict[str, dict[str, Any]] = {t.name: {} for t in spec.routes}
        optimizers = {t.name: t.optimizer for t in spec.routes}
        from_base = [t.name for t in spec.routes if t.optimizer == spec.base]
        for key, value in options.items():
            arg = spec.args[key]
            route = arg.route or from_base[0]
            if value is None:
                continue  # a nullable option left unset: the route keeps its default
            if arg.key == "optimizer":
                optimizers[route] = value
            elif arg.key in ROUTE_ARGUMENT_KEYS:
                arguments[route][arg.key] = value
            else:
                optim_args[route][arg.key] = value
        routes = [
            Route(t.select, optimizers[t.name], name=t.name,
                  optim_args=optim_args[t.name] or None, **arguments[t.name])
            for t in spec.routes
        ]
        return cls._checked(routes, [t.name for t in spec.routes])

    def __iter__(self) -> Iterator[tuple[str, Route]]:
        return iter(zip(self.labels, self.routes, strict=True))

    def __len__(self) -> int:
        return len(self.routes)

    def to_text(self) -> str:
        """The canonical text; ``RouteSet.parse`` gives back an equal route set."""
        return "; ".join(route.to_text(route.name) for route in self.routes)

    def __str__(self) -> str:
        return self.to_text()


def matrix_only_routes(name: str, fallback: str = DEFAULT_FALLBACK, *,
                       optim_args: str | Mapping[str, Any] | None = None) -> RouteSet:
    """The routed form of a ``matrix_only`` optimizer (the Muon family): the weight
    matrices and conv kernels to ``name``, everything else to ``fallback``. Decided by the
    capability, so every matrix-only name gets it the same way."""
    spec = get_registry().get(name).spec
    if not spec.has(Capability.MATRIX_ONLY):
        raise RoutingError(
            f"optimizer {spec.name!r} is not matrix-only (capability "
            f"'{Capability.MATRIX_ONLY.value}'): it takes every parameter by itself"
        )
    return RouteSet.of([Route(["matrix", "conv"], spec.name, optim_args=optim_args),
                        Route("*", fallback)])


def _labels(routes: Sequence[Route], names: Sequence[str | None]) -> tuple[str, ...]:
    """Each route's label: its given name, else its optimizer's name (``_2``, ``_3``...
    for a repeated optimizer)."""
    given = [n for n in names if n is not None]
    repeated = {n for n in given if given.count(n) > 1}
    if repeated:
        raise RoutingError(f"route name(s) {sorted(repeated)} used twice; each must be unique")
    labels: list[str] = []
    taken = set(given)
    for route, name in zip(routes, names, strict=True):
        if name is not None:
            labels.append(name)
            continue
        label, count = route.optimizer, 1
        while label in taken:
            count += 1
            label = f"{route.optimizer}_{count}"
        taken.add(label)
        labels.append(label)
    return tuple(labels)


def _route_from_text(written: RouteText) -> Route:
    """A route from its text: the keys of ``ROUTE_ARGUMENTS`` are arguments, the rest
    options of its optimizer (or all of them in one nested ``optim_args='...'``)."""
    spec = _route_spec(written.optimizer)
    entries = written.entries
    arguments = {k: v for k, v in entries.items() if k in ROUTE_ARGUMENTS}
    options = {k: v for k, v in entries.items() if k not in ROUTE_ARGUMENTS} or None
    nested = arguments.pop("optim_args", None)
    if options and nested is not None:
        raise OptimArgsError(
            f"route {quote(written.source)}: options are given both inline and in "
            "optim_args=; give them one way"
        )
    if options is not None:
        _typed_options(spec, options)  # an unknown key: the usual error with the valid keys
    return Route(written.terms, spec.name, name=written.label, optim_args=options or nested,
                 **arguments)
