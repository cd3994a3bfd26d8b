"""create_scheduler: HF's learning rates step for step, and every refusal before training.

Parity is checked against the installed ``transformers.get_scheduler`` on an identical
optimizer (two param groups with different lrs), step by step past num_training_steps,
with exact float equality: the formulas are HF's, evaluated in the same order.
"""

from __future__ import annotations

import io
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

import optimhub
from optimhub.errors import CapabilityError, OptimArgsError, OptimArgsTypeError
from optimhub.plugin_host import PluginHost
from optimhub.schedules import (
    HF_SCHEDULE_NAMES,
    SCHEDULE_NAMES,
    AdafactorRelativeLR,
    GreedyLR,
    create_scheduler,
    resolve_warmup_steps,
)
from optimhub.spec import OptimizerSpec

transformers_optimization = pytest.importorskip("transformers.optimization")
hf_get_scheduler = transformers_optimization.get_scheduler
STEPS = 30
LR = 0.1


def two_group_sgd() -> torch.optim.SGD:
    """An optimizer whose second group has its own lr: the multiplier applies per group."""
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.03}], lr=LR)


def lr_trace(scheduler, optimizer, steps: int = STEPS) -> list[list[float]]:
    """The lrs (reported and in the groups) before each of ``steps`` optimizer steps."""
    trace = []
    for _ in range(steps):
        trace.append([*scheduler.get_last_lr(), *(g["lr"] for g in optimizer.param_groups)])
        optimizer.step()
        scheduler.step()
    return trace


def hf_trace(name, warmup, total, **kwargs):
    optimizer = two_group_sgd()
    scheduler = hf_get_scheduler(name, optimizer, warmup, total,
                                 scheduler_specific_kwargs=kwargs)
    return lr_trace(scheduler, optimizer)


def our_trace(name, warmup, total, **kwargs):
    optimizer = two_group_sgd()
    return lr_trace(create_scheduler(name, optimizer, warmup, total, **kwargs), optimizer)


