"""Gradient memory of one backward: AdamW as usual vs AdamW layerwise (optimizer in backward).

Layerwise mode steps each parameter from its post-accumulate-grad hook and frees its
gradient at once, so the gradients never all exist together. This script measures that on
the CPU, for one backward of a config-built Llama (after a warm-up step, so the optimizer
state already exists and is not counted as new), three ways:

- ``adamw_torch``: the plain optimizer (``loss.backward()`` then ``step()``);
- ``adamw_torch, layerwise=True``: the hub's ``LayerwiseOptimizer``;
- the same by hand (torchtune's recipe on ``benchmarks/direct.py``'s groups), as a control.

Two measures, because the CPU allocator keeps no statistics (``torch.cuda.max_memory_
allocated`` has no CPU counterpart):

- **peak live .grad bytes** (exact, what layerwise changes): a post-accumulate-grad hook on
  every parameter, registered *before* the optimizer's own hooks so it runs first, sums the
  bytes of all non-None ``.grad`` tensors each time a gradient lands; the maximum is the peak.
- **peak CPU memory growth during backward** (everything, from ``torch.profiler`` with
  ``profile_memory=True``): the allocation / free events of the backward, summed in time
  order; the maximum over the running total is how much more memory backward needed than
  was live when it began. It also counts the autograd temporaries (and the frees of saved
  activations), which both modes share, so its ratio is less extreme; it cross-checks the
  hook measure with an independent one. Reported as unavailable if the profiler's event
  API is missing.

    .venv/bin/python benchmarks/layerwise_memory.py [--layers 8] [--hidden 256]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from direct import LR, hf_groups
from overhead import fresh_copy, tiny_llama
from tables import table
from torch import nn

import optimhub

MIB = 2**20


class GradTracker:
    """Peak bytes of live ``.grad`` tensors, observed whenever a gradient is accumulated."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.peak = 0
        self.handles = [p.register_post_accumulate_grad_hook(self._observe)
                        for p in self.params]

    def _observe(self, _: torch.Tensor) -> None:
        self.peak = max(self.peak, self.live_now())

    def live_now(self) -> int:
        """Bytes of all ``.grad`` tensors that exist now."""
        return sum(p.grad.numel() * p.grad.element_size()
                   for p in self.params if p.grad is not None)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def profiled_peak_growth(backward: Callable[[], None]) -> int | None:
    """Peak growth of CPU memory during ``backward()`` per torch.profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        backward()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:
        return None
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


@dataclass
class Measurement:
    label: str
    peak_grad: int
    grads_after: int
    peak_growth: int | None


class HandLayerwise:
    """Optimizer in backward, by hand (torchtune's recipe): one AdamW per parameter, stepped
    and its gradient freed from the parameter's post-accumulate-grad hook."""

    def __init__(self, model: nn.Module) -> None:
        self.handles: list[Any] = []
        for group in hf_groups(model):
            settings = {k: v for k, v in group.items() if k != "params"}
            for param in group["params"]:
                optimizer = torch.optim.AdamW([{**settings, "params": [param]}], lr=LR)
                self.handles.append(param.register_post_accumulate_grad_hook(
                    lambda _, optimizer=optimizer: self._step(optimizer)))

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(label: str, base: nn.Module, build: Callable[[nn.Module], Any],
            batch: torch.Tensor, use_profiler: bool) -> Measurement:
    model = fresh_copy(base)
    tracker = GradTracker(model)  # first, so it sees each gradient before a layerwise step
    optimizer = build(model)

    def train_step(profiled: bool) -> tuple[int | None, int]:
        loss = model(input_ids=batch, labels=batch).loss
        growth = None
        if profiled:
            growth = profiled_peak_growth(loss.backward)
        else:
            loss.backward()
        left = tracker.live_now()
        if isinstance(optimizer, torch.optim.Optimizer):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return growth, left

    try:
        train_step(profiled=False)  # warm-up: the optimizer state is created here
        tracker.peak = 0
        growth, left = train_step(profiled=use_profiler)
    finally:
        tracker.close()
        close = getattr(optimizer, "close", None)
        if callable(close):
            close()
    return Measurement(label, tracker.peak, left, growth)


def _mib(value: int | None) -> str:
    return "unavailable" if value is None else f"{value / MIB:.2f}"




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--no-profiler", action="store_true",
                        help="only the hook measure (the profiler pass is the slower one)")
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)

    base = tiny_llama(layers=options.layers, hidden=options.hidden, vocab=options.vocab)
    batch = torch.randint(0, options.vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    use_profiler = not options.no_profiler
    results = [
        measure("adamw_torch", base,
                lambda m: optimhub.create_optimizer("adamw_torch", m, lr=LR),
                batch, use_profiler),
        measure("adamw_torch, layerwise=True (hub)", base,
                lambda m: optimhub.create_optimizer("adamw_torch", m, lr=LR, layerwise=True),
                batch, use_profiler),
        measure("AdamW layerwise by hand (torchtune recipe)", base, HandLayerwise, batch,
                use_profiler),
    ]
    params = [p for p in base.parameters() if p.requires_grad]
    all_grads = sum(p.numel() * p.element_size() for p in params)
    largest = max(params, key=lambda p: p.numel())
    largest_name = next(n for n, p in base.named_parameters() if p is largest)
    largest_bytes = largest.numel() * largest.element_size()

    print("gradient memory of one backward (CPU, float32), after one warm-up step")
    print(f"model: LlamaForCausalLM, {options.layers} layers, hidden {options.hidden}, vocab "
          f"{options.vocab}: {len(params)} parameter tensors, "
          f"{sum(p.numel() for p in params) / 1e6:.2f}M parameters; batch 2x32 tokens; "
          f"torch {torch.__version__}\n")
    rows: list[tuple[str, ...]] = [("mode", "peak live .grad MiB (hooks)",
                                    ".grad MiB left after backward",
                                    "peak memory growth in backward MiB (profiler)")]
    rows += [(m.label, _mib(m.peak_grad), _mib(m.grads_after), _mib(m.peak_growth))
             for m in results]
    print(table(rows))
    normal, hub, hand = results
    print(f"\nall gradients together: {all_grads / MIB:.2f} MiB; the largest single gradient "
          f"({largest_name}): {largest_bytes / MIB:.2f} MiB (the floor for layerwise)")
    print(f"ratio layerwise (hub) / normal, peak live .grad: "
          f"{hub.peak_grad / normal.peak_grad:.3f}")
    if hub.peak_growth is not None and normal.peak_growth:
        print(f"ratio layerwise (hub) / normal, peak memory growth in backward: "
              f"{hub.peak_growth / normal.peak_growth:.3f}")
    print(f"hub vs by hand, peak live .grad: {hub.peak_grad / hand.peak_grad:.3f} "
          "(1.000: the hub frees gradients exactly as the by-hand recipe does)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
