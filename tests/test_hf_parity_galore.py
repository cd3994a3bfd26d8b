"""For the GaLore names, optimhub builds what ``Trainer.create_optimizer()`` builds, except
where HF is wrong (docs/differences-from-transformers.md, section galore), and each exception
is a test here.

HF's handler passes only ``lr``: its groups get no weight decay and GaLoreAdamW's own
betas (0.9, 0.999) and eps 1e-6. Given exactly those values (``HF_APPLIES``), optimhub's
optimizer is the same class with the same hyperparameters for every parameter, and the
parameters after five identical steps are bit-identical (the same galore-torch code runs
on the same numbers; GaLore's SVD does not depend on the parameter order).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
import warnings

import pytest
import torch
from conftest import lm_batch, make_tiny_lm
from parity import hf_optimizer, max_difference, train, training_args
from test_backend_galore import SMALL, TARGETS, run

import optimhub
from optimhub.errors import BackendUnavailableError
from optimhub.plugins.galore import BNB_BREAKING_VERSION
from optimhub.versions import version_tuple

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("galore_torch") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs galore-torch and transformers",
)

#: What HF's GaLore handler really applies: only lr is passed.
HF_APPLIES = {"weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-6}
#: Non-default values, so that whatever HF drops shows.
USER_ASKS = {"weight_decay": 0.05, "adam_beta1": 0.85, "adam_beta2": 0.98, "adam_epsilon": 1e-7}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def low_rank_args(tmp_path, name: str, optim_args: str | None = SMALL, **fields):
    return training_args(tmp_path, name, optim_args, optim_target_modules=TARGETS, **fields)


def both(tmp_path, name: str, optim_args: str | None = SMALL, *, hf_name: str | None = None,
         **fields):
    """(hf_model, hf_optimizer, our_model, our_optimizer) from the same TrainingArguments."""
    hf_model, our_model = make_tiny_lm(), make_tiny_lm()
    theirs = hf_optimizer(hf_model, low_rank_args(tmp_path, hf_name or name, optim_args,
                                                  **fields))
    ours = optimhub.create_optimizer(name, our_model,
                                     low_rank_args(tmp_path, name, optim_args, **fields))
    return hf_model, theirs, our_model, ours


def hyperparameters(optimizer: torch.optim.Optimizer, model) -> dict[str, dict]:
    """Parameter name -> its group's hyperparameters: comparable across group layouts."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: {k: v for k, v in g.items() if k != "params"}
            for g in optimizer.param_groups for p in g["params"]}


def per_parameter(optimizer, model) -> dict[str, torch.optim.Optimizer]:
    """A layerwise optimizer's backend optimizers by parameter name, HF's or ours.

    HF returns a ``LayerWiseDummyOptimizer`` whose ``optimizer_dict`` maps each parameter
    to its optimizer; optimhub's ``LayerwiseOptimizer.inner`` maps names.
    """
    if hasattr(optimizer, "inner"):
        return dict(optimizer.inner)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: o for p, o in optimizer.optimizer_dict.items()}


def target_names(hyper: dict[str, dict]) -> set[str]:
    return {name for name, group in hyper.items() if "rank" in group}


@pytest.mark.parametrize(
    ("name", "optim_args"),
    [("galore_adamw", SMALL), ("galore_adamw", SMALL + ",proj_type=reverse_std"),
     ("galore_adamw", SMALL + ",proj_type=full,scale=0.5"), ("galore_adafactor", SMALL)],
)
def test_same_optimizer_as_hf_given_the_hyperparameters_hf_applies(tmp_path, name, optim_args):
    hf_model, theirs, our_model, ours = both(tmp_path, name, optim_args, **HF_APPLIES)
    assert type(ours) is type(theirs)
    assert hyperparameters(ours, our_model) == hyperparameters(theirs, hf_model)
    assert len(target_names(hyperparameters(ours, our_model))) == 12
    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    assert not torch.equal(our_model.layers[0].attn["q_proj"].weight,
                           make_tiny_lm().layers[0].attn["q_proj"].weight)


