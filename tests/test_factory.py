"""create_optimizer: every input form, every bad input (type + message), capability checks."""

from __future__ import annotations

import math
import typing

import pytest
import torch
from conftest import make_tiny_lm

import optimhub
from optimhub import (
    BackendUnavailableError,
    CapabilityError,
    MissingBackendError,
    OptimArgsError,
    OptimArgsTypeError,
    OptimizerSpec,
    TargetModulesError,
    UnknownOptimizerError,
)
from optimhub.plugin_host import PluginHost
from optimhub.spec import ArgSpec


class CapabilityPlugin:
    """In-test plugin: specs with the capabilities the built-in torch names lack."""

    @optimhub.hookimpl
    def optimhub_register_optimizers(self, register):
        adamw = lambda request: torch.optim.AdamW(request.param_groups, **request.kwargs)  # noqa: E731
        base = {"plugin": "capabilities", "distribution": "torch", "import_name": "torch"}
        register.optimizer(OptimizerSpec(
            name="lowrank_demo", summary="targets", capabilities={"target_modules", "low_rank"},
            args={"rank": ArgSpec("rank", "int", "rank", default=4, minimum=1,
                                  target_group=True)},
            **base), self._record(adamw))
        register.optimizer(OptimizerSpec(name="model_demo", summary="model",
                                         capabilities={"needs_model"}, **base), adamw)
        register.optimizer(OptimizerSpec(name="cuda_demo", summary="cuda",
                                         capabilities={"cuda_only"}, **base), adamw)
        register.optimizer(OptimizerSpec(name="no_decay_demo", summary="nd",
                                         hyperparameters={"lr"}, **base),
                           lambda r: torch.optim.SGD(r.param_groups, **r.kwargs))
        register.optimizer(OptimizerSpec(
            name="missing_demo", summary="missing", plugin="capabilities",
            distribution="definitely-not-installed", import_name="definitely_not_installed_mod",
            extra="missingextra"), adamw)

    requests: typing.ClassVar[list] = []

    def _record(self, builder):
        def build(request):
            CapabilityPlugin.requests.append(request)
            return builder(request)
        return build


@pytest.fixture
def capability_host(use_host):
    CapabilityPlugin.requests.clear()
    return use_host(PluginHost(environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
                               extra_plugins=[("capabilities", CapabilityPlugin())]))


def flags(model):
    return {n: (p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}


def assert_unchanged(model, before):
    after = flags(model)
    assert after.keys() == before.keys()
    for name, (grad_flag, value) in before.items():
        assert after[name][0] == grad_flag and torch.equal(after[name][1], value), name


# --------------------------------------------------------------------- bad inputs
BAD_INPUTS = [
    # (name, kwargs, exception type, text the message must contain)
    ("adamw_torh", {}, UnknownOptimizerError, "'adamw_torch'"),
    ("sgd", {"learning_rte": 0.1}, OptimArgsError, "'learning_rate'"),
    ("sgd", {"lr": "0.1"}, OptimArgsTypeError, "learning_rate must be a number, got str '0.1'"),
    ("sgd", {"lr": math.nan}, OptimArgsError, "learning_rate must be finite"),
    ("sgd", {"lr": math.inf}, OptimArgsError, "learning_rate must be finite"),
    ("sgd", {"lr": -1e-3}, OptimArgsError, "learning_rate must be in (0, inf), got -0.001"),
    ("sgd", {"lr": 0.0}, OptimArgsError, "learning_rate must be in (0, inf), got 0.0"),
    ("sgd", {"lr": True}, OptimArgsTypeError, "learning_rate must be a number, got bool"),
    ("adamw_torch", {"betas": (0.9, 1.0)}, OptimArgsError, "adam_beta2 must be in [0, 1), got 1.0"),
    ("adamw_torch", {"adam_beta1": -0.1}, OptimArgsError, "adam_beta1 must be in [0, 1)"),
    ("adamw_torch", {"betas": 0.9}, OptimArgsTypeError, "betas must be a pair"),
    ("adamw_torch", {"weight_decay": -0.01}, OptimArgsError, "weight_decay must be in [0, inf)"),
    ("adamw_torch", {"eps": -1e-8}, OptimArgsError, "adam_epsilon must be in (0, inf)"),
    ("sgd", {"optim_args": "momentum=0.9,nesterv=true"}, OptimArgsError, "nesterv"),
    ("sgd", {"optim_args": "momentum=fast"}, OptimArgsError, "'fast'"),
    ("sgd", {"optim_args": "nesterov=true"}, OptimArgsError, "nesterov=true needs momentum > 0"),
    ("sgd", {"optim_args": 3}, OptimArgsTypeError, "optim_args must be a string"),
    ("adamw_torch", {"optim_target_modules": ["attn"]}, TargetModulesError,
     "'adamw_torch' does not use optim_target_modules"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "text"), BAD_INPUTS)
def test_bad_input_is_rejected_before_anything_changes(name, kwargs, error, text):
    model = make_tiny_lm()
    before = flags(model)
    with pytest.raises(error) as info:
        optimhub.create_optimizer(name, model, **kwargs)
    assert text in str(info.value)
    assert isinstance(info.value, optimhub.OptimHubError)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("args", "error", "text"),
    [
        ([("lr", 1)], OptimArgsTypeError, "args must be None, a dict"),
        ("lr=1", OptimArgsTypeError, "args must be None, a dict"),
        ({"output_dir": "x"}, OptimArgsError, "unknown args key 'output_dir'"),
    ],
)
def test_bad_args_objects(args, error, text):
    with pytest.raises(error, match=text):
        optimhub.create_optimizer("sgd", make_tiny_lm(), args)


