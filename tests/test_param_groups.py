"""optimhub.param_groups: HF's decay split, low-rank target groups and user rules.

The decay names and the default groups are compared with what transformers itself
computes (``Trainer.get_decay_parameter_names`` and ``Trainer.create_optimizer``).
"""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch
from torch import nn
from toy_models import HIDDEN, ToyLM, tiny_llama

from optimhub.errors import OptimArgsError, OptimArgsTypeError, OptimHubError, TargetModulesError
from optimhub.param_groups import (
    NO_DECAY_NAME_PATTERNS,
    ParamGroupRule,
    ParamGroups,
    build_param_groups,
    decay_parameter_names,
    parse_rules,
)
from optimhub.targets import select_targets

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)

# -- models --------------------------------------------------------------------------


class MyRMSNorm(nn.Module):
    """A custom RMSNorm: HF excludes it from decay only through the name it is stored at."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class MyLayerNorm(nn.LayerNorm):
    """A LayerNorm subclass: excluded by type, whatever its name."""


class OddBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = MyRMSNorm(HIDDEN)  # excluded: "(^|.)norm(.|$)"
        self.post_attention_layernorm = MyRMSNorm(HIDDEN)  # excluded: "layernorm"
        self.q_ln = MyRMSNorm(HIDDEN)  # NOT excluded: neither type nor name says norm
        self.ln_custom = MyLayerNorm(HIDDEN)  # excluded by type only
        self.Final_RMSNorm = MyRMSNorm(HIDDEN)  # excluded: names are lower-cased
        self.normalizer = nn.Linear(HIDDEN, HIDDEN)  # NOT excluded: "normalizer" != "norm"
        self.layer_norm_scale = nn.Parameter(torch.ones(HIDDEN))  # NOT excluded
        self.group_norm = nn.GroupNorm(2, HIDDEN)  # excluded: "_norm."


class OddLM(nn.Module):
    """Custom norms, a LayerNorm subclass, tied embeddings, parameters on the root."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(32, HIDDEN)
        self.blocks = nn.ModuleList(OddBlock() for _ in range(2))
        self.norm = MyRMSNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, 32, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied
        self.scale = nn.Parameter(torch.ones(1))  # root parameter, decayed
        self.pos_bias = nn.Parameter(torch.zeros(HIDDEN))  # root parameter, "bias"


def tiny_gpt2() -> nn.Module:
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)
    return GPT2LMHeadModel(config)


def tiny_bert() -> nn.Module:
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=32,
    )
    return BertForMaskedLM(config)


MODELS = {
    "toy": ToyLM,
    "odd": OddLM,
    "llama": tiny_llama,
    "llama-tied": lambda: tiny_llama(tie=True),
    "gpt2": tiny_gpt2,
    "bert": tiny_bert,
}


# -- HF's answers --------------------------------------------------------------------


def hf_decay_names(model: nn.Module) -> set[str]:
    return set(Trainer.get_decay_parameter_names(None, model))  # self is unused


def hf_groups(model: nn.Module, tmp_path, weight_decay: float) -> list[tuple[list, float]]:
    """(names, weight_decay) per non-empty group of Trainer.create_optimizer()."""
    args = TrainingArguments(
        output_dir=str(tmp_path), weight_decay=weight_decay, report_to=[], use_cpu=True
    )
    optimizer = Trainer(model=model, args=args).create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        ([names[id(p)] for p in group["params"]], group["weight_decay"])
        for group in optimizer.param_groups
        if group["params"]  # we drop empty groups; so does the comparison
    ]


def ours(model: nn.Module, **kwargs) -> ParamGroups:
    kwargs.setdefault("weight_decay", 0.1)
    kwargs.setdefault("decay_names", decay_parameter_names(model))
    return build_param_groups(list(model.named_parameters()), **kwargs)


def summary(groups: ParamGroups) -> list[tuple[list[str], float]]:
    return [
        (names, group["weight_decay"])
        for group, names in zip(groups.groups, groups.names, strict=True)
    ]


# -- decay names ---------------------------------------------------------------------


@pytest.mark.parametrize("model_name", list(MODELS))
def test_decay_names_equal_hf(model_name):
    model = MODELS[model_name]()
    assert decay_parameter_names(model) == hf_decay_names(model)