# ------------------------------------------------------------------------- parity
PARITY = [
    ("linear", 0, 20, {}),
    ("linear", 5, 20, {}),
    ("linear", 20, 20, {}),
    ("cosine", 0, 20, {}),
    ("cosine", 4, 20, {"num_cycles": 1.5}),
    ("cosine", 2, 25, {"num_cycles": 0.25}),
    ("cosine_with_restarts", 3, 20, {"num_cycles": 3}),
    ("cosine_with_restarts", 0, 17, {}),
    ("polynomial", 4, 20, {}),
    ("polynomial", 2, 20, {"lr_end": 1e-3, "power": 2.0}),
    ("polynomial", 0, 10, {"power": 0.5}),
    ("constant", 0, 20, {}),
    ("constant", 0, None, {}),
    ("constant_with_warmup", 5, None, {}),
    ("constant_with_warmup", 0, 20, {}),
    ("inverse_sqrt", 0, None, {}),
    ("inverse_sqrt", 5, None, {}),
    ("inverse_sqrt", 4, 20, {"timescale": 7}),
    ("cosine_with_min_lr", 3, 20, {"min_lr": 1e-3}),
    ("cosine_with_min_lr", 0, 20, {"min_lr_rate": 0.1, "num_cycles": 1}),
    ("cosine_warmup_with_min_lr", 3, 20, {"min_lr_rate": 0.1}),
    ("cosine_warmup_with_min_lr", 4, 20, {"min_lr": 0.01, "warmup_lr_rate": 0.2}),
    ("cosine_warmup_with_min_lr", 0, 15, {"min_lr_rate": 0.0}),
    ("cosine_warmup_with_min_lr", 1, 15, {"min_lr_rate": 0.05, "warmup_lr_rate": 0.5}),
    ("warmup_stable_decay", 3, 20, {"num_decay_steps": 5}),
    ("warmup_stable_decay", 2, 20, {"num_decay_steps": 6, "warmup_type": "cosine",
                                    "decay_type": "1-sqrt", "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", 4, None, {"num_decay_steps": 4, "num_stable_steps": 6,
                                      "warmup_type": "1-sqrt", "decay_type": "linear"}),
    ("warmup_stable_decay", 0, 12, {"num_decay_steps": 12, "num_cycles": 0.25}),
]


@pytest.mark.parametrize(("name", "warmup", "total", "kwargs"), PARITY)
def test_every_lr_equals_hf(name, warmup, total, kwargs):
    assert our_trace(name, warmup, total, **kwargs) == hf_trace(name, warmup, total, **kwargs)


def test_every_formula_schedule_has_a_parity_case():
    metric_driven = {"reduce_lr_on_plateau", "greedy"}
    assert {case[0] for case in PARITY} == set(HF_SCHEDULE_NAMES) - metric_driven


def test_names_are_hfs_twelve_plus_adafactor_relative():
    from transformers.trainer_utils import SchedulerType

    hf_names = tuple(t.value for t in SchedulerType)
    assert hf_names == HF_SCHEDULE_NAMES
    assert (*hf_names, "adafactor_relative") == SCHEDULE_NAMES
    optimizer = two_group_sgd()
    assert isinstance(create_scheduler(SchedulerType.LINEAR, optimizer, 0, 10), LambdaLR)


@pytest.mark.parametrize(("ratio", "total"), [(0.1, 20), (0.3, 10), (0.05, 30), (0.999, 7)])
def test_ratio_warmup_is_hfs_get_warmup_steps(ratio, total):
    from transformers import TrainingArguments

    hf_steps = TrainingArguments.get_warmup_steps(SimpleNamespace(warmup_steps=ratio), total)
    assert resolve_warmup_steps(ratio, total) == hf_steps
    assert our_trace("linear", ratio, total) == hf_trace("linear", hf_steps, total)


@pytest.mark.parametrize(("warmup", "steps"), [(None, 0), (0, 0), (0.0, 0), (1, 1), (1.0, 1),
                                               (7, 7), (12.0, 12)])
def test_warmup_in_steps(warmup, steps):
    assert resolve_warmup_steps(warmup, None) == steps


def test_warmup_rule_names_the_callers_arguments():
    with pytest.raises(OptimArgsError, match="warmup_steps=0.1 .* max_steps"):
        resolve_warmup_steps(0.1, None, warmup_name="warmup_steps", total_name="max_steps")


def test_state_dict_resumes_the_schedule():
    optimizer = two_group_sgd()
    scheduler = create_scheduler("cosine", optimizer, 3, 20)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    resumed_opt = two_group_sgd()
    resumed = create_scheduler("cosine", resumed_opt, 3, 20)
    resumed_opt.load_state_dict(optimizer.state_dict())  # the lrs live in the optimizer
    resumed.load_state_dict(saved)
    assert lr_trace(resumed, resumed_opt, 10) == lr_trace(scheduler, optimizer, 10)


# ------------------------------------------------------------- metric-driven schedules
IMPROVING = [1.0 - 0.01 * i for i in range(25)]
PLATEAU = [0.5] * 25
NOISY = [0.5 + 0.1 * math.sin(i * 1.7) - 0.002 * i for i in range(60)]
METRICS = IMPROVING + PLATEAU + NOISY + PLATEAU


def metric_trace(scheduler, optimizer, metrics=METRICS):
    trace = []
    for metric in metrics:
        scheduler.step(metric)
        trace.append([*scheduler.get_last_lr(), *(g["lr"] for g in optimizer.param_groups)])
    return trace


def metric_parity(name, kwargs):
    ours_opt, hf_opt = two_group_sgd(), two_group_sgd()
    ours = create_scheduler(name, ours_opt, **kwargs)
    hf = hf_get_scheduler(name, hf_opt, scheduler_specific_kwargs=kwargs)
    return metric_trace(ours, ours_opt), metric_trace(hf, hf_opt)


@pytest.mark.parametrize("kwargs", [{}, {"patience": 2, "factor": 0.5, "cooldown": 1},
                                    {"mode": "max", "threshold_mode": "abs", "min_lr": 0.02}])
def test_reduce_lr_on_plateau_equals_hf(kwargs):
    ours, hf = metric_parity("reduce_lr_on_plateau", kwargs)
    assert ours == hf
    assert ours[0] != ours[-1] or kwargs.get("mode") == "max"


GREEDY_SETTINGS = [
    {},
    {"patience": 2, "factor": 0.5, "min_lr": 1e-3, "max_lr": 0.5, "cooldown": 1, "warmup": 1},
    {"patience": 1, "smooth": True, "window_size": 3, "reset_start": 2, "min_lr": 0.05,
     "factor": 0.7},
    {"mode": "max", "threshold_mode": "rel", "threshold": 0.01, "patience": 3,
     "min_lr": [0.01, 0.001], "max_lr": [0.2, 0.05]},
]


@pytest.mark.parametrize("kwargs", GREEDY_SETTINGS)
def test_greedy_equals_hfs_greedylr(kwargs):
    ours, hf = metric_parity("greedy", kwargs)
    assert ours == hf
    assert len({tuple(row) for row in ours}) > 1  # the lr did move


def test_greedy_is_stepped_with_the_metric_by_hf_trainer_and_lightning():
    """Both special-case metric-driven schedulers by ``isinstance(ReduceLROnPlateau)``."""
    scheduler = create_scheduler("greedy", two_group_sgd())
    assert isinstance(scheduler, GreedyLR)
    assert isinstance(scheduler, (ReduceLROnPlateau, transformers_optimization.GreedyLR))


def test_greedy_state_dict_is_plain_data_and_resumes():
    kwargs = GREEDY_SETTINGS[2]
    optimizer = two_group_sgd()
    scheduler = create_scheduler("greedy", optimizer, **kwargs)
    metric_trace(scheduler, optimizer, METRICS[:40])
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    resumed_opt = two_group_sgd()
    resumed_opt.load_state_dict(optimizer.state_dict())
    resumed = create_scheduler("greedy", resumed_opt, **kwargs)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    rest = METRICS[40:]
    assert metric_trace(resumed, resumed_opt, rest) == metric_trace(scheduler, optimizer, rest)


# ---------------------------------------------------------------- adafactor_relative
def adafactor_trace(make_scheduler, warmup_init):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 1))
    optimizer = transformers_optimization.Adafactor(
        [{"params": model[0].parameters()}, {"params": model[1].parameters()}],
        relative_step=True, warmup_init=warmup_init)
    scheduler = make_scheduler(optimizer)
    trace = [scheduler.get_last_lr()]
    inputs = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(4):
        model(inputs).square().mean().backward()
        optimizer.step()
        scheduler.step()
        trace.append([float(lr) for lr in scheduler.get_last_lr()])
        optimizer.zero_grad()
    return trace


