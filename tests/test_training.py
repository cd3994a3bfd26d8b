"""The training driver: contracts by capability, accumulation and clipping done right."""

from __future__ import annotations

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import max_difference

import optimhub
from optimhub.errors import CapabilityError, OptimArgsError, OptimArgsTypeError
from optimhub.training import drive


def test_accumulating_two_half_batches_equals_one_full_batch():
    full_model, accumulated_model = make_tiny_lm(), make_tiny_lm()
    full = drive(optimhub.create_optimizer("sgd", full_model, lr=0.1))
    accumulated = drive(optimhub.create_optimizer("sgd", accumulated_model, lr=0.1),
                        gradient_accumulation_steps=2)
    for step in range(3):
        batch = lm_batch(seed=step, batch=4)
        full.backward(lm_loss(full_model, batch))
        assert full.step()
        accumulated.backward(lm_loss(accumulated_model, batch[:2]))
        assert not accumulated.step()
        accumulated.backward(lm_loss(accumulated_model, batch[2:]))
        assert accumulated.step()
    assert max_difference(full_model, accumulated_model) < 1e-6


def test_clipping_and_scheduling_happen_on_real_steps_only():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("sgd", model, lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    driver = drive(optimizer, scheduler, max_grad_norm=1e-3, gradient_accumulation_steps=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    driver.backward(lm_loss(model, lm_batch()))
    assert not driver.step() and driver.lr == 1.0
    driver.backward(lm_loss(model, lm_batch(seed=2)))
    assert driver.step() and driver.lr == 0.5
    moved = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    # One SGD step of lr 1 on a gradient clipped to norm 1e-3 moves the weights by 1e-3.
    assert moved.norm().item() == pytest.approx(1e-3, rel=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_a_foreign_optimizer_is_driven_as_a_plain_one():
    model = make_tiny_lm()
    driver = drive(torch.optim.SGD(model.parameters(), lr=0.1))
    assert driver.spec is None
    losses = []
    for _ in range(5):
        loss = lm_loss(model, lm_batch(seed=0))
        losses.append(loss.item())
        driver.backward(loss)
        driver.step()
    assert losses[-1] < losses[0]


def test_layerwise_refuses_accumulation_and_clipping():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, layerwise=True)
    with pytest.raises(CapabilityError, match="inside backward .layerwise.*accumulate over 4"):
        drive(optimizer, gradient_accumulation_steps=4)
    with pytest.raises(CapabilityError, match="cannot clip gradients to max_grad_norm=1.0"):
        drive(optimizer, max_grad_norm=1.0)
    driver = drive(optimizer)
    before = model.lm_head.weight.detach().clone()
    driver.backward(lm_loss(model, lm_batch()))
    assert driver.step()
    assert not torch.equal(before, model.lm_head.weight)
    optimizer.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"max_grad_norm": -1.0}, OptimArgsError, "max_grad_norm must be a finite number > 0"),
        ({"max_grad_norm": float("nan")}, OptimArgsError, "max_grad_norm must be a finite"),
        ({"max_grad_norm": "1"}, OptimArgsTypeError, "max_grad_norm must be a number"),
        ({"gradient_accumulation_steps": 0}, OptimArgsError, "must be >= 1, got 0"),
        ({"gradient_accumulation_steps": 2.0}, OptimArgsTypeError, "must be an int, got 2.0"),
    ],
)
def test_bad_driver_settings(kwargs, error, text):
    with pytest.raises(error, match=text):
        drive(optimhub.create_optimizer("sgd", make_tiny_lm()), **kwargs)


def test_step_before_backward_is_an_error():
    driver = drive(optimhub.create_optimizer("sgd", make_tiny_lm()))
    with pytest.raises(CapabilityError, match="before backward"):
        driver.step()


def test_metric_driven_schedules_step_on_evaluation_only():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("sgd", model, lr=1.0)
    scheduler = optimhub.create_scheduler("reduce_lr_on_plateau", optimizer, patience=0,
                                          factor=0.5)
    driver = drive(optimizer, scheduler)
    driver.backward(lm_loss(model, lm_batch()))
    assert driver.step() and driver.lr == 1.0
    driver.evaluated(1.0)
    driver.evaluated(2.0)  # worse: the plateau schedule halves the lr
    assert driver.lr == 0.5