@pytest.mark.parametrize("name", ["galore_adamw", "galore_adafactor"])
def test_weight_decay_is_honoured_where_hf_drops_it(tmp_path, name):
    hf_model, theirs, our_model, ours = both(tmp_path, name, **USER_ASKS)
    hf_decay = {n: g["weight_decay"] for n, g in hyperparameters(theirs, hf_model).items()}
    our_decay = {n: g["weight_decay"] for n, g in hyperparameters(ours, our_model).items()}
    assert set(hf_decay.values()) == {0.0}
    assert our_decay["layers.0.attn.q_proj.weight"] == our_decay["embed_tokens.weight"] == 0.05
    assert our_decay["layers.0.attn.q_proj.bias"] == our_decay["norm.weight"] == 0.0
    assert {n for n, wd in our_decay.items() if wd} == {
        n for n, p in our_model.named_parameters() if p.dim() == 2}


def test_adam_betas_and_eps_are_passed_where_hf_drops_them(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "galore_adamw", **USER_ASKS)
    hf_groups = hyperparameters(theirs, hf_model).values()
    our_groups = hyperparameters(ours, our_model).values()
    assert {(g["betas"], g["eps"]) for g in hf_groups} == {((0.9, 0.999), 1e-6)}
    assert {(g["betas"], g["eps"]) for g in our_groups} == {((0.85, 0.98), 1e-7)}


def test_rank_is_capped_to_the_weight_with_the_same_numbers(tmp_path):
    # HF's default rank 128 on 16-wide weights: GaLore's SVD uses rank 16 anyway.
    hf_model, theirs, our_model, ours = both(tmp_path, "galore_adamw", "update_proj_gap=2",
                                             **HF_APPLIES)
    assert {g["rank"] for g in theirs.param_groups if "rank" in g} == {128}
    assert {g["rank"] for g in ours.param_groups if "rank" in g} == {16}
    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0


