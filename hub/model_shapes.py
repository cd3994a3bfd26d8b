"""Models made of shapes: a Llama-style decoder from a ``llama:`` spec, and a flat model
from a bare parameter count.

``optimhub estimate`` and ``optimhub compare`` describe models with these, and the state
memory benchmark trains one; on the meta device a 70B model costs nothing to build.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import OptimArgsError, closest
from .optim_args import coerce_value, split_optim_args
from .spec import ArgSpec

__all__ = [
    "LLAMA_KEYS",
    "MODEL_SPEC_EXAMPLE",
    "FlatModel",
    "LlamaShape",
    "LlamaShaped",
    "flat_model",
    "parse_model_spec",
    "parse_param_count",
]

_DTYPES: Mapping[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
}

#: The keys of a ``llama:`` model spec, typed like ``optim_args``.
_LLAMA_KEYS: Mapping[str, ArgSpec] = {
    a.name: a
    for a in (
        ArgSpec("hidden", "int", "hidden size (hidden_size)", minimum=1),
        ArgSpec("layers", "int", "decoder layers (num_hidden_layers)", minimum=1),
        ArgSpec("vocab", "int", "vocabulary size (vocab_size)", minimum=1),
        ArgSpec("intermediate", "int", "MLP width (intermediate_size)", minimum=1),
        ArgSpec("heads", "int", "attention heads (default 1)", default=1, minimum=1),
        ArgSpec("kv_heads", "int", "key/value heads (default: heads)", nullable=True,
                default=None, minimum=1),
        ArgSpec("head_dim", "int", "width of one head (default: hidden / heads)",
                nullable=True, default=None, minimum=1),
        ArgSpec("tied", "bool", "lm_head shares the embedding matrix", default=False),
        ArgSpec("dtype", "str", "parameter dtype", default="fp32", choices=tuple(_DTYPES)),
    )
}
#: The keys a ``llama:`` model spec takes.
LLAMA_KEYS = tuple(_LLAMA_KEYS)
_REQUIRED_LLAMA_KEYS = ("hidden", "layers", "vocab", "intermediate")
MODEL_SPEC_EXAMPLE = "llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32"


@dataclass(frozen=True)
class LlamaShape:
    """The layer shapes of a Llama-style decoder (HF ``LlamaForCausalLM``): what a
    ``llama:`` model spec describes. ``build()`` makes the module (meta device by default)
    with HF's parameter names, so ``optim_target_modules`` patterns match as on the real
    model."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int = 1
    kv_heads: int | None = None
    head_dim: int | None = None
    tied: bool = False
    dtype: str = "fp32"

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def build(self, device: str | torch.device = "meta") -> LlamaShaped:
        """The model, with parameters of ``self.dtype`` on ``device``."""
        return LlamaShaped(self, device=device)


def parse_model_spec(text: str, *, dtype: str | None = None) -> LlamaShape:
    """``"llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32,
    kv_heads=8,tied=false,dtype=bf16"`` -> :class:`LlamaShape`.

    The part after ``llama:`` uses the ``optim_args`` grammar and typing (so
    ``tied=false`` is False, not a truthy string). ``hidden``, ``layers``, ``vocab`` and
    ``intermediate`` are required. ``dtype`` (fp32, bf16, fp16) sets the dtype when the
    text names none; a different one in the text is an error.
    """

    if not isinstance(text, str):
        raise OptimArgsError(f"a model spec is text like {MODEL_SPEC_EXAMPLE!r}; got {text!r}")
    family, colon, body = text.partition(":")
    if not colon or family.strip().lower() != "llama":
        raise OptimArgsError(
            f"model spec {text!r}: only the 'llama:' family is known; write e.g. "
            f"{MODEL_SPEC_EXAMPLE!r}"
        )
    try:
        raw = split_optim_args(body)
        unknown = [k for k in raw if k not in _LLAMA_KEYS]
        if unknown:
            guess = closest(unknown[0], list(_LLAMA_KEYS), n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise OptimArgsError(
                f"unknown key {unknown[0]!r}.{hint} Valid keys: {', '.join(_LLAMA_KEYS)}"
            )
        missing = [k for k in _REQUIRED_LLAMA_KEYS if k not in raw]
        if missing:
            raise OptimArgsError(f"{', '.join(missing)} missing; e.g. {MODEL_SPEC_EXAMPLE!r}")
        if dtype is not None:
            given = coerce_value(_LLAMA_KEYS["dtype"], raw.get("dtype", dtype))
            if given != coerce_value(_LLAMA_KEYS["dtype"], dtype):
                raise OptimArgsError(
                    f"it says dtype={given}, but dtype {dtype!r} was asked for; give one"
                )
            raw = {**raw, "dtype": dtype}
        values = {
            key: coerce_value(arg, raw[key]) if key in raw else arg.default
            for key, arg in _LLAMA_KEYS.items()
        }
    except OptimArgsError as exc:
        message = str(exc).removeprefix("optim_args: ").removeprefix("optim_args")
        raise type(exc)(f"model spec {text!r}: {message}") from None
    shape = LlamaShape(**values)
    if shape.head_dim is None and shape.hidden % shape.heads:
        raise OptimArgsError(
            f"model spec {text!r}: hidden={shape.hidden} is not a multiple of "
            f"heads={shape.heads}; give head_dim= or another head count"
        )
    if shape.heads % shape.kv:
        raise OptimArgsError(
            f"model spec {text!r}: heads={shape.heads} is not a multiple of "
            f"kv_heads={shape.kv} (grouped-query attention shares each key/value head)"
        )
    return shape


class LlamaShaped(nn.Module):
    """A Llama-style decoder with HF's module names (``model.layers.N.self_attn.q_proj``,
    ``model.layers.N.mlp.gate_proj``, ``model.norm``, ``lm_head``...).

    On the meta device it describes a model of any size for free. On a real device it
    also trains (RMSNorm, causal grouped-query attention without rotary embeddings, SwiGLU
    MLP): enough for measuring what an optimizer holds on exactly the shapes an estimate
    was made for, not a faithful Llama.
    """

    def __init__(self, shape: LlamaShape, device: str | torch.device = "meta") -> None:
        super().__init__()
        self.shape = shape
        kw: dict[str, Any] = {"device": device, "dtype": _DTYPES[shape.dtype]}
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(shape.vocab, shape.hidden, **kw)
        self.model.layers = nn.ModuleList(_DecoderLayer(shape, kw) for _ in range(shape.layers))
        self.model.norm = nn.RMSNorm(shape.hidden, **kw)
        self.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False, **kw)
        if shape.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))


