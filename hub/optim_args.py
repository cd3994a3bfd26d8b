"""Parse, type and format ``optim_args``: the ``"key=value,key=value"`` string of HF
``TrainingArguments`` (or the same options given as a dict).

Hugging Face splits the text on ``,`` and ``=`` after deleting every space, keeps the
last of two equal keys, ignores unknown keys and types each value per handler (with a
``bool("False")`` bug among them). Here one grammar and one typed schema
(:class:`~optimhub.spec.ArgSpec`) decide everything, and every refusal says which part
of the input was wrong and what to write instead.

Grammar (a superset of what HF accepts; nothing is ever evaluated)::

    text   := ""  |  entry ("," entry)*
    entry  := key "=" value
    key    := [A-Za-z_][A-Za-z0-9_]*
    value  := scalar  |  "(" [ scalar ("," scalar)* [","] ] ")"
    scalar := bare  |  "'" any text without ' "'"  |  '"' any text without " '"'
    bare   := one or more characters other than whitespace , = ( ) ' "

Whitespace around keys, values and tuple items is ignored; whitespace *inside* a bare
value is an error (HF would silently glue ``1 000`` into ``1000``), so quote such a value.
A quoted scalar keeps its text verbatim (no escapes: a value holding both quote
characters cannot be written). ``(1)`` is a one-item tuple, like ``(1,)``.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import OptimArgsError, OptimArgsTypeError, closest
from .errors import shown as quoted
from .spec import ArgSpec, OptimizerSpec

__all__ = [
    "MAX_OPTIM_ARGS_LENGTH",
    "coerce_value",
    "format_optim_args",
    "resolve_optim_args",
    "split_optim_args",
]

#: Longest optim_args text accepted: far above any real configuration, and it keeps
#: error messages and parsing time bounded for hostile input.
MAX_OPTIM_ARGS_LENGTH = 10_000

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)
_NONE_WORDS = frozenset({"none", "null"})
_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})
_DELIMITERS = ",=()"
_QUOTES = "'\""
_SPECIAL = _DELIMITERS + _QUOTES
_INT_SAMPLES = ("1", "2", "3", "4")
_FLOAT_SAMPLES = ("0.9", "0.95", "0.99", "0.999")
_EXCERPT = 60
_KEYS_SHOWN = 5

RawValue = str | tuple[str, ...]


class _QuotedStr(str):
    """A scalar that was quoted in the text.

    It compares equal to the plain string, but remembers the quotes so that ``'none'``
    stays the string "none" where a bare ``none`` means None.
    """

    __slots__ = ()


# --------------------------------------------------------------------------- messages


def _ctx(optimizer: str) -> str:
    """The start of every message: which optimizer's optim_args are at fault."""
    return f"optim_args for {optimizer!r}" if optimizer else "optim_args"


def _show(part: str) -> str:
    """Quote a piece of the user's text for a message (shortened; repr if unprintable)."""
    if len(part) > _EXCERPT:
        part = part[: _EXCERPT - 3] + "..."
    return f'"{part}"' if part.isprintable() and '"' not in part else repr(part)


def _grammar_error(optimizer: str, problem: str, hint: str) -> OptimArgsError:
    return OptimArgsError(f"{_ctx(optimizer)}: {problem}. {hint}")


_ENTRY_HINT = 'Write entries as key=value separated by single commas, e.g. "rank=4,scale=0.25".'


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Tok:
    """One lexical token: a delimiter (its own character), a bare word or a quoted text."""

    kind: str  # "," "=" "(" ")" "word" "quoted"
    text: str
    start: int
    end: int


def _tokenize(text: str, optimizer: str) -> list[_Tok]:
    """Cut text into tokens in one left-to-right pass; quotes are matched here."""
    tokens: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _DELIMITERS:
            tokens.append(_Tok(char, char, i, i + 1))
            i += 1
        elif char in _QUOTES:
            close = text.find(char, i + 1)
            if close < 0:
                raise _grammar_error(
                    optimizer,
                    f"unterminated quote {char} in {_show(text[i:])}",
                    "Close the quoted value with the same quote character.",
                )
            tokens.append(_Tok("quoted", text[i + 1 : close], i, close + 1))
            i = close + 1
        else:
            j = i
            while j < n and not (text[j].isspace() or text[j] in _SPECIAL):
                j += 1
            tokens.append(_Tok("word", text[i:j], i, j))
            i = j
    return tokens