@pytest.mark.parametrize("warmup_init", [False, True])
def test_adafactor_relative_reports_hfs_adafactor_schedule(warmup_init):
    ours = adafactor_trace(lambda o: create_scheduler("adafactor_relative", o), warmup_init)
    hf = adafactor_trace(transformers_optimization.AdafactorSchedule, warmup_init)
    assert ours == hf
    assert ours[0] == [0.0, 0.0] and min(ours[1]) > 0


def test_adafactor_relative_with_an_idle_group():
    """HF's AdafactorSchedule drops groups without gradients, and torch then raises."""
    used, idle = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    optimizer = transformers_optimization.Adafactor(
        [{"params": used.parameters()}, {"params": idle.parameters()}], relative_step=True)
    scheduler = create_scheduler("adafactor_relative", optimizer, initial_lr=1e-4)
    used(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    reported = scheduler.get_last_lr()
    assert reported[1] == 1e-4 and 0 < reported[0] <= 1e-2
    assert [g["lr"] for g in optimizer.param_groups] == reported


def test_adafactor_relative_on_a_hub_adafactor():
    optimizer = optimhub.create_optimizer("adafactor", make_tiny_lm(),
                                          optim_args="relative_step=true")
    scheduler = create_scheduler("adafactor_relative", optimizer, initial_lr=1e-2)
    assert isinstance(scheduler, AdafactorRelativeLR)
    assert scheduler.get_last_lr() == [1e-2] * len(optimizer.param_groups)
    fresh = optimhub.create_optimizer("adafactor", make_tiny_lm(),
                                      optim_args="relative_step=true")
    with pytest.raises(OptimArgsError, match="group 0 has lr=None.*adafactor_relative"):
        create_scheduler("linear", fresh, 0, 10)


# ---------------------------------------------------------------------- refusals
def hub_adafactor(relative: bool):
    return transformers_optimization.Adafactor(
        [torch.nn.Parameter(torch.zeros(2, 2))], lr=None if relative else 1e-3,
        relative_step=relative, scale_parameter=relative)


BAD = [
    # (name, warmup, total, kwargs, error, text the message must contain)
    ("cosin", 0, 10, {}, OptimArgsError, "Did you mean 'cosine'"),
    ("cosin", 0, 10, {}, OptimArgsError, "warmup_stable_decay, greedy, adafactor_relative"),
    (3, 0, 10, {}, OptimArgsTypeError, "int 3"),
    ("linear", True, 10, {}, OptimArgsTypeError, "num_warmup_steps=True"),
    ("linear", "0.1", 10, {}, OptimArgsTypeError, "num_warmup_steps='0.1'"),
    ("linear", -1, 10, {}, OptimArgsError, "num_warmup_steps=-1"),
    ("linear", math.nan, 10, {}, OptimArgsError, "num_warmup_steps=nan"),
    ("linear", 2.5, 10, {}, OptimArgsError, "num_warmup_steps=2.5 is neither"),
    ("linear", 2.5, 10, {}, OptimArgsError, "give 2 or 3 steps"),
    ("constant_with_warmup", 0.1, None, {}, OptimArgsError,
     "num_warmup_steps=0.1 is a ratio of the training length, but num_training_steps"),
    ("linear", 30, 20, {}, OptimArgsError, "num_warmup_steps=30 is longer than training"),
    ("linear", 0, 0, {}, OptimArgsError, "num_training_steps=0 must be >= 1"),
    ("linear", 0, -5, {}, OptimArgsError, "num_training_steps=-5"),
    ("linear", 0, 10.0, {}, OptimArgsTypeError, "num_training_steps=10.0"),
    ("linear", 0, True, {}, OptimArgsTypeError, "num_training_steps=True"),
    ("constant", 5, 20, {}, OptimArgsError, "use 'constant_with_warmup'"),
    ("reduce_lr_on_plateau", 3, None, {}, OptimArgsError, "num_warmup_steps=3"),
    ("greedy", 0.5, 10, {}, OptimArgsError, "num_warmup_steps=5"),
    ("warmup_stable_decay", 2, 20, {}, OptimArgsError,
     "'warmup_stable_decay' needs num_decay_steps"),
    ("warmup_stable_decay", 2, None, {"num_decay_steps": 3}, OptimArgsError,
     "num_stable_steps"),
    ("warmup_stable_decay", 5, 20, {"num_decay_steps": 16}, OptimArgsError,
     "(5) + num_decay_steps (16) = 21 exceeds num_training_steps (20)"),
    ("warmup_stable_decay", 5, 20, {"num_decay_steps": 6, "num_stable_steps": 10},
     OptimArgsError, "= 21 exceeds num_training_steps (20)"),
    ("warmup_stable_decay", 0, 20, {"num_decay_steps": 6, "warmup_type": "exp"},
     OptimArgsError, "warmup_type='exp'"),
    ("cosine_with_min_lr", 0, 20, {}, OptimArgsError, "neither was given"),
    ("cosine_with_min_lr", 0, 20, {"min_lr": 1e-3, "min_lr_rate": 0.1}, OptimArgsError,
     "both were given"),
    ("cosine_warmup_with_min_lr", 0, 20, {}, OptimArgsError, "exactly one of min_lr"),
    ("cosine_with_min_lr", 0, 20, {"min_lr": 0.5}, OptimArgsError, "min_lr=0.5 is above"),
    ("cosine_with_min_lr", 0, 20, {"min_lr_rate": 1.5}, OptimArgsError, "min_lr_rate=1.5"),
    ("polynomial", 0, 20, {"lr_end": 0.1}, OptimArgsError, "lr_end=0.1, so lr_end must be"),
    ("polynomial", 0, 20, {"lr_end": 0.5}, OptimArgsError, "initial lr 0.1"),
    ("polynomial", 20, 20, {}, OptimArgsError, "has no decay steps"),
    ("cosine", 0, 20, {"num_cycle": 1}, OptimArgsError, "Did you mean 'num_cycles'"),
    ("linear", 0, 20, {"power": 2}, OptimArgsError, "Its options: none"),
    ("cosine", 0, 20, {"last_epoch": 4}, OptimArgsError, "state_dict"),
    ("reduce_lr_on_plateau", 0, None, {"patiense": 3}, OptimArgsError,
     "Did you mean 'patience'"),
    ("greedy", 0, None, {"verbos": True}, OptimArgsError, "window_size"),
    ("cosine", 0, 20, {"num_cycles": "1"}, OptimArgsTypeError, "num_cycles='1'"),
    ("cosine", 0, 20, {"num_cycles": 0}, OptimArgsError, "num_cycles=0"),
    ("inverse_sqrt", 0, None, {"timescale": 2.5}, OptimArgsTypeError, "timescale=2.5"),
    ("inverse_sqrt", 0, None, {"timescale": 0}, OptimArgsError, "timescale=0"),
    ("reduce_lr_on_plateau", 0, None, {"factor": 1.5}, OptimArgsError, "factor=1.5"),
    ("greedy", 0, None, {"factor": 0.0}, OptimArgsError, "factor=0.0"),
    ("greedy", 0, None, {"mode": "up"}, OptimArgsError, "mode='up'"),
    ("adafactor_relative", 0, None, {}, OptimArgsError, "SGD is not an Adafactor"),
]


@pytest.mark.parametrize(("name", "warmup", "total", "kwargs", "error", "text"), BAD)
def test_bad_input_is_refused_before_training(name, warmup, total, kwargs, error, text):
    optimizer = two_group_sgd()
    with pytest.raises(error) as caught:
        create_scheduler(name, optimizer, warmup, total, **kwargs)
    assert text in str(caught.value)
    assert [g["lr"] for g in optimizer.param_groups] == [LR, 0.03]  # nothing was scheduled


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial",
                                  "cosine_with_min_lr", "cosine_warmup_with_min_lr"])