def test_decay_names_of_the_odd_model_are_what_hf_surprisingly_decides():
    decayed = decay_parameter_names(OddLM())
    block = "blocks.0."
    assert block + "q_ln.weight" in decayed  # a custom RMSNorm at an innocent name decays
    assert block + "normalizer.weight" in decayed
    assert block + "layer_norm_scale" in decayed
    assert "embed_tokens.weight" in decayed
    assert "lm_head.weight" in decayed  # the tied alias is listed too
    assert "scale" in decayed
    for excluded in (
        "norm",
        "post_attention_layernorm",
        "ln_custom",
        "Final_RMSNorm",
        "group_norm",
    ):
        assert f"{block}{excluded}.weight" not in decayed
    assert block + "normalizer.bias" not in decayed
    assert "pos_bias" not in decayed
    assert "norm.weight" not in decayed


def test_no_decay_patterns_are_hfs():
    source = inspect.getsource(Trainer.get_decay_parameter_names)
    hf_list = source.split("forbidden_name_patterns = [")[1].split("]\n")[0]
    assert tuple(re.findall(r'r"([^"]+)"', hf_list)) == NO_DECAY_NAME_PATTERNS


# -- default groups == HF's create_optimizer groups ----------------------------------


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("weight_decay", [0.1, 0.0])
def test_groups_equal_hf_create_optimizer(model_name, weight_decay, tmp_path):
    model = MODELS[model_name]()
    groups = ours(model, weight_decay=weight_decay)
    assert summary(groups) == hf_groups(model, tmp_path, weight_decay)
    assert all(set(g) == {"params", "weight_decay"} for g in groups.groups)


def test_groups_hold_the_parameters_themselves_in_name_order():
    model = ToyLM()
    groups = ours(model)
    by_name = dict(model.named_parameters())
    for group, names in zip(groups.groups, groups.names, strict=True):
        assert all(p is by_name[n] for p, n in zip(group["params"], names, strict=True))
    assert [n for names in groups.names for n in names] == sorted(
        by_name, key=lambda n: (n not in decay_parameter_names(model), list(by_name).index(n))
    )


def test_frozen_parameters_are_left_out_as_in_hf(tmp_path):
    model = tiny_llama()
    model.model.embed_tokens.weight.requires_grad_(False)
    model.model.norm.weight.requires_grad_(False)
    groups = ours(model)
    assert summary(groups) == hf_groups(model, tmp_path, 0.1)
    placed = {n for names in groups.names for n in names}
    assert "model.embed_tokens.weight" not in placed
    assert "model.norm.weight" not in placed


def test_empty_groups_are_dropped(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    groups = ours(model)
    assert summary(groups) == [(["0.weight", "1.weight"], 0.1)]
    args = TrainingArguments(output_dir=str(tmp_path), weight_decay=0.1, report_to=[], use_cpu=True)
    hf = Trainer(model=model, args=args).create_optimizer()
    assert [len(g["params"]) for g in hf.param_groups] == [2, 0]  # HF keeps the empty one


def test_no_decay_information_means_everything_decays():
    model = ToyLM(n_layers=1)
    groups = ours(model, decay_names=None, weight_decay=0.05)
    assert summary(groups) == [([n for n, _ in model.named_parameters()], 0.05)]


def test_groups_work_on_meta_tensors_without_touching_data():
    with torch.device("meta"):
        model = tiny_llama()
    groups = ours(model, target_names=select_targets(model, "all-linear").parameter_names)
    assert sum(len(g["params"]) for g in groups.groups) == len(list(model.parameters()))


def test_groups_drive_a_real_optimizer():
    torch.manual_seed(0)
    model = ToyLM(n_layers=1)
    groups = ours(model, rules=[{"pattern": "lm_head", "lr": 0.5}])
    optimizer = torch.optim.AdamW(groups.groups, lr=1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 0.5, 1e-3]
    model.lm_head(model.embed(torch.tensor([1, 2]))).sum().backward()
    before = model.lm_head.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.lm_head.weight)


# -- targets -------------------------------------------------------------------------

GALORE = {"rank": 4, "update_proj_gap": 50, "scale": 0.25, "proj_type": "std"}


def test_targets_get_their_own_last_group_with_options_and_decay():
    model = tiny_llama()
    targets = select_targets(model, [r".*.self_attn.*", r".*.mlp.*"]).parameter_names
    groups = ours(model, target_names=targets, target_options=GALORE)
    assert len(groups.groups) == 3
    assert groups.names[-1] == list(targets)
    assert groups.groups[-1] == {
        "params": groups.groups[-1]["params"],
        "weight_decay": 0.1,
        **GALORE,
    }
    assert summary(groups)[:2] == [
        (["model.embed_tokens.weight", "lm_head.weight"], 0.1),
        (
            [
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.post_attention_layernorm.weight",
                "model.layers.1.input_layernorm.weight",
                "model.layers.1.post_attention_layernorm.weight",
                "model.norm.weight",
            ],
            0.0,
        ),
    ]
    assert all("rank" not in g for g in groups.groups[:-1])


