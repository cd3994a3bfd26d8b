"""Per-group learning-rate schedules: create_scheduler(group_schedules=...), keyed by group
index, param-group rule pattern or route; values at every step, resume, and refusals."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch import nn

import optimhub
from optimhub import CapabilityError, CheckpointError, OptimArgsError, OptimArgsTypeError
from optimhub.schedules import ScheduledLR

LR, HEAD_LR, TOTAL = 1e-2, 1e-3, 10
RULES = [{"pattern": "lm_head", "lr": HEAD_LR}, {"pattern": r"layers\.0\.", "lr": 5e-3}]


def build(**kwargs: Any) -> torch.optim.Optimizer:
    settings = {"lr": LR, "weight_decay": 0.1, "param_group_rules": RULES, **kwargs}
    return optimhub.create_optimizer("adamw_torch", make_tiny_lm(), **settings)


def group_index(optimizer: torch.optim.Optimizer, fragment: str) -> list[int]:
    names = optimhub.checkpoint.parameter_names(optimizer)
    return [i for i, g in enumerate(optimizer.param_groups)
            if all(fragment in names[id(p)] for p in g["params"])]


def hf_factor(name: str, step: int, warmup: int, total: int = TOTAL) -> float:
    """HF's multipliers (transformers.optimization), written out for the names used here."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if name == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if name == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))  # cosine, num_cycles=0.5


def test_each_group_follows_its_own_schedule_at_every_step():
    optimizer = build()
    head, first = group_index(optimizer, "lm_head"), group_index(optimizer, "layers.0.")
    assert len(head) == 1 and len(first) == 2  # the rule's decayed and non-decayed halves
    scheduler = optimhub.create_scheduler(
        "cosine", optimizer, num_warmup_steps=2, num_training_steps=TOTAL,
        group_schedules={"lm_head": "constant", r"layers\.0\.": {"name": "linear",
                                                                 "num_warmup_steps": 4}})
    assert isinstance(scheduler, ScheduledLR)
    bases = [g["initial_lr"] for g in optimizer.param_groups]
    assert bases[head[0]] == HEAD_LR and {bases[i] for i in first} == {5e-3}
    for step in range(TOTAL):
        for index, group in enumerate(optimizer.param_groups):
            shape, warmup = (("constant", 0) if index in head else ("linear", 4)
                             if index in first else ("cosine", 2))
            assert group["lr"] == pytest.approx(bases[index] * hf_factor(shape, step, warmup),
                                                rel=1e-12, abs=0), (step, index)
        optimizer.step()
        scheduler.step()


def test_a_groups_schedule_inherits_the_global_warmup_and_length_unless_given():
    optimizer = build()
    scheduler = optimhub.create_scheduler(
        "linear", optimizer, num_warmup_steps=3, num_training_steps=TOTAL,
        group_schedules={"lm_head": "constant_with_warmup",
                         r"layers\.0\.": {"name": "cosine", "num_training_steps": 20,
                                          "num_warmup_steps": 0}})
    head, first = group_index(optimizer, "lm_head"), group_index(optimizer, "layers.0.")
    described = dict(enumerate(scheduler.schedules))
    assert described[head[0]] == "constant_with_warmup(warmup=3, total=10)"
    assert {described[i] for i in first} == {"cosine(warmup=0, total=20, num_cycles=0.5)"}
    rest = [i for i in described if i not in head + first]
    assert {described[i] for i in rest} == {"linear(warmup=3, total=10)"}
    # 'constant' takes no warmup: it does not inherit the global one.
    fixed = optimhub.create_scheduler("linear", build(), num_warmup_steps=3,
                                      num_training_steps=TOTAL,
                                      group_schedules={"lm_head": "constant"})
    assert "constant(warmup=0, total=10)" in fixed.schedules


def test_a_groups_min_lr_is_its_own():
    """min_lr of a group's own schedule is where that group ends (not a fraction of
    defaults['lr'], which is what HF's global min_lr is relative to)."""
    optimizer = build()
    head = group_index(optimizer, "lm_head")[0]
    scheduler = optimhub.create_scheduler(
        "linear", optimizer, num_training_steps=TOTAL,
        group_schedules={"lm_head": {"name": "cosine_with_min_lr", "min_lr": 1e-4}})
    for _ in range(TOTAL):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[head]["lr"] == pytest.approx(1e-4, rel=1e-12)


