"""``weight_decay_policy`` (which parameters decay) and ``layer_decay`` (timm's layer-wise
learning rates), for plain and routed optimizers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import optimhub
from optimhub import CapabilityError, OptimArgsError

transformers = pytest.importorskip("transformers")


class Mixed(nn.Module):
    """Everything HF's name-based split gets wrong: norms not named like norms, a GroupNorm
    and a BatchNorm (not LayerNorm), 1-D parameters that are not biases."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln_f = nn.RMSNorm(8)
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.gate = nn.Parameter(torch.ones(8))
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)


def decayed(optimizer: torch.optim.Optimizer, model: nn.Module) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0
            for p in g["params"]}


def test_the_hf_default_decays_what_hf_decays_and_the_role_policy_fixes_it():
    model = Mixed()
    hf = decayed(optimhub.create_optimizer("adamw_torch", model, weight_decay=0.1), model)
    assert hf == {"embed.weight", "conv.weight", "gn.weight", "bn.weight", "ln_f.weight",
                  "temperature", "gate", "proj.weight", "head.weight"}
    by_role = decayed(optimhub.create_optimizer("adamw_torch", model, weight_decay=0.1,
                                                weight_decay_policy="matrices"), model)
    assert by_role == {"conv.weight", "proj.weight", "head.weight"}
    with_embeddings = decayed(optimhub.create_optimizer(
        "adamw_torch", model, weight_decay=0.1,
        weight_decay_policy="matrices_and_embeddings"), model)
    assert with_embeddings == by_role | {"embed.weight"}


def test_under_the_hf_policy_a_routed_optimizer_decays_exactly_what_hf_decays():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=32, n_embd=16, n_layer=2, n_head=2, n_positions=16))
    args = transformers.TrainingArguments(output_dir="unused", weight_decay=0.1, report_to=[])
    hf_names = set(transformers.Trainer(model=model, args=args).get_decay_parameter_names(model))
    optimizer = optimhub.create_optimizer("muon", model, args)
    assert decayed(optimizer, model) == {n for n, _ in model.named_parameters()
                                         if n in hf_names}


def test_each_route_may_have_its_own_policy():
    model = Mixed()
    optimizer = optimhub.create_optimizer(
        "conv, matrix -> adamw_torch(weight_decay_policy=matrices); "
        "* -> adamw_torch(weight_decay_policy=matrices_and_embeddings)", model,
        weight_decay=0.1)
    assert decayed(optimizer, model) == {"conv.weight", "proj.weight", "head.weight",
                                         "embed.weight"}


def test_policies_that_would_be_ignored_are_refused():
    model = Mixed()
    with pytest.raises(OptimArgsError, match="param-group dicts were given"):
        optimhub.create_optimizer("adamw_torch", [{"params": list(model.parameters())}],
                                  weight_decay_policy="matrices")
    with pytest.raises(CapabilityError, match="layer_decay=0.5 needs the model"):
        optimhub.create_optimizer("adamw_torch", list(model.parameters()), layer_decay=0.5)
    with pytest.raises(OptimArgsError, match="Did you mean 'matrices'"):
        optimhub.create_optimizer("adamw_torch", model, weight_decay_policy="matrix")


# ---- layer-wise learning rates -----------------------------------------------------------
def tiny_llama() -> nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1))


def lrs(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}


def timm_scale(name: str, decay: float, blocks: int = 3) -> float:
    """timm's param_groups_layer_decay: layer 0 the embeddings, i + 1 block i, blocks + 1
    the rest; scale = decay ** (blocks + 1 - layer)."""
    if name.startswith("model.layers."):
        layer = int(name.split(".")[2]) + 1
    elif "embed_tokens" in name:
        layer = 0
    else:
        layer = blocks + 1
    return decay ** (blocks + 1 - layer)


def test_layer_decay_gives_timms_learning_rate_per_parameter():
    model = tiny_llama()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layer_decay=0.75)
    assert lrs(optimizer, model) == pytest.approx(
        {n: 1e-2 * timm_scale(n, 0.75) for n, _ in model.named_parameters()}, rel=1e-12)
    # one group per depth and HF decay class, as timm builds them: the embedding; matrices
    # and norms of 3 blocks; the final norm and the head
    assert len(optimizer.param_groups) == 1 + 3 * 2 + 2


def test_layer_decay_per_route_is_kept_by_the_scheduler():
    model = tiny_llama()
    optimizer = optimhub.create_optimizer(
        "muon", model, lr=1e-2, layer_decay=0.5, optim_args="fallback_lr=1e-3")
    expected = {n: (1e-2 if optimizer.route_of(p) == "muon" else 1e-3) * timm_scale(n, 0.5)
                for n, p in model.named_parameters()}
    assert lrs(optimizer, model) == pytest.approx(expected, rel=1e-12)
    scheduler = optimhub.create_scheduler("cosine", optimizer, num_training_steps=4)
    tokens = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    for t in range(1, 4):
        model(tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        factor = 0.5 * (1 + math.cos(math.pi * t / 4))
        assert lrs(optimizer, model) == pytest.approx(
            {n: lr * factor for n, lr in expected.items()}, rel=1e-12), t