def test_hf_target_split_is_ours_without_decay(monkeypatch):
    """Same target/non-target partition as HF's _setup_low_rank_optimizer."""
    from types import SimpleNamespace

    from transformers import trainer_optimizer

    model = tiny_llama()
    args = SimpleNamespace(optim_target_modules=["self_attn", "mlp"], parallel_mode=None)
    monkeypatch.setattr(trainer_optimizer.logger, "warning", lambda *a, **k: None)
    _, kwargs = trainer_optimizer._setup_low_rank_optimizer(
        args, model, "galore_adamw", {"galore_adamw": torch.optim.AdamW}, dict(GALORE), {}
    )
    hf_non_target, hf_target = kwargs["params"]
    targets = select_targets(model, ["self_attn", "mlp"]).parameter_names
    groups = ours(model, decay_names=None, target_names=targets, target_options=GALORE)
    assert groups.groups[0]["params"] == hf_non_target["params"]
    assert groups.groups[1]["params"] == hf_target["params"]
    assert {k: v for k, v in groups.groups[1].items() if k != "weight_decay"} == hf_target


def test_targets_in_the_no_decay_class_get_a_separate_target_group():
    model = ToyLM(n_layers=1)
    targets = ["layers.0.attn.q_proj.weight", "lm_head.weight"]
    decay = decay_parameter_names(model) - {"lm_head.weight"}
    groups = ours(model, decay_names=decay, target_names=targets, target_options={"rank": 2})
    assert summary(groups)[-2:] == [
        (["layers.0.attn.q_proj.weight"], 0.1),
        (["lm_head.weight"], 0.0),
    ]
    assert groups.groups[-1]["rank"] == groups.groups[-2]["rank"] == 2


def test_frozen_target_names_are_skipped():
    model = ToyLM(n_layers=1)
    model.lm_head.weight.requires_grad_(False)
    groups = ours(model, target_names=["lm_head.weight"], target_options={"rank": 2})
    assert all("rank" not in g for g in groups.groups)


def test_unknown_target_names_are_refused():
    with pytest.raises(TargetModulesError, match=r"\['nope.weight'\] are not among"):
        ours(ToyLM(), target_names=["nope.weight"])


@pytest.mark.parametrize("key", ["params", "weight_decay", "lr"])
def test_target_options_may_not_set_reserved_keys(key):
    with pytest.raises(OptimArgsError, match=f"may not set '{key}'"):
        ours(ToyLM(), target_names=["lm_head.weight"], target_options={key: 1})


# -- rules ---------------------------------------------------------------------------


def test_rule_lr_makes_its_own_group_in_hf_order():
    model = ToyLM(n_layers=1)
    groups = ours(model, rules=[{"pattern": "lm_head", "lr": 1e-4}])
    assert [(g.get("lr"), g["weight_decay"]) for g in groups.groups] == [
        (None, 0.1),
        (1e-4, 0.1),
        (None, 0.0),
    ]
    assert groups.names[1] == ["lm_head.weight"]
    assert "lm_head.weight" not in groups.names[0]


def test_later_rules_override_earlier_ones_field_by_field():
    model = ToyLM(n_layers=1)
    rules = [
        {"pattern": r"attn", "lr": 1e-3, "weight_decay": 0.2},
        {"pattern": r"q_proj", "lr": 2e-3},
    ]
    groups = ours(model, rules=rules)
    lr_of = {
        n: (g.get("lr"), g["weight_decay"])
        for g, names in zip(groups.groups, groups.names, strict=True)
        for n in names
    }
    assert lr_of["layers.0.attn.q_proj.weight"] == (2e-3, 0.2)
    assert lr_of["layers.0.attn.q_proj.bias"] == (2e-3, 0.2)  # rule wd beats no-decay
    assert lr_of["layers.0.attn.k_proj.weight"] == (1e-3, 0.2)
    assert lr_of["layers.0.mlp.up_proj.weight"] == (None, 0.1)

    reversed_groups = ours(model, rules=rules[::-1])
    lr_of = {
        n: g.get("lr")
        for g, names in zip(reversed_groups.groups, reversed_groups.names, strict=True)
        for n in names
    }
    assert lr_of["layers.0.attn.q_proj.weight"] == 1e-3


