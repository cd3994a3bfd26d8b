"""Helpers to compare an optimizer built by optimhub with the one the HF Trainer (or a user,
by hand) builds.

Used by every ``test_hf_parity_*`` module: same TrainingArguments in, then the class, the
parameter names of each (non-empty) group, every group hyperparameter and the parameters
after identical steps are compared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from conftest import lm_batch, lm_loss
from torch import nn

#: The TrainingArguments fields of each hyperparameter an optimizer may not take.
_HYPERPARAMETER_FIELDS = {"betas": ("adam_beta1", "adam_beta2"), "eps": ("adam_epsilon",)}


def training_args(tmp_path, optim: str, optim_args: str | None = None, **fields: Any):
    """HF TrainingArguments with non-default hyperparameters, so dropped ones show.

    Betas and epsilon stay at HF's defaults for an optimizer that takes none (given in
    ``fields`` too): optimhub refuses an explicit value it would have to drop, which HF
    drops silently (tests/test_hardening_core.py checks the refusal).
    """
    import transformers

    import optimhub

    values = dict(
        output_dir=str(tmp_path), optim=optim, optim_args=optim_args, learning_rate=3e-3,
        weight_decay=0.05, adam_beta1=0.85, adam_beta2=0.98, adam_epsilon=1e-7,
        report_to=[], use_cpu=True,
    )
    values.update(fields)
    spec = optimhub.get_spec(optim)  # the HF names the parity tests use are catalog names
    for hyperparameter, names in _HYPERPARAMETER_FIELDS.items():
        if not spec.has_hyperparameter(hyperparameter):
            for name in names:
                values.pop(name, None)
    return transformers.TrainingArguments(**values)


def hf_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """What ``transformers.Trainer.create_optimizer()`` builds for these arguments."""
    import transformers

    return transformers.Trainer(model=model, args=args).create_optimizer()


def groups_by_name(optimizer: torch.optim.Optimizer, model: nn.Module,
                   ignore: tuple[str, ...] = ()) -> list[tuple[list[str], dict[str, Any]]]:
    """[(parameter names of the group, its hyperparameters)], empty groups dropped."""
    names = {id(p): n for n, p in model.named_parameters()}
    result = []
    for group in optimizer.param_groups:
        if not group["params"]:
            continue
        hyper = {k: v for k, v in group.items() if k != "params" and k not in ignore}
        result.append(([names[id(p)] for p in group["params"]], hyper))
    return result


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5,
          backward: Callable[[torch.Tensor], None] | None = None) -> list[float]:
    """Identical steps on generated data (batch seed = step); returns the losses."""
    return train_on_batches(model, optimizer, range(steps), backward)


def train_on_batches(model: nn.Module, optimizer: torch.optim.Optimizer, seeds: Iterable[int],
                     backward: Callable[[torch.Tensor], None] | None = None) -> list[float]:
    """One plain step per batch seed (``backward`` replaces backward+step when given)."""
    losses = []
    for step in seeds:
        optimizer.zero_grad()
        loss = lm_loss(model, lm_batch(seed=step))
        (backward or torch.Tensor.backward)(loss)
        if backward is None:
            optimizer.step()
        losses.append(loss.item())
    return losses


def conformance_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5
                      ) -> None:
    """``steps`` plain steps on optimhub.testing's conformance batch (the same every step):
    what a backend's by-hand parity test runs on the hub's optimizer and on its own."""
    import optimhub.testing as ot

    batch = ot.conformance_batch()
    for _ in range(steps):
        ot.conformance_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def max_difference(model_a: nn.Module, model_b: nn.Module) -> float:
    """Largest absolute parameter difference between two same-shaped models."""
    b = dict(model_b.named_parameters())
    return max((a - b[n]).abs().max().item() for n, a in model_a.named_parameters())
