"""Does routing cost anything? A routed optimizer's step against the sum of its routes'
steps, and its state against the sum of its parts, the by-hand optimizers and the estimate.

For each routed name (``muon``, ``galore_plus_adamw_8bit``, and a three-route set given as
text), on a config-built ``LlamaForCausalLM``, side by side in one process:

- **step**: after one backward, the ``RoutedOptimizer``'s ``step()`` and, on the same
  object and the same gradients, each route optimizer's ``step()`` timed on its own and
  summed, alternating which goes first, ``--steps`` per round; medians over ``--rounds``
  rounds after warm-up. ``RoutedOptimizer.step`` is a loop over the routes, so the ratio
  routed / sum must be 1.00 within noise; an A/A row (the sum of the parts against
  itself) shows the noise.
- **state**: :func:`optimhub.testing.state_bytes` of the routed object, the sum over its
  route optimizers, the same optimizers built by hand without the hub
  (``benchmarks/direct.py``: torch's Muon + AdamW; GaLore + bnb's 8-bit AdamW, less the
  unused part of galore-torch's SVD factors, which the hub does not keep), and
  ``optimhub.estimate`` (the sum of the routes' estimates).

CPU time of this process, torch on one thread (see docs/benchmarks.md). Exits 0.

    .venv/bin/python benchmarks/routed.py [--rounds 7] [--steps 5] [--layers 12]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from direct import DIRECT, LR, build_direct, whole_factor_surplus
from tables import table
from torch import nn

import optimhub
from optimhub.testing import readiness, state_bytes

RANK = 8
#: name -> create_optimizer keywords. The route set shows three routes of three kinds.
CASES: dict[str, dict[str, Any]] = {
    "muon": {},
    "galore_plus_adamw_8bit": {"optim_args": f"rank={RANK}"},
    "matrix -> muon_torch; norm, bias -> sgd(momentum=0.9); * -> adamw_torch": {},
}


def tiny_llama(layers: int, seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128))


def timed(call: Callable[[], Any]) -> float:
    gc.disable()
    try:
        started = time.process_time()
        call()
        return time.process_time() - started
    finally:
        gc.enable()


def measure_steps(optimizer: optimhub.RoutedOptimizer, model: nn.Module, batch: torch.Tensor,
                  rounds: int, warmup: int, steps: int) -> dict[str, list[float]]:
    """Per round, the median seconds of: the routed step, the sum of the routes' steps,
    and the same sum timed again (the A/A control)."""
    parts = list(optimizer.routes.values())

    def sum_of_parts() -> float:
        return sum(timed(part.step) for part in parts)

    paths: list[tuple[str, Callable[[], float]]] = [
        ("routed", lambda: timed(optimizer.step)),
        ("parts", sum_of_parts),
        ("parts again", sum_of_parts),
    ]
    samples: dict[str, list[float]] = {label: [] for label, _ in paths}
    for index in range(warmup + rounds):
        model(input_ids=batch, labels=batch).loss.backward()
        times: dict[str, list[float]] = {label: [] for label, _ in paths}
        for step in range(steps):
            shift = (index + step) % len(paths)
            for label, measure in paths[shift:] + paths[:shift]:
                times[label].append(measure())
        optimizer.zero_grad(set_to_none=True)
        if index >= warmup:
            for label, values in times.items():
                samples[label].append(statistics.median(values))
    return samples


def by_hand_bytes(name: str, model: nn.Module, batch: torch.Tensor) -> int | None:
    """State of the same optimizers built by hand (benchmarks/direct.py), after one step,
    less what galore-torch's SVD projectors keep alive behind a view and never use
    (``whole_factor_surplus``: the hub's projectors keep only the rows they use, with
    galore-torch's numbers; docs/benchmarks.md, optimizer state memory)."""
    if name not in DIRECT:
        return None
    surplus = whole_factor_surplus(name, model, RANK)
    with build_direct(name, model, RANK) as run:
        run.train_step(model(input_ids=batch, labels=batch).loss)
        return run.state_bytes() - surplus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per name")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--steps", type=int, default=5, help="step() calls per round and path")
    parser.add_argument("--layers", type=int, default=12, help="Llama layers")
    options = parser.parse_args(argv)
    if min(options.rounds, options.warmup, options.steps, options.layers) < 1:
        parser.error("--rounds, --warmup, --steps and --layers must be at least 1")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    load = os.getloadavg()[0]
    batch = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    step_rows: list[tuple[str, ...]] = [("name", "routes", "routed ms", "sum of routes ms",
                                         "routed/sum", "range", "A/A ratio")]
    state_rows: list[tuple[str, ...]] = [("name", "routed B", "sum of routes B", "by hand B",
                                          "estimate B", "routed = sum", "= by hand",
                                          "= estimate")]
    skipped = []
    for name, arguments in CASES.items():
        spec = optimhub.route_plan.spec_for(name)
        problems = [readiness(t.optimizer).reason for t in spec.routes
                    if readiness(t.optimizer).action != "run"]
        if problems:
            skipped.append(f"  {name}: {problems[0]}")
            continue
        model = tiny_llama(options.layers)
        optimizer = optimhub.create_optimizer(name, model, lr=LR, **arguments)
        samples = measure_steps(optimizer, model, batch, options.rounds, options.warmup,
                                options.steps)
        ratios = [r / p for r, p in zip(samples["routed"], samples["parts"], strict=True)]
        control = [a / b for a, b in zip(samples["parts again"], samples["parts"],
                                         strict=True)]
        step_rows.append((
            name[:40], str(len(optimizer.routes)),
            f"{statistics.median(samples['routed']) * 1000:.2f}",
            f"{statistics.median(samples['parts']) * 1000:.2f}",
            f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}",
            f"{statistics.median(control):.2f}",
        ))
        routed = state_bytes(optimizer)
        parts = sum(state_bytes(o) for o in optimizer.routes.values())
        hand = by_hand_bytes(name, tiny_llama(options.layers), batch)
        estimate = optimhub.estimate(name, model, lr=LR, **arguments).state_bytes
        state_rows.append((
            name[:40], f"{routed:,}", f"{parts:,}", "-" if hand is None else f"{hand:,}",
            f"{estimate:,}", "yes" if routed == parts else "NO",
            "-" if hand is None else ("yes" if routed == hand else "NO"),
            "yes" if routed == estimate else "NO",
        ))
        print(f"  measured {name}", file=sys.stderr, flush=True)
    print(f"optimhub routed: step time (CPU clock, 1 thread) of a RoutedOptimizer against "
          f"the sum of its routes' steps on the same object and gradients; median of "
          f"{options.rounds} rounds of {options.steps} interleaved steps after "
          f"{options.warmup} warm-up rounds")
    print(f"model: LlamaForCausalLM, {options.layers} layers, hidden 64; batch 2x32; lr {LR}; "
          f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; torch "
          f"{torch.__version__}\n")
    print(table(step_rows))
    print("\nstate after the steps above (routed, its parts) and after one step (by hand):\n")
    print(table(state_rows))
    if skipped:
        print("\nskipped:\n" + "\n".join(skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