def test_group_index_and_route_keys():
    """Foreign optimizers have no parameter names: indices and routes still work."""
    a, b, c = (nn.Parameter(torch.ones(2)) for _ in range(3))
    optimizer = torch.optim.SGD([{"params": [a], "route": "matrix"},
                                 {"params": [b], "route": "fallback"},
                                 {"params": [c], "route": "matrix", "lr": 0.5}], lr=0.1)
    scheduler = optimhub.create_scheduler(
        "linear", optimizer, num_training_steps=4,
        group_schedules={"route:matrix": "constant", "group:1": "cosine"})
    assert scheduler.schedules == ["constant(warmup=0, total=4)",
                                   "cosine(warmup=0, total=4, num_cycles=0.5)",
                                   "constant(warmup=0, total=4)"]
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.05, 0.5])
    with pytest.raises(OptimArgsError, match="parameters have no names here; use group indices"):
        optimhub.create_scheduler("linear", optimizer, num_training_steps=4,
                                  group_schedules={"lm_head": "constant"})
    with pytest.raises(OptimArgsError, match=r"no param group belongs to route 'head': its "
                                             r"routes are fallback, matrix"):
        optimhub.create_scheduler("linear", optimizer, num_training_steps=4,
                                  group_schedules={"route:head": "constant"})


def test_route_keys_select_the_groups_of_a_routed_optimizer():
    """A RoutedOptimizer's groups are its routes' own: ``route:NAME`` takes them all, and
    the other routes keep the global schedule."""
    optimizer = optimhub.create_optimizer(
        "matrix -> muon_torch(lr=0.02); * -> adamw_torch", make_tiny_lm(), lr=LR)
    labels = optimizer.group_routes
    assert set(labels) == {"muon_torch", "adamw_torch"}
    scheduler = optimhub.create_scheduler(
        "linear", optimizer, num_training_steps=TOTAL,
        group_schedules={"route:muon_torch": "constant"})
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    for label, group in zip(labels, optimizer.param_groups, strict=True):
        factor = 1.0 if label == "muon_torch" else hf_factor("linear", 3, 0)
        assert group["lr"] == pytest.approx(group["initial_lr"] * factor, rel=1e-12)
    with pytest.raises(OptimArgsError, match=r"no param group belongs to route 'muon': its "
                                             r"routes are adamw_torch, muon_torch"):
        optimhub.create_scheduler("linear", optimizer, num_training_steps=TOTAL,
                                  group_schedules={"route:muon": "constant"})


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(("group_schedules", "error", "message"), [
    ({"embed_tokenz": "constant"}, OptimArgsError,
     r"'embed_tokenz' matches no parameter of this optimizer.*'embed_tokens.weight'"),
    ({"layers": "constant"}, OptimArgsError,
     r"'layers' matches only part of param group 0 .* give those parameters a group of their "
     r"own with a param group rule"),
    ({7: "constant"}, OptimArgsError, r"names param group 7, but the optimizer has 5 group"),
    ({-1: "constant"}, OptimArgsError, "group index -1 is negative"),
    ({"group:x": "constant"}, OptimArgsError, "is not 'group:N'"),
    ({"lm_head": "constant", "group:2": "linear"}, OptimArgsError,
     r"param group 2 \(lm_head.weight\) is selected by both 'lm_head' and 'group:2'"),
    ({"lm_head": "cosin"}, OptimArgsError, r"group_schedules\['lm_head'\].*Did you mean 'cosine'"),
    ({"lm_head": "reduce_lr_on_plateau"}, OptimArgsError,
     "acts on every group at once"),
    ({"lm_head": {"name": "polynomial", "power": -1.0}}, OptimArgsError, "power=-1.0"),
    ({"lm_head": {"name": "linear", "warmup": 3}}, OptimArgsError,
     r"has no option 'warmup'"),
    ({"lm_head": {"num_warmup_steps": 3}}, OptimArgsError, "the dict needs 'name'"),
    ({"lm_head": {"name": "linear", "num_warmup_steps": 30}}, OptimArgsError,
     "longer than training"),
    ({"lm_head": 0.5}, OptimArgsTypeError, "give a schedule name or a dict"),
    ({("lm_head",): "constant"}, OptimArgsTypeError, "a group key must be"),
    ({"[": "constant"}, OptimArgsError, "not a valid regular expression"),
    (["lm_head"], OptimArgsTypeError, "must be a dict from group keys"),
])
def test_bad_group_schedules_are_refused_before_training(group_schedules, error, message):
    optimizer = build()
    before = [dict(g) for g in optimizer.param_groups]
    with pytest.raises(error, match=message):
        optimhub.create_scheduler("linear", optimizer, num_training_steps=TOTAL,
                                  group_schedules=group_schedules)
    assert [dict(g) for g in optimizer.param_groups] == before  # no initial_lr, no lr change


