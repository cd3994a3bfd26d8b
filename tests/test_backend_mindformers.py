"""adamweightdecay: MindSpore / MindFormers' AdamWeightDecay update, our own optimizer.

The update is checked against the documented formula computed by hand, step by step; against
torch's AdamW where the two must agree (bias correction made irrelevant); its foreach path
against its per-parameter reference; its state size against the estimate; and its bad inputs.
Tolerances: float64 runs agree with the float64 hand computation to 1e-12 (relative), float32
runs with the float32 one to 1e-6 (the kernels may fuse a multiply-add that the hand formula
rounds twice); the two code paths agree exactly.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch import nn

import optimhub
from optimhub import OptimArgsError, OptimArgsTypeError
from optimhub.plugins.mindformers import AdamWeightDecay
from optimhub.state_size import state_bytes

STEPS = 5


def gradients(shape: tuple[int, ...], steps: int, dtype: torch.dtype, seed: int = 3
              ) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
            for _ in range(steps)]


def by_hand(weight: torch.Tensor, grads: list[torch.Tensor], *, lr: float,
            betas: tuple[float, float], eps: float, weight_decay: float) -> list[torch.Tensor]:
    """The documented update, literally: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    w = w - lr (m / (sqrt(v) + eps) + wd w). Returns the weight after every step."""
    beta1, beta2 = betas
    m = torch.zeros_like(weight)
    v = torch.zeros_like(weight)
    w = weight.clone()
    history = []
    for g in grads:
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr * (m / (torch.sqrt(v) + eps) + weight_decay * w)
        history.append(w.clone())
    return history


def stepped(optimizer: torch.optim.Optimizer, param: torch.Tensor, grads: list[torch.Tensor]
            ) -> list[torch.Tensor]:
    history = []
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        history.append(param.detach().clone())
    return history


# ------------------------------------------------------------------------ the formula
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("foreach", [True, False])
def test_every_step_is_the_documented_formula(dtype, rtol, foreach):
    settings = {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.3}
    start = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(3, 4).to(dtype)
    grads = gradients((3, 4), STEPS, dtype)
    param = nn.Parameter(start.clone())
    optimizer = AdamWeightDecay([param], foreach=foreach, **settings)
    ours = stepped(optimizer, param, grads)
    expected = by_hand(start, grads, **settings)
    for step, (got, want) in enumerate(zip(ours, expected, strict=True), 1):
        torch.testing.assert_close(got, want, rtol=rtol, atol=0, msg=f"step {step}")
    # No bias correction: besides the decay, step 1 moves each weight by about
    # lr (1-b1)/sqrt(1-b2) = 0.045 (eps aside), where torch AdamW's first step is lr = 0.05.
    first = (ours[0] - start + 0.05 * 0.3 * start).abs()
    torch.testing.assert_close(first, torch.full_like(first, 0.05 * 0.2 / math.sqrt(0.05)),
                               rtol=1e-3, atol=0)


def test_groups_take_their_own_lr_and_weight_decay_at_every_step():
    a, b = nn.Parameter(torch.ones(4, dtype=torch.float64)), nn.Parameter(
        torch.ones(4, dtype=torch.float64))
    optimizer = AdamWeightDecay([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.0}],
                                lr=0.1, weight_decay=0.2)
    grads = gradients((4,), STEPS, torch.float64)
    for step, g in enumerate(grads):
        optimizer.param_groups[0]["lr"] = 0.1 / (step + 1)  # as a scheduler would
        a.grad, b.grad = g.clone(), g.clone()
        optimizer.step()
    lrs = [0.1 / (step + 1) for step in range(STEPS)]
    m = torch.zeros(4, dtype=torch.float64)
    v = torch.zeros(4, dtype=torch.float64)
    wa = torch.ones(4, dtype=torch.float64)
    for lr, g in zip(lrs, grads, strict=True):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        wa = wa - lr * (m / (v.sqrt() + 1e-8) + 0.2 * wa)
    torch.testing.assert_close(a.detach(), wa, rtol=1e-12, atol=0)
    wb = by_hand(torch.ones(4, dtype=torch.float64), grads, lr=0.5, betas=(0.9, 0.999),
                 eps=1e-8, weight_decay=0.0)[-1]
    torch.testing.assert_close(b.detach(), wb, rtol=1e-12, atol=0)


def test_weight_decay_alone_shrinks_by_one_minus_lr_times_decay_per_step():
    """With a zero gradient the moments stay 0, so each step is w <- w - lr wd w: decay
    scaled by the lr (as torch AdamW's), applied to the decayed group only."""
    decayed = nn.Parameter(torch.full((3,), 2.0, dtype=torch.float64))
    kept = nn.Parameter(torch.full((3,), 2.0, dtype=torch.float64))
    optimizer = AdamWeightDecay([{"params": [decayed], "weight_decay": 0.1},
                                 {"params": [kept], "weight_decay": 0.0}], lr=0.01)
    for _ in range(STEPS):
        decayed.grad, kept.grad = torch.zeros(3, dtype=torch.float64), torch.zeros(
            3, dtype=torch.float64)
        optimizer.step()
    torch.testing.assert_close(decayed.detach(), torch.full((3,), 2.0 * (1 - 0.001) ** STEPS,
                                                            dtype=torch.float64),
                               rtol=1e-14, atol=0)
    assert torch.equal(kept.detach(), torch.full((3,), 2.0, dtype=torch.float64))


# ------------------------------------------------------------- agreement with torch AdamW
def run_pair(betas: tuple[float, float], *, rescale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ours and torch.optim.AdamW on the same gradients, in float64. With ``rescale``,
    torch's lr, eps and weight decay are set each step so that its bias corrections cancel:
    lr_t = lr (1 - b1^t) / sqrt(1 - b2^t), eps_t = eps / sqrt(1 - b2^t), wd_t = wd lr / lr_t
    (then lr_t/bc1 * m / (sqrt(v)/sqrt(bc2) + eps_t) = lr m / (sqrt(v) + eps), and the decay
    lr_t wd_t w = lr wd w)."""
    lr, eps, wd = 0.02, 1e-6, 0.1
    start = torch.linspace(-2.0, 2.0, 10, dtype=torch.float64)
    ours, theirs = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    mine = AdamWeightDecay([ours], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    torch_adamw = torch.optim.AdamW([theirs], lr=lr, betas=betas, eps=eps, weight_decay=wd,
                                    foreach=False)
    for t, g in enumerate(gradients((10,), 8, torch.float64), 1):
        if rescale:
            bc1, bc2 = 1 - betas[0] ** t, 1 - betas[1] ** t
            group = torch_adamw.param_groups[0]
            group["lr"] = lr * bc1 / math.sqrt(bc2)
            group["eps"] = eps / math.sqrt(bc2)
            group["weight_decay"] = wd * lr / group["lr"]
        ours.grad, theirs.grad = g.clone(), g.clone()
        mine.step()
        torch_adamw.step()
    return ours.detach(), theirs.detach()


def test_equals_torch_adamw_when_bias_correction_is_cancelled_by_rescaling():
    ours, theirs = run_pair((0.9, 0.999), rescale=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_equals_torch_adamw_when_both_betas_are_zero():
    """b1 = b2 = 0: every 1 - b^t is exactly 1, so there is nothing to correct."""
    ours, theirs = run_pair((0.0, 0.0), rescale=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_differs_from_torch_adamw_at_default_settings():
    """The point of the name: without the rescaling the updates are not AdamW's."""
    ours, theirs = run_pair((0.9, 0.999), rescale=False)
    assert (ours - theirs).abs().max() > 1e-3


# ------------------------------------------------------------------- the two code paths
def test_foreach_and_reference_paths_are_identical_on_mixed_dtypes():
    """float32 and bfloat16 parameters in one group: float32 moments for both, one
    rounding into bfloat16, the same result bit for bit (on the CPU)."""
    results = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4).to(torch.bfloat16))
        optimizer = optimhub.create_optimizer("adamweightdecay", model, lr=1e-2,
                                              weight_decay=0.1, optim_args={"foreach": foreach})
        inputs = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
        initial = [p.detach().clone() for p in model.parameters()]
        for _ in range(3):
            hidden = model[1](model[0](inputs)).to(torch.bfloat16)
            model[2](hidden).float().pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        assert {s["exp_avg"].dtype for s in optimizer.state.values()} == {torch.float32}
        assert model[2].weight.dtype == torch.bfloat16
        results.append([p.detach().clone() for p in model.parameters()])
        assert not any(torch.equal(a, b) for a, b in zip(initial, results[-1], strict=True))
    for ours, reference in zip(*results, strict=True):
        assert torch.equal(ours, reference)


