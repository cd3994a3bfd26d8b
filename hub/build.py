"""The contract between the core and a plugin's builder: ``BuildRequest`` in, optimizer out.

The core has already done every check (name, backend present, typed options, capability
rules, parameter groups) by the time a builder runs, so a builder is just the call into
the backend with the prepared pieces.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .arguments import OptimizerArguments
from .spec import OptimizerSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["BuildRequest", "Builder", "class_builder"]


@dataclass(frozen=True)
class BuildRequest:
    """Everything a builder needs, already validated.

    - ``param_groups``: the groups to hand to the backend (dicts with ``params`` and the
      per-group keys: ``weight_decay``, a rule's ``lr``, the low-rank target keys).
    - ``param_names``: for each group, the names of its parameters (same order).
    - ``kwargs``: constructor keywords: the hyperparameters the spec accepts (``lr``,
      ``betas``, ``eps``), the spec's ``fixed`` keywords and the typed ``optim_args``
      that are not target-group options, under their backend keys.
    - ``options``: all typed ``optim_args`` by user-facing name (defaults filled in),
      for builders that must route options themselves.
    - ``model``: the model when one was given (``None`` for bare parameters).
    - ``named_modules``: ``list(model.named_modules())`` from the hub's one walk of the
      model (``None`` without a model): a builder that looks for modules of a type reads
      this rather than walking a 10k-module model again.
    - ``weight_decay``: the decay the user asked for, for backends that take it as a
      constructor argument rather than per group (the groups already carry it).
    - ``arguments``: all resolved arguments (e.g. ``arguments.warmup_step_count()`` for
      optimizers with a warmup of their own).
    """

    spec: OptimizerSpec
    param_groups: list[dict[str, Any]]
    param_names: list[list[str]]
    kwargs: dict[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    named_modules: list[tuple[str, nn.Module]] | None = None
    weight_decay: float = 0.0
    arguments: OptimizerArguments = field(default_factory=OptimizerArguments)

    def named_parameters(self) -> dict[str, nn.Parameter]:
        """All parameters being optimized, by name."""
        return {
            name: param
            for group, names in zip(self.param_groups, self.param_names, strict=True)
            for name, param in zip(names, group["params"], strict=True)
        }


#: A builder turns a request into the backend's own optimizer object.
Builder = Callable[[BuildRequest], "torch.optim.Optimizer"]


def class_builder(module: str, attribute: str, *, drop: Sequence[str] = ()) -> Builder:
    """A builder for the common case ``BackendClass(param_groups, **kwargs)``.

    The class is imported when the builder runs, never before, so a plugin that only
    uses ``class_builder`` costs nothing to load.
    """

    def build(request: BuildRequest) -> torch.optim.Optimizer:
        cls = getattr(importlib.import_module(module), attribute)
        kwargs = {k: v for k, v in request.kwargs.items() if k not in drop}
        return cls(request.param_groups, **kwargs)

    build.__qualname__ = f"class_builder({module}.{attribute})"
    return build
