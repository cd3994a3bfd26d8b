"""Adam-mini (the authors' adam-mini) behind the hub: the attention shape from options or
model.config, refused clearly otherwise; parity with the class built by hand."""

from __future__ import annotations

import pytest
import torch

import optimhub
import optimhub.testing as ot

adam_mini = pytest.importorskip("adam_mini")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")


def _llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def _steps(model, optimizer, n=5):
    tokens = ot.conformance_batch()
    for _ in range(n):
        model(tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_shape_comes_from_model_config_and_matches_the_class_built_by_hand() -> None:
    hub_model, hand_model = _llama(), _llama()
    hub = optimhub.create_optimizer("adam_mini", hub_model, learning_rate=1e-3,
                                    weight_decay=0.1)
    assert (hub.dim, hub.n_heads, hub.n_kv_heads) == (32, 4, 2)
    hand = adam_mini.Adam_mini(hand_model.named_parameters(), lr=1e-3, betas=(0.9, 0.999),
                               eps=1e-8, weight_decay=0.1, dim=32, n_heads=4, n_kv_heads=2,
                               verbose=False)
    _steps(hub_model, hub)
    _steps(hand_model, hand)
    for a, b in zip(hub_model.parameters(), hand_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_without_config_or_options_it_is_refused_naming_both_ways() -> None:
    with pytest.raises(optimhub.CapabilityError) as info:
        optimhub.create_optimizer("adam_mini", ot.conformance_model())
    assert "optim_args='hidden_size=...,num_attention_heads=...'" in str(info.value)
    assert "model.config" in str(info.value)
    with pytest.raises(optimhub.CapabilityError, match="needs the model"):
        optimhub.create_optimizer("adam_mini", list(_llama().parameters()))


def test_options_win_and_sizes_must_divide() -> None:
    optimizer = optimhub.create_optimizer(
        "adam_mini", ot.conformance_model(), optim_args="hidden_size=32,num_attention_heads=8")
    assert (optimizer.dim, optimizer.n_heads, optimizer.n_kv_heads) == (32, 8, 8)
    with pytest.raises(optimhub.OptimArgsError, match="multiple"):
        optimhub.create_optimizer("adam_mini", ot.conformance_model(),
                                  optim_args="hidden_size=32,num_attention_heads=5")


@pytest.mark.parametrize("heads", [2, 4])
def test_estimate_is_the_measured_state_given_the_attention_shape(heads) -> None:
    """Adam-mini's name rules: per head for query/key, per row for embedding, output,
    value, attention output and MLP, full Adam for biases, a 0-d mean (no state counted)
    for the norms. The former per-row estimate was 8 kB over on the state-memory model."""
    model = _llama()
    settings = {"lr": 1e-3, "optim_args": f"hidden_size=32,num_attention_heads={heads}"}
    estimated = optimhub.estimate("adam_mini", model, **settings)
    optimizer = optimhub.create_optimizer("adam_mini", model, **settings)
    _steps(model, optimizer, n=2)
    assert estimated.state_bytes == ot.state_bytes(optimizer)
    assert not estimated.notes


def test_estimate_without_the_shape_is_an_upper_bound_and_says_so() -> None:
    model = _llama()
    estimated = optimhub.estimate("adam_mini", model, lr=1e-3)
    optimizer = optimhub.create_optimizer("adam_mini", model, lr=1e-3)  # shape from config
    _steps(model, optimizer, n=2)
    assert estimated.state_bytes > ot.state_bytes(optimizer)
    assert "upper bound" in " ".join(estimated.notes)