def _span(text: str, tokens: Sequence[_Tok]) -> str:
    """The original text covered by a run of tokens."""
    return text[tokens[0].start : tokens[-1].end] if tokens else ""


# --------------------------------------------------------------------------- grammar


def split_optim_args(text: str, *, optimizer: str = "") -> dict[str, RawValue]:
    """Split optim_args text into ``{key: raw value}`` without typing anything.

    A scalar comes back as str, a parenthesised tuple as a tuple of str. A quoted scalar
    is a str subclass that compares equal to its text but keeps ``'none'`` from meaning
    None in :func:`coerce_value`. Blank text gives ``{}``. Anything else that is not in
    the grammar (see the module docstring) raises :class:`OptimArgsError` quoting the
    offending part, including a key given twice (HF silently keeps the last one).
    """
    if not isinstance(text, str):
        raise OptimArgsTypeError(
            f'{_ctx(optimizer)} must be text like "rank=4,scale=0.25", '
            f"got {type(text).__name__} {quoted(text)}"
        )
    if len(text) > MAX_OPTIM_ARGS_LENGTH:
        raise _grammar_error(
            optimizer,
            f"the text {_show(text)} is {len(text)} characters long, over the limit of "
            f"{MAX_OPTIM_ARGS_LENGTH}",
            "Pass large configurations as a dict instead.",
        )
    tokens = _tokenize(text, optimizer)
    if not tokens:
        return {}
    result: dict[str, RawValue] = {}
    for entry in _split_entries(text, tokens, optimizer):
        key, value = _parse_entry(text, entry, optimizer)
        if key in result:
            raise _grammar_error(
                optimizer,
                f"the key {quoted(key)} is given twice in {_show(text)}",
                "Give each key once.",
            )
        result[key] = value
    return result


def _split_entries(text: str, tokens: list[_Tok], optimizer: str) -> list[list[_Tok]]:
    """Cut the token list at top-level commas; refuse empty entries with their position."""
    entries: list[list[_Tok]] = [[]]
    commas: list[_Tok] = []
    depth = 0
    for tok in tokens:
        if tok.kind == "," and depth == 0:
            entries.append([])
            commas.append(tok)
            continue
        if tok.kind == "(":
            depth += 1
        elif tok.kind == ")":
            depth = max(depth - 1, 0)
        entries[-1].append(tok)
    for index, entry in enumerate(entries):
        if not entry:
            raise _empty_entry_error(text, index, len(entries), commas, optimizer)
    return entries


def _empty_entry_error(
    text: str, index: int, count: int, commas: list[_Tok], optimizer: str
) -> OptimArgsError:
    """Name the kind of empty entry: leading comma, trailing comma or two in a row."""
    if index == 0:
        problem = f"leading comma in {_show(text)}"
    elif index == count - 1:
        problem = f"trailing comma in {_show(text)}"
    else:
        pos = commas[index - 1].start
        gap = text[pos : commas[index].end]
        problem = f"empty entry {_show(gap)} at position {pos} in {_show(text)}"
    return _grammar_error(optimizer, problem, _ENTRY_HINT)


def _parse_entry(text: str, entry: list[_Tok], optimizer: str) -> tuple[str, RawValue]:
    """One ``key=value`` entry: check the key, then hand the value tokens on."""
    raw = _span(text, entry)
    eq = next((i for i, tok in enumerate(entry) if tok.kind == "="), None)
    if eq is None:
        raise _grammar_error(optimizer, f'{_show(raw)} has no "="', _ENTRY_HINT)
    key_tokens, value_tokens = entry[:eq], entry[eq + 1 :]
    if not key_tokens:
        raise _grammar_error(optimizer, f"{_show(raw)} has an empty key", _ENTRY_HINT)
    key = _span(text, key_tokens)
    if len(key_tokens) != 1 or key_tokens[0].kind != "word" or not _KEY_RE.fullmatch(key):
        raise _grammar_error(
            optimizer,
            f"invalid key {_show(key)} in {_show(raw)}",
            "A key is a name of letters, digits and _ that does not start with a digit, "
            "e.g. update_proj_gap.",
        )
    if not value_tokens:
        raise _grammar_error(
            optimizer, f"{_show(raw)} has an empty value", f"Write {key}=<value>, e.g. {key}=1."
        )
    return key, _parse_value(text, value_tokens, key, optimizer)