class _DecoderLayer(nn.Module):
    def __init__(self, shape: LlamaShape, kw: dict[str, Any]) -> None:
        super().__init__()
        hidden, width, kv_width = shape.hidden, shape.heads * shape.head_width, (
            shape.kv * shape.head_width)
        self.heads, self.kv_heads, self.head_dim = shape.heads, shape.kv, shape.head_width
        self.self_attn = nn.Module()
        for name, (inp, out) in {"q_proj": (hidden, width), "k_proj": (hidden, kv_width),
                                 "v_proj": (hidden, kv_width), "o_proj": (width, hidden)}.items():
            setattr(self.self_attn, name, nn.Linear(inp, out, bias=False, **kw))
        self.mlp = nn.Module()
        for name, (inp, out) in {"gate_proj": (hidden, shape.intermediate),
                                 "up_proj": (hidden, shape.intermediate),
                                 "down_proj": (shape.intermediate, hidden)}.items():
            setattr(self.mlp, name, nn.Linear(inp, out, bias=False, **kw))
        self.input_layernorm = nn.RMSNorm(hidden, **kw)
        self.post_attention_layernorm = nn.RMSNorm(hidden, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        attn, mlp = self.self_attn, self.mlp
        h = self.input_layernorm(x)
        q, k, v = (proj(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
        h = self.post_attention_layernorm(x)
        return x + mlp.down_proj(nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))


#: Side of the square matrices a bare parameter count is taken as (a 7B-class layer).
FLAT_SIDE = 4096


class FlatModel(nn.Module):
    """``N`` parameters with no architecture: what ``--params N`` describes.

    Taken as 2-D weights of ``FLAT_SIDE x FLAT_SIDE`` (``nn.Linear`` named ``flat.K``),
    then one ``FLAT_SIDE``-wide matrix for the rest and a vector for what is left. Only
    shape-dependent state (factored moments, small-tensor rules) depends on this choice;
    low-rank optimizers need real layer shapes and refuse it.
    """

    def __init__(self, count: int, dtype: str = "fp32", device: str | torch.device = "meta"
                 ) -> None:
        super().__init__()
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise OptimArgsError(f"a parameter count must be a whole number >= 1, got {count!r}")
        self.count = count
        kw: dict[str, Any] = {"device": device, "dtype": _DTYPES[dtype]}
        square = FLAT_SIDE * FLAT_SIDE
        full, rest = divmod(count, square)
        rows, tail = divmod(rest, FLAT_SIDE)
        shapes = [(FLAT_SIDE, FLAT_SIDE)] * full + ([(rows, FLAT_SIDE)] if rows else [])
        self.flat = nn.ModuleList(nn.Linear(i, o, bias=False, **kw) for o, i in shapes)
        self.rest = nn.ParameterList([nn.Parameter(torch.empty(tail, **kw))] if tail else [])


def flat_model(count: int, dtype: str = "fp32") -> FlatModel:
    """A meta-device :class:`FlatModel` of ``count`` parameters."""
    if dtype not in _DTYPES:
        raise OptimArgsError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    return FlatModel(count, dtype)


_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"(?P<number>\d[\d_]*(?:\.\d+)?(?:e\d+)?)(?P<suffix>[kmbgt]?)")


def parse_param_count(text: str) -> int:
    """``"7B"``, ``"6.7e9"``, ``"125M"``, ``"6_738_415_616"`` -> a whole parameter count."""
    match = _COUNT.fullmatch(str(text).strip().lower())
    value = None
    if match:
        number = match["number"].replace("_", "")
        scale = _SUFFIXES.get(match["suffix"], 1)
        exact = float(number) * scale
        value = int(exact) if exact == int(exact) and exact >= 1 else None
    if value is None:
        raise OptimArgsError(
            f"parameter count {text!r} is not a whole number >= 1; write e.g. 7B, 125M, "
            "6.7e9 or 6738415616"
        )
    return value


