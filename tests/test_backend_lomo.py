"""LOMO and AdaLomo (lomo-optim): built for real, driven by their fused-backward contract.

LOMO runs on CPU; AdaLomo allocates its state with ``.cuda()``, so without CUDA it is
refused before anything touches the model, and its training test needs a GPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm

import optimhub
from optimhub.errors import BackendUnavailableError, CapabilityError, OptimArgsError

pytest.importorskip("lomo_optim")

LR = 1e-2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _gradients(model: torch.nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients of a plain backward on an identical copy of ``model``."""
    copy = make_tiny_lm()
    copy.load_state_dict(model.state_dict())
    lm_loss(copy, tokens).backward()
    return {n: p.grad.clone() for n, p in copy.named_parameters()}


def test_spec_says_how_to_drive_it():
    for name in ("lomo", "adalomo"):
        spec = optimhub.get_spec(name)
        assert {"needs_model", "fused_backward", "no_ddp"} <= {c.value for c in spec.capabilities}
        assert spec.hyperparameters == {"lr", "weight_decay"}
    assert optimhub.get_spec("adalomo").has("cuda_only")
    assert not optimhub.get_spec("lomo").has("cuda_only")


def test_lomo_trains_through_the_driver_with_no_state():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("lomo", model, lr=LR)
    assert type(optimizer).__name__ == "Lomo"
    driver = optimhub.drive(optimizer)
    tokens = lm_batch(seed=3)
    losses = []
    for _ in range(8):
        loss = lm_loss(model, tokens)
        losses.append(loss.item())
        driver.backward(loss)
        driver.step()
    assert losses[-1] < losses[0] - 0.05
    assert all(p.grad is None for p in model.parameters())  # applied and freed in backward
    assert len(optimizer.state) == 0
    with pytest.raises(CapabilityError, match="fused_backward"):
        optimizer.step()


def test_one_fused_step_is_sgd_with_decay_on_every_parameter():
    """p <- p * (1 - lr * wd) - lr * g for *all* parameters, biases and norms included."""
    model = make_tiny_lm()
    before, tokens = _snapshot(model), lm_batch(seed=5)
    grads = _gradients(model, tokens)
    optimizer = optimhub.create_optimizer("lomo", model, lr=LR, weight_decay=0.1)
    assert optimizer.weight_decay == 0.1
    optimizer.fused_backward(lm_loss(model, tokens), LR)
    for name, param in model.named_parameters():
        expected = before[name].mul(1.0 - LR * 0.1).add_(grads[name], alpha=-LR)
        assert torch.equal(param.detach(), expected), name


def test_clip_grad_norm_makes_the_driver_call_grad_norm_first():
    model = make_tiny_lm()
    before, tokens = _snapshot(model), lm_batch(seed=6)
    optimizer = optimhub.create_optimizer("lomo", model, lr=LR, optim_args="clip_grad_norm=0.01")
    assert optimizer.clip_grad_norm == 0.01
    driver = optimhub.drive(optimizer)
    driver.backward(lm_loss(model, tokens))
    driver.step()
    moved = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    # the whole update is lr * (clipped gradient), whose norm is the clip value
    assert moved.norm().item() == pytest.approx(LR * 0.01, rel=1e-3)


def test_fused_backward_alone_refuses_to_skip_the_norm_pass():
    """Why the driver calls grad_norm: lomo-optim raises when the norm pass is missing."""
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("lomo", model, lr=LR, optim_args={"clip_grad_norm": 1})
    with pytest.raises(ValueError, match="grad_norm"):
        optimizer.fused_backward(lm_loss(model, lm_batch()), LR)


def test_clip_grad_value_clamps_every_gradient_element():
    model = make_tiny_lm()
    before, tokens = _snapshot(model), lm_batch(seed=7)
    grads = _gradients(model, tokens)
    optimizer = optimhub.create_optimizer("lomo", model, lr=LR, optim_args="clip_grad_value=1e-4")
    optimizer.fused_backward(lm_loss(model, tokens), LR)
    for name, param in model.named_parameters():
        expected = before[name].add(grads[name].clamp(-1e-4, 1e-4), alpha=-LR)
        assert torch.equal(param.detach(), expected), name


