"""The optim_args grammar, typing and formatting, one behaviour per test.

Each refusal is checked for its exception type *and* for the offending text in its
message, since the message is the user interface: it must say what was wrong and where.
"""

from __future__ import annotations

import math

import pytest

from optimhub.errors import OptimArgsError, OptimArgsTypeError
from optimhub.optim_args import (
    MAX_OPTIM_ARGS_LENGTH,
    coerce_value,
    format_optim_args,
    resolve_optim_args,
    split_optim_args,
)
from optimhub.spec import ArgSpec, OptimizerSpec


def make_spec(name: str = "demo", *args: ArgSpec) -> OptimizerSpec:
    return OptimizerSpec(
        name=name,
        summary="",
        plugin="test",
        distribution="x",
        import_name="x",
        args={a.name: a for a in args},
    )


RANK = ArgSpec("rank", "int", "projection rank", default=4, minimum=1)
SCALE = ArgSpec("scale", "float", "update scale", default=0.25, exclusive_minimum=0)
PROJ = ArgSpec("proj", "str", "projection", choices=("std", "reverse_std", "random"))
BETAS = ArgSpec("betas", "float_tuple", "betas", length=2, minimum=0, exclusive_maximum=1)
GAPS = ArgSpec("gaps", "int_tuple", "gaps")
NESTEROV = ArgSpec("nesterov", "bool", "Nesterov momentum", default=False)
NAME = ArgSpec("name", "str", "free text", nullable=True)
MOMENTUM = ArgSpec("momentum", "float", "momentum", minimum=0, maximum=1)

DEMO = make_spec("demo", RANK, SCALE, PROJ, BETAS, GAPS, NESTEROV, NAME, MOMENTUM)


def raises_with(cls: type[Exception], *fragments: str):
    """pytest.raises that also checks the message names every fragment."""

    class _Check:
        def __enter__(self):
            self._cm = pytest.raises(cls)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._cm.__exit__(*exc)
            assert type(self.info.value) is cls, f"got {type(self.info.value).__name__}"
            message = str(self.info.value)
            for fragment in fragments:
                assert fragment in message, f"{fragment!r} not in {message!r}"
            return handled

    return _Check()


# --------------------------------------------------------------------------- grammar


def test_split_returns_raw_text_and_tuples():
    text = "rank=1,scale=128.0,proj=random,betas=(0.9,0.95)"
    assert split_optim_args(text) == {
        "rank": "1",
        "scale": "128.0",
        "proj": "random",
        "betas": ("0.9", "0.95"),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rank=1,scale=128,proj=random,scale_type=tensor,update_proj_gap=200",
            {
                "rank": "1",
                "scale": "128",
                "proj": "random",
                "scale_type": "tensor",
                "update_proj_gap": "200",
            },
        ),
        ("momentum=0.9,nesterov=true", {"momentum": "0.9", "nesterov": "true"}),
    ],
)
def test_split_hf_reference_strings(text, expected):
    assert split_optim_args(text) == expected


def test_whitespace_around_keys_values_and_items_is_ignored():
    text = "  rank = 1 ,\tbetas = ( 0.9 , 0.95 ) ,\nproj=  random  "
    assert split_optim_args(text) == {"rank": "1", "betas": ("0.9", "0.95"), "proj": "random"}