# ------------------------------------------------------------------------ state, estimate
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_is_eight_bytes_per_parameter_as_estimated(dtype):
    model = make_tiny_lm().to(dtype)
    optimizer = optimhub.create_optimizer("adamweightdecay", model, lr=1e-3)
    lm_loss(model, lm_batch()).float().backward()
    optimizer.step()
    count = sum(p.numel() for p in model.parameters())
    assert state_bytes(optimizer) == 8 * count
    assert optimhub.estimate("adamweightdecay", model).state_bytes == 8 * count
    assert optimhub.get_spec("adamweightdecay").state_bytes_per_param == 8.0


def test_state_dict_round_trips_through_weights_only_load():
    model, twin = make_tiny_lm(), make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamweightdecay", model, lr=1e-2, weight_decay=0.1)
    batch = lm_batch()
    for _ in range(2):
        lm_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    twin.load_state_dict(model.state_dict())
    resumed = optimhub.create_optimizer("adamweightdecay", twin, lr=1e-2, weight_decay=0.1)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for net, opt in ((model, optimizer), (twin, resumed)):
        lm_loss(net, batch).backward()
        opt.step()
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_the_alias_names_mindformers_class():
    assert optimhub.get_spec("fp32_state_adamweightdecay").name == "adamweightdecay"


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("overrides", "message"), [
    ({"lr": -1e-3}, "learning_rate must be in"),
    ({"adam_beta1": 1.0}, "adam_beta1 must be in"),
    ({"adam_beta2": -0.1}, "adam_beta2 must be in"),
    ({"adam_epsilon": 0.0}, "adam_epsilon must be in"),
    ({"weight_decay": -0.1}, "weight_decay must be in"),
    ({"optim_args": "foreach=maybe"}, "foreach"),
])
def test_bad_arguments_through_the_front_door_are_our_errors(overrides, message):
    with pytest.raises(OptimArgsError, match=message):
        optimhub.create_optimizer("adamweightdecay", make_tiny_lm(), **overrides)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lr": -0.1}, OptimArgsError, r"lr must be in \[0, inf\), got -0.1"),
    ({"betas": (0.9, 1.0)}, OptimArgsError, r"beta2 must be in \[0, 1\), got 1.0"),
    ({"betas": (-0.1, 0.9)}, OptimArgsError, "beta1 must be in"),
    ({"betas": (0.9,)}, OptimArgsTypeError, "betas must be a pair"),
    ({"eps": 0.0}, OptimArgsError, r"eps must be in \(0, inf\), got 0.0"),
    ({"eps": -1e-8}, OptimArgsError, "eps must be in"),
    ({"weight_decay": -0.01}, OptimArgsError, "weight_decay must be in"),
    ({"weight_decay": float("nan")}, OptimArgsError, "weight_decay must be in"),
    ({"lr": "1e-3"}, OptimArgsTypeError, "lr must be a number, got str"),
    ({"foreach": 1}, OptimArgsTypeError, "foreach must be True, False or None"),
])
def test_the_class_refuses_bad_values_with_our_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        AdamWeightDecay([nn.Parameter(torch.ones(2))], **kwargs)


def test_a_bad_group_value_names_the_group():
    with pytest.raises(OptimArgsError, match="param group 1: eps must be in"):
        AdamWeightDecay([{"params": [nn.Parameter(torch.ones(2))]},
                         {"params": [nn.Parameter(torch.ones(2))], "eps": 0.0}])


def test_a_bad_value_written_between_steps_is_refused_before_any_tensor_changes():
    first, second = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    optimizer = AdamWeightDecay([{"params": [first]}, {"params": [second]}], lr=0.1)
    optimizer.param_groups[1]["weight_decay"] = -0.5  # e.g. a faulty scheduler
    first.grad, second.grad = torch.ones(3), torch.ones(3)
    with pytest.raises(OptimArgsError, match="param group 1: weight_decay must be in"):
        optimizer.step()
    assert torch.equal(first.detach(), torch.ones(3))  # group 0 was not stepped either
    assert not optimizer.state


def test_sparse_gradients_are_refused():
    embedding = nn.Embedding(5, 3, sparse=True)
    optimizer = AdamWeightDecay(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(OptimArgsError, match="sparse"):
        optimizer.step()
