"""Layerwise (optimizer-in-backward) mode: same results as normal training, strict state."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import max_difference, train

import optimhub
from optimhub.errors import CapabilityError, CheckpointError
from optimhub.layerwise import LayerwiseOptimizer


def layerwise_train(model, optimizer, steps=5, scheduler=None):
    for step in range(steps):
        lm_loss(model, lm_batch(seed=step)).backward()
        optimizer.step()
        optimizer.zero_grad()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("name", ["adamw_torch", "sgd", "adafactor_torch"])
def test_layerwise_equals_normal_training_step_for_step(name):
    normal_model, layer_model = make_tiny_lm(), make_tiny_lm()
    normal = optimhub.create_optimizer(name, normal_model, lr=1e-2, weight_decay=0.1)
    layerwise = optimhub.create_optimizer(name, layer_model, lr=1e-2, weight_decay=0.1,
                                          layerwise=True)
    assert isinstance(layerwise, LayerwiseOptimizer)
    assert set(layerwise.inner) == {n for n, _ in layer_model.named_parameters()}
    assert optimhub.spec_of(layerwise).name == name
    for step in range(4):
        train(normal_model, normal, steps=1)
        layerwise_train(layer_model, layerwise, steps=1)
        assert max_difference(normal_model, layer_model) < 1e-6, step
        assert all(p.grad is None for p in layer_model.parameters())
    layerwise.close()


def test_one_scheduler_drives_every_inner_optimizer_and_reports_the_real_lr():
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layerwise=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    layerwise_train(model, optimizer, steps=3, scheduler=scheduler)
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.5 ** 3)
    # The inner optimizers stepped with the lr of the step they ran in (the last: 0.5 ** 2).
    inner_lrs = [g["lr"] for o in optimizer.inner.values() for g in o.param_groups]
    assert inner_lrs == pytest.approx([1e-2 * 0.5 ** 2] * len(inner_lrs))


def assert_resumes(name: str, model: torch.nn.Module, optimizer: Any, state: Any) -> None:
    """A copy of ``model`` with a fresh layerwise ``name`` loaded from ``state`` trains
    the next 2 steps exactly as ``model`` and ``optimizer`` do."""
    resumed_model = make_tiny_lm()
    resumed_model.load_state_dict(model.state_dict())
    resumed = optimhub.create_optimizer(name, resumed_model, lr=1e-2, layerwise=True)
    resumed.load_state_dict(state)
    layerwise_train(model, optimizer, steps=2)
    layerwise_train(resumed_model, resumed, steps=2)
    assert max_difference(model, resumed_model) == 0.0
    resumed.close()


def test_state_dict_has_torchs_layout_and_loads_strictly(tmp_path):
    """torch's layout (state by position, as DCP's get_state_dict expects it), the stamp
    naming each position's parameter."""
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layerwise=True)
    layerwise_train(model, optimizer, steps=2)
    state = optimizer.state_dict()
    names = [name for name, _ in state["optimhub"]["params"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert sorted(state["state"]) == list(range(len(names)))
    assert [i for g in state["param_groups"] for i in g["params"]] == list(range(len(names)))
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    torch.save(state, tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)

    assert_resumes("adamw_torch", model, optimizer, loaded)

    smaller = make_tiny_lm(layers=1)
    other = optimhub.create_optimizer("adamw_torch", smaller, lr=1e-2, layerwise=True)
    with pytest.raises(CheckpointError, match="unexpected .*layers.1"):
        other.load_state_dict(loaded)
    with pytest.raises(CheckpointError, match="not saved by one"):
        other.load_state_dict(torch.optim.AdamW(smaller.parameters()).state_dict())


@pytest.mark.parametrize("name", ["adamw_torch", "stable_adamw"])
def test_resuming_keeps_what_stepping_changed_in_the_inner_groups(name, tmp_path):
    """optimi's StableAdamW counts its steps in its param group, not in its state: torch's
    layout has one group per outer group, so each inner group's changed values travel
    with the parameter's state entry (none for torch's AdamW)."""
    if name == "stable_adamw":
        pytest.importorskip("optimi")
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(name, model, lr=1e-2, layerwise=True)
    layerwise_train(model, optimizer, steps=2)
    state = optimizer.state_dict()
    carried = [e.get("layerwise_inner_group") for e in state["state"].values()]
    if name == "stable_adamw":
        assert all(c is not None and "step" in c for c in carried), carried[:2]
    else:
        assert carried == [None] * len(carried)
    torch.save(state, tmp_path / "opt.pt")
    assert_resumes(name, model, optimizer, torch.load(tmp_path / "opt.pt", weights_only=True))
    optimizer.close()


def test_a_state_in_the_earlier_layout_still_loads():
    """Checkpoints written before the layout became torch's (``inner``: each parameter's
    own state dict by name) resume as they did."""
    from optimhub.checkpoint import stamp_state

    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layerwise=True)
    layerwise_train(model, optimizer, steps=2)
    names = {id(p): n for n, p in model.named_parameters()}
    earlier = stamp_state(optimizer, {
        "layerwise": True,
        "param_groups": [{**{k: v for k, v in g.items() if k != "params"},
                          "params": [names[id(p)] for p in g["params"]]}
                         for g in optimizer.param_groups],
        "inner": {name: inner.state_dict() for name, inner in optimizer.inner.items()},
    })
    assert earlier["optimhub"]["state"]  # the stamp describes the inner entries
    assert_resumes("adamw_torch", model, optimizer,
                   copy.deepcopy(earlier))  # torch would share the tensors
    optimizer.close()


def test_state_is_a_view_of_the_inner_states_and_step_steps_a_hand_set_gradient():
    """What DCP's get_state_dict relies on: ``optimizer.state`` is empty for a fresh
    optimizer and filled once stepped, and ``step()`` steps a gradient set outside backward
    (its priming step: zero gradients at lr 0), which creates the state to load into."""
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layerwise=True)
    assert len(optimizer.state) == 0 and not optimizer.state
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    params = list(model.parameters())
    assert len(optimizer.state) == len(params) and params[0] in optimizer.state
    assert set(optimizer.state[params[0]]) == {"step", "exp_avg", "exp_avg_sq"}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    lm_loss(model, lm_batch()).backward()  # afterwards: freed in backward, step() is a no-op
    assert all(p.grad is None for p in params)
    optimizer.close()