def _parse_value(text: str, tokens: list[_Tok], key: str, optimizer: str) -> RawValue:
    """The value tokens of one entry: a single scalar or one parenthesised tuple."""
    raw = f"{key}={_span(text, tokens)}"
    if any(tok.kind == "=" for tok in tokens):
        raise _grammar_error(
            optimizer,
            f'a second "=" in {_show(raw)}',
            f"Quote a value that contains \"=\", e.g. {key}='a=b'.",
        )
    if tokens[0].kind == "(":
        return _parse_tuple(text, tokens, raw, optimizer)
    if any(tok.kind in "()" for tok in tokens):
        raise _grammar_error(
            optimizer,
            f"unbalanced or misplaced parentheses in {_show(raw)}",
            "Parentheses may only enclose a whole tuple value, like (0.9,0.95); "
            f"quote a string that contains them, e.g. {key}='f(1)'.",
        )
    return _scalar(text, tokens, raw, optimizer)


def _scalar(text: str, tokens: Sequence[_Tok], raw: str, optimizer: str) -> str:
    """Exactly one word or quoted token; several mean spaces or bare+quoted text mixed."""
    if len(tokens) != 1:
        raise _grammar_error(
            optimizer,
            f"the value {_show(_span(text, tokens))} in {_show(raw)} is not one token "
            "(it has spaces inside, or mixes quoted and bare text)",
            "Quote a value that contains spaces, e.g. name='a b'.",
        )
    tok = tokens[0]
    return _QuotedStr(tok.text) if tok.kind == "quoted" else tok.text


def _parse_tuple(text: str, tokens: list[_Tok], raw: str, optimizer: str) -> tuple[str, ...]:
    """``(a,b,...)``: one level only, ``()`` and one trailing comma allowed."""
    close = next((i for i, tok in enumerate(tokens) if tok.kind == ")"), None)
    inner_open = next((i for i, tok in enumerate(tokens[1:], 1) if tok.kind == "("), None)
    if inner_open is not None and (close is None or inner_open < close):
        raise _grammar_error(
            optimizer,
            f"nested parentheses in {_show(raw)}",
            "A tuple holds plain values only, e.g. betas=(0.9,0.95).",
        )
    if close is None:
        raise _grammar_error(
            optimizer,
            f'unbalanced parentheses in {_show(raw)}: "(" is never closed',
            "Close the tuple, e.g. betas=(0.9,0.95).",
        )
    if close != len(tokens) - 1:
        raise _grammar_error(
            optimizer,
            f'text after the closing ")" in {_show(raw)}',
            'A tuple value ends at its ")", e.g. betas=(0.9,0.95).',
        )
    return tuple(_tuple_items(text, tokens[1:close], raw, optimizer))


def _tuple_items(text: str, inner: list[_Tok], raw: str, optimizer: str) -> list[str]:
    """Split the inside of a tuple at commas; an empty item is allowed only as ``(a,)``."""
    if not inner:
        return []
    groups: list[list[_Tok]] = [[]]
    for tok in inner:
        if tok.kind == ",":
            groups.append([])
        else:
            groups[-1].append(tok)
    if not groups[-1] and len(groups) > 1:
        groups.pop()  # one trailing comma: (1,) or (1,2,)
    if any(not group for group in groups):
        raise _grammar_error(
            optimizer,
            f"empty tuple item in {_show(raw)}",
            "Separate tuple items by single commas, e.g. betas=(0.9,0.95).",
        )
    return [_scalar(text, group, raw, optimizer) for group in groups]


def _parse_value_text(value: str, key: str, optimizer: str) -> RawValue:
    """Parse a str given in the dict form as the value part of ``key=value``."""
    if len(value) > MAX_OPTIM_ARGS_LENGTH:
        raise _grammar_error(
            optimizer,
            f"the value of {quoted(key)} is {len(value)} characters long, over the limit of "
            f"{MAX_OPTIM_ARGS_LENGTH}",
            "Shorten it.",
        )
    tokens = _tokenize(value, optimizer)
    if not tokens:
        raise _grammar_error(optimizer, f"{quoted(key)} has an empty value", f"Give {key} a value.")
    return _parse_value(value, tokens, key, optimizer)


# --------------------------------------------------------------------------- typing