def test_no_deprecation_warning_where_hf_warns(tmp_path):
    args = low_rank_args(tmp_path, "galore_adamw")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf_optimizer(make_tiny_lm(), args)
    assert any(issubclass(w.category, FutureWarning) and "deprecated" in str(w.message)
               for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimhub.create_optimizer("galore_adamw", make_tiny_lm(), args)
    assert not [w for w in caught if "deprecated" in str(w.message)]


def test_checkpoint_loads_weights_only_where_hf_needs_pickle(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "galore_adamw")
    train(hf_model, theirs, steps=1)
    train(our_model, ours, steps=1)
    torch.save(theirs.state_dict(), tmp_path / "hf.pt")
    torch.save(ours.state_dict(), tmp_path / "ours.pt")
    with pytest.raises(pickle.UnpicklingError, match="GaLoreProjector"):
        torch.load(tmp_path / "hf.pt", weights_only=True)
    ours.load_state_dict(torch.load(tmp_path / "ours.pt", weights_only=True))


def test_layerwise_has_the_same_per_parameter_optimizers_as_hf(tmp_path):
    hf_model, theirs, our_model, ours = both(tmp_path, "galore_adamw_layerwise", **HF_APPLIES)
    hf_inner, our_inner = per_parameter(theirs, hf_model), per_parameter(ours, our_model)
    assert hf_inner.keys() == our_inner.keys()
    for name, hf_opt in hf_inner.items():
        assert type(our_inner[name]) is type(hf_opt)
        assert our_inner[name].param_groups[0].keys() == hf_opt.param_groups[0].keys()
        assert hyperparameters(our_inner[name], our_model) == hyperparameters(hf_opt, hf_model)
    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    ours.close()


def test_galore_adafactor_layerwise_builds_where_hf_fails(tmp_path):
    with pytest.raises(ValueError, match="relative_step=True"):
        hf_optimizer(make_tiny_lm(), low_rank_args(tmp_path, "galore_adafactor_layerwise",
                                                   **HF_APPLIES))
    # Ours is galore_adafactor per parameter: same groups, same numbers as HF's
    # (non-layerwise) galore_adafactor.
    hf_model, theirs, our_model, ours = both(tmp_path, "galore_adafactor_layerwise",
                                             hf_name="galore_adafactor", **HF_APPLIES)
    hf_groups = hyperparameters(theirs, hf_model)
    for name, inner in per_parameter(ours, our_model).items():
        assert type(inner) is type(theirs)
        assert hyperparameters(inner, our_model) == {name: hf_groups[name]}
    train(hf_model, theirs)
    train(our_model, ours)
    assert max_difference(hf_model, our_model) == 0.0
    ours.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA parity test covers it there")
@pytest.mark.parametrize("name", ["galore_adamw_8bit", "galore_adamw_8bit_layerwise"])
def test_8bit_is_refused_at_build_where_hf_builds_an_optimizer_that_cannot_step(tmp_path, name):
    hf_model = make_tiny_lm()
    theirs = hf_optimizer(hf_model, low_rank_args(tmp_path, name))
    backends = per_parameter(theirs, hf_model).values() if hasattr(
        theirs, "optimizer_dict") else [theirs]
    assert {type(o).__name__ for o in backends} == {"AdamW8bit"}
    with pytest.raises(AssertionError, match="not compiled with CUDA"):
        train(hf_model, theirs, steps=1)
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        optimhub.create_optimizer(name, make_tiny_lm(), low_rank_args(tmp_path, name))


def test_hf_8bit_decays_every_parameter_by_the_backend_default(tmp_path):
    """HF's groups carry no weight_decay, so GaLoreAdamW8bit's default 1e-2 applies to
    every parameter (norms and biases too), whatever ``args.weight_decay`` says."""
    hf_model = make_tiny_lm()
    theirs = hf_optimizer(hf_model, low_rank_args(tmp_path, "galore_adamw_8bit", **HF_APPLIES))
    assert {g["weight_decay"] for g in hyperparameters(theirs, hf_model).values()} == {1e-2}


def test_hf_8bit_gets_shifted_bitsandbytes_arguments(tmp_path):
    """Why galore_adamw_8bit needs bitsandbytes < 0.50 even on a GPU."""
    if version_tuple(importlib.metadata.version("bitsandbytes")) < BNB_BREAKING_VERSION:
        pytest.skip("bitsandbytes < 0.50 still takes percentile_clipping and block_wise")
    theirs = hf_optimizer(make_tiny_lm(), low_rank_args(tmp_path, "galore_adamw_8bit"))
    assert (theirs.args.max_unorm, theirs.args.skip_zeros) == (100, True)


@pytest.mark.cuda
@cuda
def test_8bit_on_cuda_matches_hf_or_is_refused_for_bitsandbytes_050(tmp_path):
    # HF passes only lr: GaLoreAdamW8bit's betas, eps 1e-8 and weight decay 1e-2 on every
    # parameter. A param group rule reproduces that decay through optimhub.
    args = low_rank_args(tmp_path, "galore_adamw_8bit", weight_decay=0.0, adam_beta1=0.9,
                         adam_beta2=0.999, adam_epsilon=1e-8)
    rules = [{"pattern": ".*", "weight_decay": 1e-2}]
    if version_tuple(importlib.metadata.version("bitsandbytes")) >= BNB_BREAKING_VERSION:
        with pytest.raises(BackendUnavailableError, match="bitsandbytes<0.50"):
            optimhub.create_optimizer("galore_adamw_8bit", make_tiny_lm().cuda(), args,
                                      param_group_rules=rules)
        return
    hf_model, our_model = make_tiny_lm().cuda(), make_tiny_lm().cuda()
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer("galore_adamw_8bit", our_model, args,
                                     param_group_rules=rules)
    assert type(ours) is type(theirs)
    assert hyperparameters(ours, our_model) == hyperparameters(theirs, hf_model)

    def batch(seed: int) -> torch.Tensor:
        return lm_batch(seed=seed).cuda()

    run(hf_model, theirs, 5, batch=batch)
    run(our_model, ours, 5, batch=batch)
    assert max_difference(hf_model, our_model) == 0.0