def test_close_removes_the_hooks():
    model = make_tiny_lm()
    with optimhub.create_optimizer("sgd", model, lr=0.1, layerwise=True) as optimizer:
        before = model.lm_head.weight.detach().clone()
        lm_loss(model, lm_batch()).backward()
        assert not torch.equal(before, model.lm_head.weight)
    assert optimizer.closed
    before = model.lm_head.weight.detach().clone()
    lm_loss(model, lm_batch()).backward()
    assert torch.equal(before, model.lm_head.weight)
    assert model.lm_head.weight.grad is not None


def test_step_with_a_closure_and_incapable_names_are_refused(use_host):
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("sgd", model, lr=0.1, layerwise=True)
    with pytest.raises(CapabilityError, match="steps inside backward"):
        optimizer.step(lambda: 0.0)
    optimizer.close()
    from test_factory import CapabilityPlugin

    from optimhub.plugin_host import PluginHost

    use_host(PluginHost(environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
                        extra_plugins=[("capabilities", CapabilityPlugin())]))
    with pytest.raises(CapabilityError, match="'model_demo' cannot run layerwise"):
        optimhub.create_optimizer("model_demo", make_tiny_lm(), layerwise=True)


def test_a_failed_build_leaves_no_hook_on_the_model(use_host):
    from test_factory import CapabilityPlugin

    from optimhub.plugin_host import PluginHost

    calls = []

    class FailsOnThird:
        @optimhub.hookimpl
        def optimhub_register_optimizers(self, register):
            def build(request):
                calls.append(request.param_names)
                if len(calls) == 3:
                    raise ValueError("the third parameter cannot be built")
                return torch.optim.SGD(request.param_groups, **request.kwargs)

            register.optimizer(optimhub.OptimizerSpec(
                name="fragile", summary="s", plugin="x", distribution="torch",
                import_name="torch", capabilities={"layerwise_capable"},
                hyperparameters={"lr", "weight_decay"}), build)

    use_host(PluginHost(environ={"OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
                        extra_plugins=[("fragile", FailsOnThird()),
                                       ("capabilities", CapabilityPlugin())]))
    model = make_tiny_lm()
    with pytest.raises(optimhub.BuildError, match="third parameter"):
        optimhub.create_optimizer("fragile", model, lr=0.1, layerwise=True)
    before = model.embed_tokens.weight.detach().clone()
    lm_loss(model, lm_batch()).backward()
    assert torch.equal(before, model.embed_tokens.weight)
