"""The model every ``optimhub compare`` run trains: a tiny Llama-shaped causal LM.

Built in code (no transformers: the core stays free of it), with Hugging Face module
names, because that is what optimizers select on: ``optim_target_modules`` patterns
such as ``.*attn.*`` match ``layers.N.self_attn.{q,k,v,o}_proj`` and
``layers.N.mlp.{gate,up,down}_proj``, while ``embed_tokens``, ``lm_head`` and the
RMSNorm weights stay dense, as in a real model.

The default width (64, MLP 192) puts every 2-D weight at or above 4096 elements, the
size from which bitsandbytes and torchao keep 8-bit state, so low-bit optimizers are
low-bit here too, while a training step stays in the milliseconds on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ModelConfig", "TinyCausalLM", "build_model"]


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the model; the defaults are what ``optimhub compare`` trains."""

    vocab_size: int = 64
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 128
    rope_theta: float = 10_000.0

    @property
    def num_attention_heads(self) -> int:
        """HF's name for ``num_heads``: optimizers that partition attention weights by head
        (Adam-mini) read it from ``model.config``, as from a transformers model."""
        return self.num_heads


class Attention(nn.Module):
    """Multi-head causal self-attention with rotary positions (Llama's layout)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width, self.heads = config.hidden_size, config.num_heads
        if width % self.heads or (width // self.heads) % 2:
            raise ValueError(f"hidden_size {width} must split into {self.heads} even heads")
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (proj(x).view(batch, length, self.heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=1e-6)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=1e-6)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rotary)
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyCausalLM(nn.Module):
    """``embed_tokens`` -> decoder layers -> ``norm`` -> ``lm_head``; returns logits."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=1e-6)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        cos, sin = _rotary_table(config)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[-1]
        if length > self.config.max_length:
            raise ValueError(f"sequence of {length} tokens > max_length "
                             f"{self.config.max_length}")
        rotary = (self.rotary_cos[:length], self.rotary_sin[:length])
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, rotary)
        return self.lm_head(self.norm(x))


def _rotary_table(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the rotary angles, one row per position (half a head dim wide)."""
    half = config.hidden_size // config.num_heads // 2
    inverse = config.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(config.max_length, dtype=torch.float32), inverse)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary position embedding to ``x`` of shape (batch, heads, length, dim)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)


def build_model(seed: int, config: ModelConfig | None = None) -> TinyCausalLM:
    """The model with the same initial weights for a given seed, whatever ran before;
    the caller's global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCausalLM(config)
