"""APOLLO (apollo-torch) through optimhub: real optimizers, real steps on CPU.

Tested here: low-rank state on the targets, the APOLLO-Mini preset, the rank capped per
weight (apollo-torch's random projector does not cap it: its state would outgrow dense
Adam), combinations APOLLO only rejects inside step() refused at build time, betas/eps
and weight decay in every group, and checkpoints that load with
``torch.load(weights_only=True)`` and resume bit-exactly.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm
from test_backend_galore import (
    MIXED_TARGETS,
    SMALL,
    Mixed,
    assert_resumes_exactly,
    assert_same_mixed_run,
    build,
    mixed_step,
    named_groups,
    needed_bytes,
    overfit,
    projector_storages,
    reference_like,
    run,
)

import optimhub
from optimhub.errors import OptimArgsError

apollo_torch = pytest.importorskip("apollo_torch")

Q_PROJ = "layers.0.attn.q_proj.weight"  # 16x16
UP_PROJ = "layers.1.mlp.up_proj.weight"  # 32x16
DOWN_PROJ = "layers.1.mlp.down_proj.weight"  # 16x32


def target_state_numel(optimizer: torch.optim.Optimizer) -> int:
    """Elements of the moments kept for the low-rank targets."""
    return sum(optimizer.state[p][key].numel() for g in optimizer.param_groups if "rank" in g
               for p in g["params"] for key in ("exp_avg", "exp_avg_sq"))


def dense_numel(optimizer: torch.optim.Optimizer) -> int:
    """What dense Adam keeps for the same targets: two moments per element."""
    return sum(2 * p.numel() for g in optimizer.param_groups if "rank" in g for p in g["params"])


@pytest.mark.parametrize(
    ("name", "optim_args", "rank"),
    [("apollo_adamw", SMALL, 2), ("apollo_adamw", SMALL + ",proj=svd", 2),
     ("apollo_mini", None, 1)],
)
def test_trains_with_low_rank_state_on_the_targets_only(name, optim_args, rank):
    model = make_tiny_lm()
    optimizer = build(name, model, optim_args)
    assert type(optimizer) is apollo_torch.APOLLOAdamW
    assert optimhub.spec_of(optimizer).name == name
    losses = overfit(model, optimizer)
    assert losses[-1] < losses[0] - 0.1
    state = {n: optimizer.state[p] for n, p in model.named_parameters()}
    assert state[Q_PROJ]["exp_avg"].shape == (16, rank)
    assert state[UP_PROJ]["exp_avg"].shape == (32, rank)
    assert state[DOWN_PROJ]["exp_avg"].shape == (rank, 32)
    assert "projector" not in state["embed_tokens.weight"]
    assert state["embed_tokens.weight"]["exp_avg"].shape == (32, 16)


def test_apollo_mini_is_apollo_with_the_mini_defaults_which_can_be_overridden():
    mini = build("apollo_mini", optim_args=None)
    target = next(g for g in mini.param_groups if "rank" in g)
    assert {k: target[k] for k in ("rank", "proj", "scale_type", "update_proj_gap", "scale",
                                    "proj_type")} == {
        "rank": 1, "proj": "random", "scale_type": "tensor", "update_proj_gap": 200,
        "scale": 128.0, "proj_type": "std"}
    spec = optimhub.get_spec("apollo_mini")
    assert spec.base == "apollo_adamw"
    overridden = build("apollo_mini", optim_args="rank=4,scale_type=channel")
    target = next(g for g in overridden.param_groups if "rank" in g)
    assert (target["rank"], target["scale_type"], target["scale"]) == (4, "channel", 128.0)


def test_hyperparameters_reach_every_group_and_weight_decay_is_kept():
    model = make_tiny_lm()
    optimizer = build("apollo_adamw", model, weight_decay=0.1, betas=(0.85, 0.98), eps=1e-7)
    assert {g["betas"] for g in optimizer.param_groups} == {(0.85, 0.98)}
    assert {g["eps"] for g in optimizer.param_groups} == {1e-7}
    decay = {n: g["weight_decay"] for g, names in named_groups(optimizer, model) for n in names}
    assert decay[Q_PROJ] == decay["embed_tokens.weight"] == 0.1
    assert decay["norm.weight"] == decay["layers.0.attn.q_proj.bias"] == 0.0


def test_rank_is_capped_so_state_stays_below_dense_adam():
    model = make_tiny_lm()
    optimizer = build("apollo_adamw", model, optim_args="rank=128")
    run(model, optimizer, 1)
    assert {g["rank"] for g in optimizer.param_groups if "rank" in g} == {16}
    assert target_state_numel(optimizer) == dense_numel(optimizer)

    # The backend given rank 128 keeps a 16x128 moment for a 16x16 weight.
    raw_model = make_tiny_lm()
    weights = [p for n, p in raw_model.named_parameters() if "proj.weight" in n]
    others = [p for n, p in raw_model.named_parameters() if "proj.weight" not in n]
    raw = apollo_torch.APOLLOAdamW(
        [{"params": others},
         {"params": weights, "rank": 128, "proj": "random", "scale_type": "channel",
          "update_proj_gap": 200, "scale": 1.0, "proj_type": "std"}], lr=1e-2)
    run(raw_model, raw, 1)
    assert raw.state[raw_model.get_parameter(Q_PROJ)]["exp_avg"].shape == (16, 128)
    assert target_state_numel(raw) > 5 * dense_numel(raw)


def test_one_group_per_effective_rank_in_model_order():
    model = Mixed()
    optimizer = build("apollo_adamw", model, optim_args="rank=8,update_proj_gap=2",
                      optim_target_modules=MIXED_TARGETS)
    targets = [(g["rank"], n) for g, n in named_groups(optimizer, model) if "rank" in g]
    assert targets == [(8, ["attn.q_proj.weight", "mlp.up_proj.weight"]),
                       (4, ["attn.k_proj.weight"])]
    for step in range(3):
        mixed_step(model, optimizer, step)
    shapes = {n: tuple(optimizer.state[p]["exp_avg"].shape)
              for n, p in model.named_parameters() if n.endswith("weight")}
    assert shapes == {"attn.q_proj.weight": (16, 8), "attn.k_proj.weight": (4, 16),
                      "mlp.up_proj.weight": (32, 8)}


@pytest.mark.parametrize("proj", ["random", "svd"])
def test_full_projection_is_refused_at_build(proj):
    with pytest.raises(OptimArgsError, match="proj_type='full' is not implemented"):
        build("apollo_adamw", optim_args=f"proj={proj},proj_type=full")


def test_channel_scaling_that_cannot_broadcast_is_refused_at_build():
    # 'left' projects q_proj (16x16) to 2x16, but channel scaling needs 16 row factors.
    with pytest.raises(OptimArgsError, match=r"q_proj.weight' \(16x16, rank 2\).*16 rows"):
        build("apollo_adamw", optim_args="rank=2,proj_type=left")
    # The same projection trains with one factor per tensor, or a single channel factor.
    for optim_args in ("rank=2,proj_type=left,scale_type=tensor", "rank=1,proj_type=left"):
        model = make_tiny_lm()
        losses = overfit(model, build("apollo_adamw", model, optim_args), steps=3)
        assert losses[-1] < losses[0], optim_args


@pytest.mark.parametrize(
    ("optim_args", "match"),
    [("scale=0", "scale"), ("scale=-1", "scale"), ("proj=gaussian", "proj"),
     ("scale_type=row", "scale_type"), ("rank=0", "rank"), ("update_proj_gap=0", "gap")],
)
def test_bad_options_are_refused(optim_args, match):
    with pytest.raises(OptimArgsError, match=match):
        build("apollo_adamw", optim_args=optim_args)


def test_layerwise_has_one_apollo_per_parameter():
    model = make_tiny_lm()
    optimizer = build("apollo_adamw_layerwise", model)
    assert {type(o) for o in optimizer.inner.values()} == {apollo_torch.APOLLOAdamW}
    assert "rank" in optimizer.inner[Q_PROJ].param_groups[0]
    assert "rank" not in optimizer.inner["embed_tokens.weight"].param_groups[0]
    losses = overfit(model, optimizer, steps=4)
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.parameters())
    optimizer.close()


@pytest.mark.parametrize(
    ("name", "optim_args"),
    [("apollo_adamw", SMALL), ("apollo_adamw", SMALL + ",proj=svd,scale_type=tensor"),
     ("apollo_mini", "update_proj_gap=2"), ("apollo_adamw_layerwise", SMALL)],
)
def test_checkpoint_loads_weights_only_and_resumes_exactly(tmp_path, name, optim_args):
    straight_model = make_tiny_lm()
    run(straight_model, build(name, straight_model, optim_args), 6)
    # The projector is refreshed (a new random seed) at steps 0 and 2 of the first half.
    assert_resumes_exactly(tmp_path, name, optim_args, straight_model)


@pytest.mark.parametrize("proj_type", ["std", "reverse_std", "right", "left"])
def test_svd_projector_is_compact_with_apollo_torchs_numbers_bit_for_bit(proj_type):
    """``proj=svd`` is GaLore's projector inside apollo-torch: six steps with refreshes at
    0, 2 and 4 give apollo-torch's own parameters to the bit, while the hub's projector
    keeps only the rank rows / columns of the SVD factor."""
    model = Mixed()
    optim_args = f"rank=3,update_proj_gap=2,proj=svd,scale_type=tensor,proj_type={proj_type}"
    optimizer = build("apollo_adamw", model, optim_args=optim_args,
                      optim_target_modules=MIXED_TARGETS)
    reference_model = Mixed()
    reference = reference_like(optimizer, model, reference_model, apollo_torch.APOLLOAdamW)
    assert_same_mixed_run(model, optimizer, reference_model, reference)
    up, reference_up = model.mlp["up_proj"].weight, reference_model.mlp["up_proj"].weight
    ortho = optimizer.state[up]["projector"].ortho_matrix
    assert projector_storages(optimizer, up) == needed_bytes(ortho)
    assert projector_storages(reference, reference_up) > needed_bytes(ortho)


def test_random_projector_is_left_as_apollo_makes_it():
    model = make_tiny_lm()
    optimizer = build("apollo_adamw", model)
    run(model, optimizer, 1)
    projector = optimizer.state[model.get_parameter(Q_PROJ)]["projector"]
    assert type(projector) is apollo_torch.random_projector.GradientProjector
