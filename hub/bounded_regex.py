"""Regular expressions matched in time linear in the text, for patterns from configs.

``re`` backtracks: ``(\\w+\\.?)+x`` or ``.*.*.*.*.*.*.*.*.*.*.*.*x`` against a 45-character
module name does not finish in minutes, and nothing can interrupt it (the C matcher never
releases the interpreter). ``optim_target_modules`` and param-group rules come from other
people's YAML, so the hub matches them here instead:

- the pattern is parsed by Python's own regex parser (the same syntax, the same errors and
  the same meaning as ``re``), then compiled to a Thompson NFA and simulated over the text,
  so one match costs O(len(text) x len(pattern)), whatever the pattern;
- the hub only asks whether a pattern matches (the whole name for ``fullmatch``, anywhere
  for ``search``), never which span, and for that question every construct of a regular
  language answers exactly as ``re`` does: greedy or lazy repeats, the order of
  alternatives and groups change which match ``re`` reports, never whether there is one;
- a single character is tested by ``re`` itself (one compiled pattern per atom, so
  classes, ``\\w``/``\\d``/``\\s``, case folding and every flag mean exactly what they mean
  in ``re``), and so is a zero-width assertion at a position (``^ $ \\A \\Z \\b \\B``);
  lookahead and lookbehind are sub-matches run by this same engine;
- what is not regular is refused with :class:`UnsupportedPatternError`, naming the
  construct: backreferences, conditional groups, possessive repeats and atomic groups.
  Repeat counts that expand past :data:`MAX_STATES` are refused too.

The hub's callers (``optimhub.targets``, ``optimhub.param_groups``) turn these refusals into
their own errors naming the pattern.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

try:  # Python 3.11+
    from re import _compiler as _sre_compile
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_compile as _sre_compile  # type: ignore[no-redef]
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = ["MAX_STATES", "BoundedPattern", "UnsupportedPatternError", "compile_bounded"]

#: Most NFA states one pattern may expand to (``x{1000}`` is 1000 states): far above any
#: real module pattern, and it bounds the work per character.
MAX_STATES = 20_000

_EPSILON, _CHAR, _ASSERT, _MATCH = range(4)
_ATOMS = {_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN}
_REFUSED = {
    "GROUPREF": "a backreference (\\1, (?P=name))",
    "GROUPREF_EXISTS": "a conditional group ((?(1)...))",
    "GROUPREF_IGNORE": "a backreference",
    "POSSESSIVE_REPEAT": "a possessive repeat (*+, ++, ?+)",
    "ATOMIC_GROUP": "an atomic group ((?>...))",
}


class UnsupportedPatternError(ValueError):
    """A pattern the linear-time engine cannot match exactly as ``re`` would."""


@functools.lru_cache(maxsize=512)
def compile_bounded(pattern: str) -> BoundedPattern:
    """``pattern`` ready to match in linear time. Raises ``re.error`` for invalid syntax
    (as ``re.compile`` does) and :class:`UnsupportedPatternError` for what is not regular."""
    parsed = _sre_parse.parse(pattern, 0)
    return BoundedPattern(pattern, parsed, parsed.state.flags)


class BoundedPattern:
    """One compiled pattern: ``fullmatch(text)`` and ``search(text)`` answer True / False
    exactly as ``re.fullmatch`` / ``re.search`` would, in linear time."""

    def __init__(self, pattern: str, parsed: Any, flags: int) -> None:
        self.pattern = pattern
        self._kinds: list[int] = []
        self._outs: list[tuple[int, ...]] = []
        self._args: list[int] = []
        self._chars: list[Callable[[str], bool]] = []
        self._asserts: list[Callable[[str, int], bool]] = []
        self._positional: list[int] = []  # assertions that only look at characters (cheap)
        self._match = self._state(_MATCH)
        self._start = self._build(parsed, flags, self._match)
        self._closures: dict[tuple[frozenset[int], tuple[bool, ...]], frozenset[int]] = {}
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}
        self._memoize = len(self._positional) == len(self._asserts)  # no lookaround
        # Without assertions, the lazily built DFA (:meth:`_run_dfa`): per mode (anchored
        # or not), closed state set -> character -> next closed state set.
        self._dfa: tuple[dict[frozenset[int], dict[str, frozenset[int]]], ...] = ({}, {})
        self._parts: tuple[dict[tuple[frozenset[int], str, bool],
                                tuple[frozenset[int], bool]], ...] = ({}, {})
        self._start_closed = (frozenset() if self._asserts
                              else self._close(frozenset((self._start,)), _no_assertion))
        self._literals = _required_literals(parsed, flags)

    def __repr__(self) -> str:
        return f"BoundedPattern({self.pattern!r}, {len(self._kinds)} states)"

    # ---- matching --------------------------------------------------------------------
    def fullmatch(self, text: str) -> bool:
        """``re.fullmatch(pattern, text) is not None``."""
        if not self._may_match(text):
            return False
        if not self._asserts:
            return self._run_dfa(text, anchored=True, prefix=False)
        return self._run(text, 0, len(text), anchored=True, prefix=False)

    def search(self, text: str) -> bool:
        """``re.search(pattern, text) is not None``."""
        if not self._may_match(text):
            return False
        if not self._asserts:
            return self._run_dfa(text, anchored=False, prefix=True)
        return self._run(text, 0, len(text), anchored=False, prefix=True)

    def fullmatch_each(self, names: Sequence[str]) -> list[bool]:
        """``fullmatch`` of each of ``names``. For module names in ``named_modules()`` order
        a name is its parent's plus ``"." + part``, so without assertions it continues from
        the parent's DFA state (kept for this call only): one part per name."""
        if self._asserts:
            return [self.fullmatch(name) for name in names]
        parts = self._parts[True]
        states: dict[str, frozenset[int]] = {}
        match = self._match
        answers = []
        for name, possible in zip(names, self._possible(names), strict=True):
            if not possible:
                answers.append(False)  # not kept in ``states``: a child starts afresh
                continue
            parent, dot, last = name.rpartition(".")
            current = states.get(parent) if dot else None
            if current is None:
                current = self._state_after(name)
            else:
                try:
                    current = parts[current, last, True][0]
                except KeyError:
                    current = self._move_over(current, last, True, True)[0]
            states[name] = current
            answers.append(match in current)
        return answers

    def _may_match(self, text: str) -> bool:
        """False when ``text`` lacks a literal that every match contains: a substring
        test in C instead of the engine, for most names against patterns like
        ``.*attn.*``."""
        return all(literal in text for literal in self._literals)

    def _possible(self, names: Sequence[str]) -> list[bool]:
        """``_may_match`` of each of ``names``, one comprehension per literal."""
        possible = [True] * len(names)
        for literal in self._literals:
            possible = [ok and literal in name for ok, name in zip(possible, names, strict=True)]
        return possible

    def _state_after(self, text: str) -> frozenset[int]:
        """The anchored DFA state after all of ``text``."""
        parts = self._parts[True]
        current = self._start_closed
        dotted = False
        for part in text.split("."):
            try:
                current = parts[current, part, dotted][0]
            except KeyError:
                current = self._move_over(current, part, dotted, True)[0]
            dotted = True
        return current

    def _run(self, text: str, begin: int, end: int, *, anchored: bool, prefix: bool) -> bool:
        """Simulate the NFA over ``text[begin:end]``: from ``begin`` only (``anchored``) or
        from every position; accepting at ``end`` only, or anywhere (``prefix``)."""
        if not self._asserts:
            return self._run_dfa(text[begin:end], anchored=anchored, prefix=prefix)
        start = frozenset((self._start,))
        current = start
        for position in range(begin, end):
            if not anchored:
                current = current | start
            closed = self._closure(current, text, position)
            if prefix and self._match in closed:
                return True
            current = self._step(closed, text[position])
            if anchored and not current:
                return False
        if not anchored:
            current = current | start
        return self._match in self._closure(current, text, end)

    def _run_dfa(self, text: str, *, anchored: bool, prefix: bool) -> bool:
        """``_run`` for a pattern without assertions, where a closure depends on the states
        alone: the NFA's closed state sets are the states of a DFA built as the texts need
        it. Unanchored, every state set includes the start's closure, which is what
        restarting at each position adds.

        Texts are module names, which repeat their dot-separated parts ("model", "layers",
        "12", "self_attn"...): the DFA's move over a whole part is cached, so a name costs a
        few dict lookups rather than a closure and a step per character. (Target selection
        matches every module name of the model: on 10k tensors the per-character
        simulation cost as much as the rest of the build.)"""
        parts = self._parts[anchored]
        current = self._start_closed
        dotted = False  # every part but the first follows a dot
        for part in text.split("."):
            try:
                current, seen_match = parts[current, part, dotted]
            except KeyError:
                current, seen_match = self._move_over(current, part, dotted, anchored)
            if prefix and seen_match:
                return True
            if anchored and not current:
                return False
            dotted = True
        return self._match in current

    def _move_over(self, start: frozenset[int], part: str, dotted: bool, anchored: bool
                   ) -> tuple[frozenset[int], bool]:
        """The DFA's state after ``part`` (after ``"." + part`` if ``dotted``) from
        ``start``, and whether a state before one of its characters accepts (what
        ``prefix`` matching returns True on); cached."""
        table = self._dfa[anchored]
        current, seen_match = start, False
        for char in "." + part if dotted else part:
            seen_match = seen_match or self._match in current
            try:
                current = table[current][char]
            except KeyError:
                current = self._dfa_edge(table, current, char, anchored)
        parts = self._parts[anchored]
        self._bound(parts)
        parts[start, part, dotted] = (current, seen_match)
        return current, seen_match

    def _dfa_edge(self, table: dict[frozenset[int], dict[str, frozenset[int]]],
                  current: frozenset[int], char: str, anchored: bool) -> frozenset[int]:
        nxt = self._close(self._step(current, char), _no_assertion)
        if not anchored:
            nxt = nxt | self._start_closed
        row = table.get(current)
        if row is None:
            self._bound(table, 10_000)  # a bounded cache, like the NFA's
            row = table[current] = {}
        row[char] = nxt
        return nxt

    def _closure(self, states: frozenset[int], text: str, position: int) -> frozenset[int]:
        """The states reachable without consuming a character, assertions checked here."""
        if self._memoize:
            context = tuple(self._asserts[a](text, position) for a in self._positional)
            key = (states, context)
            cached = self._closures.get(key)
            if cached is None:
                cached = self._closures[key] = self._close(states, lambda a: context[a])
                self._bound(self._closures)
            return cached
        checked: dict[int, bool] = {}

        def holds(index: int) -> bool:
            if index not in checked:
                checked[index] = self._asserts[index](text, position)
            return checked[index]

        return self._close(states, holds)

    def _close(self, states: frozenset[int], holds: Callable[[int], bool]) -> frozenset[int]:
        stack = list(states)
        seen = set(states)
        result = set()
        kinds, outs, args = self._kinds, self._outs, self._args
        while stack:
            state = stack.pop()
            kind = kinds[state]
            if kind == _EPSILON or (kind == _ASSERT and holds(args[state])):
                for nxt in outs[state]:
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
            elif kind in (_CHAR, _MATCH):
                result.add(state)
        return frozenset(result)

    def _step(self, states: frozenset[int], char: str) -> frozenset[int]:
        key = (states, char)
        cached = self._steps.get(key)
        if cached is None:
            cached = frozenset(
                self._outs[s][0] for s in states
                if self._kinds[s] == _CHAR and self._chars[self._args[s]](char)
            )
            self._steps[key] = cached
            self._bound(self._steps)
        return cached

    @staticmethod
    def _bound(cache: dict[Any, Any], limit: int = 100_000) -> None:
        if len(cache) > limit:
            cache.clear()

    # ---- building (backwards from the state that follows) ------------------------------
    def _state(self, kind: int, arg: int = -1, outs: tuple[int, ...] = ()) -> int:
        if len(self._kinds) >= MAX_STATES:
            raise UnsupportedPatternError(
                f"its repeats expand to more than {MAX_STATES} states; use smaller counts "
                "(x{2,5} rather than x{1,10000})"
            )
        self._kinds.append(kind)
        self._args.append(arg)
        self._outs.append(outs)
        return len(self._kinds) - 1

    def _build(self, items: Any, flags: int, nxt: int) -> int:
        """The start state of ``items`` (a parsed sequence), continuing to ``nxt``."""
        for op, av in reversed(list(items)):
            nxt = self._build_one(op, av, flags, nxt)
        return nxt

    def _build_one(self, op: Any, av: Any, flags: int, nxt: int) -> int:
        name = str(op)
        if name in _REFUSED:
            raise UnsupportedPatternError(
                f"it uses {_REFUSED[name]}, which no linear-time matcher supports; write the "
                "alternatives out instead"
            )
        if op in _ATOMS:
            self._chars.append(_char_test(op, av, flags))
            return self._state(_CHAR, len(self._chars) - 1, (nxt,))
        if op is _sre.AT:
            self._positional.append(len(self._asserts))
            self._asserts.append(_position_test(av, flags))
            return self._state(_ASSERT, len(self._asserts) - 1, (nxt,))
        if op in (_sre.ASSERT, _sre.ASSERT_NOT):
            direction, sub = av
            self._asserts.append(_lookaround(sub, flags, direction, op is _sre.ASSERT))
            return self._state(_ASSERT, len(self._asserts) - 1, (nxt,))
        if op is _sre.SUBPATTERN:
            _group, add, remove, sub = av
            return self._build(sub, _scoped_flags(flags, add, remove), nxt)
        if op is _sre.BRANCH:
            starts = tuple(self._build(alternative, flags, nxt) for alternative in av[1])
            return self._state(_EPSILON, outs=starts)
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            low, high, sub = av
            return self._repeat(sub, flags, low, high, nxt)
        raise UnsupportedPatternError(f"it uses {name}, which this matcher does not support")

    def _repeat(self, sub: Any, flags: int, low: int, high: int, nxt: int) -> int:
        """``sub{low,high}``: ``low`` copies, then a loop (unbounded) or optional copies.
        Greedy or lazy makes no difference to whether a match exists."""
        if high == _sre.MAXREPEAT:
            loop = self._state(_EPSILON)
            self._outs[loop] = (self._build(sub, flags, loop), nxt)
            current = loop
        else:
            current = nxt
            for _ in range(high - low):
                optional = self._state(_EPSILON)
                self._outs[optional] = (self._build(sub, flags, current), current)
                current = optional
        for _ in range(low):
            current = self._build(sub, flags, current)
        return current