@pytest.mark.parametrize("text", ["", " ", "\t\n  "])
def test_blank_text_is_empty(text):
    assert split_optim_args(text) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t=()", ()),
        ("t=( )", ()),
        ("t=(1,)", ("1",)),
        ("t=(1)", ("1",)),
        ("t=(1,2,)", ("1", "2")),
        ("t=(1,'a,b',\"c d\")", ("1", "a,b", "c d")),
    ],
)
def test_tuple_forms(text, expected):
    assert split_optim_args(text) == {"t": expected}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s='a,b=(c)'", "a,b=(c)"),
        ('s="it\'s"', "it's"),
        ("s=' padded '", " padded "),
        ("s=''", ""),
        ("s=-1.5e-3", "-1.5e-3"),
        ("s=a.b/c:d", "a.b/c:d"),
    ],
)
def test_scalar_forms(text, expected):
    assert split_optim_args(text) == {"s": expected}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("rank", ['"rank"', 'no "="', "key=value"]),
        ("rank=1,proj", ['"proj"', 'no "="']),
        ("=1", ['"=1"', "empty key"]),
        (" = 1", ['"= 1"', "empty key"]),
        ("a=1,,b=2", ['",,"', '"a=1,,b=2"', "empty entry"]),
        ("a=1,", ['"a=1,"', "trailing comma"]),
        (",a=1", ['",a=1"', "leading comma"]),
        (",", ["leading comma"]),
        ("a=", ['"a="', "empty value"]),
        ("a=1,b=", ['"b="', "empty value"]),
        ("a=(1,2", ['"a=(1,2"', "unbalanced", "never closed"]),
        ("a=(1,2,b=3", ['"a=(1,2,b=3"']),
        ("a=1)", ['"a=1)"', "parentheses"]),
        ("a=)", ['"a=)"', "parentheses"]),
        ("a=x(1)", ['"a=x(1)"', "parentheses"]),
        ("a=((1,2),3)", ['"a=((1,2),3)"', "nested parentheses"]),
        ("a=(1,(2))", ['"a=(1,(2))"', "nested parentheses"]),
        ("a=(1,2)3", ['"a=(1,2)3"', 'after the closing ")"']),
        ("a=(1,,2)", ['"a=(1,,2)"', "empty tuple item"]),
        ("a=(,)", ['"a=(,)"', "empty tuple item"]),
        ("a=(,1)", ['"a=(,1)"', "empty tuple item"]),
        ("a=(1 2)", ['"1 2"', "not one token"]),
        ("a=1=2", ['"a=1=2"', 'second "="']),
        ("a=b=c,d=1", ['"a=b=c"', 'second "="']),
        ("1a=2", ['"1a"', "invalid key"]),
        ("a-b=1", ['"a-b"', "invalid key"]),
        ("my key=1", ['"my key"', "invalid key"]),
        ("'a'=1", ["invalid key"]),
        ("clé=1", ['"clé"', "invalid key"]),
        ("a=1 2", ['"1 2"', "not one token", "Quote"]),
        ("a=x'y'", ["not one token"]),
        ("a='x", ["unterminated quote", "'x"]),
        ('a="x,b=2', ["unterminated quote", "'\"x,b=2'"]),
    ],
)
def test_grammar_errors_quote_the_offending_part(text, fragments):
    with raises_with(OptimArgsError, *fragments):
        split_optim_args(text)


def test_duplicate_key_is_named():
    with raises_with(OptimArgsError, "'rank'", "given twice"):
        split_optim_args("rank=1,scale=2,rank=3")


def test_length_limit():
    just_fits = "a=" + "x" * (MAX_OPTIM_ARGS_LENGTH - 2)
    assert split_optim_args(just_fits) == {"a": "x" * (MAX_OPTIM_ARGS_LENGTH - 2)}
    with raises_with(OptimArgsError, "10001 characters", "10000", '"a=xxx'):
        split_optim_args(just_fits + "x")


def test_grammar_error_names_the_optimizer():
    with raises_with(OptimArgsError, "'galore'", '"rank"'):
        split_optim_args("rank", optimizer="galore")