def coerce_value(arg: ArgSpec, value: object, *, optimizer: str = "") -> object:
    """Type one value per its :class:`ArgSpec`: text from :func:`split_optim_args`, a
    tuple of such text, or a native Python value from the dict form.

    Text that does not parse raises :class:`OptimArgsError`; a native value of the wrong
    Python type raises :class:`OptimArgsTypeError`. Numbers must be finite and inside the
    bounds; a ``choices`` option must hold one of its choices.
    """
    typed = _coerce_unchecked(arg, value, optimizer)
    if typed is not None and arg.choices is not None and typed not in arg.choices:
        raise _choice_error(arg, value, optimizer)
    return typed


def _coerce_unchecked(arg: ArgSpec, value: object, optimizer: str) -> object:
    """Type the value (None, scalar or tuple); choices are checked by the caller."""
    if _means_none(value):
        if arg.nullable:
            return None
        if value is None:
            raise _value_error(arg, value, optimizer, "None is not allowed", OptimArgsTypeError)
    if arg.is_tuple:
        return _coerce_tuple(arg, value, optimizer)
    if isinstance(value, (tuple, list)):
        raise _value_error(
            arg,
            value,
            optimizer,
            "a tuple was given where one value belongs",
            OptimArgsTypeError,
        )
    return _coerce_scalar(arg, arg.type, value, optimizer)


def _means_none(value: object) -> bool:
    """Native None, or bare (unquoted) text none/null in any case."""
    if value is None:
        return True
    return (
        isinstance(value, str)
        and not isinstance(value, _QuotedStr)
        and value.strip().lower() in _NONE_WORDS
    )


def _coerce_tuple(arg: ArgSpec, value: object, optimizer: str) -> tuple[object, ...]:
    """A tuple option: tuple text, or a native list/tuple; each item typed and bounded."""
    items = _tuple_source(arg, value, optimizer)
    if arg.length is not None and len(items) != arg.length:
        raise _value_error(
            arg,
            value,
            optimizer,
            f"it has {len(items)} item{'s' if len(items) != 1 else ''}, "
            f"not {arg.length}. Write it as {_tuple_example(arg)}",
        )
    item_type = arg.type.removesuffix("_tuple")
    return tuple(_coerce_scalar(arg, item_type, item, optimizer, whole=value) for item in items)


def _tuple_source(arg: ArgSpec, value: object, optimizer: str) -> Sequence[object]:
    """The items of a tuple value; a scalar where a tuple belongs is refused with the form."""
    if isinstance(value, (tuple, list)):
        return value
    hint = f"a single value was given where a tuple belongs. Write it as {_tuple_example(arg)}"
    if isinstance(value, str) and not isinstance(value, _QuotedStr):
        if value.lstrip().startswith("("):
            parsed = _parse_value_text(value, arg.name, optimizer)
            if isinstance(parsed, tuple):
                return parsed
        raise _value_error(arg, value, optimizer, hint)
    cls = OptimArgsError if isinstance(value, str) else OptimArgsTypeError
    raise _value_error(arg, value, optimizer, hint, cls)


def _tuple_example(arg: ArgSpec) -> str:
    """``name=(…)`` in the right form: the default when it is a tuple, else a made-up one."""
    if arg.has_default and isinstance(arg.default, tuple) and arg.default:
        with_default = _format_tuple(arg.default)
        return f"{arg.name}={with_default}"
    samples = _INT_SAMPLES if arg.type == "int_tuple" else _FLOAT_SAMPLES
    count = arg.length if arg.length is not None else 2
    items = [samples[i % len(samples)] for i in range(count)]
    return f"{arg.name}=({','.join(items)}{',' if count == 1 else ''})"


def _coerce_scalar(
    arg: ArgSpec, kind: str, value: object, optimizer: str, whole: object = None
) -> object:
    """One int / float / bool / str value, from text or native; bounds checked."""
    shown = value if whole is None else whole
    if isinstance(value, str):
        typed = _from_text(arg, kind, value, optimizer, shown)
    else:
        typed = _from_native(arg, kind, value, optimizer, shown)
    if kind in ("int", "float"):
        problem = arg.bound_violation(typed)  # type: ignore[arg-type]
        if problem is not None:
            detail = "" if whole is None else f" (item {quoted(value)})"
            raise _value_error(arg, shown, optimizer, f"{problem}{detail}")
    return typed


