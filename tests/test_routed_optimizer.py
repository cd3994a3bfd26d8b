"""RoutedOptimizer: one torch optimizer made of the route optimizers (hub/routed.py).

Its update equals the route optimizers stepped separately and the optimizers built by hand,
bit for bit; its param_groups are theirs, so schedulers set each route's lr by the formula;
its state dict resumes bit-exactly through torch.load(weights_only=True) and refuses another
route set by name (its layout, torch's, in tests/test_routed_state_dict.py); schedule-free
and layerwise routes keep their contracts.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch import nn

import optimhub
from optimhub import CapabilityError, CheckpointError, RoutedOptimizer
from optimhub.roles import Role, parameter_roles

transformers = pytest.importorskip("transformers")


def step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> float:
    loss = lm_loss(model, lm_batch(seed=seed))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def same_weights(a: nn.Module, b: nn.Module) -> list[str]:
    """The names of the parameters that differ (none: bit-identical)."""
    other = dict(b.named_parameters())
    return [n for n, p in a.named_parameters() if not torch.equal(p, other[n])]


def by_hand_muon(model: nn.Module, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """What a user writes without the hub: torch's Muon on the hidden matrices (no embedding,
    no head), AdamW with HF's decay split on the rest, the same hyperparameters."""
    roles = parameter_roles(model)
    named = dict(model.named_parameters())
    matrices = [named[n] for n, e in roles.items() if e.role in (Role.MATRIX, Role.CONV)]
    rest = [n for n, e in roles.items() if e.role not in (Role.MATRIX, Role.CONV)]
    decayed = optimhub.param_groups.decay_parameter_names(model)
    muon = torch.optim.Muon([{"params": matrices, "weight_decay": weight_decay}], lr=lr,
                            adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([
        {"params": [named[n] for n in rest if n in decayed], "weight_decay": weight_decay},
        {"params": [named[n] for n in rest if n not in decayed], "weight_decay": 0.0},
    ], lr=lr)
    return [muon, adamw]


class Both:
    """Several optimizers stepped as one loop would step them."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad()


# ---- the update ----------------------------------------------------------------------------
def test_muon_equals_torch_muon_and_adamw_built_by_hand_bit_for_bit():
    routed_model, hand_model = make_tiny_lm(), make_tiny_lm()
    routed = optimhub.create_optimizer("muon", routed_model, lr=1e-2, weight_decay=0.1)
    hand = Both(by_hand_muon(hand_model, 1e-2, 0.1))
    for seed in range(5):
        assert step(routed_model, routed, seed) == step(hand_model, hand, seed)
        assert same_weights(routed_model, hand_model) == [], seed


def test_the_routed_step_equals_its_route_optimizers_stepped_separately():
    routed_model, twin_model = make_tiny_lm(), make_tiny_lm()
    text = "matrix -> muon_torch(momentum=0.9); norm -> sgd(momentum=0.5); * -> adamw_torch"
    routed = optimhub.create_optimizer(text, routed_model, lr=1e-2, weight_decay=0.05)
    twin = optimhub.create_optimizer(text, twin_model, lr=1e-2, weight_decay=0.05)
    separately = Both(list(twin.routes.values()))
    for seed in range(4):
        step(routed_model, routed, seed)
        step(twin_model, separately, seed)
        assert same_weights(routed_model, twin_model) == [], seed


def test_gpt2_conv1d_matrices_and_its_tied_head_step_once():
    def gpt2() -> nn.Module:
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=32, n_embd=16, n_layer=2, n_head=2, n_positions=16, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0))

    routed_model, hand_model = gpt2(), gpt2()
    routed = optimhub.create_optimizer("muon", routed_model, lr=1e-2)
    hand = Both(by_hand_muon(hand_model, 1e-2, 0.0))
    tied = routed_model.transformer.wte.weight
    assert tied is routed_model.lm_head.weight
    assert sum(p is tied for g in routed.param_groups for p in g["params"]) == 1

    def gpt2_step(model, optimizer, seed):
        tokens = lm_batch(seed=seed)
        model(tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for seed in range(3):
        gpt2_step(routed_model, routed, seed)
        gpt2_step(hand_model, hand, seed)
        assert same_weights(routed_model, hand_model) == [], seed
    assert routed.route_of(routed_model.transformer.h[0].attn.c_attn.weight) == "muon"


def test_torch_muon_refuses_conv_kernels_so_they_are_stepped_as_2d_views():
    with pytest.raises(ValueError, match="only supports 2D parameters"):
        torch.optim.Muon([nn.Parameter(torch.zeros(4, 2, 3, 3))])
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, bias=False)
    reference = nn.Parameter(conv.weight.detach().reshape(4, -1).clone())
    routed = optimhub.create_optimizer("muon_torch", conv, lr=1e-2, optim_args="momentum=0.9")
    by_hand = torch.optim.Muon([reference], lr=1e-2, momentum=0.9, weight_decay=0.0)
    for seed in range(3):
        inputs = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(seed))
        conv(inputs).square().mean().backward()
        reference.grad = conv.weight.grad.reshape(4, -1).clone()
        routed.step()
        by_hand.step()
        routed.zero_grad()
        assert torch.equal(conv.weight.reshape(4, -1), reference), seed
    assert type(routed).__name__ == "FlatteningMuon"


def test_step_with_a_closure_evaluates_it_once_and_returns_the_loss(tiny_lm):
    optimizer = optimhub.create_optimizer("muon", tiny_lm, lr=1e-2)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = lm_loss(tiny_lm, lm_batch())
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert len(calls) == 1 and math.isfinite(loss.item())


# ---- one optimizer object -----------------------------------------------------------------
def test_param_groups_are_the_route_optimizers_own_group_dicts(tiny_lm):
    optimizer = optimhub.create_optimizer("muon", tiny_lm, lr=1e-2, weight_decay=0.1)
    own = [g for o in optimizer.routes.values() for g in o.param_groups]
    assert len(optimizer.param_groups) == len(own) == 3
    assert all(a is b for a, b in zip(optimizer.param_groups, own, strict=True))
    assert optimizer.group_routes == ["muon", "fallback", "fallback"]
    assert isinstance(optimizer, torch.optim.Optimizer) and isinstance(optimizer,
                                                                      RoutedOptimizer)
    with pytest.raises(CapabilityError, match="cannot take a new param group"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})
    with pytest.raises(CapabilityError, match="in place"):
        optimizer.param_groups = []


def test_a_deep_copy_is_a_routed_optimizer_of_its_own(tiny_lm):
    model = copy.deepcopy(tiny_lm)
    optimizer = optimhub.create_optimizer("muon", model, lr=1e-2)
    step(model, optimizer, 0)
    twin_model, twin = copy.deepcopy((model, optimizer))
    assert twin.routes["muon"] is not optimizer.routes["muon"]
    step(model, optimizer, 1)
    step(twin_model, twin, 1)
    assert same_weights(model, twin_model) == []


def test_state_is_a_view_of_the_routes_states(tiny_lm):
    optimizer = optimhub.create_optimizer("muon", tiny_lm, lr=1e-2)
    assert len(optimizer.state) == 0
    step(tiny_lm, optimizer, 0)
    q = tiny_lm.layers[0].attn["q_proj"].weight
    assert q in optimizer.state and set(optimizer.state[q]) == {"momentum_buffer"}
    assert set(optimizer.state[tiny_lm.lm_head.weight]) == {"step", "exp_avg", "exp_avg_sq"}
    assert len(optimizer.state) == sum(1 for _ in tiny_lm.parameters())


def test_a_scheduler_sets_each_routes_lr_by_the_formula(tiny_lm):
    optimizer = optimhub.create_optimizer("muon", tiny_lm, lr=1e-2,
                                          optim_args="fallback_lr=3e-3")
    scheduler = optimhub.create_scheduler("cosine", optimizer, num_warmup_steps=2,
                                          num_training_steps=10)
    base = {"muon": 1e-2, "fallback": 3e-3}
    for t in range(8):
        factor = t / 2 if t < 2 else 0.5 * (1 + math.cos(math.pi * (t - 2) / 8))
        for label, group in zip(optimizer.group_routes, optimizer.param_groups, strict=True):
            assert group["lr"] == pytest.approx(base[label] * factor, rel=1e-12, abs=1e-15), t
        step(tiny_lm, optimizer, t)
        scheduler.step()


# ---- checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "arguments"), [
    ("muon", {"weight_decay": 0.1}),
    ("matrix -> muon_torch(momentum=0.9); norm -> sgd(momentum=0.5); * -> adamw_torch", {}),
    ("galore_plus_adamw_8bit", {"optim_args": "rank=4,update_proj_gap=2"}),
])
def test_resume_through_torch_load_weights_only_is_bit_exact(name, arguments):
    pytest.importorskip("galore_torch") if "galore" in name else None
    pytest.importorskip("bitsandbytes") if "galore" in name else None
    model = make_tiny_lm(width=64)  # 64x64 and 128x64 weights: 8-bit state for bnb
    optimizer = optimhub.create_optimizer(name, model, lr=1e-2, **arguments)
    for seed in range(3):
        step(model, optimizer, seed)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    for seed in range(3, 6):
        step(model, optimizer, seed)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert set(saved["optimizer"]["routes"]) == set(optimizer.routes)
    resumed_model = make_tiny_lm(width=64)
    resumed_model.load_state_dict(saved["model"])
    resumed = optimhub.create_optimizer(name, resumed_model, lr=1e-2, **arguments)
    resumed.load_state_dict(saved["optimizer"])
    for seed in range(3, 6):
        step(resumed_model, resumed, seed)
    assert same_weights(model, resumed_model) == []


@pytest.mark.parametrize(("other", "message"), [
    ("muon:fallback=sgd", r"route 'fallback' was stepped by 'adamw_torch', here by 'sgd'"),
    ("matrix, norm -> muon_torch; * -> adamw_torch", "routes saved"),
    ("muon:adjust_lr_fn=original", None),  # same routes and parameters: it loads
    ("adamw_torch", "saved by optimizer 'muon'"),
])
def test_loading_into_another_route_set_names_the_difference(tiny_lm, other, message):
    optimizer = optimhub.create_optimizer("muon", tiny_lm, lr=1e-2)
    step(tiny_lm, optimizer, 0)
    state = copy.deepcopy(optimizer.state_dict())
    name, _, options = other.partition(":")
    model = make_tiny_lm()
    if name == "matrix, norm -> muon_torch; * -> adamw_torch":
        with pytest.raises(optimhub.RoutingError):  # norms are not matrices: refused first
            optimhub.create_optimizer(name, model)
        name = "matrix, embedding -> muon_torch; * -> adamw_torch"
    target = optimhub.create_optimizer(name, model, lr=1e-2, optim_args=options or None)
    before = copy.deepcopy(target.state_dict())
    if message is None:
        target.load_state_dict(state)
        return
    with pytest.raises(CheckpointError, match=message):
        target.load_state_dict(state)
    assert str(target.state_dict()) == str(before)  # nothing was loaded


def test_a_plain_state_is_refused_by_a_routed_optimizer(tiny_lm):
    plain = optimhub.create_optimizer("adamw_torch", tiny_lm)
    routed = optimhub.create_optimizer("muon", make_tiny_lm())
    with pytest.raises(CheckpointError, match="saved by 'adamw_torch'"):
        routed.load_state_dict(plain.state_dict())


# ---- loop contracts per route --------------------------------------------------------------
def test_schedule_free_routes_switch_modes_with_the_routed_optimizer():
    pytest.importorskip("schedulefree")
    import schedulefree

    routed_model, hand_model = make_tiny_lm(), make_tiny_lm()
    routed = optimhub.create_optimizer("matrix -> schedule_free_adamw; * -> adamw_torch",
                                       routed_model, lr=1e-2)
    assert optimhub.spec_of(routed).has("schedule_free")
    named = dict(hand_model.named_parameters())
    routes = {n: routed.route_of(p) for n, p in routed_model.named_parameters()}
    free = schedulefree.AdamWScheduleFree(
        [{"params": [named[n] for n, r in routes.items() if r == "schedule_free_adamw"],
          "weight_decay": 0.0}], lr=1e-2, warmup_steps=0)
    adamw = torch.optim.AdamW(
        [{"params": [named[n] for n, r in routes.items() if r == "adamw_torch" and
                     n in optimhub.param_groups.decay_parameter_names(hand_model)],
          "weight_decay": 0.0},
         {"params": [named[n] for n, r in routes.items() if r == "adamw_torch" and
                     n not in optimhub.param_groups.decay_parameter_names(hand_model)],
          "weight_decay": 0.0}], lr=1e-2)
    driver = optimhub.drive(routed, model=routed_model)  # calls routed.train()
    free.train()
    for seed in range(4):
        driver.backward(lm_loss(routed_model, lm_batch(seed=seed)))
        driver.step()
        step(hand_model, Both([free, adamw]), seed)
    assert same_weights(routed_model, hand_model) == []
    with driver.evaluating():
        free.eval()
        assert same_weights(routed_model, hand_model) == []  # the averaged weights
        changed = {routes[n] for n in same_weights(routed_model, make_tiny_lm())}
        assert changed == {"schedule_free_adamw", "adamw_torch"}
        free.train()
    assert same_weights(routed_model, hand_model) == []
    with pytest.raises(CapabilityError, match="schedule-free"):
        optimhub.create_scheduler("cosine", routed, num_training_steps=10)


def test_a_layerwise_route_steps_in_backward_and_the_rest_at_step(tiny_lm):
    optimizer = optimhub.create_optimizer(
        "matrix -> adamw_torch(layerwise=true); * -> adamw_torch", tiny_lm, lr=1e-2)
    spec = optimhub.spec_of(optimizer)
    assert spec.has("layerwise")
    with pytest.raises(CapabilityError, match="cannot clip"):
        optimhub.drive(optimizer, max_grad_norm=1.0)
    q, head = tiny_lm.layers[0].attn["q_proj"].weight, tiny_lm.lm_head.weight
    q0, head0 = q.detach().clone(), head.detach().clone()
    lm_loss(tiny_lm, lm_batch()).backward()
    assert not torch.equal(q, q0) and torch.equal(head, head0)  # q stepped inside backward
    optimizer.step()
    assert not torch.equal(head, head0)
    optimizer.zero_grad()
    optimizer.close()
    assert optimizer.closed
    q1 = q.detach().clone()
    lm_loss(tiny_lm, lm_batch()).backward()
    assert torch.equal(q, q1)  # no hook left


def test_a_failed_route_build_leaves_no_hook_on_the_model(tiny_lm):
    hooks = [dict(p._post_accumulate_grad_hooks or {}) for p in tiny_lm.parameters()]
    with pytest.raises(optimhub.OptimArgsError, match="nesterov"):
        optimhub.create_optimizer("matrix -> adamw_torch(layerwise=true); "
                                  "* -> sgd(nesterov=true)", tiny_lm)
    assert [dict(p._post_accumulate_grad_hooks or {}) for p in tiny_lm.parameters()] == hooks
