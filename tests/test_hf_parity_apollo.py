"""For the APOLLO names, optimhub builds what ``Trainer.create_optimizer()`` builds, except
where HF is wrong (docs/differences-from-transformers.md, section apollo), and each exception
is a test here.

HF passes lr to the constructor and the adam betas/eps into the target group only, and
no weight decay: its other parameters get APOLLOAdamW's defaults (betas (0.9, 0.999),
eps 1e-6). Given values that make the two routes agree (``HF_APPLIES``), optimhub's
optimizer has the same hyperparameters for every parameter and the parameters after five
identical steps are bit-identical: the random projections are seeded by a parameter's
position, and the targets come last, in model order, in both layouts.
"""

from __future__ import annotations

import importlib.util
import pickle

import pytest
import torch
from conftest import make_tiny_lm
from parity import hf_optimizer, max_difference, train
from test_backend_apollo import Q_PROJ
from test_backend_galore import SMALL
from test_hf_parity_galore import (
    HF_APPLIES,
    USER_ASKS,
    both,
    hyperparameters,
    low_rank_args,
    per_parameter,
    target_names,
)

import optimhub
from optimhub.errors import OptimArgsError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("apollo_torch") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs apollo-torch and transformers",
)

MINI = "rank=1,scale_type=tensor,scale=128"  # HF PR #36062's APOLLO-Mini optim_args


@pytest.mark.parametrize(
    ("name", "optim_args", "hf_optim_args"),
    [
        ("apollo_adamw", SMALL, SMALL),
        ("apollo_adamw", SMALL + ",proj=svd,scale_type=tensor,proj_type=right",
         SMALL + ",proj=svd,scale_type=tensor,proj_type=right"),
        ("apollo_adamw", "rank=1,update_proj_gap=2,proj_type=reverse_std",
         "rank=1,update_proj_gap=2,proj_type=reverse_std"),
        ("apollo_mini", "update_proj_gap=2", MINI + ",update_proj_gap=2"),
    ],
)
def test_same_optimizer_as_hf_given_the_hyperparameters_hf_applies(
    tmp_path, name, optim_args, hf_optim_args
):
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, low_rank_args(tmp_path, "apollo_adamw", hf_optim_args,
                                                  **HF_APPLIES))
    ours = optimhub.create_optimizer(name, our_model,
                                     low_rank_args(tmp_path, "apollo_adamw", optim_args,
                                                   **HF_APPLIES))
    assert type(ours) is type(theirs)
    assert hyperparameters(ours, our_model) == hyperparameters(theirs, hf_model)
    assert len(target_names(hyperparameters(ours, our_model))) == 12
    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.get_parameter(Q_PROJ), make_tiny_lm().get_parameter(Q_PROJ))


def test_weight_decay_is_honoured_where_hf_drops_it(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "apollo_adamw", **USER_ASKS)
    hf_decay = {n: g["weight_decay"] for n, g in hyperparameters(theirs, hf_model).items()}
    our_decay = {n: g["weight_decay"] for n, g in hyperparameters(ours, our_model).items()}
    assert set(hf_decay.values()) == {0.0}
    assert our_decay[Q_PROJ] == our_decay["lm_head.weight"] == 0.05
    assert our_decay["layers.0.attn.q_proj.bias"] == our_decay["norm.weight"] == 0.0


def test_adam_betas_and_eps_reach_every_group_where_hf_sets_only_the_target_group(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "apollo_adamw", **USER_ASKS)
    hf = hyperparameters(theirs, hf_model)
    assert (hf[Q_PROJ]["betas"], hf[Q_PROJ]["eps"]) == ((0.85, 0.98), 1e-7)
    embed = hf["embed_tokens.weight"]
    assert (embed["betas"], embed["eps"]) == ((0.9, 0.999), 1e-6)  # APOLLOAdamW's defaults
    ours_all = hyperparameters(ours, our_model).values()
    assert {(g["betas"], g["eps"]) for g in ours_all} == {((0.85, 0.98), 1e-7)}


def test_rank_is_capped_where_hf_keeps_state_larger_than_dense_adam(tmp_path):
    # HF's default rank 128 on 16-wide weights: the random projector does not cap it.
    hf_model, theirs, our_model, ours = both(tmp_path, "apollo_adamw", None)
    train(hf_model, theirs, steps=1)
    train(our_model, ours, steps=1)
    hf_q, our_q = hf_model.get_parameter(Q_PROJ), our_model.get_parameter(Q_PROJ)
    assert theirs.state[hf_q]["exp_avg"].shape == (16, 128)  # 8x the weight
    assert ours.state[our_q]["exp_avg"].shape == (16, 16)
    assert {g["rank"] for g in ours.param_groups if "rank" in g} == {16}


@pytest.mark.parametrize(
    ("optim_args", "error"),
    [("proj_type=full", NotImplementedError), ("rank=2,proj_type=left", RuntimeError)],
)
def test_combinations_that_fail_in_step_are_refused_at_build(tmp_path, optim_args, error):
    args = low_rank_args(tmp_path, "apollo_adamw", optim_args)
    hf_model = make_tiny_lm()
    theirs = hf_optimizer(hf_model, args)  # HF builds it...
    with pytest.raises(error):
        train(hf_model, theirs, steps=2)  # ...and it fails inside step()
    with pytest.raises(OptimArgsError, match="proj_type"):
        optimhub.create_optimizer("apollo_adamw", make_tiny_lm(), args)


def test_checkpoint_loads_weights_only_where_hf_needs_pickle(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "apollo_adamw")
    train(hf_model, theirs, steps=1)
    train(our_model, ours, steps=1)
    torch.save(theirs.state_dict(), tmp_path / "hf.pt")
    torch.save(ours.state_dict(), tmp_path / "ours.pt")
    with pytest.raises(pickle.UnpicklingError, match="GradientProjector"):
        torch.load(tmp_path / "hf.pt", weights_only=True)
    ours.load_state_dict(torch.load(tmp_path / "ours.pt", weights_only=True))


def test_layerwise_has_the_same_per_parameter_optimizers_as_hf(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "apollo_adamw_layerwise", **HF_APPLIES)
    hf_inner, our_inner = per_parameter(theirs, hf_model), per_parameter(ours, our_model)
    assert hf_inner.keys() == our_inner.keys()
    for name, hf_opt in hf_inner.items():
        assert type(our_inner[name]) is type(hf_opt)
        assert hyperparameters(our_inner[name], our_model) == hyperparameters(hf_opt, hf_model)
    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    ours.close()