def test_rule_weight_decay_does_not_merge_with_hfs_no_decay_group():
    model = ToyLM(n_layers=1)
    groups = ours(model, rules=[ParamGroupRule("embed", weight_decay=0.0)])
    assert summary(groups)[0] == (["embed.weight"], 0.0)
    assert len(groups.groups) == 3  # embed, the other decayed, the no-decay group


def test_rules_with_equal_settings_share_a_group():
    model = ToyLM(n_layers=1)
    rules = [{"pattern": "q_proj.weight", "lr": 1e-4}, {"pattern": "lm_head", "lr": 1e-4}]
    groups = ours(model, rules=rules)
    assert groups.names[1] == ["layers.0.attn.q_proj.weight", "lm_head.weight"]
    assert groups.groups[1]["lr"] == 1e-4


def test_rule_and_targets_split_the_target_group():
    model = ToyLM(n_layers=1)
    targets = select_targets(model, ["attn"]).parameter_names
    groups = ours(
        model,
        target_names=targets,
        target_options={"rank": 2},
        rules=[{"pattern": "o_proj", "lr": 5e-4}],
    )
    assert groups.names[-2:] == [
        [
            "layers.0.attn.q_proj.weight",
            "layers.0.attn.k_proj.weight",
            "layers.0.attn.v_proj.weight",
        ],
        ["layers.0.attn.o_proj.weight"],
    ]
    assert groups.groups[-1]["lr"] == 5e-4 and groups.groups[-1]["rank"] == 2
    assert "lr" not in groups.groups[-2]
    assert "layers.0.attn.o_proj.bias" in groups.names[-3]  # a bias: no-decay, rule lr


def test_a_rule_matching_nothing_is_refused_with_examples():
    with pytest.raises(OptimArgsError) as info:
        ours(ToyLM(), rules=[{"pattern": "lm_head", "lr": 1e-4}, {"pattern": "decoder", "lr": 1}])
    message = str(info.value)
    assert "param group rule #1 ParamGroupRule(pattern='decoder', lr=1.0)" in message
    assert "matches no trainable parameter" in message
    assert "'embed.weight', 'layers.0.input_norm.weight'" in message


def test_a_rule_matching_only_frozen_parameters_says_so():
    model = ToyLM()
    model.lm_head.weight.requires_grad_(False)
    with pytest.raises(OptimArgsError, match=r"matches only frozen parameters \(lm_head.weight\)"):
        ours(model, rules=[{"pattern": "lm_head", "lr": 1e-4}])


# -- rule parsing --------------------------------------------------------------------


def test_parse_rules_accepts_dicts_and_rules():
    rule = ParamGroupRule("bias", weight_decay=0.0)
    parsed = parse_rules([{"pattern": "lm_head", "lr": 1e-4}, rule, {"pattern": "x", "lr": 2}])
    assert parsed == (
        ParamGroupRule("lm_head", lr=1e-4),
        rule,
        ParamGroupRule("x", lr=2.0),
    )
    assert isinstance(parsed[2].lr, float)
    assert parse_rules(None) == ()
    assert parse_rules([]) == ()


