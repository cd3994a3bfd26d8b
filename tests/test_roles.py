"""Parameter roles (hub/roles.py), asserted parameter by parameter on models built from
configs (Llama, GPT-2 with its Conv1D and tied head, a tied Llama, Mixtral and Qwen2-MoE at
tiny size; nothing downloaded) and on plain torch modules, on real and meta devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimhub import Role, parameter_roles
from optimhub.roles import layer_count, layer_indices

transformers = pytest.importorskip("transformers")


def roles_of(model: nn.Module) -> dict[str, str]:
    return {name: entry.role.value for name, entry in parameter_roles(model).items()}


def tiny_llama(**config: object) -> nn.Module:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, **config))


def llama_layer(i: int) -> dict[str, str]:
    prefix = f"model.layers.{i}."
    return {
        **{f"{prefix}self_attn.{p}.weight": "matrix" for p in ("q_proj", "k_proj", "v_proj",
                                                               "o_proj")},
        **{f"{prefix}mlp.{p}.weight": "matrix" for p in ("gate_proj", "up_proj", "down_proj")},
        f"{prefix}input_layernorm.weight": "norm",
        f"{prefix}post_attention_layernorm.weight": "norm",
    }


def test_llama_roles_parameter_by_parameter():
    assert roles_of(tiny_llama()) == {
        "model.embed_tokens.weight": "embedding",
        **llama_layer(0),
        **llama_layer(1),
        "model.norm.weight": "norm",  # LlamaRMSNorm: a class whose name ends in Norm
        "lm_head.weight": "head",  # get_output_embeddings()
    }


def test_a_tied_head_is_one_parameter_with_one_role():
    model = tiny_llama(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    roles = parameter_roles(model)
    assert "lm_head.weight" not in roles  # named_parameters() lists the tensor once
    entry = roles["model.embed_tokens.weight"]
    assert entry.role is Role.EMBEDDING and entry.tied == ("lm_head.weight",)
    assert "tied to lm_head.weight" in entry.why


def test_gpt2_conv1d_weights_are_matrices_and_its_head_is_tied():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=16))
    block = "transformer.h.0."
    assert roles_of(model) == {
        "transformer.wte.weight": "embedding",  # tied with lm_head
        "transformer.wpe.weight": "embedding",  # position embeddings: an nn.Embedding too
        f"{block}ln_1.weight": "norm", f"{block}ln_1.bias": "norm",
        f"{block}attn.c_attn.weight": "matrix", f"{block}attn.c_attn.bias": "bias",
        f"{block}attn.c_proj.weight": "matrix", f"{block}attn.c_proj.bias": "bias",
        f"{block}ln_2.weight": "norm", f"{block}ln_2.bias": "norm",
        f"{block}mlp.c_fc.weight": "matrix", f"{block}mlp.c_fc.bias": "bias",
        f"{block}mlp.c_proj.weight": "matrix", f"{block}mlp.c_proj.bias": "bias",
        "transformer.ln_f.weight": "norm", "transformer.ln_f.bias": "norm",
    }
    assert parameter_roles(model)[f"{block}attn.c_attn.weight"].module_type == "Conv1D"


def test_mixtral_stacked_experts_are_experts_and_its_router_a_matrix():
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2))
    roles = parameter_roles(model)
    experts = {n: e for n, e in roles.items() if e.role is Role.EXPERT}
    assert sorted(experts) == ["model.layers.0.mlp.experts.down_proj",
                               "model.layers.0.mlp.experts.gate_up_proj"]
    assert all(e.ndim == 3 and e.shape[0] == 4 for e in experts.values())
    assert roles["model.layers.0.mlp.gate.weight"].role is Role.MATRIX  # the router (4x32)
    assert roles["lm_head.weight"].role is Role.HEAD


def test_qwen2_moe_roles():
    model = transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
        shared_expert_intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2))
    roles = roles_of(model)
    counts = {role: sum(1 for r in roles.values() if r == role) for role in set(roles.values())}
    assert roles["model.embed_tokens.weight"] == "embedding"
    assert roles["lm_head.weight"] == "head"
    assert counts["norm"] == 3 and counts["expert"] >= 2
    assert all(role == "bias" for name, role in roles.items() if name.endswith(".bias"))
    stacked = [n for n, p in model.named_parameters() if p.ndim == 3]
    assert stacked and all(roles[n] == "expert" for n in stacked)


class CustomRMSNorm(nn.Module):
    """A norm HF's name-based rules miss when it is not named like *norm*."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.depth = nn.Conv1d(8, 8, 3, bias=False)
        self.final = CustomRMSNorm(8)
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.gate = nn.Parameter(torch.ones(8))
        self.classifier = nn.Linear(8, 10)


def test_plain_torch_modules_by_type_and_shape():
    assert roles_of(ConvNet()) == {
        "stem.weight": "conv", "stem.bias": "bias",
        "bn.weight": "norm", "bn.bias": "norm",
        "gn.weight": "norm", "gn.bias": "norm",
        "depth.weight": "conv",  # a 3-D kernel of a conv module, not an expert stack
        "final.scale": "norm",  # by its class name, whatever the parameter is called
        "temperature": "scalar", "gate": "scalar",
        "classifier.weight": "matrix",  # no embedding: no head to find
        "classifier.bias": "bias",
    }


def test_without_get_output_embeddings_the_head_is_the_linear_to_the_vocabulary(tiny_lm):
    roles = roles_of(tiny_lm)
    assert roles["lm_head.weight"] == "head"
    assert roles["embed_tokens.weight"] == "embedding"
    # up_proj also maps to 32 = the vocabulary here; the head is the last such Linear
    assert roles["layers.1.mlp.up_proj.weight"] == "matrix"


def test_roles_on_the_meta_device_and_for_bare_parameters():
    with torch.device("meta"):
        model = tiny_llama()
    assert roles_of(model) == roles_of(tiny_llama())
    bare = parameter_roles(None, [("a", torch.zeros(3, 3)), ("b", torch.zeros(3)),
                                  ("c", torch.zeros(2, 3, 3))])
    assert {n: e.role.value for n, e in bare.items()} == {"a": "matrix", "b": "scalar",
                                                          "c": "expert"}


def test_layer_depths_count_the_block_stack_as_timm_does():
    model = tiny_llama()
    depths = layer_indices(model)
    assert layer_count(model) == 2
    assert depths["model.embed_tokens.weight"] == 0
    assert depths["model.layers.0.self_attn.q_proj.weight"] == 1
    assert depths["model.layers.1.mlp.down_proj.weight"] == 2
    assert depths["model.norm.weight"] == 3 and depths["lm_head.weight"] == 3
    assert set(layer_indices(ConvNet()).values()) == {0}  # no stack of blocks
