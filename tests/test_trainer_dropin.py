"""OptimHubTrainer is a drop-in for ``transformers.Trainer``: the scenarios of HF's own
Trainer optimizer tests (transformers ``tests/trainer/test_trainer_optimizers.py``:
``TrainerOptimizerTest``, ``TrainerLRTest`` and the optimizer-choice tests that run on a
CPU), written again with ``Trainer`` replaced by ``OptimHubTrainer``; nothing downloaded.

Where the hub deliberately differs (docs/differences-from-transformers.md) the test says
so and checks the hub's behaviour instead: more parameter groups for low-rank optimizers
(weight decay is honoured), ``optim_target_modules`` refused for an optimizer that has no
targets. A user's own ``optimizers=(optimizer, scheduler)`` and ``optimizer_cls_and_kwargs``
are used as the stock Trainer uses them; an optimizer optimhub built keeps its loop
contract even when the user passes it in.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from transformers import TrainingArguments, get_polynomial_decay_schedule_with_warmup
from transformers.optimization import Adafactor, AdafactorSchedule, GreedyLR
from transformers.trainer_callback import PrinterCallback

import optimhub
from optimhub.errors import OptimArgsError, OptimHubWarning
from optimhub.integrations.transformers import OptimHubTrainer, hub_optimizer


class RegressionModel(nn.Module):
    """HF's test model: ``y = a * x + b`` (two scalar parameters), MSE loss."""

    def __init__(self, a: float = 0.0, b: float = 0.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        y = input_x * self.a + self.b
        if labels is None:
            return (y,)
        return (nn.functional.mse_loss(y, labels), y)


class TstLayer(nn.Module):
    """HF's ``TstLayer``: two Linear layers with a LayerNorm after each, and a bias."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(nn.functional.relu(self.linear1(x)))
        return self.ln2(nn.functional.relu(self.linear2(h))) + self.bias


def regression_data(length: int = 64, seed: int = 42) -> list[dict[str, float]]:
    """HF's ``RegressionDataset``: y = 2 x + 3 + noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(length, generator=generator)
    y = 2.0 * x + 3.0 + 0.1 * torch.randn(length, generator=generator)
    return [{"input_x": float(a), "labels": float(b)} for a, b in zip(x, y, strict=True)]


def arguments(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                                    disable_tqdm=True, save_strategy="no", seed=0,
                                    per_device_train_batch_size=8, num_train_epochs=1)
    settings.update(overrides)
    return TrainingArguments(**settings)


def trainer_of(*args: Any, **kwargs: Any) -> OptimHubTrainer:
    trainer = OptimHubTrainer(*args, **kwargs)
    trainer.remove_callback(PrinterCallback)
    return trainer


def needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed")


# ---------------------------------------------- the user's optimizer and scheduler objects
def test_custom_optimizer(tmp_path):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda _: 1.0)
    trainer = trainer_of(model, arguments(tmp_path), train_dataset=regression_data(),
                         optimizers=(optimizer, scheduler))
    trainer.train()
    default = trainer_of(RegressionModel(), arguments(tmp_path, learning_rate=0.1),
                         train_dataset=regression_data())
    default.train()
    assert not torch.allclose(trainer.model.a, default.model.a)
    assert trainer.optimizer.optimizer is optimizer and trainer.lr_scheduler is scheduler
    assert trainer.optimizer.state_dict()["param_groups"][0]["lr"] == 1.0
    assert trainer.optimizer_spec is None  # foreign: driven as the stock Trainer drives it


def test_adafactor_lr_none(tmp_path):
    model = RegressionModel()
    optimizer = Adafactor(model.parameters(), scale_parameter=True, relative_step=True,
                          warmup_init=True, lr=None)
    trainer = trainer_of(model, arguments(tmp_path), train_dataset=regression_data(),
                         optimizers=(optimizer, AdafactorSchedule(optimizer)))
    trainer.train()
    assert trainer.model.a.item() != 0.0 and trainer.model.b.item() != 0.0
    assert trainer.optimizer.state_dict()["param_groups"][0]["lr"] > 0


@pytest.mark.parametrize("kind", ["reduce_lr_on_plateau", "greedy"])
def test_metric_driven_scheduler_objects_are_kept(tmp_path, kind):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.2, patience=5,
                                                            cooldown=2)
                 if kind == "reduce_lr_on_plateau"
                 else GreedyLR(optimizer, factor=0.8, patience=5, cooldown=2))
    trainer = trainer_of(model, arguments(tmp_path, eval_strategy="epoch",
                                          metric_for_best_model="eval_loss"),
                         train_dataset=regression_data(), eval_dataset=regression_data(),
                         optimizers=(optimizer, scheduler))
    trainer.train()
    assert trainer.lr_scheduler is scheduler
    assert (scheduler.patience, scheduler.cooldown) == (5, 2)


