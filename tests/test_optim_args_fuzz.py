"""Property tests for optim_args: total on any text, exact round trips, never evaluates.

optim_args text comes from command lines and config files written by hand, so the
parser must answer *every* input with a dict or an OptimArgsError, and typed values
written by format_optim_args must come back unchanged.
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from optimhub.errors import OptimArgsError
from optimhub.optim_args import format_optim_args, resolve_optim_args, split_optim_args
from optimhub.spec import ArgSpec, OptimizerSpec

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GRAMMAR_ALPHABET = "abc_=,()'\" 1.e-"


def make_spec(args: list[ArgSpec]) -> OptimizerSpec:
    return OptimizerSpec(
        name="fuzz",
        summary="",
        plugin="test",
        distribution="x",
        import_name="x",
        args={a.name: a for a in args},
    )


FIXED = make_spec(
    [
        ArgSpec("a", "int", "", minimum=0),
        ArgSpec("b", "float", "", nullable=True),
        ArgSpec("c", "str", "", choices=("x", "y")),
        ArgSpec("e", "bool", "", default=True),
        ArgSpec("t", "float_tuple", "", length=2),
        ArgSpec("u", "int_tuple", ""),
        ArgSpec("abc", "str", ""),
    ]
)

grammar_text = st.text(alphabet=GRAMMAR_ALPHABET, max_size=60)
# Text shaped like entries, so that the valid paths are reached too, not only errors.
entry_like = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "e", "t", "u", "abc", "zz", "", "1"]),
        st.text(alphabet=GRAMMAR_ALPHABET, max_size=12),
    ),
    max_size=5,
).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs))
any_text = st.one_of(st.text(), grammar_text, entry_like)


def _check_raw(raw: object) -> None:
    assert isinstance(raw, dict)
    for key, value in raw.items():
        assert KEY.fullmatch(key)
        assert isinstance(value, (str, tuple))
        if isinstance(value, tuple):
            assert all(isinstance(item, str) for item in value)


# --------------------------------------------------------------------------- (1) total


@FAST
@given(any_text)
def test_split_returns_a_dict_or_raises_optim_args_error(text):
    try:
        raw = split_optim_args(text)
    except OptimArgsError as error:
        assert str(error)
        return
    _check_raw(raw)


@FAST
@given(any_text)
def test_resolve_returns_a_dict_or_raises_optim_args_error(text):
    try:
        result = resolve_optim_args(FIXED, text)
    except OptimArgsError as error:
        assert "'fuzz'" in str(error) or "fuzz takes no" in str(error)
        return
    assert set(result) <= set(FIXED.args)
    assert result["e"] in (True, False)


@FAST
@given(st.dictionaries(st.sampled_from(sorted(FIXED.args)), st.one_of(st.text(), grammar_text)))
def test_resolve_dict_of_strings_is_total(values):
    try:
        result = resolve_optim_args(FIXED, values)
    except OptimArgsError:
        return
    assert set(result) <= set(FIXED.args)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(sorted(FIXED.args)),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.lists(st.one_of(st.integers(), st.floats(), st.text()), max_size=3),
            st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
        ),
    )
)
def test_resolve_dict_of_native_values_is_total(values):
    with suppress(OptimArgsError):
        resolve_optim_args(FIXED, values)


def test_resolve_on_text_at_the_length_limit_is_fast_and_total():
    for text in ["(" * 10_000, "a=" + "(" * 9_998, "a=" + "'" * 9_998, ",".join(["a=1"] * 2500)]:
        with pytest.raises(OptimArgsError):
            resolve_optim_args(FIXED, text)


# --------------------------------------------------------------------------- (2) round trip

# Strings the text form can express: a str holding both quote characters cannot be.
expressible_text = st.text(max_size=12).filter(lambda s: not ("'" in s and '"' in s))


@st.composite
def arg_and_value(draw: st.DrawFn, name: str) -> tuple[ArgSpec, object]:
    """A random ArgSpec and a random value that is valid for it."""
    kind = draw(st.sampled_from(["int", "float", "bool", "str", "int_tuple", "float_tuple"]))
    nullable = draw(st.booleans())
    if nullable and draw(st.integers(0, 4)) == 0:
        return ArgSpec(name, kind, "", nullable=True), None
    if kind == "bool":
        return ArgSpec(name, kind, "", nullable=nullable), draw(st.booleans())
    if kind == "str":
        if draw(st.booleans()):
            choices = tuple(draw(st.lists(expressible_text, min_size=1, max_size=4, unique=True)))
            arg = ArgSpec(name, kind, "", nullable=nullable, choices=choices)
            return arg, draw(st.sampled_from(choices))
        return ArgSpec(name, kind, "", nullable=nullable), draw(expressible_text)
    lo, hi = sorted(draw(st.lists(st.integers(-(10**6), 10**6), min_size=2, max_size=2)))
    bounded = draw(st.booleans())
    bounds = {"minimum": lo, "maximum": hi} if bounded else {}
    if kind.startswith("int"):
        item = st.integers(lo, hi) if bounded else st.integers(-(10**30), 10**30)
    else:
        limits = {"min_value": float(lo), "max_value": float(hi)} if bounded else {}
        item = st.floats(allow_nan=False, allow_infinity=False, **limits)
    if not kind.endswith("_tuple"):
        return ArgSpec(name, kind, "", nullable=nullable, **bounds), draw(item)
    length = draw(st.one_of(st.none(), st.integers(0, 4)))
    size = length if length is not None else draw(st.integers(0, 4))
    values = tuple(draw(st.lists(item, min_size=size, max_size=size)))
    return ArgSpec(name, kind, "", nullable=nullable, length=length, **bounds), values


@st.composite
def schema_and_values(draw: st.DrawFn) -> tuple[OptimizerSpec, dict[str, object]]:
    names = draw(st.lists(st.from_regex(KEY, fullmatch=True), max_size=6, unique=True))
    args, values = [], {}
    for name in names:
        arg, value = draw(arg_and_value(name))
        args.append(arg)
        if draw(st.integers(0, 3)):  # most keys given, some left out
            values[name] = value
    return make_spec(args), values


@FAST
@given(schema_and_values())
def test_format_then_resolve_round_trips(case):
    spec, values = case
    text = format_optim_args(values)
    result = resolve_optim_args(spec, text)
    assert result == values
    for key, value in values.items():
        assert type(result[key]) is type(value)
        if isinstance(value, tuple):
            assert [type(x) for x in result[key]] == [type(x) for x in value]


@FAST
@given(schema_and_values())
def test_split_of_formatted_text_has_the_same_keys(case):
    _, values = case
    assert list(split_optim_args(format_optim_args(values))) == list(values)


@FAST
@given(schema_and_values())
def test_dict_form_resolves_like_text_form(case):
    spec, values = case
    # In the dict form a str value is read like a bare token, so "none" means None there.
    assume(
        not any(
            isinstance(v, str) and v.strip().lower() in ("none", "null") and spec.args[k].nullable
            for k, v in values.items()
        )
    )
    assert resolve_optim_args(spec, values) == resolve_optim_args(spec, format_optim_args(values))


@FAST
@given(st.tuples(st.text(max_size=4), st.text(max_size=4), st.text(max_size=4), st.booleans()))
def test_unexpressible_strings_are_refused_by_format(parts):
    head, middle, tail, single_first = parts
    first, second = ("'", '"') if single_first else ('"', "'")
    value = head + first + middle + second + tail
    with pytest.raises(OptimArgsError, match="both quote characters"):
        format_optim_args({"s": value})


# --------------------------------------------------------------------------- (3) no eval

_EVENTS: list[str] | None = None


def _audit(event: str, args: object) -> None:
    if _EVENTS is not None and event in ("compile", "exec", "os.system", "open", "import"):
        _EVENTS.append(event)


sys.addaudithook(_audit)  # cannot be removed; it records only inside no_code_runs()


@contextmanager
def no_code_runs() -> Iterator[None]:
    """Fail if anything inside compiles or executes code, opens a file or imports."""
    global _EVENTS
    _EVENTS = []
    try:
        yield
    finally:
        events, _EVENTS = _EVENTS, None
    assert events == [], f"the parser triggered {events}"


INJECTIONS = [
    "x=__import__('os').system('touch {marker}')",
    "x=exec(\"open('{marker}','w')\")",
    'x=eval(\'open("{marker}","w")\')',
    "betas=(__import__('os').system('touch {marker}'),1)",
    "rank=open('{marker}','w').close()",
    "x={{'a': __import__('os').system('touch {marker}')}}",
    "__import__('os').system('touch {marker}')=1",
    "x=lambda: __import__('os').system('touch {marker}')",
    "x=[__import__('os').system('touch {marker}') for _ in ()]",
    "x=1;import os;os.system('touch {marker}')",
    'x=\'__import__("os").system("touch {marker}")\'',
]

INJECTION_SPEC = make_spec(
    [
        ArgSpec("x", "str", ""),
        ArgSpec("rank", "int", ""),
        ArgSpec("betas", "float_tuple", ""),
    ]
)


@pytest.mark.parametrize("template", INJECTIONS)
def test_injection_text_is_data_or_an_error(template, tmp_path: Path):
    marker = tmp_path / "pwned"
    text = template.format(marker=marker)
    with no_code_runs():
        try:
            result = resolve_optim_args(INJECTION_SPEC, text)
        except OptimArgsError:
            result = None
    if result is not None:  # only the quoted form parses: as the very string written
        assert result == {"x": text[len("x='") : -1]}
    assert not marker.exists()


@pytest.mark.parametrize("template", [t for t in INJECTIONS if not t.endswith("=1")])
def test_injection_in_dict_form_is_data_or_an_error(template, tmp_path: Path):
    marker = tmp_path / "pwned"
    value = template.format(marker=marker).partition("=")[2]
    with no_code_runs():
        for key in ("x", "rank", "betas"):
            try:
                result = resolve_optim_args(INJECTION_SPEC, {key: value})
            except OptimArgsError:
                continue
            assert key == "x"
            assert result == {"x": value}
    assert not marker.exists()


code_fragments = st.sampled_from(
    [
        "__import__",
        "('os')",
        ".system",
        "(",
        ")",
        "'",
        '"',
        "eval",
        "exec",
        "=",
        ",",
        "x",
        "open",
        "touch",
        " ",
        "lambda",
        ":",
        ";",
        "[",
        "]",
        "{",
        "}",
        "1",
        "rank",
        "betas",
    ]
)


@FAST
@given(st.lists(code_fragments, max_size=20).map("".join))
def test_code_shaped_text_never_runs(text):
    with no_code_runs():
        try:
            result = resolve_optim_args(INJECTION_SPEC, text)
        except OptimArgsError:
            return
    for value in result.values():
        assert isinstance(value, (str, int, tuple))


def test_no_file_named_in_the_brief_appears():
    before = Path("/tmp/pwned").exists()
    for template in INJECTIONS:
        with suppress(OptimArgsError):
            resolve_optim_args(INJECTION_SPEC, template.format(marker="/tmp/pwned"))
    assert Path("/tmp/pwned").exists() == before


def test_audit_guard_itself_catches_compile():
    with pytest.raises(AssertionError, match="compile"), no_code_runs():
        compile("1", "<test>", "eval")


def test_printable_garbage_keys_never_pass_as_keys():
    for char in string.punctuation.replace("_", ""):
        with pytest.raises(OptimArgsError):
            split_optim_args(f"a{char}b=1")