@pytest.mark.parametrize(
    ("model", "text"),
    [
        ("model", "model must be an nn.Module"),
        (torch.zeros(3), "model must be an nn.Module"),
        (42, "model must be an nn.Module"),
        ([torch.zeros(2, requires_grad=True), "x"], "a mix or other objects"),
        ([{"lr": 1}], "param group 0 has no 'params' key"),
    ],
)
def test_bad_model_arguments(model, text):
    with pytest.raises(OptimArgsTypeError, match=text):
        optimhub.create_optimizer("sgd", model)


def test_no_trainable_parameters():
    model = make_tiny_lm().requires_grad_(False)
    with pytest.raises(OptimArgsError, match="trainable"):
        optimhub.create_optimizer("adamw_torch", model)
    assert not any(p.requires_grad for p in model.parameters())


def test_name_must_be_a_string():
    with pytest.raises(OptimArgsTypeError, match="optimizer name is a str.*got NoneType"):
        optimhub.create_optimizer(None, make_tiny_lm())


# --------------------------------------------------------------------- input forms
def test_bare_parameters_all_decay():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model.parameters(), weight_decay=0.1)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))


def test_named_parameters_split_by_name():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model.named_parameters(),
                                          weight_decay=0.1)
    decay, no_decay = optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" in names[id(p)] or "norm" in names[id(p)] for p in no_decay["params"])


def test_user_param_groups_are_kept():
    model = make_tiny_lm()
    head = [model.lm_head.weight]
    rest = [p for n, p in model.named_parameters() if n != "lm_head.weight"]
    optimizer = optimhub.create_optimizer(
        "adamw_torch", [{"params": rest}, {"params": head, "lr": 1e-2, "weight_decay": 0.5}],
        lr=1e-3, weight_decay=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-2]
    # The user's weight_decay fills groups that lack one (not AdamW's default 1e-2).
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.5]
    assert optimizer.param_groups[1]["params"] == head


def test_param_group_rules_give_their_own_lr_and_decay():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(
        "adamw_torch", model, lr=1e-3, weight_decay=0.1,
        param_group_rules=[{"pattern": r"^lm_head\.", "lr": 1e-4},
                           optimhub.ParamGroupRule(pattern=r"embed_tokens", weight_decay=0.0)],
    )
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_param[id(model.lm_head.weight)]["lr"] == 1e-4
    assert by_param[id(model.embed_tokens.weight)]["weight_decay"] == 0.0
    assert by_param[id(model.layers[0].attn["q_proj"].weight)]["weight_decay"] == 0.1
    with pytest.raises(OptimArgsError, match="nothing_like_this"):
        optimhub.create_optimizer("adamw_torch", model,
                                  param_group_rules=[{"pattern": "nothing_like_this", "lr": 1.0}])


def test_spec_of_a_foreign_optimizer():
    with pytest.raises(OptimArgsTypeError, match="not built by optimhub"):
        optimhub.spec_of(torch.optim.SGD(make_tiny_lm().parameters(), lr=1))


# --------------------------------------------------------------------- capabilities
def test_target_modules_required_and_low_rank_groups(capability_host):
    model = make_tiny_lm()
    with pytest.raises(TargetModulesError, match="optim_target_modules is required"):
        optimhub.create_optimizer("lowrank_demo", model)
    with pytest.raises(CapabilityError, match="pass the nn.Module"):
        optimhub.create_optimizer("lowrank_demo", model.parameters(),
                                  optim_target_modules=["attn"])
    optimizer = optimhub.create_optimizer(
        "lowrank_demo", model, weight_decay=0.1, optim_target_modules=[r".*\.attn\..*"],
        optim_args="rank=2")
    target = optimizer.param_groups[-1]
    assert target["rank"] == 2 and target["weight_decay"] == 0.1
    request = CapabilityPlugin.requests[-1]
    assert sorted(request.param_names[-1]) == sorted(
        f"layers.{i}.attn.{p}.weight" for i in range(2) for p in ("q_proj", "k_proj", "v_proj",
                                                                   "o_proj"))
    assert "rank" not in request.kwargs and request.options == {"rank": 2}


def test_needs_model(capability_host):
    model = make_tiny_lm()
    with pytest.raises(CapabilityError, match="'model_demo' needs the model itself"):
        optimhub.create_optimizer("model_demo", model.parameters())
    assert optimhub.create_optimizer("model_demo", model) is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_only_without_cuda(capability_host):
    with pytest.raises(BackendUnavailableError, match="'cuda_demo' runs only on a CUDA device"):
        optimhub.create_optimizer("cuda_demo", make_tiny_lm())


def test_missing_backend_names_the_extra(capability_host):
    with pytest.raises(MissingBackendError) as info:
        optimhub.create_optimizer("missing_demo", make_tiny_lm())
    assert isinstance(info.value, ImportError)
    assert 'pip install "optimhub[missingextra]"' in str(info.value)
    assert "definitely_not_installed_mod" in str(info.value)
    assert "missing_demo" not in {s.name for s in optimhub.list_optimizers(available=True)}
    assert "missing_demo" in {s.name for s in optimhub.list_optimizers(available=False)}


def test_weight_decay_is_never_silently_dropped(capability_host):
    with pytest.raises(OptimArgsError, match="'no_decay_demo' has no weight decay"):
        optimhub.create_optimizer("no_decay_demo", make_tiny_lm(), weight_decay=0.1)
    optimizer = optimhub.create_optimizer("no_decay_demo", make_tiny_lm(), lr=0.1)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0}
