"""Weight-decay schedules: values at every step, real backends honouring them, resume bit for
bit, and every refusal before a tensor changes."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch import nn

import optimhub
from optimhub import (
    CapabilityError,
    CheckpointError,
    OptimArgsError,
    OptimArgsTypeError,
    create_weight_decay_scheduler,
    drive,
)
from optimhub.catalog import spec_from_mapping
from optimhub.checkpoint import parameter_names, remember
from optimhub.schedules import ScheduledLR

TOTAL = 10
WD = 0.1


def build(name: str = "adamw_torch", **kwargs: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = make_tiny_lm()
    settings = {"lr": 1e-2, "weight_decay": WD, **kwargs}
    return model, optimhub.create_optimizer(name, model, **settings)


def decays(optimizer: torch.optim.Optimizer) -> list[float]:
    return [group["weight_decay"] for group in optimizer.param_groups]


def expected_factor(name: str, step: int, *, warmup: int = 0, start: float = 0.0,
                    end: float = 1.0, total: int = TOTAL) -> float:
    """The documented factors, written out independently of the module."""
    if step < warmup:
        return start + (1 - start) * step / warmup
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    if name == "linear":
        return 1 + (end - 1) * progress
    return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2


# ------------------------------------------------------------------- values at every step
@pytest.mark.parametrize(("name", "options"), [
    ("constant", {}),
    ("constant", {"num_warmup_steps": 4}),
    ("constant", {"num_warmup_steps": 4, "start_factor": 0.5}),
    ("linear", {"end_factor": 0.0}),
    ("linear", {"end_factor": 10.0, "num_warmup_steps": 2}),
    ("cosine", {"end_factor": 0.1}),
    ("cosine", {"end_factor": 10.0, "num_warmup_steps": 0.3}),  # a ratio: 3 steps
])
def test_every_group_follows_the_factor_at_every_step_and_no_decay_stays_zero(name, options):
    _, optimizer = build()
    bases = decays(optimizer)
    assert set(bases) == {WD, 0.0}  # HF's decay and no-decay groups
    wd = create_weight_decay_scheduler(name, optimizer, num_training_steps=TOTAL, **options)
    warmup = options.get("num_warmup_steps", 0)
    warmup = math.ceil(TOTAL * warmup) if 0 < warmup < 1 else warmup
    factor_args = {"warmup": warmup, "start": options.get("start_factor", 0.0),
                   "end": options.get("end_factor", 1.0)}
    for step in range(TOTAL + 3):  # past the end: the end value is held
        want = [base * expected_factor(name, step, **factor_args) for base in bases]
        assert decays(optimizer) == pytest.approx(want, rel=1e-12, abs=0), step
        assert wd.get_last_weight_decay() == decays(optimizer)
        optimizer.step()
        wd.step()
    assert wd.last_step == TOTAL + 3


def test_groups_take_their_own_schedule_by_group_key():
    _, optimizer = build(param_group_rules=[{"pattern": "lm_head", "weight_decay": 0.5}])
    names = parameter_names(optimizer)
    head = [i for i, g in enumerate(optimizer.param_groups)
            if all("lm_head" in names[id(p)] for p in g["params"])]
    wd = create_weight_decay_scheduler(
        "cosine", optimizer, num_training_steps=TOTAL, end_factor=0.0,
        group_schedules={"lm_head": {"name": "linear", "end_factor": 2.0,
                                     "num_warmup_steps": 2}})
    assert head == [1]
    for step in range(TOTAL):
        for index, (base, value) in enumerate(zip(wd.base_weight_decays, decays(optimizer),
                                                  strict=True)):
            shape = ("linear", {"end": 2.0, "warmup": 2}) if index in head else (
                "cosine", {"end": 0.0})
            assert value == pytest.approx(base * expected_factor(shape[0], step, **shape[1]),
                                          rel=1e-12, abs=0)
        wd.step()
    assert wd.base_weight_decays[1] == 0.5


# ------------------------------------------------------------------- honoured by backends
def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, *,
          every_step: Any = None) -> dict[str, torch.Tensor]:
    batch = lm_batch()
    for step in range(steps):
        if every_step is not None:
            every_step(step)
        lm_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("name", "extra"), [
    ("adamw_torch", {}),
    ("adamweightdecay", {}),
    ("sgd", {}),
    ("adafactor", {}),
    ("grokadamw", {}),
])
def test_a_backend_steps_with_the_scheduled_values(name, extra):
    """The scheduled run equals a run whose groups are given the same values by hand before
    each step, and differs from the constant run: the backend reads them at every step."""
    model, optimizer = build(name, **extra)
    wd = create_weight_decay_scheduler("linear", optimizer, num_training_steps=4,
                                       end_factor=5.0)
    scheduled = train(model, optimizer, 4, every_step=lambda step: step and wd.step())

    model, optimizer = build(name, **extra)
    bases = decays(optimizer)

    def by_hand(step: int) -> None:
        for group, base in zip(optimizer.param_groups, bases, strict=True):
            group["weight_decay"] = base * (1 + 4.0 * step / 4)
    manual = train(model, optimizer, 4, every_step=by_hand)
    constant = train(*build(name, **extra), 4)
    for key in scheduled:
        assert torch.equal(scheduled[key], manual[key]), key
    assert any(not torch.equal(scheduled[k], constant[k]) for k in scheduled)


def test_a_layerwise_optimizer_passes_the_schedule_to_its_inner_optimizers():
    """Layerwise adamw_torch under a schedule ends where plain adamw_torch does."""
    results = []
    for layerwise in (False, True):
        model, optimizer = build(layerwise=layerwise)
        wd = create_weight_decay_scheduler("linear", optimizer, num_training_steps=3,
                                           end_factor=20.0)
        driver = drive(optimizer, weight_decay_scheduler=wd, model=model)
        batch = lm_batch()
        for _ in range(3):
            driver.backward(lm_loss(model, batch))
            driver.step()
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
        if layerwise:
            inner = next(iter(optimizer.inner.values()))
            assert inner.param_groups[0]["weight_decay"] == pytest.approx(
                WD * (1 + 19.0 * 2 / 3), rel=1e-12)  # the value of the last step
            optimizer.close()
    for key in results[0]:
        assert torch.equal(results[1][key], results[0][key]), key


# ----------------------------------------------------------------------------- refusals
def test_an_optimizer_that_reads_its_decay_once_is_refused():
    pytest.importorskip("lomo_optim")
    _, optimizer = build("lomo")
    with pytest.raises(CapabilityError, match="'lomo' reads its weight decay once"):
        create_weight_decay_scheduler("constant", optimizer)
    assert optimhub.get_spec("lomo").has("static_weight_decay")


def test_constructor_weight_decay_does_not_imply_static_weight_decay():
    """Two facts, each measured: Adam-mini takes the decay once but reads its own groups'."""
    entry = {"plugin": "p", "distribution": "d", "import_name": "m", "summary": "s",
             "constructor_weight_decay": True}
    assert not spec_from_mapping("copies_into_groups", entry).has("static_weight_decay")
    spec = spec_from_mapping("reads_once", {**entry, "capabilities": ["static_weight_decay"]})
    assert spec.has("static_weight_decay") and spec.constructor_weight_decay


