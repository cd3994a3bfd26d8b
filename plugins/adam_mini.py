"""Built-in plugin: Adam-mini (pip ``adam-mini``, the authors' implementation), ``adam_mini``.

Adam-mini keeps one second-moment value per block instead of per parameter (a head of the
query/key weights, a neuron of the value, projection and MLP weights, a token of the
embedding and output), so its state is about half of AdamW's. It partitions by parameter
*names* and by the attention shape, so it takes the model (``needs_model``) and builds its
own param groups (``single_group``: one lr and one weight decay, which it applies to the
matrices only). The hidden size and heads come from ``optim_args`` or, for a transformers
model, from ``model.config`` (``hidden_size``, ``num_attention_heads``,
``num_key_value_heads``); without either the build is refused, naming both ways. Its log
lines (``verbose``) are off.

``pto_adammini`` is pytorch-optimizer's port; this is the reference implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimhub.plugin import BuildRequest, EstimateRequest, Register, StateEstimate, hookimpl

from ._attention_shape import adam_mini_state_bytes, attention_shape

if TYPE_CHECKING:  # torch is imported when a name is built, not at `optimhub list`
    import torch


def build(request: BuildRequest) -> torch.optim.Optimizer:
    shape = attention_shape(request.spec.name, request.options, request.model)
    from adam_mini import Adam_mini

    named = [(n, p) for n, p in request.model.named_parameters() if p.requires_grad]
    kwargs = {k: v for k, v in request.kwargs.items()
              if k not in ("dim", "n_heads", "n_kv_heads")}
    return Adam_mini(named, dim=shape.hidden_size, n_heads=shape.num_attention_heads,
                     n_kv_heads=shape.num_key_value_heads, verbose=False, **kwargs)


def estimate(request: EstimateRequest) -> StateEstimate:
    """The first moment in full, the second one value per block, by Adam-mini's name
    rules; exact with ``hidden_size`` and ``num_attention_heads`` in ``optim_args`` (a
    model's config is not part of an estimate)."""
    total, notes = adam_mini_state_bytes(request.trainable, request.option("hidden_size"),
                                         request.option("num_attention_heads"))
    return StateEstimate(total, notes=notes)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adam_mini", build, estimator=estimate)
