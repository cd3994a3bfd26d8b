"""How many bytes an optimizer really holds: every tensor it keeps, counted once, by storage.

The conformance suite (:mod:`optimhub.testing`), ``optimhub compare`` and the state-memory
benchmark all measure with :func:`state_bytes`, so an estimate, a benchmark table and a
conformance check agree on what "the state" is.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import types
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["is_low_bit", "state_bytes", "state_bytes_per_param", "state_tensors"]

#: Objects that are never optimizer state, however they are reached: the model itself
#: (LOMO keeps it), code, types, weak references, logging machinery.
_NOT_STATE = (
    nn.Module,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    type,
    weakref.ref,
    logging.Logger,
    logging.Handler,
    enum.Enum,
    torch.dtype,
    torch.device,
    torch.Generator,
)
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice)
_MAX_DEPTH = 40


class _StateWalker:
    """Collects every tensor reachable from an optimizer object, and the parameters of
    every optimizer met on the way (so that they, and their gradients, are left out).

    It walks containers and plain objects' attributes: ``optimizer.state``, every
    param-group entry (GrokAdamW keeps per-parameter state in ``param_groups[i]['state']``),
    attributes of the optimizer itself (AdaLomo's ``exp_avg_sq_row``), objects stored in
    the state (GaLore/APOLLO projectors) and nested optimizers (the ``inner`` ones of a
    ``LayerwiseOptimizer``). Tensor subclasses (a backend's low-bit state) are unwrapped
    through ``__tensor_flatten__`` down to the plain tensors that hold the memory.
    """

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self.params: list[torch.Tensor] = []
        self._seen: set[int] = set()

    def visit(self, obj: Any, depth: int = 0) -> None:
        if isinstance(obj, torch.Tensor):
            self._tensor(obj)
            return
        if isinstance(obj, (_ATOMS, _NOT_STATE)) or depth > _MAX_DEPTH:
            return
        if id(obj) in self._seen:
            return
        self._seen.add(id(obj))
        if isinstance(obj, torch.optim.Optimizer):
            self.params.extend(p for g in obj.param_groups for p in g["params"])
        for child in _children(obj):
            self.visit(child, depth + 1)

    def _tensor(self, tensor: torch.Tensor) -> None:
        if id(tensor) in self._seen:
            return
        self._seen.add(id(tensor))
        flatten = getattr(tensor, "__tensor_flatten__", None)
        if flatten is not None and _is_wrapper_subclass(tensor):
            names, _ = flatten()
            for name in names:
                self._tensor(getattr(tensor, name))
        else:
            self.tensors.append(tensor)


def _children(obj: Any) -> Iterator[Any]:
    """What a container or plain object holds: keys and values, items, attributes."""
    if isinstance(obj, Mapping):
        for key, value in list(obj.items()):
            yield key
            yield value
    elif isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
        yield from list(obj)
    else:
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, Mapping):
            yield from list(attributes.values())
        for slot in _slots(type(obj)):
            with contextlib.suppress(AttributeError):
                yield getattr(obj, slot)


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def _is_wrapper_subclass(tensor: torch.Tensor) -> bool:
    try:
        from torch.utils._python_dispatch import is_traceable_wrapper_subclass
    except ImportError:  # pragma: no cover - very old torch
        return type(tensor) not in (torch.Tensor, nn.Parameter)
    return bool(is_traceable_wrapper_subclass(tensor))


def _storage(tensor: torch.Tensor) -> tuple[tuple[Any, ...], int]:
    """(identity of the memory behind ``tensor``, its size in bytes): a view counts its
    whole storage, since that is what it keeps alive."""
    try:
        storage = tensor.untyped_storage()
        pointer, size = storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):  # sparse, meta, exotic
        return ("object", id(tensor)), tensor.numel() * tensor.element_size()
    if pointer == 0:
        return ("empty", id(tensor)), size
    return (str(tensor.device), pointer), size


def _walk(optimizer: torch.optim.Optimizer) -> _StateWalker:
    walker = _StateWalker()
    walker.visit(optimizer)
    return walker


def _excluded_storages(walker: _StateWalker) -> set[tuple[Any, ...]]:
    excluded = set()
    for param in walker.params:
        excluded.add(_storage(param)[0])
        if param.grad is not None:
            excluded.add(_storage(param.grad)[0])
    return excluded


def state_tensors(optimizer: torch.optim.Optimizer, *, include_scalars: bool = False
                  ) -> list[torch.Tensor]:
    """Every plain tensor the optimizer holds as state (see :func:`state_bytes`), one per
    storage, subclasses unwrapped; the optimized parameters and their gradients left out.

    0-d tensors (step counters, a tensor learning rate) are bookkeeping, not per-parameter
    state: they are left out unless ``include_scalars``.
    """
    walker = _walk(optimizer)
    seen = _excluded_storages(walker)
    result = []
    for tensor in walker.tensors:
        if tensor.dim() == 0 and not include_scalars:
            continue
        key, _ = _storage(tensor)
        if key not in seen:
            seen.add(key)
            result.append(tensor)
    return result


def state_bytes(optimizer: torch.optim.Optimizer, *, include_scalars: bool = False) -> int:
    """Bytes of every tensor the optimizer object holds, wherever the backend keeps it.

    Walks ``optimizer.state``, the param groups (all entries but ``params``), the
    optimizer's own attributes and everything they hold (plain objects through their
    ``__dict__``, nested optimizers), unwrapping tensor subclasses through
    ``__tensor_flatten__``. Each storage is counted once and whole: a small view that
    keeps a big matrix alive (GaLore's SVD factor) costs the big matrix. The parameters
    being optimized and their ``.grad`` are not counted, nor is a model the optimizer
    keeps a reference to. 0-d tensors (step counters) are left out unless
    ``include_scalars``: they do not scale with the model, so AdamW is exactly 8 bytes
    per fp32 parameter.
    """
    return sum(_storage(t)[1] for t in state_tensors(optimizer, include_scalars=include_scalars))


def _trainable_numel(optimizer: torch.optim.Optimizer) -> int:
    seen: dict[int, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.requires_grad:
                seen[id(param)] = param
    return sum(p.numel() for p in seen.values())


def state_bytes_per_param(optimizer: torch.optim.Optimizer, *, include_scalars: bool = False
                          ) -> float:
    """:func:`state_bytes` divided by the number of trainable parameters it optimizes."""
    count = _trainable_numel(optimizer)
    if count == 0:
        raise ValueError("the optimizer has no trainable parameters")
    return state_bytes(optimizer, include_scalars=include_scalars) / count


def is_low_bit(dtype: torch.dtype) -> bool:
    """8 bits or fewer per element (uint8, int8, float8_*, sub-byte types), not bool."""
    return dtype != torch.bool and dtype.itemsize <= 1