def _from_text(arg: ArgSpec, kind: str, text: str, optimizer: str, shown: object) -> object:
    """Parse a text token; the str type takes it as it is (quotes already removed)."""
    if kind == "str":
        return str(text)
    token = text.strip()
    folded = token.lower()
    if kind == "bool":
        if folded in _TRUE_WORDS:
            return True
        if folded in _FALSE_WORDS:
            return False
        raise _value_error(arg, shown, optimizer, f"{quoted(text)} is not true/false/yes/no/1/0")
    if folded in _NON_FINITE:
        raise _value_error(arg, shown, optimizer, "NaN and infinity are not allowed")
    if kind == "int":
        return _int_from_text(arg, token, optimizer, shown)
    return _float_from_text(arg, token, optimizer, shown)


def _int_from_text(arg: ArgSpec, token: str, optimizer: str, shown: object) -> int:
    """Decimal integer text only: no 1.0, no 1e3, no 1_000 (they hide mistakes)."""
    if not _INT_RE.fullmatch(token):
        raise _value_error(arg, shown, optimizer, f"{quoted(token)} is not an integer")
    try:
        return int(token)
    except ValueError:  # beyond Python's int/str digit limit
        raise _value_error(arg, shown, optimizer, "the integer is too long") from None


def _float_from_text(arg: ArgSpec, token: str, optimizer: str, shown: object) -> float:
    """Decimal or exponent number text (1e-3, .5, 128); overflow to inf is refused."""
    if not _FLOAT_RE.fullmatch(token):
        raise _value_error(arg, shown, optimizer, f"{quoted(token)} is not a number")
    number = float(token)
    if not math.isfinite(number):
        raise _value_error(arg, shown, optimizer, "it is too large to be a finite float")
    return number


def _from_native(arg: ArgSpec, kind: str, value: object, optimizer: str, shown: object) -> object:
    """A native Python value: the type must fit exactly (bool is never a number)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
    elif kind == "int":
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _finite_float(arg, value, optimizer, shown)
    raise _value_error(
        arg, shown, optimizer, f"got a value of type {type(value).__name__}", OptimArgsTypeError
    )


def _finite_float(arg: ArgSpec, value: numbers.Real, optimizer: str, shown: object) -> float:
    """float(value), refusing NaN, infinity and ints too large for a float."""
    try:
        number = float(value)
    except OverflowError:
        raise _value_error(arg, shown, optimizer, "it is too large for a float") from None
    if not math.isfinite(number):
        raise _value_error(arg, shown, optimizer, "NaN and infinity are not allowed")
    return number


def _value_error(
    arg: ArgSpec,
    value: object,
    optimizer: str,
    reason: str,
    cls: type[OptimArgsError] = OptimArgsError,
) -> OptimArgsError:
    """The one message shape for bad values: optimizer, key, value, why, what is allowed."""
    return cls(
        f"{_ctx(optimizer)}: {arg.name}={quoted(value)} is not valid: {reason}. "
        f"Allowed: {arg.describe_allowed()}."
    )


def _choice_error(arg: ArgSpec, value: object, optimizer: str) -> OptimArgsError:
    """Not one of the choices: list them and the most likely intended one."""
    choices = arg.choices or ()
    shown = value.strip() if isinstance(value, str) else str(value)
    guess = closest(shown, [str(c) for c in choices], n=1)
    hint = f" Did you mean {guess[0]!r}?" if guess else ""
    return OptimArgsError(
        f"{_ctx(optimizer)}: {arg.name}={quoted(value)} is not valid: it is not one of the "
        f"choices.{hint} Allowed: {arg.describe_allowed()}."
    )


# --------------------------------------------------------------------------- resolve


def resolve_optim_args(
    spec: OptimizerSpec, optim_args: str | Mapping[str, object] | None
) -> dict[str, object]:
    """Turn user optim_args into the typed keyword values for ``spec``.

    Accepts None or blank text (nothing given), the HF text form, or a dict whose str
    values are read like text (JSON configs hold "128") and whose other values are
    typed as they are. Unknown keys are refused with the valid ones listed. Options
    not given but with a default get it. Keys of the result are ``ArgSpec.name``.
    """
    raw = _raw_mapping(spec, optim_args)
    _check_known_keys(spec, raw)
    result: dict[str, object] = {}
    for key, arg in spec.args.items():
        if key in raw:
            result[arg.name] = coerce_value(arg, raw[key], optimizer=spec.name)
        elif arg.has_default:
            result[arg.name] = arg.default
    return result


def _raw_mapping(
    spec: OptimizerSpec, optim_args: str | Mapping[str, object] | None
) -> Mapping[str, object]:
    """The user's keys and untyped values, from whichever form was given."""
    if optim_args is None:
        return {}
    if isinstance(optim_args, str):
        return split_optim_args(optim_args, optimizer=spec.name)
    if isinstance(optim_args, Mapping):
        bad = [k for k in optim_args if not isinstance(k, str)]
        if bad:
            raise OptimArgsTypeError(
                f"{_ctx(spec.name)}: dict keys must be str, got {quoted(bad[0])} "
                f"({type(bad[0]).__name__})"
            )
        return optim_args
    raise OptimArgsTypeError(
        f'{_ctx(spec.name)} must be text like "key=value,key=value", a dict or None, '
        f"got {type(optim_args).__name__} {quoted(optim_args)}"
    )