def test_a_metric_driven_global_schedule_takes_no_group_schedules():
    with pytest.raises(OptimArgsError, match="'greedy' is not a formula of the step"):
        optimhub.create_scheduler("greedy", build(), group_schedules={"lm_head": "constant"})


def test_schedule_free_groups_are_held_to_a_constant_lr_too():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("schedule_free_adamw", model, lr=1e-2,
                                          param_group_rules=[{"pattern": "lm_head", "lr": 1e-3}])
    with pytest.raises(CapabilityError, match="is schedule-free"):
        optimhub.create_scheduler("constant", optimizer, num_training_steps=TOTAL,
                                  group_schedules={"lm_head": "linear"})
    scheduler = optimhub.create_scheduler("constant", optimizer, num_training_steps=TOTAL,
                                          group_schedules={"lm_head": "linear"},
                                          allow_decay_with_schedule_free=True)
    assert "linear(warmup=0, total=10)" in scheduler.schedules


# ------------------------------------------------------------------------------ resume
def run(steps: int, *, save_at: int | None = None, state: bytes | None = None
        ) -> tuple[dict[str, torch.Tensor], list[list[float]], bytes | None]:
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=LR, weight_decay=0.1,
                                          param_group_rules=RULES)
    scheduler = optimhub.create_scheduler(
        "cosine", optimizer, num_warmup_steps=2, num_training_steps=steps,
        group_schedules={"lm_head": "constant", r"layers\.0\.": "linear"},
        weight_decay_schedule={"name": "linear", "end_factor": 4.0, "num_warmup_steps": 1})
    batch, start, saved, lrs = lm_batch(), 0, None, []
    if state is not None:
        checkpoint = torch.load(io.BytesIO(state), weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start = checkpoint["step"]
    for step in range(start, steps):
        if step == save_at:
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step}, buffer)
            saved = buffer.getvalue()
        lrs.append([g["lr"] for g in optimizer.param_groups]
                   + [g["weight_decay"] for g in optimizer.param_groups])
        lm_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, lrs, saved


def test_resuming_mid_schedule_equals_the_uninterrupted_run_bit_for_bit():
    final, values, saved = run(8, save_at=5)
    resumed, resumed_values, _ = run(8, state=saved)
    assert resumed_values == values[5:]
    for key in final:
        assert torch.equal(final[key], resumed[key]), key


def test_a_state_saved_under_other_schedules_is_refused():
    optimizer = build()
    plain = optimhub.create_scheduler("linear", optimizer, num_training_steps=TOTAL)
    grouped = optimhub.create_scheduler("linear", build(), num_training_steps=TOTAL,
                                        group_schedules={"lm_head": "constant"})
    with pytest.raises(CheckpointError, match="saved by a scheduler without per-group"):
        grouped.load_state_dict(plain.state_dict())
    other = optimhub.create_scheduler("linear", build(), num_training_steps=TOTAL,
                                      group_schedules={"lm_head": "cosine"})
    with pytest.raises(CheckpointError, match=r"saved with the schedules \['linear"):
        other.load_state_dict(grouped.state_dict())
    carrying = optimhub.create_scheduler("linear", build(), num_training_steps=TOTAL,
                                         group_schedules={"lm_head": "constant"},
                                         weight_decay_schedule="constant")
    with pytest.raises(CheckpointError, match="carries no weight-decay schedule and this "
                                              "scheduler carries one"):
        carrying.load_state_dict(grouped.state_dict())