@pytest.mark.parametrize("text", [None, b"rank=1", 1, ["rank=1"]])
def test_split_refuses_non_text(text):
    with raises_with(OptimArgsTypeError, "must be text"):
        split_optim_args(text)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("yes", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("NO", False),
        ("0", False),
        (" false ", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_bool_values(value, expected):
    assert coerce_value(NESTEROV, value) is expected


def test_bool_false_text_is_false_not_truthy_string():
    # HF's bool(str) reads "False" as True; the whole path must give False.
    assert resolve_optim_args(DEMO, "nesterov=False")["nesterov"] is False
    assert resolve_optim_args(DEMO, {"nesterov": "False"})["nesterov"] is False


@pytest.mark.parametrize("value", ["2", "maybe", "t", "on", "", "1.0"])
def test_bool_bad_text(value):
    with raises_with(OptimArgsError, "nesterov", repr(value), "true or false"):
        coerce_value(NESTEROV, value)


@pytest.mark.parametrize("value", [2, -1, 1.0, [True], object()])
def test_bool_bad_native_is_type_error(value):
    with raises_with(OptimArgsTypeError, "nesterov", "true or false"):
        coerce_value(NESTEROV, value)


# --------------------------------------------------------------------------- int


@pytest.mark.parametrize(
    ("value", "expected"), [("12", 12), ("-3", -3), ("+4", 4), (" 7 ", 7), (5, 5), ("007", 7)]
)
def test_int_values(value, expected):
    arg = ArgSpec("n", "int", "")
    result = coerce_value(arg, value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", ["1.5", "abc", "1e3", "1_000", "", "0x10", "١", "1 2"])
def test_int_bad_text(value):
    arg = ArgSpec("n", "int", "")
    with raises_with(OptimArgsError, "n=", repr(value), "an integer"):
        coerce_value(arg, value, optimizer="demo")


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, [1], (1,), {"a": 1}])
def test_int_bad_native_is_type_error(value):
    arg = ArgSpec("n", "int", "")
    with raises_with(OptimArgsTypeError, "n=", repr(value), "an integer"):
        coerce_value(arg, value)


def test_int_too_long_is_an_optim_args_error():
    arg = ArgSpec("n", "int", "")
    with raises_with(OptimArgsError, "too long"):
        coerce_value(arg, "9" * 5000)


# --------------------------------------------------------------------------- float


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1e-3", 1e-3),
        ("128", 128.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("-2.5E+2", -250.0),
        (3, 3.0),
        (0.1, 0.1),
    ],
)
def test_float_values(value, expected):
    arg = ArgSpec("x", "float", "")
    result = coerce_value(arg, value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "Infinity", "+INF", float("nan"), float("inf")]
)
def test_float_non_finite_always_rejected(value):
    arg = ArgSpec("x", "float", "")
    with pytest.raises(OptimArgsError) as info:
        coerce_value(arg, value)
    assert "NaN and infinity are not allowed" in str(info.value)


@pytest.mark.parametrize("value", ["1e999", 10**400])
def test_float_overflow_rejected(value):
    arg = ArgSpec("x", "float", "")
    with pytest.raises(OptimArgsError, match="too large"):
        coerce_value(arg, value)


@pytest.mark.parametrize("value", ["abc", "1,5", "1e", "e5", "--1", ""])
def test_float_bad_text(value):
    arg = ArgSpec("x", "float", "")
    with raises_with(OptimArgsError, "x=", repr(value), "a number"):
        coerce_value(arg, value)


@pytest.mark.parametrize("value", [True, [0.1], {"x": 1}, b"1"])
def test_float_bad_native_is_type_error(value):
    arg = ArgSpec("x", "float", "")
    with raises_with(OptimArgsTypeError, "x=", "a number"):
        coerce_value(arg, value)


# --------------------------------------------------------------------------- str


def test_str_keeps_the_token():
    assert coerce_value(NAME, "Hello.World") == "Hello.World"
    assert coerce_value(NAME, " spaced ") == " spaced "  # a dict-form str is data


def test_str_choice_accepted():
    assert coerce_value(PROJ, "reverse_std") == "reverse_std"


def test_str_choice_error_lists_choices_and_suggests():
    with raises_with(
        OptimArgsError,
        "'demo'",
        "proj='reverse_st'",
        "Did you mean 'reverse_std'?",
        "one of 'std', 'reverse_std', 'random'",
    ):
        coerce_value(PROJ, "reverse_st", optimizer="demo")