@pytest.mark.parametrize(
    ("optim_args", "text"),
    [
        ("clip_grad_norm=0", "clip_grad_norm=.* must be > 0"),
        ("clip_grad_value=-1", "clip_grad_value=.* must be > 0"),
        ("clip_norm=1", "clip_norm"),
        ("loss_scale=8", "loss_scale"),  # an AdaLomo option, not LOMO's
    ],
)
def test_bad_options_are_refused_before_hooks_exist(optim_args, text):
    model = make_tiny_lm()
    with pytest.raises(OptimArgsError, match=text):
        optimhub.create_optimizer("lomo", model, lr=LR, optim_args=optim_args)
    lm_loss(model, lm_batch()).backward()  # no hook consumed the gradients
    assert all(p.grad is not None for p in model.parameters())


def test_needs_the_model_not_its_parameters():
    with pytest.raises(CapabilityError, match="needs the model"):
        optimhub.create_optimizer("lomo", make_tiny_lm().parameters(), lr=LR)


def test_param_group_rules_cannot_apply():
    rules = [{"pattern": "lm_head", "lr": 1e-4}]
    with pytest.raises(OptimArgsError, match="one learning rate and one weight decay"):
        optimhub.create_optimizer("lomo", make_tiny_lm(), lr=LR, param_group_rules=rules)


def test_float16_parameters_are_refused_with_the_reason():
    model = make_tiny_lm().half()
    with pytest.raises(BackendUnavailableError, match="float16.*bfloat16 or float32"):
        optimhub.create_optimizer("lomo", model, lr=LR)
    lm_loss(model, lm_batch()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bfloat16_parameters_train():
    model = make_tiny_lm().to(torch.bfloat16)
    optimizer = optimhub.create_optimizer("lomo", model, lr=0.1)
    before = _snapshot(model)
    optimizer.fused_backward(lm_loss(model, lm_batch()), 0.1)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert not torch.equal(model.lm_head.weight, before["lm_head.weight"])


def test_the_driver_refuses_accumulation_and_loop_clipping():
    optimizer = optimhub.create_optimizer("lomo", make_tiny_lm(), lr=LR)
    with pytest.raises(CapabilityError, match="accumulate"):
        optimhub.drive(optimizer, gradient_accumulation_steps=2)
    with pytest.raises(CapabilityError, match="optim_args=.clip_grad_norm=1.0"):
        optimhub.drive(optimizer, max_grad_norm=1.0)


def test_hooks_stay_registered_and_refuse_a_plain_backward():
    """The quirk behind fused_backward / no accumulation: construction hooks the model for
    good. lomo-optim's hooks would update it in a plain backward; the hub's refuse it
    before anything changes (tests/test_hardening_core.py has the full check)."""
    model = make_tiny_lm()
    optimhub.create_optimizer("lomo", model, lr=LR)
    assert all(p._backward_hooks for p in model.parameters())
    before = _snapshot(model)
    with pytest.raises(CapabilityError, match="optimhub.drive"):
        lm_loss(model, lm_batch()).backward()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_adalomo_without_cuda_is_refused_before_touching_the_model():
    model = make_tiny_lm()
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        optimhub.create_optimizer("adalomo", model, lr=LR)
    lm_loss(model, lm_batch()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.cuda
@needs_cuda
def test_adalomo_trains_on_cuda():
    model = make_tiny_lm().cuda()
    optimizer = optimhub.create_optimizer(
        "adalomo", model, lr=1e-2, optim_args="clip_grad_norm=1.0,clip_threshold=1.0"
    )
    assert type(optimizer).__name__ == "AdaLomo"
    driver = optimhub.drive(optimizer)
    tokens = lm_batch(seed=3).cuda()
    losses = []
    for _ in range(8):
        loss = lm_loss(model, tokens)
        losses.append(loss.item())
        driver.backward(loss)
        driver.step()
    assert losses[-1] < losses[0]
    row = optimizer.exp_avg_sq_row["lm_head.weight"]
    assert row.device.type == "cuda" and row.shape == (model.lm_head.weight.shape[0],)


@pytest.mark.cuda
@needs_cuda
def test_adalomo_refuses_a_model_left_on_the_cpu():
    with pytest.raises(BackendUnavailableError, match="model.cuda"):
        optimhub.create_optimizer("adalomo", make_tiny_lm(), lr=LR)