def test_decaying_schedules_need_num_training_steps(name):
    with pytest.raises(OptimArgsError, match=f"schedule '{name}' needs num_training_steps"):
        create_scheduler(name, two_group_sgd(), 0, None, min_lr_rate=0.1) if "min_lr" in name \
            else create_scheduler(name, two_group_sgd(), 0)


def test_adafactor_relative_refusals():
    with pytest.raises(OptimArgsError, match=r"group\(s\) \[0\] use an absolute lr"):
        create_scheduler("adafactor_relative", hub_adafactor(relative=False))
    with pytest.raises(OptimArgsError, match="warmup_init=true"):
        create_scheduler("adafactor_relative", hub_adafactor(relative=True), 5)


def test_not_an_optimizer():
    with pytest.raises(OptimArgsTypeError, match="needs a torch.optim.Optimizer, got list"):
        create_scheduler("linear", [torch.zeros(1)], 0, 10)


# ------------------------------------------------------------------ capabilities
class ScheduleFreeStandIn:
    """Used only when the schedulefree plugin is absent: a spec with the capability."""

    @optimhub.hookimpl
    def optimhub_register_optimizers(self, register):
        register.optimizer(
            OptimizerSpec(name="schedule_free_adamw", summary="stand-in", plugin="stand_in",
                          distribution="torch", import_name="torch",
                          capabilities={"schedule_free"}),
            lambda request: torch.optim.AdamW(request.param_groups, **request.kwargs))