# ------------------------------------------------------------------------- the Trainer
class GroupValues:
    """A TrainerCallback (duck-typed) recording each group's lr and weight decay as each
    optimizer step begins."""

    def __init__(self) -> None:
        self.values: list[tuple[list[float], list[float]]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        groups = kwargs["optimizer"].param_groups
        self.values.append(([g["lr"] for g in groups], [g["weight_decay"] for g in groups]))


def trainer_run(tmp_path: Any, *, resume: str | None = None) -> tuple[Any, GroupValues]:
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from optimhub.integrations.transformers import OptimHubTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=32, max_position_embeddings=16))
    data = [{"input_ids": [(i + k) % 32 for k in range(8)],
             "labels": [(i + k) % 32 for k in range(8)]} for i in range(48)]
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=6, logging_steps=1,
        per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.1, warmup_steps=2,
        lr_scheduler_type="cosine", save_strategy="steps", save_steps=3, save_only_model=False,
        disable_tqdm=True, seed=0)
    recorder = GroupValues()
    trainer = OptimHubTrainer(
        model=model, args=args, train_dataset=data, optim="adamw_torch",
        param_group_rules=[{"pattern": "lm_head", "lr": 1e-3}],
        group_lr_schedules={"lm_head": "constant"},
        weight_decay_schedule={"name": "linear", "end_factor": 0.0},
        callbacks=[recorder])
    trainer.train(resume_from_checkpoint=resume)
    return trainer, recorder


def test_the_trainer_schedules_groups_and_weight_decay_and_resumes_them(tmp_path):
    trainer, recorder = trainer_run(tmp_path / "run")
    assert len(recorder.values) == 6
    groups = trainer.optimizer.optimizer.param_groups
    head = [i for i, g in enumerate(groups) if g["initial_lr"] == 1e-3]
    assert head == [1]  # lm_head.weight: decayed, its own lr
    for step, (lrs, wds) in enumerate(recorder.values):
        for index, (lr, wd) in enumerate(zip(lrs, wds, strict=True)):
            base_lr = 1e-3 if index in head else 1e-2
            want = base_lr * (1.0 if index in head else hf_factor("cosine", step, 2, total=6))
            assert lr == pytest.approx(want, rel=1e-12, abs=0), (step, index)
            base_wd = groups[index]["initial_weight_decay"]
            assert wd == pytest.approx(base_wd * (1 - step / 6), rel=1e-12, abs=0), (step, index)
    final = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    scheduler_state = torch.load(tmp_path / "run" / "checkpoint-3" / "scheduler.pt",
                                 weights_only=True)
    assert scheduler_state["weight_decay_scheduler"]["last_step"] == 3
    resumed, resumed_recorder = trainer_run(tmp_path / "run",
                                            resume=str(tmp_path / "run" / "checkpoint-3"))
    assert resumed_recorder.values == recorder.values[3:]
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param.detach(), final[name]), name


def test_the_trainer_refuses_a_malformed_schedule_when_it_is_built():
    pytest.importorskip("transformers")
    from optimhub.integrations.transformers import OptimHubTrainer

    with pytest.raises(OptimArgsTypeError, match="must be a dict from group keys"):
        OptimHubTrainer(model=make_tiny_lm(), group_lr_schedules=["lm_head"])
    with pytest.raises(OptimArgsError, match="Did you mean 'cosine'"):
        OptimHubTrainer(model=make_tiny_lm(), group_lr_schedules={"lm_head": "cosin"})
    with pytest.raises(OptimArgsError, match="weight_decay_schedule: unknown schedule 'cosin'"):
        OptimHubTrainer(model=make_tiny_lm(), weight_decay_schedule={"name": "cosin"})
    with pytest.raises(OptimArgsTypeError, match="weight_decay_schedule must be"):
        OptimHubTrainer(model=make_tiny_lm(), weight_decay_schedule=0.1)


def test_a_group_without_a_numeric_lr_is_our_error():
    optimizer = optimhub.create_optimizer("adafactor", make_tiny_lm(),
                                          optim_args={"relative_step": True})
    with pytest.raises(OptimArgsError, match="group 0 has lr=None"):
        optimhub.create_scheduler("constant", optimizer, num_training_steps=5,
                                  group_schedules={"group:0": "linear"})
