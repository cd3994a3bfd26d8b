"""The estimator contract: what a plugin's memory formula receives and returns, and the byte
helpers that keep such formulas short.

A leaf module beside :mod:`optimhub.build` (the builder contract): plugins import it through
:mod:`optimhub.plugin`, the registry stores ``Estimator`` callables, and
:mod:`optimhub.memory` runs them, without any of these importing the others.

Each spec's formula lives with its plugin: ``register.builder(name, builder,
estimator=fn)``, where ``fn(EstimateRequest) -> StateEstimate`` predicts what the backend
really holds (every tensor :func:`optimhub.state_size.state_bytes` counts). Which numbers
to pass the helpers (block sizes, small-tensor rules) is the plugin's knowledge, never the
core's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .spec import OptimizerSpec

__all__ = [
    "EstimateRequest",
    "Estimator",
    "ParamShape",
    "StateEstimate",
    "blockwise_bytes",
    "dense_bytes",
    "dense_estimator",
    "factored_elements",
]


@dataclass(frozen=True)
class ParamShape:
    """One parameter as an estimator sees it: a shape, never data.

    ``is_target`` marks a weight selected by ``optim_target_modules`` (low-rank specs);
    ``module_type`` is the class name of the module that owns it (``"Linear"``,
    ``"Embedding"``...), for backends that treat some modules apart (bitsandbytes keeps
    embeddings in 32 bits). A tied weight appears once, under the name
    ``named_parameters()`` gives it.
    """

    name: str
    shape: tuple[int, ...]
    dtype_bytes: int
    trainable: bool = True
    is_target: bool = False
    module_type: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype_bytes


@dataclass(frozen=True)
class EstimateRequest:
    """What an estimator receives: the spec, its typed options (defaults filled in, as
    ``BuildRequest.options``), the model's parameters as shapes, whether the run is
    layerwise (one optimizer per parameter, stepped in backward), and how many parameter
    groups the backend is given."""

    spec: OptimizerSpec
    options: Mapping[str, Any]
    params: tuple[ParamShape, ...]
    layerwise: bool = False
    #: How many parameter groups the hub hands the backend (HF's decay and no-decay
    #: groups, a rule's, a target group...; one per parameter when layerwise), for a
    #: backend that keeps some state per group rather than per parameter.
    param_groups: int = 1

    @property
    def trainable(self) -> tuple[ParamShape, ...]:
        """The parameters the optimizer gets (the hub passes only these)."""
        return tuple(p for p in self.params if p.trainable)

    @property
    def targets(self) -> tuple[ParamShape, ...]:
        """Trainable weights selected by ``optim_target_modules``."""
        return tuple(p for p in self.params if p.trainable and p.is_target)

    @property
    def dense(self) -> tuple[ParamShape, ...]:
        """Trainable parameters that are not targets (a low-rank optimizer's plain ones)."""
        return tuple(p for p in self.params if p.trainable and not p.is_target)

    def option(self, name: str, default: Any = None) -> Any:
        """An option's typed value, or ``default`` when it is unset (the backend's own)."""
        value = self.options.get(name, default)
        return default if value is None else value


@dataclass(frozen=True)
class StateEstimate:
    """An estimator's answer, in bytes.

    ``grad_bytes`` left as None means the usual rule (:func:`peak_gradient_bytes`: every
    gradient, or one parameter's for fused-backward and layerwise runs); a backend that
    differs sets it. ``notes`` say what the figure assumes or where the state lives.
    """

    state_bytes: int
    grad_bytes: int | None = None
    notes: tuple[str, ...] = ()


#: An estimator: the plugin's formula for what its backend holds.
Estimator = Callable[[EstimateRequest], StateEstimate]


def dense_bytes(params: Iterable[ParamShape], moments: int, dtype_bytes: int | None = None
                ) -> int:
    """``moments`` full-size buffers per parameter, in the parameter's dtype unless
    ``dtype_bytes`` is given (AdamW: 2; SGD with momentum: 1; AMSGrad: 3)."""
    return sum(p.numel * moments * (dtype_bytes or p.dtype_bytes) for p in params)


def dense_estimator(moments: int, doc: str) -> Estimator:
    """The estimator of a backend that keeps ``moments`` full-size buffers per parameter in
    the parameter's dtype, whatever its options; ``doc`` names the buffers."""

    def estimate_dense(request: EstimateRequest) -> StateEstimate:
        return StateEstimate(dense_bytes(request.trainable, moments))

    estimate_dense.__doc__ = doc
    return estimate_dense


def factored_elements(shape: Sequence[int]) -> int:
    """Elements of an Adafactor-style factored second moment for one tensor: one row and
    one column statistic per matrix (``shape[:-1]`` plus ``shape[:-2] + shape[-1:]``), the
    full tensor for vectors."""
    if len(shape) < 2:
        return math.prod(shape)
    return math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]


def blockwise_bytes(
    numel: int,
    *,
    bits: int,
    block_size: int,
    scale_bytes: int = 4,
    ceil_blocks: bool = True,
) -> int:
    """One block-wise quantized buffer of ``numel`` values: ``bits`` per value plus one
    ``scale_bytes`` scale per block (the last, partial block counts when ``ceil_blocks``).
    Which tensors are quantized at all (a minimum size, a divisibility rule) and the bytes
    of code tables are the backend's: its plugin decides."""
    blocks = -(-numel // block_size) if ceil_blocks else numel // block_size
    return -(-numel * bits // 8) + blocks * scale_bytes