def _required_literals(parsed: Any, flags: int) -> tuple[str, ...]:
    """The runs of literal characters in the pattern's top-level sequence: every match,
    full or searched, contains each of them (``"attn"`` for ``.*attn.*``). None under
    case-insensitive matching, where a literal stands for several characters."""
    if flags & re.IGNORECASE:
        return ()
    runs: list[str] = []
    current: list[str] = []
    for op, argument in parsed:
        if op is _sre.LITERAL:
            current.append(chr(argument))
            continue
        if current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return tuple(runs)


def _no_assertion(index: int) -> bool:
    raise AssertionError("a pattern without assertions has no assertion to check")


def _scoped_flags(flags: int, add: int, remove: int) -> int:
    """The flags inside ``(?add-remove:...)``, as ``re``'s compiler combines them (a type
    flag such as ``a`` replaces ``u``)."""
    types = _sre_parse.TYPE_FLAGS
    if add & types:
        flags &= ~types
    return (flags | add) & ~remove


def _compiled_atom(item: tuple[Any, Any], flags: int) -> re.Pattern[str]:
    """One parsed item compiled alone by ``re``'s own compiler, with the flags in force
    where it stands: it then means exactly what it means in the whole pattern."""
    state = _sre_parse.State()
    state.flags = flags
    return _sre_compile.compile(_sre_parse.SubPattern(state, [item]), flags)


def _char_test(op: Any, av: Any, flags: int) -> Callable[[str], bool]:
    compiled = _compiled_atom((op, av), flags)

    @functools.lru_cache(maxsize=4096)
    def test(char: str) -> bool:
        return compiled.fullmatch(char) is not None

    return test


def _position_test(av: Any, flags: int) -> Callable[[str, int], bool]:
    compiled = _compiled_atom((_sre.AT, av), flags)
    return lambda text, position: compiled.match(text, position) is not None


def _lookaround(sub: Any, flags: int, direction: int, positive: bool
                ) -> Callable[[str, int], bool]:
    """``(?=sub)`` / ``(?!sub)`` (direction 1) or ``(?<=sub)`` / ``(?<!sub)`` (-1; ``re``
    allows only a fixed width there, so the sub-match starts that far back)."""
    inner = BoundedPattern("", sub, flags)
    width = sub.getwidth()[0]

    def test(text: str, position: int) -> bool:
        if direction > 0:
            found = inner._run(text, position, len(text), anchored=True, prefix=True)
        else:
            begin = position - width
            found = begin >= 0 and inner._run(text, begin, position, anchored=True,
                                              prefix=False)
        return found == positive

    return test
