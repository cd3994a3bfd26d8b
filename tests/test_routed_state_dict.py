"""RoutedOptimizer's state dict in torch's layout (hub/routed.py), what makes it go through
``torch.distributed.checkpoint``: DCP's ``get_state_dict`` rekeys ``state`` by parameter
name through ``param_groups`` order and keeps nothing else, and its ``set_state_dict``
hands ``load_state_dict`` that markerless dict back, keyed by name.

So: ``state`` is keyed by each parameter's position in ``param_groups`` (route order), the
routes table rides along, the markerless dict loads split by the routes' counts (and is
refused when they do not fit, before any route loads), the earlier layout (state by route,
then by parameter name) still loads, and DCP's own functions resume a routed optimizer,
a layerwise route included, bit for bit in one process.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from torch import nn

import optimhub
from optimhub import CheckpointError, OptimHubWarning
from optimhub.checkpoint import checked_elsewhere, stamp_state

transformers = pytest.importorskip("transformers")

LAYERWISE_ROUTE = "matrix -> adamw_torch(layerwise=true); * -> adamw_torch"


def trained(name: str = "muon", steps: int = 2) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The tiny LM and ``name`` built on it, ``steps`` steps on (the same every time)."""
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer(name, model, lr=1e-2)
    for seed in range(steps):
        lm_loss(model, lm_batch(seed=seed)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def assert_resumes(name: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                   saved: dict, load=None) -> None:
    """A fresh model (the trained weights) and optimizer load ``saved``; both then take
    the same 2 steps and must end bit for bit equal."""
    resumed_model = make_tiny_lm()
    resumed_model.load_state_dict(model.state_dict())
    resumed = optimhub.create_optimizer(name, resumed_model, lr=1e-2)
    if load is None:
        resumed.load_state_dict(saved)
    else:
        load(resumed_model, resumed)
    for m, o in ((model, optimizer), (resumed_model, resumed)):
        for seed in (5, 6):
            lm_loss(m, lm_batch(seed=seed)).backward()
            o.step()
            o.zero_grad()
    other = dict(resumed_model.named_parameters())
    assert [n for n, p in model.named_parameters() if not torch.equal(p, other[n])] == []
    for closable in (optimizer, resumed):
        closable.close()


def by_name(state: dict, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """What DCP's set_state_dict hands over: ``state`` and ``param_groups`` only, keyed by
    parameter name (no marker, no routes table, no stamp)."""
    names = {id(p): n for n, p in model.named_parameters()}
    position = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    return {"state": {position[i]: entry for i, entry in state["state"].items()},
            "param_groups": [{**g, "params": [position[i] for i in g["params"]]}
                             for g in state["param_groups"]]}


def test_the_state_dict_has_torchs_layout_over_the_routes():
    model, optimizer = trained()
    state = optimizer.state_dict()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert [i for g in state["param_groups"] for i in g["params"]] == list(range(len(params)))
    assert len(state["param_groups"]) == len(optimizer.param_groups) == 3
    for position, param in enumerate(params):  # each entry is its parameter's route state
        assert state["state"][position] is optimizer.state[param]
    assert state["routed"] is True and state["optimhub"]["name"] == "muon"
    assert list(state["routes"]) == ["muon", "fallback"]
    muon = state["routes"]["muon"]
    assert (muon["optimizer"], muon["groups"], muon["extras"]) == ("muon_torch", 1, {})
    assert muon["params"][0] == "layers.0.attn.q_proj.weight"
    assert state["optimhub"]["state"]["layers.0.attn.q_proj.weight"] == {
        "momentum_buffer": list(model.layers[0].attn["q_proj"].weight.shape)}


def test_a_layerwise_route_keeps_its_marker_in_the_routes_table_and_resumes():
    model, optimizer = trained(LAYERWISE_ROUTE)
    state = optimizer.state_dict()
    assert state["routes"]["adamw_torch"]["extras"] == {"layerwise": True}
    assert state["routes"]["adamw_torch_2"]["extras"] == {}
    assert_resumes(LAYERWISE_ROUTE, model, optimizer, copy.deepcopy(state))


def test_a_route_saved_layerwise_is_refused_by_the_same_route_not_layerwise():
    _, optimizer = trained(LAYERWISE_ROUTE, steps=1)
    state = copy.deepcopy(optimizer.state_dict())
    optimizer.close()
    _, target = trained("matrix -> adamw_torch; * -> adamw_torch", steps=1)
    before = str(target.state_dict())
    with pytest.raises(CheckpointError, match="route 'adamw_torch' was saved layerwise, "
                                              "here it is not layerwise"):
        target.load_state_dict(state)
    assert str(target.state_dict()) == before


@pytest.mark.parametrize("name", ["muon", LAYERWISE_ROUTE])
def test_the_markerless_dict_dcp_hands_over_loads_split_by_the_routes(name):
    model, optimizer = trained(name)
    markerless = copy.deepcopy(by_name(optimizer.state_dict(), optimizer, model))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_resumes(name, model, optimizer, markerless)
    said = [str(w.message) for w in caught if issubclass(w.category, OptimHubWarning)]
    assert any("has no 'optimhub' stamp" in m for m in said), said  # unchecked, and says so


@pytest.mark.parametrize(("cut", "says"), [
    (lambda s: s["param_groups"].pop(), "the state has 2 param groups, this routed optimizer "
                                        r"3 \(muon: 1, fallback: 2\)"),
    (lambda s: s["param_groups"][1]["params"].pop(),
     r"saved param group #1 has 1 parameters, this optimizer's \(route 'fallback'\) 2"),
])
def test_a_markerless_dict_whose_counts_do_not_fit_is_refused_before_any_route_loads(cut, says):
    model, optimizer = trained()
    markerless = copy.deepcopy(by_name(optimizer.state_dict(), optimizer, model))
    cut(markerless)
    _, target = trained(steps=1)
    before = str(target.state_dict())
    with checked_elsewhere(target), pytest.raises(CheckpointError, match=says):
        target.load_state_dict(markerless)
    assert str(target.state_dict()) == before


def test_a_state_in_the_earlier_layout_still_loads():
    """Checkpoints written before the layout became torch's (``routes``: each route's own
    state dict with parameter names for positions) resume as they did."""
    model, optimizer = trained()
    routes = {}
    for label, route in optimizer.routes.items():
        names = optimizer._routes[list(optimizer.routes).index(label)].parameter_names()
        own = route.state_dict()
        routes[label] = {
            "optimizer": optimizer._routes[list(optimizer.routes).index(label)].spec.name,
            "params": names,
            "state": {**own, "state": {names[i]: v for i, v in own["state"].items()},
                      "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                                       for g in own["param_groups"]]},
        }
    earlier = stamp_state(optimizer, {"routed": True, "routes": routes})
    assert "state" not in earlier and earlier["optimhub"]["name"] == "muon"
    assert_resumes("muon", model, optimizer, copy.deepcopy(earlier))


def test_dcp_get_and_set_state_dict_resume_a_routed_optimizer_in_one_process():
    """DCP's own functions, no helper and no process group: get_state_dict keys the
    routed state by name (nothing but ``state`` and ``param_groups``), set_state_dict
    loads it into a fresh optimizer, primed by DCP's zero-gradient step."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    for name in ("muon", LAYERWISE_ROUTE):
        model, optimizer = trained(name)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        assert set(optimizer_state) == {"state", "param_groups"}
        assert "layers.0.attn.q_proj.weight" in optimizer_state["state"]
        assert len(optimizer_state["param_groups"]) == len(optimizer.param_groups)
        saved = copy.deepcopy(optimizer_state)
        entries = len(optimizer.state)

        def load(fresh_model, fresh, saved=saved, model_state=model_state, entries=entries):
            assert len(fresh.state) == 0
            with checked_elsewhere(fresh):
                set_state_dict(fresh_model, fresh, model_state_dict=model_state,
                               optim_state_dict=saved)
            assert len(fresh.state) == entries

        assert_resumes(name, model, optimizer, saved, load=load)


def test_what_keeps_a_routes_state_from_torchs_layout_is_named():
    """``state_dict()`` refuses such a route with a ``CapabilityError`` built from this
    sentence (no catalog optimizer has such a state today: the layerwise one's earlier
    layout was the last)."""
    from optimhub.routed import _layout_problem

    assert _layout_problem({"state": {}, "param_groups": [{"params": [0, 1]}]}) == ""
    earlier_layerwise = {"layerwise": True, "inner": {"w": {}}, "param_groups": [
        {"params": ["w"]}]}
    assert "has no 'state' and 'param_groups'" in _layout_problem(earlier_layerwise)
    assert "no param group lists: [7]" in _layout_problem(
        {"state": {7: {}}, "param_groups": [{"params": [0]}]})


def test_a_route_declared_not_to_resume_through_dcp_makes_the_routed_optimizer_no_dcp(
        tmp_path, plugin_factory, use_host):
    """No catalog name carries ``no_dcp`` (all resume: tests/test_distributed_checkpoint.py);
    a third-party plugin's optimizer declaring it passes it to every route set using it."""
    from conftest import sign_sgd_plugin

    from optimhub import CapabilityError, distributed_checkpoint
    from optimhub.route_plan import spec_for

    plugin_factory.add("nodcp", sign_sgd_plugin("sign_no_dcp").replace(
        '"hyperparameters"', '"capabilities": ["no_dcp"], "hyperparameters"'))
    use_host(plugin_factory.host())
    assert spec_for("matrix -> muon_torch; * -> sign_no_dcp").has("no_dcp")
    assert not spec_for("matrix -> muon_torch; * -> adamw_torch").has("no_dcp")
    model, optimizer = trained("matrix -> muon_torch; * -> sign_no_dcp", steps=1)
    with pytest.raises(CapabilityError, match="no_dcp"):
        distributed_checkpoint.save(model, optimizer, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