def test_optimizer_cls_and_kwargs_of_a_foreign_class(tmp_path):
    model = RegressionModel()
    trainer = trainer_of(model, arguments(tmp_path, weight_decay=0.5),
                         train_dataset=regression_data(),
                         optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.05}))
    trainer.train()
    optimizer = trainer.optimizer.optimizer
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.param_groups[0]["initial_lr"] == 0.05  # then HF's linear decay
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5, 0.0]  # HF's groups
    assert model.a.item() != 0.0


def test_optimizer_factory_of_a_foreign_kind(tmp_path):
    class Factory:  # HF's MockOptimizerFactory (the Muon / Dion pattern)
        def __call__(self, opt_model: nn.Module, **kwargs: Any) -> torch.optim.Optimizer:
            return torch.optim.SGD(list(opt_model.parameters()), **kwargs)

    trainer = trainer_of(RegressionModel(), arguments(tmp_path),
                         train_dataset=regression_data(),
                         optimizer_cls_and_kwargs=(Factory, {"lr": 0.05}))
    trainer.train()
    assert type(trainer.optimizer.optimizer) is torch.optim.SGD


def test_hub_optimizer_factory_in_optimhub_trainer_keeps_the_contract(tmp_path):
    pytest.importorskip("schedulefree")
    args = arguments(tmp_path, learning_rate=0.05, lr_scheduler_type="constant")
    trainer = trainer_of(RegressionModel(), args, train_dataset=regression_data(),
                         optimizer_cls_and_kwargs=hub_optimizer("schedule_free_adamw", args))
    assert trainer.optim == "schedule_free_adamw"
    trainer.train()
    optimizer = trainer.optimizer.optimizer
    assert optimhub.spec_of(optimizer).name == "schedule_free_adamw"
    assert optimizer.param_groups[0]["train_mode"] is False  # eval weights after train()


def test_a_hub_built_optimizer_passed_in_keeps_its_loop_contract(tmp_path):
    pytest.importorskip("schedulefree")
    model = RegressionModel()
    optimizer = optimhub.create_optimizer("schedule_free_adamw", model, lr=0.05)
    trainer = trainer_of(model, arguments(tmp_path), train_dataset=regression_data(),
                         optimizers=(optimizer, None))
    assert trainer.optim == "schedule_free_adamw"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()  # lr_scheduler_type is HF's default 'linear': runs constant
    assert any(issubclass(w.category, OptimHubWarning) and "HF's default" in str(w.message)
               for w in caught)
    assert trainer.optimizer.optimizer is optimizer
    assert optimizer.param_groups[0]["lr"] == 0.05  # a constant schedule
    assert optimizer.param_groups[0]["train_mode"] is False


@needs("lomo_optim")
def test_a_hub_built_fused_optimizer_passed_in_goes_through_fused_backward(tmp_path):
    model = RegressionModel()
    optimizer = optimhub.create_optimizer("lomo", model, lr=0.05)
    trainer = trainer_of(model, arguments(tmp_path, max_grad_norm=0),
                         train_dataset=regression_data(), optimizers=(optimizer, None))
    trainer.train()  # lomo's own step() raises: it was never called
    assert model.a.item() != 0.0 and optimizer.lr == pytest.approx(0.0, abs=0.01)


def test_optim_and_an_optimizer_together_are_refused(tmp_path):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(OptimArgsError, match="give one of the two"):
        OptimHubTrainer(model, arguments(tmp_path), optim="adamw_torch",
                        optimizers=(optimizer, None))


# ------------------------------------------------------------ groups and learning rates
def test_get_optimizer_group_and_learning_rates(tmp_path):
    model = nn.Sequential(nn.Linear(128, 64))
    trainer = trainer_of(model=model, args=arguments(tmp_path))
    with pytest.raises(ValueError):
        trainer.get_optimizer_group()
    with pytest.raises(ValueError):
        trainer.get_learning_rates()
    trainer.create_optimizer()
    assert len(trainer.get_optimizer_group()) == 2
    param = next(model.parameters())
    assert any(param is p for p in trainer.get_optimizer_group(param)["params"])
    assert trainer.get_learning_rates() == [5e-05, 5e-05]