class NoDecay(torch.optim.Optimizer):
    def __init__(self, params: Any, **defaults: Any) -> None:
        super().__init__(params, {"lr": 0.1, **defaults})

    def step(self, closure: Any = None) -> None:
        return None


@pytest.mark.parametrize(("make", "kwargs", "error", "message"), [
    (lambda: NoDecay([nn.Parameter(torch.ones(2))]), {}, OptimArgsError,
     "param group 0 has weight_decay=None"),
    (lambda: NoDecay([nn.Parameter(torch.ones(2))], weight_decay=-0.1), {}, OptimArgsError,
     r"param group 0 has weight_decay=-0.1; it must be finite and >= 0"),
    (lambda: build()[1], {"name": "cosine"}, OptimArgsError, "needs num_training_steps"),
    (lambda: build()[1], {"name": "cosine", "num_training_steps": 5}, OptimArgsError,
     "'cosine' needs end_factor"),
    (lambda: build()[1], {"name": "linear", "num_training_steps": 5, "end_factor": -0.5},
     OptimArgsError, r"end_factor=-0.5 must be finite and >= 0 \(a negative weight decay"),
    (lambda: build()[1], {"name": "constant", "end_factor": 2.0}, OptimArgsError,
     "'constant' keeps the weight decay"),
    (lambda: build()[1], {"name": "constant", "start_factor": 0.5}, OptimArgsError,
     "there is no warmup"),
    (lambda: build()[1], {"name": "constant", "num_warmup_steps": 3, "start_factor": -1},
     OptimArgsError, "start_factor=-1 must be finite and >= 0"),
    (lambda: build()[1], {"name": "linear", "num_training_steps": 5, "end_factor": 0,
                          "num_warmup_steps": 6}, OptimArgsError, "longer than"),
    (lambda: build()[1], {"name": "cosin"}, OptimArgsError, "Did you mean 'cosine'"),
    (lambda: build()[1], {"name": 3}, OptimArgsTypeError, "must be a str"),
    (lambda: build()[1], {"name": "constant", "group_schedules": {"nothing_here": "constant"}},
     OptimArgsError, "'nothing_here' matches no parameter"),
    (lambda: build()[1], {"name": "constant", "group_schedules": {"group:1": "constant"}},
     OptimArgsError, "param group 1 .* has weight_decay 0"),
    (lambda: build()[1], {"name": "constant", "group_schedules": {0: {"end": 1}}},
     OptimArgsError, "unknown key 'end'"),
    (lambda: build()[1], {"name": "constant", "group_schedules": ["lm_head"]},
     OptimArgsTypeError, "must be a dict from group keys"),
])
def test_bad_schedules_are_refused_before_any_value_changes(make, kwargs, error, message):
    optimizer = make()
    before = [dict(g) for g in optimizer.param_groups]
    kwargs = dict(kwargs)
    with pytest.raises(error, match=message):
        create_weight_decay_scheduler(kwargs.pop("name", "constant"), optimizer, **kwargs)
    assert [dict(g) for g in optimizer.param_groups] == before


