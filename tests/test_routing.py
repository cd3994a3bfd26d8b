"""Route sets: selectors, the text form and its round trip, the exactly-once rule, and every
refusal raised before a tensor is touched (hub/selectors.py, hub/routing.py,
hub/route_plan.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from torch import nn

import optimhub
from optimhub import CapabilityError, Route, RouteSet, RoutingError, UnknownOptimizerError
from optimhub.errors import OptimArgsError
from optimhub.roles import parameter_roles
from optimhub.route_plan import plan_routes, spec_for
from optimhub.routing import matrix_only_routes
from optimhub.selectors import Selector

MUON_TEXT = "matrix, conv -> muon_torch(momentum=0.9); * -> adamw_torch"


def table(optimizer: optimhub.RoutedOptimizer, model: nn.Module) -> dict[str, str]:
    return {name: optimizer.route_of(p) for name, p in model.named_parameters()}


# ---- selectors ------------------------------------------------------------------------------
def test_selector_terms_kinds_narrow_and_alternatives_widen(tiny_lm):
    roles = parameter_roles(tiny_lm)

    def selected(*terms: str) -> set[str]:
        selector = Selector.parse(list(terms))
        return {n for n, e in roles.items() if selector.matches(e)}

    assert selected("norm") == {n for n in roles if "norm" in n}
    assert selected("matrix", "re:.*attn.*") == {
        f"layers.{i}.attn.{p}.weight" for i in range(2) for p in ("q_proj", "k_proj", "v_proj",
                                                                  "o_proj")}
    assert selected("re:lm_head") == {"lm_head.weight"}  # the module's name matches
    assert selected("type:LayerNorm") == selected("norm")
    assert selected("type:Module") == set()  # nn.Module itself is not a selectable type
    assert selected("head", "embedding") == {"lm_head.weight", "embed_tokens.weight"}
    assert selected("*") == set(roles)


@pytest.mark.parametrize(("terms", "message"), [
    (["matrx"], "unknown role 'matrx' in a route selector. Did you mean 'matrix'"),
    (["re:(unclosed"], "not a valid regular expression"),
    (["type:not a class"], "give a module class name"),
    (["*", "matrix"], "cannot be combined"),
    ([], "selector is empty"),
])
def test_bad_selectors_are_refused_with_the_fix(terms, message):
    with pytest.raises(RoutingError, match=message):
        Selector.parse(terms)


# ---- the text form -------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    MUON_TEXT,
    "attention = matrix, re:'.*(attn|mlp).*' -> adamw_torch(learning_rate=0.001,"
    "adam_beta1=0.8,adam_beta2=0.95,weight_decay=0.1); * -> sgd(momentum=0.9)",
    "type:LayerNorm -> adamw_torch(lr_scale=0.5,weight_decay_policy=matrices); "
    "* -> adamw_torch(layer_decay=0.75,layerwise=true)",
    "* -> adagrad(optim_args='eps=1e-10')",
])
def test_text_round_trips(text):
    routes = RouteSet.parse(text)
    assert RouteSet.parse(routes.to_text()) == routes
    assert RouteSet.parse(routes.to_text()).to_text() == routes.to_text()


def test_text_and_python_give_the_same_routes():
    text = RouteSet.parse("matrix, conv -> muon_torch(lr=0.02,momentum=0.9); "
                          "* -> adamw_torch(betas=(0.9,0.95))")
    python = RouteSet.of([
        Route(["matrix", "conv"], "muon_torch", lr=0.02, optim_args={"momentum": 0.9}),
        Route("*", "adamw_torch", betas=(0.9, 0.95)),
    ])
    assert text == python
    assert python.labels == ("muon_torch", "adamw_torch")
    assert str(python) == ("matrix, conv -> muon_torch(learning_rate=0.02,momentum=0.9); "
                           "* -> adamw_torch(adam_beta1=0.9,adam_beta2=0.95)")


@pytest.mark.parametrize(("text", "error", "message"), [
    ("matrix muon_torch", RoutingError, "SELECTOR -> OPTIMIZER"),
    ("matrix -> ", RoutingError, "no optimizer name"),
    ("-> adamw_torch", RoutingError, "no selector"),
    ("matrix -> adamw_torch(lr=1e-3", RoutingError, "'\\(arguments\\)'"),
    ("matrix -> adamw_torch; ; * -> sgd", RoutingError, "empty route"),
    ("matrix -> adamw_tourch", UnknownOptimizerError, "adamw_torch"),
    ("matrix -> adamw_torch(momentum=0.9)", OptimArgsError, "unknown key 'momentum'"),
    ("matrix -> adamw_torch(lr=fast)", OptimArgsError, "lr"),
    ("matrix -> adamw_torch(lr=-1)", OptimArgsError, "must be > 0"),
    ("matrix -> muon; * -> adamw_torch", RoutingError, "itself routed"),
    ("matrix -> lomo; * -> adamw_torch", RoutingError, "fused-backward"),
    ("matrix -> sgd; matrix -> adamw_torch", RoutingError, "same selector"),
    ("* -> sgd; matrix -> adamw_torch", RoutingError, "put the catch-all last"),
    ("a = matrix -> sgd; a = * -> adamw_torch", RoutingError, "used twice"),
])
def test_bad_route_text_is_refused_naming_the_part(text, error, message):
    with pytest.raises(error, match=message):
        RouteSet.parse(text)


# ---- exactly once ---------------------------------------------------------------------------
def test_the_first_matching_route_takes_each_parameter(tiny_lm):
    optimizer = optimhub.create_optimizer(
        "norm, bias -> sgd; matrix -> muon_torch; * -> adamw_torch", tiny_lm, lr=1e-3)
    expected = {}
    for name, _ in tiny_lm.named_parameters():
        if "norm" in name or name.endswith(".bias"):
            expected[name] = "sgd"
        elif name in ("embed_tokens.weight", "lm_head.weight"):
            expected[name] = "adamw_torch"
        else:
            expected[name] = "muon_torch"
    assert table(optimizer, tiny_lm) == expected
    assert type(optimizer.routes["muon_torch"]) is torch.optim.Muon


def test_a_parameter_no_route_takes_is_an_error_listing_it(tiny_lm):
    with pytest.raises(RoutingError, match=r"4 trainable parameter\(s\) are taken by no route: "
                       r"embed_tokens.weight \(embedding, \[32, 16\]\); norm.weight \(norm, "
                       r"\[16\]\); norm.bias \(norm, \[16\]\); lm_head.weight \(head, "):
        optimhub.create_optimizer("matrix, bias -> adamw_torch; re:layers.* -> sgd",
                                  tiny_lm)


def test_a_route_that_takes_nothing_is_an_error_saying_why(tiny_lm):
    with pytest.raises(RoutingError, match=r"route #1 'sgd' \(conv -> sgd\) takes nothing: "
                       r"it selects no trainable parameter"):
        optimhub.create_optimizer("matrix -> muon_torch; conv -> sgd; * -> adamw_torch",
                                  tiny_lm)
    with pytest.raises(RoutingError, match=r"were all taken first by 'adamw_torch'"):
        optimhub.create_optimizer("re:layers.* -> adamw_torch; re:.*attn.* -> sgd; "
                                  "* -> adamw_torch", tiny_lm)


def test_a_matrix_only_optimizer_refuses_vectors_and_expert_stacks(tiny_lm):
    with pytest.raises(RoutingError, match=r"route 'muon_torch' \(re:.* -> muon_torch\): it "
                       r"sends 20 parameter\(s\) that are not weight matrices"):
        optimhub.create_optimizer(r"re:layers\..* -> muon_torch; * -> adamw_torch", tiny_lm)
    experts = nn.Module()
    experts.stack = nn.Parameter(torch.zeros(4, 8, 8))
    with pytest.raises(RoutingError, match=r"stack \(expert, \[4, 8, 8\]\)"):
        optimhub.create_optimizer("* -> muon_torch", experts)


def test_a_plain_matrix_only_name_on_a_whole_model_names_the_routed_form(tiny_lm):
    with pytest.raises(CapabilityError, match="'matrix, conv -> muon_torch; \\* -> adamw_torch'"):
        optimhub.create_optimizer("muon_torch", tiny_lm)
    matrices = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    assert type(optimhub.create_optimizer("muon_torch", matrices)) is torch.optim.Muon


def test_every_matrix_only_name_gets_the_same_routed_form():
    routes = matrix_only_routes("muon_torch", optim_args="momentum=0.9")
    assert routes == RouteSet.parse(MUON_TEXT)
    with pytest.raises(RoutingError, match="not matrix-only"):
        matrix_only_routes("adamw_torch")


def test_top_level_arguments_reach_each_route_and_routes_override_them(tiny_lm):
    optimizer = optimhub.create_optimizer(
        "matrix -> muon_torch(lr_scale=10); norm -> adamw_torch(weight_decay=0.0,"
        "betas=(0.8,0.9)); * -> adamw_torch", tiny_lm,
        {"learning_rate": 1e-3, "weight_decay": 0.1, "adam_beta1": 0.7})
    groups = {label: [] for label in optimizer.routes}
    for label, group in zip(optimizer.group_routes, optimizer.param_groups, strict=True):
        groups[label].append(group)
    assert [g["lr"] for g in groups["muon_torch"]] == [pytest.approx(1e-2)]
    assert {g["weight_decay"] for g in groups["muon_torch"]} == {0.1}
    assert {(g["lr"], g["betas"], g["weight_decay"]) for g in groups["adamw_torch"]} == {
        (1e-3, (0.8, 0.9), 0.0)}
    # HF's split inside the catch-all route: the head decays, the biases do not
    assert {(g["betas"], g["weight_decay"]) for g in groups["adamw_torch_2"]} == {
        ((0.7, 0.999), 0.1), ((0.7, 0.999), 0.0)}


def test_routed_presets_send_their_options_to_their_routes(tiny_lm):
    optimizer = optimhub.create_optimizer(
        "muon", tiny_lm, lr=2e-3, optim_args="momentum=0.9,ns_steps=3,fallback=sgd,"
        "fallback_lr=0.5")
    muon, fallback = optimizer.routes["muon"], optimizer.routes["fallback"]
    assert [(g["momentum"], g["ns_steps"], g["adjust_lr_fn"], g["lr"])
            for g in muon.param_groups] == [(0.9, 3, "match_rms_adamw", 2e-3)]
    assert type(fallback) is torch.optim.SGD and {g["lr"] for g in fallback.param_groups} == {0.5}
    spec = optimhub.spec_of(optimizer)
    assert spec.name == "muon" and [t.optimizer for t in spec.routes] == ["muon_torch", "sgd"]
    assert spec is not optimhub.get_spec("muon")  # the routes as built, not as declared
    assert optimhub.spec_of(optimhub.create_optimizer("muon", tiny_lm)) is optimhub.get_spec(
        "muon")


def test_muon_fallback_hyperparameters_and_the_shared_ones(tiny_lm):
    optimizer = optimhub.create_optimizer(
        "muon", tiny_lm, {"learning_rate": 1e-3, "weight_decay": 0.1, "adam_beta1": 0.8,
                          "adam_epsilon": 1e-6},
        optim_args="fallback_betas=(0.9,0.95),fallback_weight_decay=0.01,nesterov=false,"
        "ns_coefficients=(3.0,-4.0,2.0),eps=1e-6")
    muon, = optimizer.routes["muon"].param_groups
    assert (muon["lr"], muon["weight_decay"], muon["nesterov"], muon["ns_coefficients"],
            muon["eps"]) == (1e-3, 0.1, False, (3.0, -4.0, 2.0), 1e-6)
    fallback = optimizer.routes["fallback"].param_groups
    assert {(g["lr"], g["betas"], g["eps"]) for g in fallback} == {(1e-3, (0.9, 0.95), 1e-6)}
    assert sorted(g["weight_decay"] for g in fallback) == [0.0, 0.01]  # HF's split


@pytest.mark.parametrize(("call", "error", "message"), [
    (dict(name="muon", optim_args="momentun=0.9"), OptimArgsError, "Did you mean 'momentum'"),
    (dict(name="muon", optim_args="fallback=muon_torch"), RoutingError,
     "not weight matrices"),
    (dict(name="muon", optim_args="fallback=lomo"), RoutingError, "fused-backward"),
    (dict(name=MUON_TEXT, optim_args="momentum=0.9"), RoutingError, "put them in the route"),
    (dict(name=MUON_TEXT, optim_target_modules=[".*attn.*"]), optimhub.TargetModulesError,
     "no route's optimizer uses target modules"),
    (dict(name="matrix -> galore_adamw(optim_target_modules=nothing); * -> adamw_torch"),
     optimhub.TargetModulesError, r"route 'galore_adamw' \(matrix -> galore_adamw\): "),
    (dict(name="matrix -> muon_torch; * -> rmsprop(weight_decay_policy=every)"),
     OptimArgsError, "one of 'hf'"),
    (dict(name="* -> sgd(layer_decay=2)"), OptimArgsError, "layer_decay"),
    (dict(name="* -> adamw_torch", learning_rate="fast"), OptimArgsError, "learning_rate"),
    (dict(name="muon", layerwise=True), CapabilityError, "cannot run layerwise"),
])
def test_bad_input_is_refused_before_any_tensor_is_touched(tiny_lm, call, error, message):
    before = {n: p.detach().clone() for n, p in tiny_lm.named_parameters()}
    hooks = [p._post_accumulate_grad_hooks for p in tiny_lm.parameters()]
    name = call.pop("name")
    with pytest.raises(error, match=message):
        optimhub.create_optimizer(name, tiny_lm, **call)
    assert all(torch.equal(before[n], p) for n, p in tiny_lm.named_parameters())
    assert [p._post_accumulate_grad_hooks for p in tiny_lm.parameters()] == hooks


def test_a_build_error_names_the_route(tiny_lm):
    with pytest.raises(OptimArgsError, match=r"route 'sgd' \(norm -> sgd\): optimizer 'sgd': "
                       "nesterov=true needs momentum > 0"):
        optimhub.create_optimizer("norm -> sgd(nesterov=true); * -> adamw_torch", tiny_lm)


def test_top_level_param_group_rules_reach_the_routes_they_match(tiny_lm):
    optimizer = optimhub.create_optimizer(
        "matrix -> muon_torch; * -> adamw_torch", tiny_lm, lr=1e-3,
        param_group_rules=[{"pattern": "lm_head", "lr": 1e-4}])
    head = [g for g in optimizer.param_groups
            if any(p is tiny_lm.lm_head.weight for p in g["params"])]
    assert head[0]["lr"] == 1e-4 and optimizer.route_of(tiny_lm.lm_head.weight) == "adamw_torch"
    with pytest.raises(RoutingError, match="matches no trainable parameter"):
        optimhub.create_optimizer("matrix -> muon_torch; * -> adamw_torch", tiny_lm,
                                  param_group_rules=[{"pattern": "nothing", "lr": 1e-4}])


def test_param_group_dicts_are_refused_for_a_routed_optimizer(tiny_lm):
    with pytest.raises(RoutingError, match="not param-group dicts"):
        optimhub.create_optimizer("muon", [{"params": list(tiny_lm.parameters())}])


def test_roles_need_the_model_but_name_patterns_do_not(tiny_lm):
    named = list(tiny_lm.named_parameters())
    with pytest.raises(RoutingError, match=r"route\(s\) 'muon' select by role.*pass the nn"):
        optimhub.create_optimizer("muon", named)
    optimizer = optimhub.create_optimizer(r"re:layers\..*\.weight -> sgd; * -> adamw_torch",
                                          named)
    assert optimizer.route_of(tiny_lm.lm_head.weight) == "adamw_torch"


def test_spec_for_knows_the_capabilities_before_building():
    assert spec_for("adamw_torch") is optimhub.get_spec("adamw_torch")
    assert spec_for("muon") is optimhub.get_spec("muon")
    mixed = spec_for("matrix -> muon_torch; * -> schedule_free_adamw")
    assert mixed.has("schedule_free") and not mixed.has("layerwise")
    assert spec_for("muon", optim_args="fallback=schedule_free_adamw").has("schedule_free")
    assert spec_for("* -> adamw_torch(layerwise=true)").has("layerwise")
    assert spec_for("* -> adamw_torch", layerwise=True).has("layerwise")


def test_a_routing_plan_on_the_meta_device(tiny_lm):
    with torch.device("meta"):
        model = make_tiny_lm()
    plan = plan_routes("muon", model, None, {}, build=False)
    assert [(r.label, len(r.names)) for r in plan.routes] == [("muon", 12), ("fallback", 24)]
