"""plugins/_whole_tensors.py: the step that gathers FSDP2 shards must stay a method.

torch's ``LRScheduler`` wraps ``optimizer.step`` through its ``__func__`` (to notice a
scheduler stepped before the optimizer). The whole-tensor step used to be a plain function
set on the instance, so every lr scheduler on an FSDP2-sharded APOLLO / Adafactor /
GaLore-Adafactor failed at construction (``'function' object has no attribute
'__func__'``; found through ``OptimHubTrainer`` on a model sharded by transformers'
``DistributedConfig``, tools/trainer_fsdp2.py). Without DTensor parameters nothing is
swapped, so one process shows the contract.
"""

from __future__ import annotations

import warnings

import torch
from torch.optim.lr_scheduler import LambdaLR

from optimhub.plugins._whole_tensors import step_whole_tensors


def _optimizer() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([weight], lr=1e-2)
    step_whole_tensors(optimizer, lambda group: True)
    return weight, optimizer


def test_an_lr_scheduler_wraps_the_whole_tensor_step() -> None:
    weight, optimizer = _optimizer()
    scheduler = LambdaLR(optimizer, lambda step: 0.5 ** step)
    reference = torch.nn.Parameter(weight.detach().clone())
    expected = torch.optim.AdamW([reference], lr=1e-2)
    expected_scheduler = LambdaLR(expected, lambda step: 0.5 ** step)
    with warnings.catch_warnings():
        # "lr_scheduler.step() before optimizer.step()" would mean the wrapper lost the call
        warnings.simplefilter("error")
        for _ in range(3):
            for param, opt, sched in ((weight, optimizer, scheduler),
                                      (reference, expected, expected_scheduler)):
                param.grad = torch.ones_like(param)
                opt.step()
                sched.step()
    assert optimizer.param_groups[0]["lr"] == 1e-2 * 0.5 ** 3
    assert torch.equal(weight, reference)


def test_the_whole_tensor_step_is_bound_to_its_optimizer() -> None:
    _, optimizer = _optimizer()
    assert optimizer.step.__self__ is optimizer
