"""A measured memory estimate, for optimizers whose state is impractical to put in a formula
(Shampoo's and SOAP's block preconditioners, Kron's triangular factors, ...): build the real
optimizer on parameters of the estimated shapes *on the meta device*, take two steps with
meta gradients, and count the bytes of the state tensors it created. Meta tensors carry
shapes and dtypes but no data, so a 70B-parameter probe allocates nothing and runs in
milliseconds; the backend is imported, unlike a formula estimate (say so in the spec's
estimator docstring).

A backend step that reads a value (``tensor.item()``, a data-dependent branch) cannot run
on meta tensors: such a backend needs a formula instead (``ProbeUnavailable``).

Shared by the built-in plugins (private: ``plugins/_state_probe.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from optimhub.plugin import state_bytes

__all__ = ["ProbeUnavailable", "meta_parameters", "probe_per_shape", "probe_state_bytes",
           "storage_bytes"]

_DTYPES = {8: torch.float64, 4: torch.float32, 2: torch.bfloat16}


class ProbeUnavailable(RuntimeError):
    """The optimizer cannot step on meta tensors (it reads values)."""


def meta_parameters(shapes: Iterable[tuple[Sequence[int], int]]) -> list[torch.nn.Parameter]:
    """One meta-device parameter per ``(shape, bytes per element)``."""
    return [torch.nn.Parameter(torch.empty(tuple(shape), dtype=_DTYPES[size], device="meta"))
            for shape, size in shapes]


def probe_state_bytes(build: Callable[[], torch.optim.Optimizer],
                      params: Sequence[torch.nn.Parameter], steps: int = 2) -> int:
    """Bytes of state ``build()`` holds after ``steps`` steps on meta ``params``."""
    try:
        optimizer = build()
        for _ in range(steps):
            for param in params:
                param.grad = torch.empty_like(param)
            train = getattr(optimizer, "train", None)
            if callable(train):
                train()
            optimizer.step()
    except (RuntimeError, NotImplementedError) as exc:
        raise ProbeUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return storage_bytes(optimizer.state.values(), exclude=params)


def storage_bytes(roots: Iterable[Any], *, exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of every tensor reachable through containers from ``roots``, each storage
    counted once; ``exclude`` (the parameters, their gradients) and 0-d tensors (step
    counters: bookkeeping, as ``optimhub.testing.state_bytes`` counts them) left out."""
    skipped = {id(t) for t in exclude} | {id(t.grad) for t in exclude if t.grad is not None}
    seen: set[int] = set()
    total = 0
    stack = list(roots)
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if id(item) in skipped or item.dim() == 0 or id(item) in seen:
                continue
            seen.add(id(item))
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def probe_per_shape(build: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
                    shapes: Iterable[tuple[Sequence[int], int]], *, steps: int = 2,
                    max_elements: int = 64 * 2**20) -> int:
    """Bytes of state for parameters of ``shapes``, measured on real CPU tensors, one
    distinct ``(shape, bytes per element)`` at a time (its optimizer built alone and
    stepped ``steps`` times on random gradients), times how often it occurs: for backends
    that cannot step on meta tensors and keep per-parameter state only. A shape above
    ``max_elements`` is refused (``ProbeUnavailable``): the probe would allocate it."""
    counts: dict[tuple[tuple[int, ...], int], int] = {}
    for shape, size in shapes:
        key = (tuple(int(d) for d in shape), size)
        counts[key] = counts.get(key, 0) + 1
    total = 0
    generator = torch.Generator().manual_seed(0)
    for (shape, size), count in counts.items():
        numel = int(torch.Size(shape).numel())
        if numel > max_elements:
            raise ProbeUnavailable(
                f"a parameter of shape {shape} ({numel:,} elements) is too large to probe on "
                f"the CPU (limit {max_elements:,})"
            )
        param = torch.nn.Parameter(torch.zeros(shape, dtype=_DTYPES[size]))
        optimizer = build([param])
        for _ in range(steps):
            param.grad = torch.randn(shape, generator=generator).to(param.dtype)
            optimizer.step()
        total += count * state_bytes(optimizer)
    return total
