"""The attention shape an optimizer partitions by (Adam-mini: one second-moment scalar per
attention head and per output neuron), taken from the user's options or from the model's
Hugging Face config, and refused clearly when neither says it.

Shared by the built-in plugins that need it (adam-mini, pytorch-optimizer's AdamMini).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimhub.plugin import CapabilityError, OptimArgsError

__all__ = ["AttentionShape", "adam_mini_state_bytes", "attention_shape"]

#: option name -> the model.config attribute it defaults to.
CONFIG_KEYS = {
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_key_value_heads",
}


@dataclass(frozen=True)
class AttentionShape:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int


def attention_shape(optimizer: str, options: Mapping[str, Any], model: Any) -> AttentionShape:
    """Options first, then ``model.config``; ``num_key_value_heads`` defaults to the heads
    (no grouped-query attention). Raises ``CapabilityError`` naming what is missing and
    the two ways to give it, ``OptimArgsError`` for sizes that do not divide."""
    config = getattr(model, "config", None)
    values: dict[str, int | None] = {}
    for option, attribute in CONFIG_KEYS.items():
        given = options.get(option)
        values[option] = given if given is not None else getattr(config, attribute, None)
    if values["num_key_value_heads"] is None:
        values["num_key_value_heads"] = values["num_attention_heads"]
    missing = [k for k in ("hidden_size", "num_attention_heads") if values[k] is None]
    if missing:
        where = ("the model has no Hugging Face config (model.config)" if config is None
                 else f"model.config has no {' / '.join(missing)}")
        raise CapabilityError(
            f"optimizer {optimizer!r} partitions the attention weights by head, so it needs "
            f"the model's {' and '.join(missing)}, and {where}. Pass them: "
            f"optim_args='hidden_size=...,num_attention_heads=...' (and num_key_value_heads "
            "for grouped-query attention), or pass a transformers model"
        )
    shape = AttentionShape(**{k: int(v) for k, v in values.items()})  # type: ignore[arg-type]
    if shape.hidden_size % shape.num_attention_heads or (
            shape.num_attention_heads % shape.num_key_value_heads):
        raise OptimArgsError(
            f"optimizer {optimizer!r}: hidden_size={shape.hidden_size} must be a multiple of "
            f"num_attention_heads={shape.num_attention_heads}, and that of "
            f"num_key_value_heads={shape.num_key_value_heads}"
        )
    return shape


#: Adam-mini 1.1's name rules, in the order its ``step`` tries them (substrings of a
#: parameter's name): full Adam for biases; one second-moment value per head for query
#: and key; one per output neuron (row) for embeddings, outputs, value, attention output
#: and MLP weights; one 0-d value (not counted as state) for everything else (norms).
ADAM_MINI_FULL = ("bias",)
ADAM_MINI_PER_HEAD = ("k_proj", "q_proj", "wq", "wk", "query", "key")
ADAM_MINI_PER_ROW = ("embed", "embd", "wte", "lm_head", "output", "final_layer", "v_proj",
                     "wv", "value", "feed_forward", "linear", "mlp", "o_proj", "wo",
                     "attn.proj")


def adam_mini_state_bytes(trainable: Any, hidden_size: int | None,
                          num_attention_heads: int | None) -> tuple[int, tuple[str, ...]]:
    """Adam-mini's state: the first moment in full, the second by its name rules
    (``ADAM_MINI_*``). A head of query/key holds ``hidden_size**2 / heads`` values; without
    the shape each of their rows is counted (an upper bound, said in the note)."""
    head = hidden_size * hidden_size // num_attention_heads if (
        hidden_size and num_attention_heads) else None
    total, notes = 0, ()
    for p in trainable:
        if any(key in p.name for key in ADAM_MINI_FULL):
            second = p.numel
        elif any(key in p.name for key in ADAM_MINI_PER_HEAD):
            if head is None:
                second = p.shape[0]
                notes = ("query/key second moments counted per row (an upper bound): give "
                         "hidden_size and num_attention_heads for the exact count",)
            else:
                second = p.numel // head
        elif any(key in p.name for key in ADAM_MINI_PER_ROW):
            second = p.shape[0]
        else:
            second = 0  # a 0-d mean
        total += (p.numel + second) * p.dtype_bytes
    return total, notes