def test_an_optimizer_without_weight_decay_says_so():
    optimizer = torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1)
    spec = optimhub.OptimizerSpec(name="plain", summary="s", plugin="p", distribution="d",
                                  import_name="m", hyperparameters=["lr"])
    remember(optimizer, spec, [("w", optimizer.param_groups[0]["params"][0])])
    with pytest.raises(OptimArgsError, match="'plain' has no weight decay"):
        create_weight_decay_scheduler("constant", optimizer)


# ------------------------------------------------------------------ stepping and resuming
def run_with_driver(steps: int, *, save_at: int | None = None, state: bytes | None = None,
                    accumulation: int = 1) -> tuple[dict[str, torch.Tensor], list, bytes | None]:
    """adamw_torch under a cosine lr schedule (metric-free) and a linear weight-decay one,
    driven by the driver; optionally saves at ``save_at`` or starts from ``state``."""
    model, optimizer = build()
    scheduler = optimhub.create_scheduler("cosine", optimizer, num_warmup_steps=2,
                                          num_training_steps=steps)
    wd = create_weight_decay_scheduler("linear", optimizer, num_warmup_steps=1,
                                       num_training_steps=steps, end_factor=3.0)
    driver = drive(optimizer, scheduler, weight_decay_scheduler=wd, model=model,
                   gradient_accumulation_steps=accumulation)
    batch = lm_batch()
    start, saved, history = 0, None, []
    if state is not None:
        checkpoint = torch.load(io.BytesIO(state), weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        driver.load_state_dict(checkpoint["driver"])
        start = checkpoint["step"]
    for step in range(start, steps):
        if step == save_at:
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "driver": driver.state_dict(), "step": step}, buffer)
            saved = buffer.getvalue()
        for _ in range(accumulation):
            driver.backward(lm_loss(model, batch))
            driver.step()
        history.append((decays(optimizer), [g["lr"] for g in optimizer.param_groups]))
    return {n: p.detach().clone() for n, p in model.named_parameters()}, history, saved


def test_resuming_mid_schedule_through_the_driver_is_bit_exact():
    final, history, saved = run_with_driver(8, save_at=3)
    resumed, resumed_history, _ = run_with_driver(8, state=saved)
    assert resumed_history == history[3:]
    for key in final:
        assert torch.equal(final[key], resumed[key]), key


def test_the_driver_steps_the_weight_decay_once_per_optimizer_step():
    _, history, _ = run_with_driver(4, accumulation=3)
    # step k of the optimizer ran with factor(k); after it, factor(k + 1) is set.
    assert [h[0][0] for h in history] == pytest.approx(
        [WD * expected_factor("linear", k, warmup=1, end=3.0, total=4) for k in range(1, 5)],
        rel=1e-12)