def test_str_choice_without_close_match_still_lists_choices():
    with pytest.raises(OptimArgsError) as info:
        coerce_value(PROJ, "zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "one of 'std', 'reverse_std', 'random'" in str(info.value)


def test_int_choices():
    bits = ArgSpec("bits", "int", "", choices=(4, 8))
    assert coerce_value(bits, "8") == 8
    with raises_with(OptimArgsError, "bits='7'", "not one of the choices", "one of 4, 8"):
        coerce_value(bits, "7")


@pytest.mark.parametrize("value", [1, 1.5, True, ["a"]])
def test_str_bad_native_is_type_error(value):
    with pytest.raises(OptimArgsTypeError):
        coerce_value(PROJ, value)


# --------------------------------------------------------------------------- nullable


@pytest.mark.parametrize("value", ["none", "None", "NULL", "null", None])
def test_nullable_none(value):
    assert coerce_value(NAME, value) is None


def test_quoted_none_is_the_string():
    assert resolve_optim_args(DEMO, "name='none'")["name"] == "none"
    assert resolve_optim_args(DEMO, "name=none")["name"] is None


def test_nullable_int():
    arg = ArgSpec("n", "int", "", nullable=True, minimum=1)
    assert coerce_value(arg, "none") is None
    assert coerce_value(arg, "3") == 3
    assert "or none" in arg.describe_allowed()


def test_none_refused_when_not_nullable():
    with raises_with(OptimArgsTypeError, "rank=None", "None is not allowed"):
        coerce_value(RANK, None)
    with raises_with(OptimArgsError, "rank='none'", "an integer"):
        coerce_value(RANK, "none")
    plain = ArgSpec("s", "str", "")
    assert coerce_value(plain, "none") == "none"  # not nullable: just a word


def test_nullable_tuple():
    arg = ArgSpec("t", "float_tuple", "", nullable=True, length=2)
    assert coerce_value(arg, "null") is None
    assert coerce_value(arg, ("1", "2")) == (1.0, 2.0)


# --------------------------------------------------------------------------- tuples


@pytest.mark.parametrize(
    "value", [("0.9", "0.95"), [0.9, 0.95], (0.9, "0.95"), "(0.9, 0.95)", " (0.9,0.95,) "]
)
def test_float_tuple_sources(value):
    result = coerce_value(BETAS, value)
    assert result == (0.9, 0.95)
    assert type(result) is tuple
    assert all(type(x) is float for x in result)


def test_int_tuple_values():
    assert coerce_value(GAPS, ("1", "-2", "3")) == (1, -2, 3)
    assert coerce_value(GAPS, ()) == ()
    assert coerce_value(GAPS, [7]) == (7,)


def test_tuple_length_enforced():
    with raises_with(OptimArgsError, "3 items, not 2", "betas=(0.9,0.95)", "length 2"):
        coerce_value(BETAS, ("0.9", "0.95", "0.99"))
    with raises_with(OptimArgsError, "1 item, not 2"):
        coerce_value(BETAS, [0.9])


def test_tuple_example_uses_the_default():
    arg = ArgSpec("betas", "float_tuple", "", default=(0.9, 0.999), length=2)
    with raises_with(OptimArgsError, "betas=(0.9,0.999)"):
        coerce_value(arg, "0.9")


def test_scalar_where_tuple_required_shows_the_form():
    with raises_with(OptimArgsError, "betas='0.9'", "where a tuple belongs", "betas=(0.9,0.95)"):
        resolve_optim_args(DEMO, "betas=0.9")
    with raises_with(OptimArgsTypeError, "betas=0.9", "betas=(0.9,0.95)"):
        resolve_optim_args(DEMO, {"betas": 0.9})
    with raises_with(OptimArgsError, "where a tuple belongs"):
        resolve_optim_args(DEMO, "betas='(0.9,0.95)'")  # quoted: a string, not a tuple


def test_tuple_where_scalar_required():
    with raises_with(OptimArgsTypeError, "rank=('1', '2')", "where one value belongs"):
        resolve_optim_args(DEMO, "rank=(1,2)")


@pytest.mark.parametrize(
    ("value", "cls", "fragment"),
    [
        (("1.5", "2"), OptimArgsError, "'1.5' is not an integer"),
        (("1", "x"), OptimArgsError, "'x' is not an integer"),
        ((1, True), OptimArgsTypeError, "bool"),
        ((1, [2]), OptimArgsTypeError, "list"),
        ((1, None), OptimArgsTypeError, "NoneType"),
    ],
)
def test_tuple_item_errors(value, cls, fragment):
    with raises_with(cls, "gaps=", fragment, "a tuple of integers"):
        coerce_value(GAPS, value)


def test_dict_form_tuple_text_grammar_errors():
    with raises_with(OptimArgsError, "nested parentheses"):
        coerce_value(BETAS, "((0.9,0.95))")
    with raises_with(OptimArgsError, "never closed"):
        coerce_value(BETAS, "(0.9,0.95")


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("arg", "value", "fragment"),
    [
        (RANK, "0", "it must be >= 1"),
        (SCALE, "0", "it must be > 0"),
        (MOMENTUM, "1.5", "it must be <= 1"),
        (MOMENTUM, "-0.1", "it must be >= 0"),
        (BETAS, ("0.9", "1"), "it must be < 1 (item '1')"),
        (BETAS, (-0.5, 0.9), "it must be >= 0 (item -0.5)"),
    ],
)
def test_bounds(arg, value, fragment):
    with raises_with(OptimArgsError, f"{arg.name}=", fragment, arg.describe_allowed()):
        coerce_value(arg, value, optimizer="demo")