def _check_known_keys(spec: OptimizerSpec, raw: Mapping[str, object]) -> None:
    """Refuse keys the spec does not declare (HF ignores them silently)."""
    unknown = [key for key in raw if key not in spec.args]
    if not unknown:
        return
    listed = ", ".join(quoted(k) for k in unknown[:_KEYS_SHOWN]) + (
        f" and {len(unknown) - _KEYS_SHOWN} more" if len(unknown) > _KEYS_SHOWN else "")
    if not spec.args:
        raise OptimArgsError(
            f"{spec.name} takes no optim_args, but {listed} "
            f"{'was' if len(unknown) == 1 else 'were'} given. Remove optim_args."
        )
    valid = sorted(spec.args)
    guesses = {key: guess[0] for key in unknown if (guess := closest(key, valid, n=1))}
    if len(unknown) == 1:
        hints = [f" Did you mean {guess!r}?" for guess in guesses.values()]
    else:
        hints = [f" Did you mean {guess!r} for {quoted(key)}?"
                 for key, guess in guesses.items()]
    raise OptimArgsError(
        f"{_ctx(spec.name)}: unknown key{'s' if len(unknown) > 1 else ''} {listed}."
        f"{''.join(hints)} Valid keys: {', '.join(valid)}."
    )


# --------------------------------------------------------------------------- format


def format_optim_args(values: Mapping[str, object]) -> str:
    """Write typed values as optim_args text that parses back to the same values.

    None is written ``none``, bools ``true``/``false``, floats with ``repr`` (exact), and a
    string is quoted when it would not survive bare (spaces, delimiters, ``none``...).
    A string holding both quote characters cannot be written and raises.
    """
    parts = []
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise OptimArgsError(f"cannot format optim_args: invalid key {quoted(key)}")
        if isinstance(value, (tuple, list)):
            text = _format_tuple(value, key)
        else:
            text = _format_scalar(value, key)
        parts.append(f"{key}={text}")
    return ",".join(parts)


def _format_tuple(items: Sequence[object], key: str = "") -> str:
    """``(a,b)``, ``(a,)`` for one item, ``()`` for none."""
    texts = [_format_scalar(item, key) for item in items]
    return "(" + ",".join(texts) + ("," if len(texts) == 1 else "") + ")"


def _format_scalar(value: object, key: str) -> str:
    """One value as a token that :func:`coerce_value` reads back to the same value."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise OptimArgsError(
                f"cannot format optim_args: {key}={quoted(value)} is not finite")
        return repr(number)
    if isinstance(value, str):
        return _format_str(value, key)
    raise OptimArgsTypeError(
        f"cannot format optim_args: {key}={quoted(value)} ({type(value).__name__}) is not "
        "a None, bool, int, float, str or tuple of those"
    )


def _format_str(value: str, key: str) -> str:
    """Bare when safe, else quoted with whichever quote character it does not contain."""
    if _is_bare_safe(value):
        return value
    for quote in _QUOTES:
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise OptimArgsError(
        f"cannot format optim_args: {key}={quoted(value)} holds both quote characters, "
        "which the text form cannot express; pass it in the dict form"
    )


def _is_bare_safe(value: str) -> bool:
    """Whether the string reads back as itself without quotes."""
    return (
        bool(value)
        and value.lower() not in _NONE_WORDS
        and not any(c.isspace() or c in _DELIMITERS or c in _QUOTES for c in value)
    )
