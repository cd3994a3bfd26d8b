"""Facts that used to be hand-coded in plugins are spec data, read by the core."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm

import optimhub
from optimhub.arguments import OptimizerArguments
from optimhub.assemble import constructor_kwargs
from optimhub.errors import OptimArgsError
from optimhub.spec import Capability


def test_constructor_weight_decay_reaches_the_constructor():
    spec = optimhub.get_spec("lomo")
    assert spec.constructor_weight_decay
    kwargs = constructor_kwargs(spec, OptimizerArguments(weight_decay=0.25), {})
    assert kwargs["weight_decay"] == 0.25
    # everyone else gets it per group, not as a keyword
    adamw = optimhub.get_spec("adamw_torch")
    assert "weight_decay" not in constructor_kwargs(adamw, OptimizerArguments(weight_decay=0.25),
                                                    {})


def test_without_cuda_keywords_replace_fixed_ones_where_cuda_is_absent():
    spec = optimhub.get_spec("paged_adamw_8bit")
    assert dict(spec.fixed)["is_paged"] is True
    kwargs = constructor_kwargs(spec, OptimizerArguments(), {})
    assert kwargs["is_paged"] is (torch.cuda.is_available())


@pytest.mark.parametrize("name", ["lomo", "adalomo"])
def test_single_group_refuses_rules_before_the_backend_is_touched(name):
    assert optimhub.get_spec(name).has(Capability.SINGLE_GROUP)
    model = make_tiny_lm()
    before = [p.detach().clone() for p in model.parameters()]
    # adalomo is CUDA-only: the rule is still refused first, before the device check
    with pytest.raises(OptimArgsError, match="one learning rate and one weight decay"):
        optimhub.create_optimizer(name, model, param_group_rules=[{"pattern": "bias",
                                                                  "lr": 1e-3}])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(("name", "layerwise", "expected"), [
    ("adamw_torch", False, (False, False)),
    ("adamw_torch", True, (True, True)),
    ("galore_adamw_layerwise", False, (True, True)),
    ("lomo", False, (False, True)),
])
def test_updates_in_backward_is_one_rule(name, layerwise, expected):
    spec = optimhub.get_spec(name)
    assert (spec.runs_layerwise(layerwise), spec.updates_in_backward(layerwise)) == expected
