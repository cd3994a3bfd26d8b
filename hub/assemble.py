"""A prepared call -> the ``BuildRequest`` a plugin's builder receives: the param groups
(decay split, low-rank targets, the user's rules) and the constructor keywords.

Which hyperparameters reach the constructor, and how, is the spec's data: the
``hyperparameters`` it takes, its ``fixed`` keywords (with the ``without_cuda`` ones
replacing them where CUDA is absent), and whether weight decay is one constructor argument
(``constructor_weight_decay``) rather than a per-group key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .arguments import OptimizerArguments
from .backends import cuda_available
from .build import BuildRequest
from .param_groups import (
    ParamGroups,
    build_param_groups,
    decay_names_by_role,
    decayed_by_name,
    parse_rules,
)
from .parameter_source import ParameterSource
from .prepare import Prepared
from .roles import layer_count, layer_indices, parameter_roles
from .spec import OptimizerSpec

__all__ = ["build_request", "constructor_kwargs", "group_count", "layer_lr_scales"]


def build_request(prepared: Prepared) -> BuildRequest:
    """Everything the builder needs, from a checked call."""
    spec, arguments, options = prepared.spec, prepared.arguments, prepared.options
    groups = _param_groups(prepared)
    return BuildRequest(
        spec=spec,
        param_groups=groups.groups,
        param_names=groups.names,
        kwargs=constructor_kwargs(spec, arguments, options),
        options=options,
        model=prepared.source.module,
        named_modules=prepared.source.named_modules,
        weight_decay=arguments.weight_decay,
        arguments=arguments,
    )


def group_count(prepared: Prepared) -> int:
    """How many parameter groups the backend gets: the groups a build would make, or one
    per trainable parameter when layerwise (an optimizer each). Reads shapes and names
    only, so a meta-device model is enough (what an estimate is given)."""
    if prepared.layerwise:
        return sum(1 for _, p in prepared.source.named if p.requires_grad)
    return len(_param_groups(prepared).groups)


def constructor_kwargs(
    spec: OptimizerSpec, arguments: OptimizerArguments, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Hyperparameters the backend takes, the spec's fixed keywords, then optim_args."""
    kwargs: dict[str, Any] = {}
    if spec.has_hyperparameter("lr"):
        kwargs["lr"] = arguments.learning_rate
    if spec.has_hyperparameter("betas"):
        kwargs["betas"] = arguments.betas
    if spec.has_hyperparameter("eps"):
        kwargs["eps"] = arguments.adam_epsilon
    if spec.constructor_weight_decay:
        kwargs["weight_decay"] = arguments.weight_decay
    kwargs.update(spec.fixed)
    if spec.without_cuda and not cuda_available():
        kwargs.update(spec.without_cuda)
    for name, value in options.items():
        arg = spec.args[name]
        if not arg.target_group:
            kwargs[arg.key] = value
    return kwargs


def _param_groups(prepared: Prepared) -> ParamGroups:
    spec, source, arguments = prepared.spec, prepared.source, prepared.arguments
    decay = arguments.weight_decay if spec.has_hyperparameter("weight_decay") else None
    if source.user_groups is not None:
        names = [[n for n, _ in source.named if n.startswith(f"group{i}.")]
                 for i in range(len(source.user_groups))]
        # A group without its own weight_decay gets the user's, never the backend's default
        # (1e-2 for AdamW-style backends, which nobody asked for).
        groups = [
            group if decay is None else {"weight_decay": decay, **group}
            for group in source.user_groups
        ]
        return ParamGroups(groups=groups, names=names)
    target_options = {
        arg.key: prepared.options[arg.name]
        for arg in spec.target_group_args if arg.name in prepared.options
    }
    return build_param_groups(
        source.named,
        weight_decay=decay or 0.0,
        decay_names=_decay_names(source, arguments.weight_decay_policy),
        target_names=prepared.target_names,
        target_options=target_options,
        rules=parse_rules(arguments.param_group_rules),
        lr_scales=layer_lr_scales(source, arguments.layer_decay),
        base_lr=arguments.learning_rate,
    )


def layer_lr_scales(source: ParameterSource, layer_decay: float | None) -> dict[str, float]:
    """timm's layer-wise lr decay: ``layer_decay ** (blocks + 1 - depth)`` per parameter
    (depth 0: before the stack of blocks; ``blocks + 1``: after it, scale 1)."""
    if layer_decay is None or layer_decay == 1 or source.module is None:
        return {}
    top = layer_count(source.module) + 1
    depths = layer_indices(source.module, [n for n, _ in source.named])
    return {name: layer_decay ** (top - depth) for name, depth in depths.items()}


def _decay_names(source: ParameterSource, policy: str = "hf") -> set[str] | None:
    """The decayed names. For ``"hf"``: HF's, by module type (noted when the model was
    walked) and by name; for a model this is ``decay_parameter_names(model)`` on every
    listed parameter (tested), without a second walk of the module tree."""
    if policy != "hf":
        roles = parameter_roles(source.module, source.named, source.walk)
        return decay_names_by_role(roles, policy)
    if source.module is None and all(n.startswith("params.") for n, _ in source.named):
        return None  # bare parameters carry no names: every one decays
    return decayed_by_name([n for n, _ in source.named], source.in_no_decay_module)


