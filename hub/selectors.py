"""Which parameters a route claims: a ``Selector``, written as a list of terms.

A term is one of:

- a role (``matrix``, ``embedding``, ``head``, ``norm``, ``bias``, ``scalar``, ``conv``,
  ``expert``; see :mod:`optimhub.roles`);
- ``re:PATTERN``: a regular expression that must match (``re.fullmatch``, as Hugging Face
  matches ``optim_target_modules``) the parameter's name or the name of the module that
  owns it, so both ``re:.*attn.*`` and ``re:lm_head`` work;
- ``type:ClassName``: the owning module's class or one of its base classes
  (``type:Linear`` also selects a subclass of ``nn.Linear``);
- ``*``: everything (a catch-all; it stands alone).

Terms of one kind are alternatives; kinds narrow each other. ``["matrix", "conv"]`` is
every matrix and every conv kernel; ``["matrix", "re:.*attn.*"]`` is the matrices inside
attention modules. A leaf module: the catalog validates registry.toml's route selectors
with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import OptimArgsTypeError, RoutingError, closest, shorten
from .role_types import ROLE_NAMES, ParameterRole, Role

__all__ = ["CATCH_ALL", "Selector"]

#: The term that selects every parameter.
CATCH_ALL = "*"
_REGEX_PREFIX = "re:"
_TYPE_PREFIX = "type:"
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Selector:
    """A route's choice of parameters. Build it from terms with :meth:`parse`."""

    roles: tuple[Role, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    everything: bool = False

    @classmethod
    def parse(cls, terms: str | Iterable[str] | Selector) -> Selector:
        """``"matrix"``, ``["matrix", "conv"]``, ``["re:.*attn.*"]`` or ``"*"`` -> a
        validated selector; every error names the term and what is allowed."""
        if isinstance(terms, Selector):
            return terms
        if isinstance(terms, str):
            terms = [terms]
        if isinstance(terms, (bytes, bytearray)) or not isinstance(terms, Iterable):
            raise OptimArgsTypeError(
                f"a route selector is a term or a list of terms (roles such as 'matrix', "
                f"'re:PATTERN', 'type:ClassName', or '*'); got {type(terms).__name__} "
                f"{shorten(repr(terms))}"
            )
        roles: list[Role] = []
        patterns: list[str] = []
        types: list[str] = []
        everything = False
        given = list(terms)
        for term in given:
            if not isinstance(term, str):
                raise OptimArgsTypeError(
                    f"a selector term is a str, got {type(term).__name__} {term!r}"
                )
            term = term.strip()
            if term == CATCH_ALL:
                everything = True
            elif term.startswith(_REGEX_PREFIX):
                _add(patterns, _pattern(term[len(_REGEX_PREFIX):]))
            elif term.startswith(_TYPE_PREFIX):
                _add(types, _class_name(term[len(_TYPE_PREFIX):]))
            else:
                _add(roles, _role(term))
        if not given:
            raise RoutingError(
                "a route selector is empty: give roles (e.g. 'matrix'), 're:PATTERN', "
                "'type:ClassName', or '*' for every parameter"
            )
        if everything and (roles or patterns or types):
            raise RoutingError(
                f"selector {given!r}: '*' selects every parameter and cannot be combined "
                "with other terms; drop '*' or the other terms"
            )
        return cls(tuple(roles), tuple(patterns), tuple(types), everything)

    @property
    def needs_model(self) -> bool:
        """Roles and module types are read from the model; a pattern or ``*`` is not."""
        return bool(self.roles or self.types)

    @property
    def terms(self) -> tuple[str, ...]:
        """The selector as terms, in a canonical order: parsing them gives it back."""
        if self.everything:
            return (CATCH_ALL,)
        return (*(r.value for r in self.roles), *(_REGEX_PREFIX + p for p in self.patterns),
                *(_TYPE_PREFIX + t for t in self.types))

    def matches(self, parameter: ParameterRole) -> bool:
        """Whether this selector claims ``parameter``."""
        if self.everything:
            return True
        if self.roles and parameter.role not in self.roles:
            return False
        if self.patterns and not any(
            re.fullmatch(p, parameter.name)
            or (parameter.module and re.fullmatch(p, parameter.module))
            for p in self.patterns
        ):
            return False
        return not self.types or any(t in parameter.module_types for t in self.types)

    def describe(self) -> str:
        return ", ".join(self.terms)

    def __str__(self) -> str:
        return self.describe()


def _add(items: list, item: object) -> None:
    if item not in items:
        items.append(item)


def _role(term: str) -> Role:
    if term in ROLE_NAMES:
        return Role(term)
    near = closest(term, ROLE_NAMES)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise RoutingError(
        f"unknown role {shorten(repr(term))} in a route selector.{hint} Roles: "
        f"{', '.join(ROLE_NAMES)}; or write 're:PATTERN' for a name pattern, "
        "'type:ClassName' for a module type, '*' for every parameter"
    )


def _pattern(pattern: str) -> str:
    if not pattern:
        raise RoutingError("'re:' needs a pattern after it, e.g. 're:.*attn.*'")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RoutingError(
            f"route selector 're:{shorten(pattern)}' is not a valid regular expression ({exc})"
        ) from exc
    return pattern


def _class_name(name: str) -> str:
    if not _CLASS_NAME.fullmatch(name):
        raise RoutingError(
            f"route selector 'type:{shorten(name)}': give a module class name, e.g. "
            "'type:Linear' or 'type:LlamaRMSNorm'"
        )
    return name