def test_no_weight_decay_param_group(tmp_path):
    model = nn.Sequential(TstLayer(128), nn.ModuleList([TstLayer(128), TstLayer(128)]))
    trainer = trainer_of(model=model, args=arguments(tmp_path, weight_decay=0.1))
    trainer.create_optimizer_and_scheduler(10)
    decay_names = ["0.linear1.weight", "0.linear2.weight", "1.0.linear1.weight",
                   "1.0.linear2.weight", "1.1.linear1.weight", "1.1.linear2.weight"]
    decay = [p for n, p in model.named_parameters() if n in decay_names]
    no_decay = [p for n, p in model.named_parameters() if n not in decay_names]
    groups = trainer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert groups[0]["params"] == decay and groups[1]["params"] == no_decay


@needs("galore_torch")
def test_lr_display_without_scheduler_for_a_low_rank_name(tmp_path):
    """HF shows two lrs (two groups); the hub's groups are the decay split plus the
    low-rank group(s) (weight decay honoured), each at the learning rate."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64))
    args = arguments(tmp_path, learning_rate=1e-9,
                     optim_target_modules=[r".*attn.*", r".*mlp.*"])
    trainer = trainer_of(model, args, optim="galore_adamw")
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    rates = trainer.get_learning_rates()
    assert len(rates) >= 2 and set(rates) == {1e-9}


@needs("optimi")
def test_stable_adamw_takes_the_trainer_adam_arguments(tmp_path):
    """HF's test also passes optim_target_modules, which HF ignores for stable_adamw; the hub
    refuses targets for an optimizer that has none, so they are left out here."""
    args = arguments(tmp_path, learning_rate=1e-9, weight_decay=0.001, adam_beta1=0.89,
                     adam_beta2=0.98, adam_epsilon=1e-8)
    trainer = trainer_of(nn.Sequential(nn.Linear(8, 8)), args, optim="stable_adamw")
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    defaults = trainer.optimizer.defaults
    assert (defaults["beta1"], defaults["beta2"], defaults["eps"]) == (0.89, 0.98, 1e-8)
    assert defaults["weight_decay"] == 0.001


# --------------------------------------------------------- schedules from the arguments
def test_lr_scheduler_kwargs(tmp_path):
    extra = {"power": 5.0, "lr_end": 1e-5}
    args = arguments(tmp_path, lr_scheduler_type="polynomial", lr_scheduler_kwargs=extra,
                     learning_rate=0.2, warmup_steps=2)
    trainer = trainer_of(RegressionModel(), args, train_dataset=regression_data())
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    reference = get_polynomial_decay_schedule_with_warmup(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2), num_warmup_steps=2,
        num_training_steps=10, **extra)
    ours = []
    for _ in range(10):
        ours.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.lr_scheduler.step()
    theirs = []
    for _ in range(10):
        theirs.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_cosine_with_min_lr_scheduler(tmp_path):
    args = arguments(tmp_path, lr_scheduler_type="cosine_with_min_lr", learning_rate=0.2,
                     lr_scheduler_kwargs={"min_lr": 1e-5}, warmup_steps=2)
    trainer = trainer_of(RegressionModel(), args, train_dataset=regression_data())
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    for _ in range(10):
        trainer.lr_scheduler.step()
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-5, abs=1e-12)


def test_cosine_warmup_with_min_lr_schedule(tmp_path):
    args = arguments(tmp_path, lr_scheduler_type="cosine_warmup_with_min_lr",
                     learning_rate=0.2, lr_scheduler_kwargs={"min_lr": 1e-5}, warmup_steps=2)
    trainer = trainer_of(RegressionModel(), args, train_dataset=regression_data())
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    rates = []
    for _ in range(10):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.lr_scheduler.step()
    assert rates[0] == pytest.approx(0.1) and rates[1] == pytest.approx(0.2)
    assert rates[-1] == pytest.approx(1e-5)


@pytest.mark.parametrize(("schedule", "kwargs"), [("reduce_lr_on_plateau", {}),
                                                  ("greedy", {"patience": 1, "factor": 0.5})])
def test_metric_driven_schedules_from_the_arguments(tmp_path, schedule, kwargs):
    args = arguments(tmp_path, lr_scheduler_type=schedule, lr_scheduler_kwargs=kwargs,
                     eval_strategy="epoch", metric_for_best_model="eval_loss",
                     num_train_epochs=10, learning_rate=0.2)
    trainer = trainer_of(RegressionModel(), args, train_dataset=regression_data(),
                         eval_dataset=regression_data())
    trainer.train()
    # The hub's greedy is its own GreedyLR (HF's learning rates, tests/test_schedules.py),
    # a ReduceLROnPlateau subclass, so HF's loop steps it on the metric as it steps HF's.
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert type(trainer.lr_scheduler).__name__ == ("GreedyLR" if schedule == "greedy"
                                                   else "ReduceLROnPlateau")
    losses = [log["eval_loss"] for log in trainer.state.log_history if "eval_loss" in log]
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
