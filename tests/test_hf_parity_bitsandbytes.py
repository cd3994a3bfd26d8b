"""For the 15 bitsandbytes names, optimhub builds what ``Trainer.create_optimizer()`` builds:
same class, same groups, same hyperparameters, the same 8-bit/32-bit state per parameter
(embeddings in 32 bits for 8-bit names) and bit-identical parameters after five steps (bnb's
CPU kernels are deterministic: same inputs, same bits, for the 8-bit ones too).

Where HF is wrong we differ, and each difference has its own test below.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm
from parity import groups_by_name, hf_optimizer, max_difference, train, training_args

import optimhub

transformers = pytest.importorskip("transformers")
bnb = pytest.importorskip("bitsandbytes")

#: vocab 128 x width 64: the embedding, lm_head and every projection have >= 4096
#: elements, so 8-bit names really quantize them (bnb keeps smaller tensors in 32 bits).
SIZE = {"vocab": 128, "width": 64}

NAMES = [
    "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit",
    "lion_8bit", "lion_32bit", "paged_lion_32bit", "paged_lion_8bit",
    "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
    "ademamix", "ademamix_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit",
]
CASES = [(name, None) for name in NAMES] + [
    ("ademamix", "beta1=0.8,beta3=0.999,alpha=4,eps=1e-6,t_alpha=3,t_beta3=4"),
    ("ademamix_8bit", "beta2=0.95,alpha=2.5,t_alpha=2"),
]

pytestmark = pytest.mark.filterwarnings(
    "ignore:Paged optimizers are not supported on CPU:UserWarning",
    "ignore:optimhub.*pages its state through CUDA:optimhub.OptimHubWarning",
)


@pytest.fixture(autouse=True)
def fresh_bnb_manager() -> Iterator[None]:
    """HF's embedding override lands in bnb's process-wide manager (see the deviation test
    below); start and end every test with an empty one."""
    manager = bnb.optim.GlobalOptimManager.get_instance()
    manager.initialize()
    yield
    manager.initialize()


def state_dtypes(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: str(s["state1"].dtype) for p, s in optimizer.state.items()}


@pytest.mark.parametrize(("name", "optim_args"), CASES)
def test_same_optimizer_as_the_hf_trainer(tmp_path, name, optim_args):
    args = training_args(tmp_path, name, optim_args)
    hf_model, our_model = make_tiny_lm(**SIZE), make_tiny_lm(**SIZE)
    theirs = hf_optimizer(hf_model, args)
    ours = optimhub.create_optimizer(name, our_model, args)

    assert type(ours) is type(theirs)
    assert type(ours).__module__.startswith("bitsandbytes.optim")
    assert groups_by_name(ours, our_model) == groups_by_name(theirs, hf_model)
    assert ours.args.optim_bits == theirs.args.optim_bits

    train(hf_model, theirs)
    losses = train(our_model, ours)
    assert losses[-1] < losses[0]
    assert max_difference(hf_model, our_model) == 0.0
    dtypes = state_dtypes(ours, our_model)
    assert dtypes == state_dtypes(theirs, hf_model)
    if optimhub.get_spec(name).fixed["optim_bits"] == 8:
        assert dtypes["embed_tokens.weight"] == "torch.float32"
        assert dtypes["lm_head.weight"] == dtypes["layers.0.attn.q_proj.weight"] == "torch.uint8"
    else:
        assert set(dtypes.values()) == {"torch.float32"}


# ----------------------------------------------------------------------------- deviations
def test_rmsprop_bnb_optim_args_are_typed_where_hf_passes_strings(tmp_path):
    """HF hands rmsprop_bnb* the raw optim_args dict: every value a str, so any numeric key
    fails inside bnb (and an unknown key is a TypeError too). Ours are typed."""
    args = training_args(tmp_path, "rmsprop_bnb_8bit", "alpha=0.9,momentum=0.5,eps=1e-6")
    with pytest.raises(TypeError):
        hf_optimizer(make_tiny_lm(**SIZE), args)

    model = make_tiny_lm(**SIZE)
    ours = optimhub.create_optimizer("rmsprop_bnb_8bit", model, args)
    assert type(ours) is bnb.optim.RMSprop
    assert {(g["betas"], g["eps"]) for g in ours.param_groups} == {((0.9, 0.5), 1e-6)}
    losses = train(model, ours)
    assert losses[-1] < losses[0]


def test_rmsprop_bnb_centered_false_is_accepted_where_hf_turns_it_on(tmp_path):
    """HF's raw string "false" is truthy: bnb then refuses centered RMSprop."""
    args = training_args(tmp_path, "rmsprop_bnb", "centered=false")
    with pytest.raises(NotImplementedError, match="Centered RMSprop"):
        hf_optimizer(make_tiny_lm(), args)
    assert optimhub.create_optimizer("rmsprop_bnb", make_tiny_lm(), args) is not None


def test_paged_ademamix_runs_on_cpu_where_hf_fails_at_the_first_step(tmp_path):
    """Without CUDA HF builds is_paged=True; bnb's AdEMAMix then asks CUDA for a managed
    buffer for every tensor of 1e5+ elements. Ours is built unpaged (after one warning)."""
    if torch.cuda.is_available():
        pytest.skip("the failure is specific to machines without CUDA")
    size = {"vocab": 4096, "width": 32}  # embed_tokens and lm_head: 131072 elements
    args = training_args(tmp_path, "paged_ademamix_32bit")
    hf_model, our_model = make_tiny_lm(**size), make_tiny_lm(**size)
    theirs = hf_optimizer(hf_model, args)
    with pytest.raises(RuntimeError, match="cget_managed_ptr"):
        train(hf_model, theirs, steps=1)

    ours = optimhub.create_optimizer("paged_ademamix_32bit", our_model, args)
    assert type(ours) is type(theirs) and theirs.is_paged and not ours.is_paged
    before = lm_loss(our_model, lm_batch(seed=0)).item()
    train(our_model, ours, steps=3)
    assert lm_loss(our_model, lm_batch(seed=0)).item() < before


def test_hf_embedding_override_leaks_into_later_optimizers_ours_does_not(tmp_path):
    """HF's register_module_override makes bnb record the override under the embedding's
    (group, position) index, process-wide: a later bnb optimizer whose parameter at that
    index is a large Linear weight gets 32-bit state for it. Ours is keyed by parameter."""
    linear = make_tiny_lm(**SIZE).lm_head  # 8192 elements: 8-bit state when alone

    def first_state_dtype() -> torch.dtype:
        optimizer = optimhub.create_optimizer("adamw_bnb_8bit", [linear.weight])
        linear.weight.grad = torch.ones_like(linear.weight)
        optimizer.step()
        return optimizer.state[linear.weight]["state1"].dtype

    ours_model = make_tiny_lm(**SIZE)
    train(ours_model, optimhub.create_optimizer("adamw_bnb_8bit", ours_model,
                                                training_args(tmp_path, "adamw_bnb_8bit")),
          steps=1)
    assert first_state_dtype() == torch.uint8

    hf_model = make_tiny_lm(**SIZE)
    theirs = hf_optimizer(hf_model, training_args(tmp_path, "adamw_bnb_8bit"))
    assert groups_by_name(theirs, hf_model)[0][0][0] == "embed_tokens.weight"  # index (0, 0)
    train(hf_model, theirs, steps=1)
    assert first_state_dtype() == torch.float32