@pytest.fixture
def schedule_free(use_host):
    """A schedule-free optimizer built by the hub (the real one when its plugin loads)."""
    try:
        optimhub.get_spec("schedule_free_adamw")
        return optimhub.create_optimizer("schedule_free_adamw", make_tiny_lm())
    except optimhub.OptimHubError:
        use_host(PluginHost(environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
                            extra_plugins=[("stand_in", ScheduleFreeStandIn())]))
        return optimhub.create_optimizer("schedule_free_adamw", make_tiny_lm())


def test_schedule_free_takes_constant(schedule_free):
    scheduler = create_scheduler("constant", schedule_free, 0, 100)
    assert scheduler.get_last_lr()[0] == schedule_free.defaults["lr"]


@pytest.mark.parametrize("name", ["linear", "cosine", "reduce_lr_on_plateau", "greedy",
                                  "constant_with_warmup"])
def test_schedule_free_refuses_a_changing_lr(schedule_free, name):
    with pytest.raises(CapabilityError) as caught:
        create_scheduler(name, schedule_free, 0, 100)
    message = str(caught.value)
    assert "'schedule_free_adamw' is schedule-free" in message
    assert "constant" in message and "allow_decay_with_schedule_free=True" in message
    assert "warmup_steps" in message


def test_schedule_free_decay_when_asked(schedule_free):
    scheduler = create_scheduler("linear", schedule_free, 0, 10,
                                 allow_decay_with_schedule_free=True)
    assert scheduler.lr_lambdas[0](5) == 0.5