def test_a_carried_schedule_is_saved_and_resumed_with_the_lr_scheduler():
    """Through create_scheduler(weight_decay_schedule=...): one object to step and save."""
    def run(resume: bytes | None = None, save_at: int | None = None):
        model, optimizer = build()
        scheduler = optimhub.create_scheduler(
            "linear", optimizer, num_warmup_steps=1, num_training_steps=6,
            weight_decay_schedule={"name": "cosine", "end_factor": 0.0})
        assert isinstance(scheduler, ScheduledLR)
        batch, start, saved = lm_batch(), 0, None
        if resume is not None:
            checkpoint = torch.load(io.BytesIO(resume), weights_only=True)
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            start = scheduler.last_epoch
        for step in range(start, 6):
            if step == save_at:
                buffer = io.BytesIO()
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict()}, buffer)
                saved = buffer.getvalue()
            assert decays(optimizer)[0] == pytest.approx(
                WD * expected_factor("cosine", step, end=0.0, total=6), rel=1e-12, abs=1e-15)
            lm_loss(model, batch).backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
        return {n: p.detach().clone() for n, p in model.named_parameters()}, saved

    final, saved = run(save_at=2)
    resumed, _ = run(resume=saved)
    for key in final:
        assert torch.equal(final[key], resumed[key]), key


def test_a_carried_schedule_cannot_also_be_stepped_alone_or_by_the_driver():
    _, optimizer = build()
    wd = create_weight_decay_scheduler("constant", optimizer)
    scheduler = optimhub.create_scheduler("constant", optimizer, weight_decay_schedule=wd)
    with pytest.raises(CapabilityError, match="stepped by the lr scheduler that carries it"):
        wd.step()
    with pytest.raises(OptimArgsError, match="already carried by an lr scheduler"):
        drive(optimizer, scheduler, weight_decay_scheduler=wd)
    with pytest.raises(OptimArgsError, match="already carried"):
        optimhub.create_scheduler("constant", optimizer, weight_decay_schedule=wd)
    other = build()[1]
    with pytest.raises(OptimArgsError, match="bound to another optimizer"):
        drive(other, weight_decay_scheduler=create_weight_decay_scheduler("constant", optimizer))


def test_a_metric_driven_lr_schedule_cannot_carry_it_but_the_driver_steps_both():
    model, optimizer = build()
    with pytest.raises(OptimArgsError,
                       match=r"give it to optimhub.drive\(..., weight_decay_scheduler=...\)"):
        optimhub.create_scheduler("reduce_lr_on_plateau", optimizer,
                                  weight_decay_schedule="constant")
    scheduler = optimhub.create_scheduler("reduce_lr_on_plateau", optimizer, patience=0)
    wd = create_weight_decay_scheduler("linear", optimizer, num_training_steps=2,
                                       end_factor=0.0)
    driver = drive(optimizer, scheduler, weight_decay_scheduler=wd, model=model)
    for _ in range(2):
        driver.backward(lm_loss(model, lm_batch()))
        driver.step()
    assert decays(optimizer)[0] == 0.0


def test_a_state_for_other_schedules_is_refused():
    _, optimizer = build()
    wd = create_weight_decay_scheduler("linear", optimizer, num_training_steps=5, end_factor=0)
    state = wd.state_dict()
    _, other_optimizer = build()
    other = create_weight_decay_scheduler("linear", other_optimizer, num_training_steps=9,
                                          end_factor=0)
    with pytest.raises(CheckpointError, match=r"saved with the schedules \['linear\(warmup=0, "
                                              r"total=5"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="not a weight-decay scheduler state"):
        other.load_state_dict({"last_step": 1})


def test_a_second_scheduler_starts_from_the_first_base_not_the_last_value():
    """As torch's initial_lr: the HF Trainer builds its scheduler again at every train()."""
    _, optimizer = build()
    wd = create_weight_decay_scheduler("linear", optimizer, num_training_steps=2, end_factor=0)
    wd.step()
    wd.step()
    assert decays(optimizer)[0] == 0.0
    again = create_weight_decay_scheduler("constant", optimizer)
    assert again.base_weight_decays[0] == WD
    assert decays(optimizer)[0] == WD
