"""The text form of a route set: the grammar only (no catalog, no typing).

    matrix, conv -> muon_torch(lr=0.02,momentum=0.95); * -> adamw_torch(lr=0.0003)

Grammar (nothing is evaluated)::

    routes    := route (";" route)* [";"]
    route     := [label "="] selector "->" name ["(" arguments ")"]
    selector  := term ("," term)*       # a role, re:PATTERN, type:ClassName or *
    arguments := the optim_args grammar (key=value, tuples in parentheses, quoting)

A pattern holding ``, ; ( ) =`` or spaces is quoted: ``re:'.*(attn|mlp).*'``.
:func:`parse_route_text` cuts the text into :class:`RouteText` pieces with raw values;
:mod:`optimhub.routing` types them against the catalog and builds the routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import OptimArgsError, RoutingError, shorten
from .optim_args import RawValue, split_optim_args

__all__ = ["ARROW", "RouteText", "format_term", "is_route_text", "parse_route_text",
           "split_terms"]

#: Separates a route's selector from its optimizer in the text form.
ARROW = "->"


def is_route_text(value: object) -> bool:
    """Whether ``value`` is a route set's text rather than an optimizer name: names are
    identifiers, so only route text holds the arrow."""
    return isinstance(value, str) and ARROW in value


@dataclass(frozen=True)
class RouteText:
    """One route as written: its label (or None), selector terms, optimizer name and the
    raw ``key=value`` entries of its parentheses; ``source`` is its text, for messages."""

    label: str | None
    terms: tuple[str, ...]
    optimizer: str
    entries: dict[str, RawValue]
    source: str


def parse_route_text(text: str) -> list[RouteText]:
    """The routes of a route set's text, in order; a grammar error names the part."""
    tokens = _tokenize(text)
    parts = _split(tokens, ";")
    routes = []
    for index, part in enumerate(parts):
        if not part:
            if index == 0 or any(parts[index + 1:]):
                raise RoutingError(f"route text {quote(text)}: an empty route between ';'")
            continue  # one trailing ';'
        routes.append(_parse_route(part, text))
    return routes


def split_terms(text: str) -> list[str]:
    """``"matrix, re:'a,b'"`` -> ``["matrix", "re:a,b"]`` (quotes respected)."""
    return [_join(group) for group in _split(_tokenize(text), ",")]


def format_term(term: str) -> str:
    """A selector term as text: a pattern is quoted unless it is safe bare."""
    if term.startswith("re:") and not _BARE_PATTERN.fullmatch(term[3:]):
        pattern = term[3:]
        mark = "'" if "'" not in pattern else '"'
        if mark in pattern:
            raise OptimArgsError(
                f"pattern {pattern!r} holds both quote characters and has no text form"
            )
        return f"re:{mark}{pattern}{mark}"
    return term


def quote(text: str) -> str:
    """A piece of the user's text, as shown in a message."""
    return repr(shorten(text, 120))


@dataclass(frozen=True)
class _Tok:
    kind: str  # "word", "quoted", one of ; , ( ) = or "->"
    text: str
    start: int
    end: int


_DELIMS = ";,()="
_QUOTES = "'\""
_BARE_PATTERN = re.compile(r"[^\s,;()='\"]+")


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif text.startswith(ARROW, i):
            tokens.append(_Tok(ARROW, ARROW, i, i + 2))
            i += 2
        elif char in _DELIMS:
            tokens.append(_Tok(char, char, i, i + 1))
            i += 1
        elif char in _QUOTES:
            close = text.find(char, i + 1)
            if close < 0:
                raise RoutingError(f"route text {quote(text)}: unterminated quote {char}")
            tokens.append(_Tok("quoted", text[i + 1:close], i, close + 1))
            i = close + 1
        else:
            j = i
            while j < n and not (text[j].isspace() or text[j] in _DELIMS or text[j] in _QUOTES
                                 or text.startswith(ARROW, j)):
                j += 1
            tokens.append(_Tok("word", text[i:j], i, j))
            i = j
    return tokens


def _split(tokens: list[_Tok], separator: str) -> list[list[_Tok]]:
    """Cut at top-level separators (not inside parentheses)."""
    parts: list[list[_Tok]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "(":
            depth += 1
        elif tok.kind == ")":
            depth -= 1
        if tok.kind == separator and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def _join(tokens: list[_Tok]) -> str:
    """One selector term from its tokens: ``re:`` followed by a quoted pattern is one term."""
    if len(tokens) == 1:
        return tokens[0].text
    if (len(tokens) == 2 and tokens[0].kind == "word" and tokens[0].text.endswith(":")
            and tokens[1].kind == "quoted" and tokens[0].end == tokens[1].start):
        return tokens[0].text + tokens[1].text
    shown = " ".join(t.text for t in tokens)
    raise RoutingError(
        f"selector term {quote(shown)} is not one term: separate terms with ',' and quote "
        "a pattern holding spaces or , ; ( ) =, e.g. re:'.*(attn|mlp).*'"
    )


def _parse_route(tokens: list[_Tok], text: str) -> RouteText:
    source = text[tokens[0].start:tokens[-1].end]
    arrows = [i for i, t in enumerate(tokens) if t.kind == ARROW]
    if len(arrows) != 1:
        raise RoutingError(
            f"route {quote(source)}: write one route as 'SELECTOR -> OPTIMIZER(ARGS)', e.g. "
            f"'matrix -> muon_torch(lr=0.02)'; routes are separated by ';'"
        )
    head, tail = tokens[:arrows[0]], tokens[arrows[0] + 1:]
    label = None
    if len(head) >= 2 and head[1].kind == "=" and head[0].kind == "word":
        label, head = head[0].text, head[2:]
    if not head:
        raise RoutingError(f"route {quote(source)} has no selector before '{ARROW}'")
    terms = [_join(group) if group else "" for group in _split(head, ",")]
    if "" in terms:
        raise RoutingError(f"route {quote(source)}: an empty selector term between commas")
    if not tail or tail[0].kind != "word":
        raise RoutingError(f"route {quote(source)} has no optimizer name after '{ARROW}'")
    optimizer, rest = tail[0].text, tail[1:]
    body = ""
    if rest:
        if rest[0].kind != "(" or rest[-1].kind != ")":
            raise RoutingError(
                f"route {quote(source)}: after the optimizer name only '(arguments)' may "
                "follow, e.g. adamw_torch(lr=3e-4)"
            )
        body = text[rest[0].end:rest[-1].start]
    entries = split_optim_args(body, optimizer=optimizer)
    return RouteText(label, tuple(terms), optimizer, entries, source)