@pytest.mark.parametrize("allow", [False, True])
def test_schedule_free_warmup_belongs_to_the_optimizer(schedule_free, allow):
    with pytest.raises(CapabilityError) as caught:
        create_scheduler("cosine", schedule_free, 0.1, 50, allow_decay_with_schedule_free=allow)
    message = str(caught.value)
    assert "warmup belongs to the optimizer" in message
    assert "warmup_steps=5" in message and "num_warmup_steps=0" in message


def test_foreign_and_plain_hub_optimizers_have_no_schedule_rules():
    model = make_tiny_lm()
    for optimizer in (torch.optim.AdamW(model.parameters()),
                      optimhub.create_optimizer("adamw_torch", model)):
        assert isinstance(create_scheduler("cosine", optimizer, 2, 10), LambdaLR)


def expected_lrs(name, warmup, total, steps, lr):
    """HF's lr before each step, from an ordinary optimizer with the same lr."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = hf_get_scheduler(name, optimizer, warmup, total)
    return [row[0] for row in lr_trace(scheduler, optimizer, steps)]


def test_lomo_receives_the_scheduled_lr():
    pytest.importorskip("lomo_optim")
    try:
        optimhub.get_spec("lomo")
    except optimhub.OptimHubError:
        pytest.skip("the lomo plugin is not loaded")
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("lomo", model, lr=1e-2)
    received = []
    fused_backward = optimizer.fused_backward

    def recording(loss, lr):
        received.append(lr)
        return fused_backward(loss, lr)

    optimizer.fused_backward = recording
    driver = optimhub.drive(optimizer, create_scheduler("cosine", optimizer, 2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no false "scheduler stepped before optimizer"
        for step in range(10):
            driver.backward(lm_loss(model, lm_batch(seed=step)))
            driver.step()
    assert received == expected_lrs("cosine", 2, 8, 10, 1e-2)


def test_one_scheduler_drives_every_layerwise_inner_optimizer():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layerwise=True)
    driver = optimhub.drive(optimizer, create_scheduler("linear", optimizer, 2, 6))
    seen = []
    with optimizer, warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(8):
            driver.backward(lm_loss(model, lm_batch(seed=step)))  # inner steps happen here
            inner = {g["lr"] for _, o in optimizer for g in o.param_groups}
            assert len(inner) == 1, inner
            seen.append(inner.pop())
            driver.step()
    assert seen == expected_lrs("linear", 2, 6, 8, 1e-2)
