"""Small models with HF-style module names, shared by the target and param-group tests."""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 16


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(HIDDEN, HIDDEN)
        self.k_proj = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.v_proj = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.o_proj = nn.Linear(HIDDEN, HIDDEN)
        self.dropout = nn.Dropout(0.1)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up_proj = nn.Linear(HIDDEN, 2 * HIDDEN)
        self.down_proj = nn.Linear(2 * HIDDEN, HIDDEN)
        self.act = nn.GELU()


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(HIDDEN)
        self.attn = Attention()
        self.post_norm = nn.LayerNorm(HIDDEN)
        self.mlp = MLP()


class ToyLM(nn.Module):
    """embed, layers.N.attn.{q,k,v,o}_proj, layers.N.mlp.{up,down}_proj, norms, lm_head;
    the Dropout and GELU are parameter-free modules that target patterns can match."""

    def __init__(self, n_layers: int = 2, vocab: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, HIDDEN)
        self.layers = nn.ModuleList(Block() for _ in range(n_layers))
        self.norm = nn.LayerNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, vocab, bias=False)


def tiny_llama(tie: bool = False) -> nn.Module:
    """A 2-layer LlamaForCausalLM built from a config (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)