def test_bounds_inclusive_edges_accepted():
    assert coerce_value(RANK, "1") == 1
    assert coerce_value(MOMENTUM, "0") == 0.0
    assert coerce_value(MOMENTUM, "1") == 1.0
    assert coerce_value(BETAS, ("0", "0.999")) == (0.0, 0.999)


def test_value_message_has_optimizer_key_value_and_allowed():
    with pytest.raises(OptimArgsError) as info:
        resolve_optim_args(DEMO, "momentum=abc")
    message = str(info.value)
    for part in ("'demo'", "momentum", "'abc'", MOMENTUM.describe_allowed()):
        assert part in message


# --------------------------------------------------------------------------- resolve


@pytest.mark.parametrize("given", [None, "", "   ", {}])
def test_nothing_given_gives_only_defaults(given):
    assert resolve_optim_args(DEMO, given) == {"rank": 4, "scale": 0.25, "nesterov": False}


def test_given_values_override_defaults_and_others_are_not_passed():
    result = resolve_optim_args(DEMO, "rank=8,proj=random")
    assert result == {"rank": 8, "scale": 0.25, "proj": "random", "nesterov": False}
    assert "betas" not in result and "name" not in result


def test_full_typed_result():
    text = (
        "rank=16, scale=1e-1, proj=std, betas=(0.8,0.9), gaps=(1,2,3), nesterov=YES,"
        " name='my run', momentum=0.5"
    )
    assert resolve_optim_args(DEMO, text) == {
        "rank": 16,
        "scale": 0.1,
        "proj": "std",
        "betas": (0.8, 0.9),
        "gaps": (1, 2, 3),
        "nesterov": True,
        "name": "my run",
        "momentum": 0.5,
    }


def test_dict_and_text_forms_agree():
    text = "rank=16,scale=0.5,betas=(0.8,0.9),nesterov=true,name=none"
    as_strings = {
        "rank": "16",
        "scale": "0.5",
        "betas": "(0.8,0.9)",
        "nesterov": "true",
        "name": "none",
    }
    native = {"rank": 16, "scale": 0.5, "betas": [0.8, 0.9], "nesterov": True, "name": None}
    expected = resolve_optim_args(DEMO, text)
    assert resolve_optim_args(DEMO, as_strings) == expected
    assert resolve_optim_args(DEMO, native) == expected


def test_hf_galore_apollo_string():
    spec = make_spec(
        "apollo_adamw",
        ArgSpec("rank", "int", "", minimum=1),
        ArgSpec("scale", "float", "", exclusive_minimum=0),
        ArgSpec("proj", "str", "", choices=("random", "svd")),
        ArgSpec("scale_type", "str", "", choices=("channel", "tensor")),
        ArgSpec("update_proj_gap", "int", "", minimum=1),
    )
    text = "rank=1,scale=128,proj=random,scale_type=tensor,update_proj_gap=200"
    assert resolve_optim_args(spec, text) == {
        "rank": 1,
        "scale": 128.0,
        "proj": "random",
        "scale_type": "tensor",
        "update_proj_gap": 200,
    }


def test_hf_sgd_string():
    spec = make_spec(
        "sgd",
        ArgSpec("momentum", "float", "", minimum=0),
        ArgSpec("nesterov", "bool", "", default=False),
    )
    assert resolve_optim_args(spec, "momentum=0.9,nesterov=true") == {
        "momentum": 0.9,
        "nesterov": True,
    }
    assert resolve_optim_args(spec, "momentum=0.9, nesterov=False")["nesterov"] is False


