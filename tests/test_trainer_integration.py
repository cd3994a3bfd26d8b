"""OptimHubTrainer: real ``trainer.train()`` runs of a tiny Llama, one per loop contract.

Each run is 20 optimizer steps of a 2-layer, 32-wide LlamaForCausalLM (built from a config,
nothing downloaded) on arithmetic token sequences, which it learns quickly; the test checks
that the loss goes down and that the contract of the optimizer's capabilities was kept.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
from conftest import sign_sgd_plugin
from safetensors.torch import load_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

from optimhub import spec_of
from optimhub.errors import (
    CapabilityError,
    MissingBackendError,
    OptimHubWarning,
    UnknownOptimizerError,
)
from optimhub.integrations.transformers import (
    HubOptimizerFactory,
    OptimHubTrainer,
    hub_optimizer,
    zero_stage,
)
from optimhub.layerwise import LayerwiseOptimizer
from optimhub.testing import hidden_backend

STEPS = 20
VOCAB = 64
TARGETS = [r".*attn.*", r".*mlp.*"]


def needs(module: str) -> pytest.MarkDecorator:
    """Skip where a backend is not installed (found without importing it)."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is several times faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def sequences(count: int = 8 * STEPS, length: int = 12) -> list[dict[str, list[int]]]:
    """Arithmetic sequences mod VOCAB: the next token is the previous one plus a stride."""
    generator = torch.Generator().manual_seed(0)
    data = []
    for _ in range(count):
        start = int(torch.randint(0, VOCAB, (1,), generator=generator))
        stride = int(torch.randint(1, 4, (1,), generator=generator))
        tokens = [(start + i * stride) % VOCAB for i in range(length)]
        data.append({"input_ids": tokens, "labels": tokens})
    return data


def training_args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = dict(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], logging_steps=1, max_steps=STEPS,
        per_device_train_batch_size=8, learning_rate=1e-2, save_strategy="no",
        disable_tqdm=True, seed=0,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(tmp_path: Path, *, args: dict[str, Any] | None = None,
                 **trainer_kwargs: Any) -> OptimHubTrainer:
    trainer = OptimHubTrainer(model=tiny_llama(), args=training_args(tmp_path, **(args or {})),
                              train_dataset=sequences(), **trainer_kwargs)
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True prints every log line
    return trainer


def logged(trainer: OptimHubTrainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry and "loss" in entry]


def assert_learns(trainer: OptimHubTrainer) -> list[float]:
    losses = logged(trainer, "loss")
    assert len(losses) == STEPS, losses
    assert all(math.isfinite(x) for x in losses), losses
    early, late = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert late < 0.8 * early, f"loss did not go down: {early:.3f} -> {late:.3f} ({losses})"
    return losses


def backend(trainer: OptimHubTrainer) -> torch.optim.Optimizer:
    """The optimizer optimhub built, inside accelerate's wrapper."""
    return trainer.optimizer.optimizer


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n] - b[n]).abs().max().item() for n in a)