@pytest.mark.parametrize(
    ("raw", "error", "fragments"),
    [
        (
            {"pattern": "a", "learning_rate": 1e-4},
            OptimArgsError,
            ["unknown key 'learning_rate'", "valid keys are pattern, lr, weight_decay", "'lr'?"],
        ),
        ({"pattern": "a", "weight_decy": 0.1}, OptimArgsError, ["Did you mean 'weight_decay'?"]),
        ({"lr": 1e-4}, OptimArgsError, ["missing 'pattern'"]),
        ({"pattern": "(", "lr": 1e-4}, OptimArgsError, ["'(' is not a valid regular expression"]),
        ({"pattern": "", "lr": 1e-4}, OptimArgsError, ["empty", "'.*'"]),
        ({"pattern": "a"}, OptimArgsError, ["overrides nothing"]),
        ({"pattern": 3, "lr": 1e-4}, OptimArgsTypeError, ["must be a str", "3 (int)"]),
        ({"pattern": "a", "lr": "1e-4"}, OptimArgsTypeError, ["lr must be a number", "YAML"]),
        ({"pattern": "a", "lr": True}, OptimArgsTypeError, ["lr must be a number", "bool"]),
        ({"pattern": "a", "lr": 0}, OptimArgsError, ["lr must be finite and > 0", "got 0"]),
        ({"pattern": "a", "lr": -1e-3}, OptimArgsError, ["lr must be finite and > 0"]),
        ({"pattern": "a", "lr": math.nan}, OptimArgsError, ["lr must be finite", "nan"]),
        ({"pattern": "a", "lr": math.inf}, OptimArgsError, ["lr must be finite", "inf"]),
        (
            {"pattern": "a", "weight_decay": -0.1},
            OptimArgsError,
            ["weight_decay must be finite and >= 0"],
        ),
        (
            {"pattern": "a", "weight_decay": "0"},
            OptimArgsTypeError,
            ["weight_decay must be a number"],
        ),
        ("lm_head", OptimArgsTypeError, ["a ParamGroupRule or a dict", "got str"]),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(raw, error, fragments):
    with pytest.raises(error) as info:
        parse_rules([{"pattern": "ok", "lr": 1.0}, raw])
    assert type(info.value) is error
    assert isinstance(info.value, OptimHubError)
    message = str(info.value)
    assert message.startswith(f"param group rule #1 {raw!r}: ")
    for fragment in fragments:
        assert fragment in message


def test_zero_weight_decay_is_a_valid_override():
    assert ParamGroupRule("bias", weight_decay=0).weight_decay == 0.0


def test_rules_constructed_directly_are_validated():
    with pytest.raises(OptimArgsError, match="lr must be finite and > 0"):
        ParamGroupRule("a", lr=-1.0)


@pytest.mark.parametrize(
    "rules", [{"pattern": "a", "lr": 1.0}, "lm_head", ParamGroupRule("a", 1.0)]
)
def test_a_single_rule_must_be_wrapped_in_a_list(rules):
    with pytest.raises(OptimArgsTypeError, match="must be a list of rules"):
        parse_rules(rules)  # type: ignore[arg-type]


def test_build_param_groups_parses_rules_too():
    with pytest.raises(OptimArgsError, match="unknown key 'lrr'"):
        ours(ToyLM(), rules=[{"pattern": "lm_head", "lrr": 1e-4}])


# -- bad parameter lists -------------------------------------------------------------


def test_no_trainable_parameters():
    model = ToyLM(n_layers=1)
    model.requires_grad_(False)
    with pytest.raises(OptimArgsError) as info:
        ours(model)
    message = str(info.value)
    assert "no trainable parameters" in message
    assert "requires_grad=True" in message
    assert "all 18 given have requires_grad=False" in message
    with pytest.raises(OptimArgsError, match="no trainable parameters: the list of parameters is"):
        build_param_groups([], weight_decay=0.0, decay_names=None)


def test_named_parameters_generator_is_accepted():
    model = ToyLM()
    groups = build_param_groups(
        model.named_parameters(),  # type: ignore[arg-type]
        weight_decay=0.1,
        decay_names=decay_parameter_names(model),
        target_names=["lm_head.weight"],
        rules=[{"pattern": "embed", "lr": 1e-4}],
    )
    assert summary(groups) == summary(
        ours(model, target_names=["lm_head.weight"], rules=[{"pattern": "embed", "lr": 1e-4}])
    )
    assert sum(len(names) for names in groups.names) == len(list(model.parameters()))


def test_the_same_parameter_twice_is_refused_naming_both():
    model = tiny_llama(tie=True)
    named = list(model.named_parameters(remove_duplicate=False))
    with pytest.raises(OptimArgsError) as info:
        build_param_groups(named, weight_decay=0.1, decay_names=None)
    message = str(info.value)
    assert "'model.embed_tokens.weight' and 'lm_head.weight' are the same tensor" in message


def test_a_frozen_parameter_twice_is_harmless():
    frozen = nn.Parameter(torch.ones(2), requires_grad=False)
    live = nn.Parameter(torch.ones(2))
    groups = build_param_groups(
        [("a", frozen), ("b", frozen), ("c", live)], weight_decay=0.0, decay_names=None
    )
    assert groups.names == [["c"]]


def test_two_parameters_with_one_name_are_refused():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    with pytest.raises(OptimArgsError, match="both named 'w'"):
        build_param_groups([("w", a), ("w", b)], weight_decay=0.0, decay_names=None)


@pytest.mark.parametrize("entry", [torch.ones(2), ("w",), (3, nn.Parameter(torch.ones(2)))])
def test_named_params_must_be_name_parameter_pairs(entry):
    with pytest.raises(OptimArgsTypeError, match="pairs"):
        build_param_groups([entry], weight_decay=0.0, decay_names=None)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-0.1, OptimArgsError),
        (math.nan, OptimArgsError),
        ("0.1", OptimArgsTypeError),
        (True, OptimArgsTypeError),
    ],
)
def test_weight_decay_is_checked(value, error):
    with pytest.raises(error, match="weight_decay must be"):
        ours(ToyLM(), weight_decay=value)
