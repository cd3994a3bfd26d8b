"""The linear-time matcher answers exactly as ``re`` does, and finishes where ``re`` hangs.

A differential test: hand-picked patterns (Hugging Face's documented ones, every construct
the engine handles) and hypothesis-generated ones, each matched against names by
``re.fullmatch`` / ``re.search`` and by :mod:`optimhub.bounded_regex`.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimhub.bounded_regex import MAX_STATES, UnsupportedPatternError, compile_bounded

NAMES = [
    "model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "lm_head",
    "model.embed_tokens", "layers.0.attn.o_proj", "transformer.h.3.attn.c_attn",
    "model.norm", "a", "Attn.Q_PROJ", "x\n", "ab ab", "é.ü_1", "model.layers.1.mlp",
]

PATTERNS = [
    r".*attn.*", r".*\.(q|k|v)_proj", r".*(attn|mlp).*", r"model\.layers\.\d+\.mlp.*",
    r"^lm_head$", r"lm_head", r"layers\.[0-9]{1,2}\..*", r".*_proj$", r"(?i).*q_PROJ",
    r"(?i:ATTN).*", r".*(?<!k)_proj", r"^(?!.*lm_head).*", r".*\bq_proj\b", r"\w+",
    r"[^.]+", r".*?proj", r"(?:a|ab)+", r"a{0,3}b?", r"x$", r"x\Z", r"\Ax", r"(?s:.)*",
    r"(?m)^x$", r".*(?=mlp).*", r"(?a)\w+", r"\D+\d\D*", r"\S+\s\S+", r"(a|)*", r"()*a",
    r"(?:model\.)?layers\.\d\..*", r"[a-z_]+\.[a-z_]+", r"\B.", r".*\.{2,}.*", r"é.*",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fullmatch_and_search_agree_with_re(pattern: str) -> None:
    bounded = compile_bounded(pattern)
    for name in NAMES:
        assert bounded.fullmatch(name) == (re.fullmatch(pattern, name) is not None), name
        assert bounded.search(name) == (re.search(pattern, name) is not None), name


# ---- generated patterns ---------------------------------------------------------------
ATOMS = st.sampled_from(["a", "b", ".", r"\.", "[ab]", "[^a]", r"\w", r"\d", r"\s", "_",
                         "A", "[k-s]", "K", r"(?a:\w)", r"\b", "^", "$", "[a-c.]", r"\W"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map("".join),
        st.tuples(children, children).map(lambda p: f"(?:{p[0]}|{p[1]})"),
        st.tuples(children, st.sampled_from(["*", "+", "?", "*?", "{1,2}", "{2}", "{0,3}?"]))
        .map(lambda p: f"(?:{p[0]}){p[1]}"),
        children.map(lambda p: f"({p})"),
        children.map(lambda p: f"(?={p})"),
        children.map(lambda p: f"(?!{p})"),
        children.map(lambda p: f"(?i:{p})"),
    )


GENERATED = st.recursive(ATOMS, _combine, max_leaves=8)
#: Case-folding corner cases included: the Kelvin sign, long s, dotted capital I.
TEXTS = st.text(alphabet="abAB._1 \nKkſsSéÉ\u212a\u0130i", max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GENERATED, st.lists(TEXTS, min_size=1, max_size=6))
def test_generated_patterns_agree_with_re(pattern: str, texts: list[str]) -> None:
    bounded = compile_bounded(pattern)
    for text in texts:
        assert bounded.fullmatch(text) == (re.fullmatch(pattern, text) is not None)
        assert bounded.search(text) == (re.search(pattern, text) is not None)
    assert bounded.fullmatch_each(texts) == [re.fullmatch(pattern, t) is not None
                                             for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "(?<=a)", "(?<!b)", "(?<=ab)", ".", "[ab]"]),
                max_size=6).map("".join), st.lists(TEXTS, min_size=1, max_size=6))
def test_lookbehind_agrees_with_re(pattern: str, texts: list[str]) -> None:
    bounded = compile_bounded(pattern)
    for text in texts:
        assert bounded.fullmatch(text) == (re.fullmatch(pattern, text) is not None)
        assert bounded.search(text) == (re.search(pattern, text) is not None)


# ---- what re cannot do in bounded time --------------------------------------------------
LONG = "model.layers.10.mlp.down_proj_something_long_" + "a" * 40
#: (pattern, a name it matches, a name on which re backtracks for minutes)
CATASTROPHIC = [
    (r"(\w+\.?)+x", LONG + "x", LONG),
    (r"([a-z_.0-9]+)+x", LONG + "x", LONG),
    (r"(.*)*x", LONG + "x", LONG),
    (r"(.*.*)*q", LONG + "q", LONG),
    (".*" * 12 + "x", LONG + "x", LONG),
    (r"(a|aa)+$", "a" * 80, "a" * 80 + "b"),
    (r"(?:\w|\w\w)+!", "ab!", "a" * 80),
]


@pytest.mark.timeout(60)  # a hang guard, not a timing: re takes minutes on each of these
@pytest.mark.parametrize(("pattern", "matching", "hostile"), CATASTROPHIC)
def test_patterns_that_make_re_backtrack_for_minutes_are_matched(
    pattern: str, matching: str, hostile: str
) -> None:
    bounded = compile_bounded(pattern)
    assert bounded.fullmatch(matching)
    assert not bounded.fullmatch(hostile)
    assert bounded.search(matching)


@pytest.mark.parametrize(("pattern", "construct"), [
    (r"(a)\1", "backreference"), (r"(?P<x>a)(?P=x)", "backreference"),
    (r"(a)?(?(1)b|c)", "conditional group"), (r"a*+", "possessive"), (r"(?>a+)b", "atomic"),
])
def test_what_is_not_regular_is_refused_naming_the_construct(pattern: str,
                                                             construct: str) -> None:
    with pytest.raises(UnsupportedPatternError, match=construct):
        compile_bounded(pattern)


def test_repeats_that_expand_too_far_are_refused() -> None:
    with pytest.raises(UnsupportedPatternError, match=str(MAX_STATES)):
        compile_bounded(r"(?:(?:a{100}){100}){10}")


def test_invalid_syntax_is_res_own_error() -> None:
    with pytest.raises(re.error):
        compile_bounded("(unclosed")


def test_fullmatch_each_is_fullmatch_name_by_name() -> None:
    """Module names in named_modules() order, where a child continues from its parent's
    state, plus names whose parent is not listed."""
    names = ["model", "model.layers", "model.layers.0", "model.layers.0.self_attn",
             "model.layers.0.self_attn.q_proj", "model.layers.11.mlp", "x.y.z", "lm_head",
             "model.layers.0.self_attn.q_proj.lora", *NAMES]
    for pattern in PATTERNS:
        expected = [re.fullmatch(pattern, name) is not None for name in names]
        assert compile_bounded(pattern).fullmatch_each(names) == expected, pattern