class StepRecorder(TrainerCallback):
    """Counts the training steps the loop began."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1


# ------------------------------------------------------------------- plain and low-rank
def test_adamw_torch_with_hf_warmup_ratio_and_linear_schedule(tmp_path):
    trainer = make_trainer(tmp_path, args={"warmup_steps": 0.1}, optim="adamw_torch")
    trainer.train()
    assert_learns(trainer)
    assert spec_of(backend(trainer)).name == "adamw_torch"
    # HF's warmup count (ceil(20 * 0.1) = 2) and linear formula, logged before each step.
    expected = [1e-2 * (s / 2 if s < 2 else (STEPS - s) / (STEPS - 2)) for s in range(STEPS)]
    assert logged(trainer, "learning_rate") == pytest.approx(expected, abs=1e-12)
    assert all(n > 0 for n in logged(trainer, "grad_norm"))


@needs("apollo_torch")
def test_apollo_adamw_with_optim_args_and_targets_from_the_training_arguments(tmp_path):
    trainer = make_trainer(tmp_path, optim="apollo_adamw",
                           args={"optim_args": "rank=4,update_proj_gap=10",
                                 "optim_target_modules": TARGETS})
    trainer.train()
    assert_learns(trainer)
    assert {g.get("rank") for g in backend(trainer).param_groups} == {None, 4}


@needs("apollo_torch")
def test_apollo_mini_with_targets_given_to_the_trainer(tmp_path):
    trainer = make_trainer(tmp_path, optim="apollo_mini", optim_target_modules=TARGETS)
    trainer.train()
    assert_learns(trainer)
    low_rank = [g for g in backend(trainer).param_groups if "rank" in g]
    assert low_rank and all(g["rank"] == 1 and g["scale_type"] == "tensor" for g in low_rank)


def test_a_third_party_plugin_name_that_training_arguments_reject(
    tmp_path, plugin_factory, use_host
):
    plugin_factory.add("signsgd", sign_sgd_plugin("sign_descent"))
    use_host(plugin_factory.host())
    with pytest.raises(ValueError, match="sign_descent"):
        TrainingArguments(output_dir=str(tmp_path), optim="sign_descent")
    trainer = make_trainer(tmp_path, args={"learning_rate": 1e-2, "weight_decay": 0.01},
                           optim="sign_descent")
    trainer.train()
    assert_learns(trainer)
    assert type(backend(trainer)).__name__ == "SignSGD"
    assert [g["weight_decay"] for g in backend(trainer).param_groups] == [0.01, 0.0]


def test_the_name_defaults_to_args_optim_and_an_unknown_one_fails_at_construction(tmp_path):
    assert make_trainer(tmp_path, args={"optim": "adamw_torch"}).optim == "adamw_torch"
    with pytest.raises(UnknownOptimizerError, match="apollo_mini"):
        make_trainer(tmp_path, optim="apollo_mimi")


# -------------------------------------------------------------------------- schedule-free
@needs("schedulefree")
def test_schedule_free_checkpoints_and_final_model_hold_the_eval_weights(tmp_path):
    trainer = make_trainer(
        tmp_path, optim="schedule_free_adamw",
        args={"lr_scheduler_type": "constant", "warmup_steps": 0.1, "save_strategy": "steps",
              "save_steps": 10, "save_only_model": False},
    )
    trainer.train()
    assert_learns(trainer)
    optimizer = backend(trainer)
    assert optimizer.param_groups[0]["warmup_steps"] == 2  # the ratio, resolved with max_steps
    assert set(logged(trainer, "learning_rate")) == {1e-2}
    final = weights(trainer.model)  # after train(): the eval (averaged) weights
    checkpoint = load_file(str(tmp_path / f"checkpoint-{STEPS}" / "model.safetensors"))
    assert max_difference(final, checkpoint) < 1e-6
    optimizer.eval()  # idempotent: the model already holds them
    assert max_difference(weights(trainer.model), final) == 0.0
    optimizer.train()
    training_weights = weights(trainer.model)
    assert max_difference(training_weights, checkpoint) > 1e-4, "checkpoint holds train-mode y"
    optimizer.eval()
    trainer.save_model(str(tmp_path / "final"))
    saved = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert max_difference(saved, final) < 1e-6
    assert max_difference(weights(trainer.model), final) < 1e-6  # still eval after saving
    # The optimizer state of the checkpoint was saved in eval mode too, like its weights, so
    # resuming from the middle checkpoint ends exactly where the uninterrupted run did.
    state = torch.load(tmp_path / f"checkpoint-{STEPS}" / "optimizer.pt", weights_only=True)
    assert state["param_groups"][0]["train_mode"] is False
    resumed = make_trainer(tmp_path, optim="schedule_free_adamw",
                           args={"lr_scheduler_type": "constant", "warmup_steps": 0.1})
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-10"))
    assert max_difference(weights(resumed.model), final) < 1e-6


# --------------------------------------------------------------------- in-backward modes
@needs("lomo_optim")
def test_lomo_fused_backward_with_the_backends_own_clipping(tmp_path):
    trainer = make_trainer(tmp_path, optim="lomo", optim_args="clip_grad_norm=1.0",
                           args={"max_grad_norm": 0, "learning_rate": 0.3,
                                 "lr_scheduler_type": "cosine"})
    trainer.train()
    assert_learns(trainer)
    lomo = backend(trainer)
    assert type(lomo).__name__ == "Lomo" and lomo.clip_grad_norm == 1.0
    with pytest.raises(CapabilityError, match="fused_backward"):
        lomo.step()  # the backend's own step refuses: the Trainer never called it
    rates = logged(trainer, "learning_rate")
    assert rates[0] == 0.3 and rates[-1] < 0.01
    assert lomo.lr == rates[-1]  # fused_backward got the scheduler's lr of that step
    assert logged(trainer, "grad_norm") == []  # nothing left to measure after backward


FUSED_SGD_PLUGIN = '''
import torch
import optimhub

class FusedSGD(torch.optim.Optimizer):
    """SGD applied inside backward: fused_backward(loss, lr) replaces backward + step."""

    def __init__(self, model, lr=1e-3):
        super().__init__(model.parameters(), dict(lr=lr))
        self.lrs = []

    def fused_backward(self, loss, lr):
        self.lrs.append(lr)
        loss.backward()
        with torch.no_grad():
            for p in self.param_groups[0]["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
                    p.grad = None

    def step(self, closure=None):
        raise NotImplementedError("fused backward: call fused_backward(loss, lr)")

@optimhub.hookimpl
def optimhub_register_optimizers(register):
    register.optimizer(
        {"name": "fused_sgd", "summary": "SGD fused into backward",
         "distribution": "optimhub-test-fused", "import_name": "torch",
         "capabilities": ["fused_backward", "needs_model"], "hyperparameters": ["lr"]},
        lambda request: FusedSGD(request.model, **request.kwargs),
    )
'''


def test_fused_backward_is_driven_by_capability_not_by_name(tmp_path, plugin_factory,
                                                            use_host):
    """accelerate and HF know LOMO by its class and name; a plugin's fused optimizer gets
    the same loop here: its fused_backward with the scheduled lr, and no step()."""
    plugin_factory.add("fusedsgd", FUSED_SGD_PLUGIN)
    use_host(plugin_factory.host())
    trainer = make_trainer(tmp_path, optim="fused_sgd", args={"max_grad_norm": 0,
                                                              "learning_rate": 0.5})
    trainer.train()
    assert_learns(trainer)
    assert backend(trainer).lrs == pytest.approx(logged(trainer, "learning_rate"))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [pytest.param("galore_adamw_layerwise",
                  {"optim_target_modules": TARGETS, "optim_args": "rank=4"},
                  marks=needs("galore_torch")),
     ("adamw_torch", {"layerwise": True})],
)
def test_layerwise_steps_in_backward_with_the_real_lr_and_no_dummies(tmp_path, name, kwargs):
    trainer = make_trainer(tmp_path, optim=name, args={"max_grad_norm": 0}, **kwargs)
    trainer.train()
    assert_learns(trainer)
    optimizer = backend(trainer)
    assert isinstance(optimizer, LayerwiseOptimizer)
    assert not isinstance(optimizer, LayerWiseDummyOptimizer)
    assert "Dummy" not in type(trainer.lr_scheduler).__name__
    expected = [1e-2 * (STEPS - s) / STEPS for s in range(STEPS)]  # HF's linear, no warmup
    assert logged(trainer, "learning_rate") == pytest.approx(expected, abs=1e-12)
    # The last backward stepped every inner optimizer with the last scheduled lr.
    inner_lrs = [g["lr"] for inner in optimizer.inner.values() for g in inner.param_groups]
    assert inner_lrs == pytest.approx([expected[-1]] * len(inner_lrs), abs=1e-12)
    assert logged(trainer, "grad_norm") == []
    # train() removed the hooks: a backward afterwards does not touch the weights.
    assert optimizer.closed
    before = weights(trainer.model)
    batch = torch.tensor([sequences(1)[0]["input_ids"]])
    trainer.model(input_ids=batch, labels=batch).loss.backward()
    assert max_difference(before, weights(trainer.model)) == 0.0


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("name", "args", "kwargs", "match"),
    [
        ("schedule_free_adamw", {"lr_scheduler_type": "cosine"}, {},
         r"lr_scheduler_type='cosine': set TrainingArguments\(lr_scheduler_type='constant'\)"),
        ("lomo", {"max_grad_norm": 0.5}, {},
         r"max_grad_norm=0\.5.*max_grad_norm=0 .or None.*clip_grad_norm=1\.0"),
        ("galore_adamw_layerwise", {"max_grad_norm": 0, "gradient_accumulation_steps": 2},
         {"optim_target_modules": TARGETS}, r"gradient_accumulation_steps=1"),
        ("adamw_torch", {"max_grad_norm": 2.0}, {"layerwise": True},
         r"layerwise.*max_grad_norm=2\.0.*max_grad_norm=0"),
        ("schedule_free_adamw", {"lr_scheduler_type": "constant"}, {"layerwise": True},
         r"cannot run layerwise"),
    ],
    ids=["schedule_free+cosine", "lomo+max_grad_norm", "layerwise+accumulation",
         "layerwise+max_grad_norm", "layerwise+incapable"],
)
def test_contract_violations_are_refused_before_the_first_step(tmp_path, name, args, kwargs,
                                                                match):
    recorder = StepRecorder()
    trainer = make_trainer(tmp_path, optim=name, args=args, callbacks=[recorder], **kwargs)
    before = weights(trainer.model)
    with pytest.raises(CapabilityError, match=match):
        trainer.train()
    assert recorder.steps == 0 and trainer.state.global_step == 0
    assert trainer.optimizer is None  # nothing was built (LOMO would hook the model for good)
    assert max_difference(before, weights(trainer.model)) == 0.0


# --------------------------------------------- HF's untouched defaults (issue 15, item 15)
def _defaults_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, OptimHubWarning)
            and "HF's default" in str(w.message)]


@pytest.mark.parametrize(
    ("name", "kwargs", "field", "value"),
    [pytest.param("schedule_free_adamw", {}, "lr_scheduler_type", "'linear'",
                  marks=needs("schedulefree")),
     pytest.param("lomo", {}, "max_grad_norm", "1.0", marks=needs("lomo_optim")),
     pytest.param("galore_adamw_layerwise", {"optim_target_modules": TARGETS,
                                             "optim_args": "rank=4"},
                  "max_grad_norm", "1.0", marks=needs("galore_torch")),
     ("adamw_torch", {"layerwise": True}, "max_grad_norm", "1.0")],
    ids=["schedule_free", "lomo", "galore_layerwise", "adamw_layerwise"],
)
def test_hf_untouched_defaults_train_with_one_warning(tmp_path, name, kwargs, field, value):
    """A TrainingArguments that only changed the optimizer trains: the default the optimizer
    cannot honour is replaced, and said once (an explicit other value is still refused,
    test_contract_violations_are_refused_before_the_first_step)."""
    args = {"learning_rate": 0.3 if name == "lomo" else 1e-2}
    trainer = make_trainer(tmp_path, optim=name, args=args, **kwargs)
    default = next(f.default for f in dataclasses.fields(TrainingArguments) if f.name == field)
    assert getattr(trainer.args, field) == default  # HF's default, untouched
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    said = _defaults_warnings(caught)
    assert len(said) == 1, said
    assert f"{field}={value} (HF's default) runs as" in said[0] and name in said[0]
    assert_learns(trainer)
    if field == "lr_scheduler_type":
        assert set(logged(trainer, "learning_rate")) == {1e-2}  # constant, not linear decay
    else:
        assert logged(trainer, "grad_norm") == []  # nothing was clipped (or left to clip)


def test_the_values_a_snippet_writes_train_without_that_warning(tmp_path):
    trainer = make_trainer(tmp_path, optim="adamw_torch", layerwise=True,
                           args={"max_grad_norm": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert _defaults_warnings(caught) == []


# ------------------------------------------------- without the extra (issue 15, item 12)
@pytest.mark.parametrize("hidden", ["accelerate", "transformers"])
def test_without_the_transformers_extra_the_error_names_it(monkeypatch, hidden):
    module = "optimhub.integrations.transformers"
    monkeypatch.delitem(sys.modules, module)  # put back afterwards
    with hidden_backend(hidden), pytest.raises(MissingBackendError) as caught:
        importlib.import_module(module)
    assert 'pip install "optimhub[transformers]"' in str(caught.value)
    assert hidden in str(caught.value)
    assert isinstance(caught.value, ImportError)  # `except ImportError` still catches it


# --------------------------------------------- the stock Trainer (issue 15, item 13)
def test_the_stock_trainer_trains_with_the_hub_as_its_optimizer_factory(tmp_path):
    args = training_args(tmp_path, weight_decay=0.01)
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=sequences(),
                      optimizer_cls_and_kwargs=hub_optimizer("adamw_torch", args))
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    assert_learns(trainer)
    built = trainer.optimizer.optimizer
    assert spec_of(built).name == "adamw_torch" and type(built) is torch.optim.AdamW
    assert sorted(g["weight_decay"] for g in built.param_groups) == [0.0, 0.01]


@needs("galore_torch")
def test_the_stock_trainer_gets_targets_and_optim_args_from_the_training_arguments(tmp_path):
    args = training_args(tmp_path, max_steps=2, optim_target_modules=TARGETS,
                         optim_args="rank=4")
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=sequences(),
                      optimizer_cls_and_kwargs=hub_optimizer("galore_adamw", args))
    trainer.create_optimizer()
    assert {g.get("rank") for g in trainer.optimizer.param_groups} == {None, 4}


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [("lomo", {}, r"inside backward \(fused backward\).*OptimHubTrainer"),
     ("galore_adamw_layerwise", {}, r"inside backward \(layerwise\).*OptimHubTrainer"),
     ("schedule_free_adamw", {}, r"lr_scheduler_type='constant'.*got lr_scheduler_type='linear'"),
     ("adamw_torhc", {}, r"'adamw_torch'")],
)
def test_the_stock_trainer_path_refuses_what_its_loop_cannot_do(tmp_path, name, args, match):
    with pytest.raises((CapabilityError, UnknownOptimizerError), match=match):
        hub_optimizer(name, training_args(tmp_path, **args))


def test_a_transformers_without_factories_gets_a_clear_error():
    with pytest.raises(MissingBackendError, match="factories came with transformers 5"):
        HubOptimizerFactory([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


@pytest.mark.parametrize("name", ["galore_adamw", "apollo_adamw", "muon"])
def test_optimizers_that_need_whole_matrices_are_refused_under_deepspeed(
    tmp_path: Path, name: str
) -> None:
    """ZeRO hands the optimizer flattened 1-D partitions (tools/deepspeed_matrix.py:
    IndexError for the low-rank names, a refused param_groups swap for a routed one):
    refused before building, with the engines that work."""
    if name == "muon":  # a catalog name HF's TrainingArguments does not know
        trainer = make_trainer(tmp_path, optim=name)
    else:
        trainer = make_trainer(tmp_path, args={
            "optim": name, "optim_target_modules": [r".*attn.*", r".*mlp.*"]})
    trainer.is_deepspeed_enabled = True  # what accelerate sets for a DeepSpeed config
    with pytest.raises(CapabilityError, match=r"DeepSpeed ZeRO.*use DDP, or FSDP2"):
        trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    assert trainer.optimizer is None


def test_elementwise_optimizers_still_build_under_deepspeed(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, args={"optim": "adamw_torch"})
    trainer.is_deepspeed_enabled = True
    trainer._check_loop_contract()  # no refusal


@pytest.mark.parametrize("name", ["adamw_bnb_8bit", "adafactor"])
def test_optimizers_not_measured_equal_under_zero_are_refused_under_deepspeed(
    tmp_path: Path, name: str
) -> None:
    """Blockwise 8-bit state and factored moments change on ZeRO's flat partitions
    (docs/deepspeed_matrix.json: 8.5e-3 and 6.0e-2 from one process after 5 steps)."""
    trainer = make_trainer(tmp_path, args={"optim": name})
    trainer.is_deepspeed_enabled = True
    with pytest.raises(CapabilityError, match=rf"'{name}' is not among .*'deepspeed_zero3?'"):
        trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    assert trainer.optimizer is None


@pytest.mark.parametrize(("stage", "refused"), [(1, False), (2, False), (3, True)])
def test_an_optimizer_that_counts_steps_per_group_is_refused_under_zero3_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: int, refused: bool
) -> None:
    """ZeRO-3 calls step() once per parameter sub-group: schedule-free's k ran to 10 in 5
    steps (tools/deepspeed_matrix.py)."""
    trainer = make_trainer(tmp_path, args={"optim": "schedule_free_adamw",
                                           "lr_scheduler_type": "constant"})
    trainer.is_deepspeed_enabled = True
    monkeypatch.setattr(trainer, "_zero_stage", lambda: stage)
    if refused:
        with pytest.raises(CapabilityError, match=r"stages 1 and 2 but not 3.*use ZeRO stage 1"):
            trainer._check_loop_contract()
    else:
        trainer._check_loop_contract()


def test_the_zero_stage_is_read_from_accelerates_deepspeed_config() -> None:
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 1}})
    assert zero_stage(plugin.deepspeed_config) == 1
    # What cannot be read gets the strictest rule.
    assert zero_stage({"zero_optimization": {"stage": "auto"}}) == 3
    assert zero_stage(None) == 3