def test_result_keys_are_arg_names_not_backend_keys():
    spec = make_spec("demo", ArgSpec("gap", "int", "", backend_key="update_proj_gap"))
    assert resolve_optim_args(spec, "gap=5") == {"gap": 5}
    with raises_with(OptimArgsError, "'update_proj_gap'", "Valid keys: gap"):
        resolve_optim_args(spec, "update_proj_gap=5")


@pytest.mark.parametrize("form", ["text", "dict"])
def test_unknown_key_lists_sorted_keys_and_suggests(form):
    given = "rnak=4" if form == "text" else {"rnak": 4}
    with raises_with(
        OptimArgsError,
        "'demo'",
        "unknown key 'rnak'",
        "Did you mean 'rank'?",
        "Valid keys: betas, gaps, momentum, name, nesterov, proj, rank, scale.",
    ):
        resolve_optim_args(DEMO, given)


def test_several_unknown_keys_are_all_named():
    with raises_with(OptimArgsError, "unknown keys 'rnak', 'zzz'", "'rank' for 'rnak'"):
        resolve_optim_args(DEMO, "rnak=1,zzz=2")


@pytest.mark.parametrize("given", ["lr=1", {"lr": 1}])
def test_spec_without_options(given):
    spec = make_spec("plain_sgd")
    with raises_with(OptimArgsError, "plain_sgd takes no optim_args", "'lr'"):
        resolve_optim_args(spec, given)
    assert resolve_optim_args(spec, None) == {}
    assert resolve_optim_args(spec, "") == {}


def test_dict_keys_must_be_str():
    with raises_with(OptimArgsTypeError, "dict keys must be str", "1 (int)"):
        resolve_optim_args(DEMO, {1: 2})  # type: ignore[dict-item]


@pytest.mark.parametrize("given", [["rank=1"], 5, b"rank=1", ("rank", 1)])
def test_optim_args_of_wrong_type(given):
    with raises_with(OptimArgsTypeError, "'demo'", "a dict or None"):
        resolve_optim_args(DEMO, given)  # type: ignore[arg-type]


def test_dict_form_native_wrong_type_and_bad_text():
    with raises_with(OptimArgsTypeError, "rank=[1]"):
        resolve_optim_args(DEMO, {"rank": [1]})
    with raises_with(OptimArgsError, "rank='abc'"):
        resolve_optim_args(DEMO, {"rank": "abc"})
    assert resolve_optim_args(DEMO, {"rank": "128"})["rank"] == 128


def test_errors_are_value_errors_for_callers_catching_builtins():
    with pytest.raises(ValueError):
        resolve_optim_args(DEMO, "rank")
    with pytest.raises(TypeError):
        resolve_optim_args(DEMO, {"rank": 1.5})


# --------------------------------------------------------------------------- format


def test_format_writes_each_kind():
    values = {
        "a": 1,
        "b": (0.9, 0.95),
        "c": "none",
        "d": None,
        "e": True,
        "f": "a b",
        "g": (1,),
        "h": (),
        "i": 'say "hi"',
        "j": 1e-05,
    }
    assert format_optim_args(values) == (
        "a=1,b=(0.9,0.95),c='none',d=none,e=true,f='a b',g=(1,),h=(),i='say \"hi\"',j=1e-05"
    )
    assert format_optim_args({}) == ""


def test_format_round_trips_through_resolve():
    values = {
        "rank": 16,
        "scale": 1 / 3,
        "proj": "reverse_std",
        "betas": (0.1, 0.2),
        "gaps": (5,),
        "nesterov": False,
        "name": "x,y=(z)",
        "momentum": 5e-324,
    }
    assert resolve_optim_args(DEMO, format_optim_args(values)) == values


def test_format_refuses_what_text_cannot_express():
    with raises_with(OptimArgsError, "both quote characters"):
        format_optim_args({"s": 'it\'s "x"'})
    with raises_with(OptimArgsError, "not finite"):
        format_optim_args({"x": math.inf})
    with raises_with(OptimArgsError, "invalid key"):
        format_optim_args({"1x": 1})
    with raises_with(OptimArgsTypeError, "dict"):
        format_optim_args({"x": {"a": 1}})
