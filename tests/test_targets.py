"""optimhub.targets: optim_target_modules must select what transformers selects.

Parity is checked against HF's own code: ``trainer_optimizer._setup_low_rank_optimizer``
is run on the same model and patterns, and its target group is mapped back to names.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from toy_models import HIDDEN, ToyLM, tiny_llama

from optimhub.errors import OptimHubError, TargetModulesError, TargetModulesTypeError
from optimhub.targets import ALL_LINEAR, TargetSelection, explain_targets, select_targets

transformers = pytest.importorskip("transformers")
from transformers import trainer_optimizer as hf_optimizer  # noqa: E402
from transformers.pytorch_utils import Conv1D  # noqa: E402
from transformers.trainer_utils import check_target_module_exists  # noqa: E402

MODELS = {
    "toy": ToyLM,
    "llama": tiny_llama,
    "llama-tied": lambda: tiny_llama(tie=True),
}


# -- HF's selection, by HF's code ----------------------------------------------------


def hf_select(model: nn.Module, patterns, monkeypatch) -> tuple[list[str], list[str]]:
    """(target weight names, modules HF warns about) from _setup_low_rank_optimizer."""
    warned: list[str] = []
    monkeypatch.setattr(hf_optimizer.logger, "warning", lambda msg, *a, **k: warned.append(msg))
    args = SimpleNamespace(optim_target_modules=patterns, parallel_mode=None)
    _, kwargs = hf_optimizer._setup_low_rank_optimizer(
        args, model, "galore_adamw", {"galore_adamw": torch.optim.AdamW}, {}, {}
    )
    names = {id(p): n for n, p in model.named_parameters()}
    targets = [names[id(p)] for p in kwargs["params"][1]["params"]]
    return targets, [msg.split(" matched but ignored")[0] for msg in warned]


TOY_PATTERNS = [
    r"layers\.\d+\.attn\.q_proj",
    r"layers\.0\..*",
    "lm_head",
    ["attn", "mlp"],
    [r".*.attn.*", r".*.mlp.*"],
    ["layers.0.attn.q_proj", "layers.1.mlp.down_proj"],
    "all-linear",
    "all_linear",
    ["q_proj", r".*\.mlp\.up_proj", "lm_head"],
    ["layers.1.attn", r"layers\.0\.mlp\..*"],
    [r".*_proj"],
    ".*",
    ["proj"],
]

LLAMA_PATTERNS = [
    ["self_attn", "mlp"],
    [r".*.self_attn.*", r".*.mlp.*"],
    [r".*.attn.*", r".*.mlp.*"],
    r"model\.layers\.\d+\.mlp\.(up|down)_proj",
    ["q_proj", "v_proj"],
    "all-linear",
    ["model.layers.0.self_attn.q_proj", "lm_head", r".*gate_proj"],
    ["layers.1"],
]


@pytest.mark.parametrize("patterns", TOY_PATTERNS, ids=repr)
def test_toy_model_matches_hf(patterns, monkeypatch):
    check_parity(ToyLM(), patterns, monkeypatch)


@pytest.mark.parametrize("model_name", ["llama", "llama-tied"])
@pytest.mark.parametrize("patterns", LLAMA_PATTERNS, ids=repr)
def test_llama_matches_hf(model_name, patterns, monkeypatch):
    check_parity(MODELS[model_name](), patterns, monkeypatch)


def check_parity(model: nn.Module, patterns, monkeypatch) -> None:
    hf_targets, hf_warned = hf_select(model, patterns, monkeypatch)
    selection = select_targets(model, patterns)
    assert list(selection.parameter_names) == hf_targets
    assert selection.numel == sum(
        p.numel() for n, p in model.named_parameters() if n in set(hf_targets)
    )
    # HF warns about the non-Linear modules that an exact name or a substring matched;
    # we record those (and regex-matched ones too) as ignored, with the reason.
    ignored = {m.module_name for m in selection.ignored if m.reason.startswith("not an nn.Linear")}
    assert set(hf_warned) <= ignored
    exact_or_substring = {
        m.module_name
        for m in selection.ignored
        if m.how in ("exact", "substring") and m.reason.startswith("not an nn.Linear")
    }
    assert exact_or_substring == set(hf_warned)
    # The selection is made before (and apart from) the per-module verdicts: they agree.
    assert selection.parameter_names == tuple(m.parameter for m in selection.matches
                                              if m.selected)


def _weight_shadowed(inputs: int, outputs: int) -> nn.Linear:
    """A Linear whose ``weight`` attribute is not its registered parameter (a property
    of its class, set after construction, answers it)."""

    class WeightProperty(nn.Linear):
        weight = property(lambda self: self._parameters["weight"] * 2)  # type: ignore

    layer = nn.Linear(inputs, outputs)
    layer.__class__ = WeightProperty
    return layer


@pytest.mark.parametrize("patterns", ["all-linear", [".*"], ".*", ["a", r"b\..*"]], ids=repr)
def test_the_selection_and_the_verdicts_agree_on_every_kind_of_match(patterns):
    """Frozen, tied, property-shadowed and non-Linear matches: what the factory reads
    (``parameter_names``, ``numel``) is what the per-module table says."""
    model = nn.Module()
    model.a = nn.Linear(3, 3)
    model.frozen_a = nn.Linear(3, 3).requires_grad_(False)
    model.b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), _weight_shadowed(4, 4))
    model.tied = nn.Linear(3, 3)
    model.tied.weight = model.a.weight
    model.conv = Conv1D(3, 3)
    selection = select_targets(model, patterns)
    chosen = [m for m in selection.matches if m.selected]
    assert selection.parameter_names == tuple(m.parameter for m in chosen)
    assert selection.numel == sum(m.numel for m in chosen)
    assert selection == explain_targets(model, patterns)
    assert "a.weight" in selection.parameter_names
    assert "tied.weight" not in selection.parameter_names
    assert "frozen_a.weight" not in selection.parameter_names


@pytest.mark.parametrize("patterns", TOY_PATTERNS + LLAMA_PATTERNS, ids=repr)
def test_every_match_agrees_with_check_target_module_exists(patterns):
    model = tiny_llama()
    matched = {m.module_name for m in explain_targets(model, patterns).matches}
    all_linear = patterns in ("all-linear", "all_linear")
    for name, module in model.named_modules():
        if name == "":
            continue
        expected = (
            isinstance(module, nn.Linear)
            if all_linear
            else check_target_module_exists(patterns, name)
        )
        assert (name in matched) == bool(expected), name


# -- what gets selected --------------------------------------------------------------


def test_only_linear_weights_are_targets_never_biases():
    model = ToyLM()
    selection = select_targets(model, ["attn"])
    assert selection.parameter_names == (
        "layers.0.attn.q_proj.weight",
        "layers.0.attn.k_proj.weight",
        "layers.0.attn.v_proj.weight",
        "layers.0.attn.o_proj.weight",
        "layers.1.attn.q_proj.weight",
        "layers.1.attn.k_proj.weight",
        "layers.1.attn.v_proj.weight",
        "layers.1.attn.o_proj.weight",
    )
    assert not any(name.endswith(".bias") for name in selection.parameter_names)
    assert selection.numel == 8 * HIDDEN * HIDDEN
    by_name = {m.module_name: m for m in selection.matches}
    assert by_name["layers.0.attn"].reason == "not an nn.Linear (Attention)"
    assert by_name["layers.0.attn.dropout"].reason == "not an nn.Linear (Dropout)"
    assert by_name["layers.0.attn.dropout"].parameter is None
    assert by_name["layers.0.attn.dropout"].numel == 0
    q = by_name["layers.0.attn.q_proj"]
    assert (q.selected, q.reason, q.parameter, q.numel) == (
        True,
        "",
        "layers.0.attn.q_proj.weight",
        HIDDEN * HIDDEN,
    )


def test_matches_follow_named_modules_order_and_record_pattern_and_how():
    model = ToyLM(n_layers=1)
    patterns = ["layers.0.attn.q_proj", "mlp", r".*\.k_proj", "lm_head"]
    selection = explain_targets(model, patterns)
    got = [(m.module_name, m.pattern, m.how) for m in selection.matches]
    assert got == [
        ("layers.0.attn.q_proj", "layers.0.attn.q_proj", "exact"),
        ("layers.0.attn.k_proj", r".*\.k_proj", "regex"),
        ("layers.0.mlp", "mlp", "substring"),
        ("layers.0.mlp.up_proj", "mlp", "substring"),
        ("layers.0.mlp.down_proj", "mlp", "substring"),
        ("layers.0.mlp.act", "mlp", "substring"),
        ("lm_head", "lm_head", "exact"),
    ]
    assert selection.mode == "list"


def test_a_str_equal_to_a_module_name_is_exact_else_regex():
    model = ToyLM()
    assert [m.how for m in explain_targets(model, "lm_head").matches] == ["exact"]
    hows = {m.how for m in explain_targets(model, r"layers\.\d\.attn\.q_proj").matches}
    assert hows == {"regex"}
    assert explain_targets(model, "lm_head").mode == "regex"


def test_str_and_one_item_list_differ_as_in_hf():
    model = ToyLM()
    assert select_targets(model, ["q_proj"]).parameter_names == (
        "layers.0.attn.q_proj.weight",
        "layers.1.attn.q_proj.weight",
    )
    with pytest.raises(TargetModulesError):
        select_targets(model, "q_proj")  # a str must match the whole name


@pytest.mark.parametrize("spelling", ["all-linear", "all_linear", ALL_LINEAR])
def test_all_linear_selects_every_linear_including_lm_head(spelling):
    model = ToyLM()
    selection = select_targets(model, spelling)
    expected = tuple(f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear))
    assert selection.parameter_names == expected
    assert "lm_head.weight" in selection.parameter_names
    assert {m.how for m in selection.matches} == {"all-linear"}
    assert {m.pattern for m in selection.matches} == {spelling}
    assert all(m.module_type == "Linear" for m in selection.matches)


def test_tuple_is_accepted_like_a_list():
    model = ToyLM()
    assert select_targets(model, ("attn", "mlp")) == select_targets(model, ["attn", "mlp"])


def test_linear_subclasses_are_targets_conv1d_is_not():
    class MyLinear(nn.Linear):
        pass

    model = nn.Module()
    model.fc = MyLinear(4, 4)
    model.c_fc = Conv1D(8, 4)  # GPT-2's "linear" is not an nn.Linear, so HF skips it too
    selection = explain_targets(model, [r"c?_?fc"])
    assert selection.parameter_names == ("fc.weight",)
    conv = next(m for m in selection.matches if m.module_name == "c_fc")
    assert conv.reason == "not an nn.Linear (Conv1D)"


def test_frozen_weights_are_never_targets():
    model = ToyLM()
    model.layers[0].attn.q_proj.weight.requires_grad_(False)
    selection = select_targets(model, [r".*q_proj"])
    assert selection.parameter_names == ("layers.1.attn.q_proj.weight",)
    frozen = next(m for m in selection.matches if m.module_name == "layers.0.attn.q_proj")
    assert not frozen.selected
    assert frozen.reason == "weight is frozen (requires_grad=False)"


def test_the_root_module_is_never_matched():
    linear = nn.Linear(4, 4)  # a model that is itself a Linear has no matchable submodule
    assert explain_targets(linear, ".*").matches == ()
    assert explain_targets(linear, "all-linear").matches == ()
    assert "" not in {m.module_name for m in explain_targets(ToyLM(), ".*").matches}
    # HF accepts this model (it "finds" ".weight") and builds an empty target group.
    with pytest.raises(TargetModulesError, match="is itself a single nn.Linear"):
        select_targets(linear, "all-linear")


def test_tied_lm_head_is_not_a_target_and_says_why():
    model = tiny_llama(tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    selection = explain_targets(model, "all-linear")
    head = next(m for m in selection.matches if m.module_name == "lm_head")
    assert not head.selected
    assert "tied to 'model.embed_tokens.weight'" in head.reason
    assert "lm_head.weight" not in selection.parameter_names


def test_trainable_numel_counts_only_trainable_parameters():
    model = ToyLM()
    model.embed.weight.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert explain_targets(model, "all-linear").trainable_numel == total


# -- the explain table ---------------------------------------------------------------


def test_explain_table_lists_every_match_with_verdict_and_totals():
    model = ToyLM(n_layers=1)
    text = str(explain_targets(model, ["attn", "lm_head"]))
    lines = text.splitlines()
    assert lines[0].startswith("optim_target_modules=['attn', 'lm_head']")
    assert "exact name, else substring, else re.fullmatch" in lines[0]
    assert re.split(r"\s+", lines[1]) == ["module", "type", "pattern", "how", "selected", "params"]
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert set(rows) == {
        "layers.0.attn",
        "layers.0.attn.q_proj",
        "layers.0.attn.k_proj",
        "layers.0.attn.v_proj",
        "layers.0.attn.o_proj",
        "layers.0.attn.dropout",
        "lm_head",
    }
    assert re.fullmatch(
        r"layers\.0\.attn\.q_proj\s+Linear\s+attn\s+substring\s+yes\s+256",
        rows["layers.0.attn.q_proj"],
    )
    assert "no: not an nn.Linear (Dropout)" in rows["layers.0.attn.dropout"]
    assert rows["layers.0.attn.dropout"].endswith("-")
    assert re.fullmatch(r"lm_head\s+Linear\s+lm_head\s+exact\s+yes\s+512", rows["lm_head"])
    trainable = sum(p.numel() for p in model.parameters())
    share = 100 * (4 * 256 + 512) / trainable
    assert lines[-1] == (
        f"selected 5 of 7 matched modules: 5 weight(s), 1,536 parameters "
        f"({share:.1f}% of {trainable:,} trainable)"
    )


def test_explain_never_raises_when_nothing_matches():
    selection = explain_targets(ToyLM(), ["no_such_module"])
    assert isinstance(selection, TargetSelection)
    assert selection.matches == ()
    assert selection.parameter_names == ()
    assert selection.numel == 0
    assert str(selection).splitlines()[-1] == "no module matched"


def test_explain_reports_matches_that_select_nothing():
    selection = explain_targets(ToyLM(), ["norm"])
    assert selection.parameter_names == ()
    assert {m.reason for m in selection.matches} == {"not an nn.Linear (LayerNorm)"}
    assert "selected 0 of 5 matched modules" in str(selection)


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [None, [], ()])
def test_missing_patterns_say_they_are_required_with_an_example(missing):
    with pytest.raises(TargetModulesError) as info:
        select_targets(ToyLM(), missing)
    message = str(info.value)
    assert "optim_target_modules is required" in message
    assert r'[r".*attn.*", r".*mlp.*"]' in message
    assert '"all-linear"' in message
    assert not isinstance(info.value, TypeError)
    with pytest.raises(TargetModulesError):
        explain_targets(ToyLM(), missing)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3, "3 (int)"), ({"attn": 1}, "{'attn': 1} (dict)"), ({"attn"}, "{'attn'} (set)")],
)
def test_wrong_type_is_a_type_error_naming_the_value(value, shown):
    with pytest.raises(TargetModulesTypeError) as info:
        select_targets(ToyLM(), value)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)  # TargetModulesError is a ValueError too
    assert isinstance(info.value, OptimHubError)
    assert f"got {shown}" in str(info.value)
    assert "a str (a regex, or 'all-linear') or a list of str" in str(info.value)


def test_non_str_item_is_a_type_error_naming_the_item():
    with pytest.raises(TargetModulesTypeError) as info:
        select_targets(ToyLM(), ["attn", 3])
    message = str(info.value)
    assert "optim_target_modules[1] is 3 (int)" in message
    assert "['attn', 3]" in message


@pytest.mark.parametrize("patterns", ["(", ["attn", "[a-"]])
def test_invalid_regex_names_the_pattern_and_the_re_error(patterns):
    bad = patterns if isinstance(patterns, str) else patterns[1]
    with pytest.raises(TargetModulesError) as info:
        explain_targets(ToyLM(), patterns)
    try:
        re.compile(bad)
    except re.error as exc:
        expected = str(exc)
    message = str(info.value)
    assert f"pattern {bad!r} is not a valid regular expression" in message
    assert expected in message
    assert isinstance(info.value.__cause__, re.error)


@pytest.mark.parametrize(
    ("patterns", "where"), [("", "optim_target_modules"), (["attn", ""], "[1]")]
)
def test_empty_pattern_is_refused(patterns, where):
    with pytest.raises(TargetModulesError, match="empty string") as info:
        explain_targets(ToyLM(), patterns)
    assert where in str(info.value)


def test_model_must_be_a_module():
    with pytest.raises(TargetModulesTypeError, match="got NoneType"):
        select_targets(None, "all-linear")  # type: ignore[arg-type]
    with pytest.raises(TargetModulesTypeError, match="got list"):
        select_targets(list(ToyLM().parameters()), "all-linear")  # type: ignore[arg-type]


def test_nothing_selected_lists_linear_names_and_what_to_do():
    with pytest.raises(TargetModulesError) as info:
        select_targets(tiny_llama(), ["no_such_module"])
    message = str(info.value)
    assert "optim_target_modules=['no_such_module'] selected no weight" in message
    assert "No module name matched." in message
    linears = message.split("nn.Linear modules of this model: ")[1].split("\n")[0]
    assert linears.startswith("model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj")
    assert linears.count(", ") == 8  # 8 names, then the total
    assert linears.endswith("... (15 in all).")
    assert "explain_targets(model, patterns)" in message
    assert r'[r".*attn.*", r".*mlp.*"]' in message


def test_nothing_selected_lists_ignored_matches_with_reasons():
    with pytest.raises(TargetModulesError) as info:
        select_targets(tiny_llama(), ["layernorm", "mlp.act"])
    message = str(info.value)
    assert "Matched but ignored (6):" in message
    ignored = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(ignored) == 5  # capped, then a count
    assert ignored[:2] == [
        "  - model.layers.0.mlp.act_fn (SiLUActivation): not an nn.Linear (SiLUActivation)",
        "  - model.layers.0.input_layernorm (LlamaRMSNorm): not an nn.Linear (LlamaRMSNorm)",
    ]
    assert "  ... and 1 more" in message.splitlines()


def test_nothing_selected_because_everything_is_frozen():
    model = ToyLM(n_layers=1)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(TargetModulesError) as info:
        select_targets(model, "all-linear")
    message = str(info.value)
    assert "weight is frozen (requires_grad=False)" in message
    assert "layers.0.attn.q_proj (frozen)" in message


def test_str_pattern_used_as_substring_gets_a_hint():
    with pytest.raises(TargetModulesError) as info:
        select_targets(ToyLM(), "attn")
    message = str(info.value)
    assert "must match a whole module name" in message
    assert "'.*attn.*'" in message
    assert "['attn']" in message


def test_all_linear_inside_a_list_gets_a_hint():
    with pytest.raises(TargetModulesError, match="special only as the whole value"):
        select_targets(ToyLM(), ["all-linear"])


def test_model_without_linear_says_choose_another_optimizer():
    model = nn.Sequential(nn.Embedding(8, 4), nn.LayerNorm(4))
    with pytest.raises(TargetModulesError, match="has no nn.Linear module"):
        select_targets(model, "all-linear")
