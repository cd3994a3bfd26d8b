"""Does the foreach path of ``adamweightdecay`` pay? Step time, foreach vs per-parameter.

``adamweightdecay`` (plugins/mindformers.py, our own optimizer) has two code paths that give
identical results: ``torch._foreach_*`` kernels over a whole param group
(``optim_args={"foreach": True}``) and a loop over the parameters (``False``); by default
(``None``) it takes foreach on CUDA and the loop on the CPU, as torch's own optimizers do,
which is what this table is for. This times ``step()`` of both,
side by side in one process, interleaved (each round times every row's paths in a rotating
order; medians over the rounds, a warm-up step excluded), with torch's own AdamW in its
foreach and for-loop forms on the same parameters as the yardstick of what foreach buys.

Shapes: many small tensors (where per-tensor launch overhead dominates and foreach should
help most), a few large ones, and the many-small case in bfloat16 (float32 moments, so both
paths also pay the casts). Times are CPU time of this process (``--clock wall`` for
elapsed time), torch on one thread (``--threads``). Always exits 0: it measures, the reader
judges.

    .venv/bin/python benchmarks/adamweightdecay_foreach.py [--rounds 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from tables import table
from torch import nn

import optimhub

SHAPES = {
    "200 x (64, 64)": [(64, 64)] * 200,
    "8 x (1024, 1024)": [(1024, 1024)] * 8,
}


def parameters(shapes: list[tuple[int, ...]], dtype: torch.dtype, device: str,
               seed: int = 0) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        param = nn.Parameter(torch.randn(shape, generator=generator).to(device, dtype))
        param.grad = torch.randn(shape, generator=generator).to(device, dtype)
        params.append(param)
    return params


def builders() -> dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]:
    settings = {"lr": 1e-3, "weight_decay": 0.1}
    return {
        "adamweightdecay foreach": lambda ps: optimhub.create_optimizer(
            "adamweightdecay", ps, **settings, optim_args={"foreach": True}),
        "adamweightdecay loop": lambda ps: optimhub.create_optimizer(
            "adamweightdecay", ps, **settings, optim_args={"foreach": False}),
        "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, **settings, foreach=True),
        "torch AdamW loop": lambda ps: torch.optim.AdamW(ps, **settings, foreach=False),
    }


def clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


def measure(rounds: int, device: str, kind: str) -> list[tuple[str, dict[str, float]]]:
    now = clock(kind)
    results = []
    cases = [(name, shapes, torch.float32) for name, shapes in SHAPES.items()]
    cases.append((f"{next(iter(SHAPES))} bf16", next(iter(SHAPES.values())), torch.bfloat16))
    for label, shapes, dtype in cases:
        optimizers = {path: build(parameters(shapes, dtype, device))
                      for path, build in builders().items()}
        for optimizer in optimizers.values():
            optimizer.step()  # warm-up: state allocation, first-call costs
        times: dict[str, list[float]] = {path: [] for path in optimizers}
        paths = list(optimizers)
        for round_ in range(rounds):
            order = paths[round_ % len(paths):] + paths[:round_ % len(paths)]
            for path in order:
                if device == "cuda":
                    torch.cuda.synchronize()
                start = now()
                optimizers[path].step()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[path].append(now() - start)
        results.append((label, {path: statistics.median(t) for path, t in times.items()}))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    kind = "wall" if options.device == "cuda" else options.clock
    results = measure(options.rounds, options.device, kind)
    rows = [("parameters", "ours foreach ms", "ours loop ms", "loop/foreach",
             "torch foreach ms", "torch loop ms", "loop/foreach", "ours/torch (foreach)")]
    for label, t in results:
        ms = {path: value * 1e3 for path, value in t.items()}
        rows.append((
            label,
            f"{ms['adamweightdecay foreach']:.2f}", f"{ms['adamweightdecay loop']:.2f}",
            f"{t['adamweightdecay loop'] / t['adamweightdecay foreach']:.2f}",
            f"{ms['torch AdamW foreach']:.2f}", f"{ms['torch AdamW loop']:.2f}",
            f"{t['torch AdamW loop'] / t['torch AdamW foreach']:.2f}",
            f"{t['adamweightdecay foreach'] / t['torch AdamW foreach']:.2f}",
        ))
    print(f"optimizer.step() on {options.device}, {kind} time, median of {options.rounds} "
          f"rounds, torch {torch.__version__}, {options.threads} thread(s)")
    print(table(rows))


if __name__ == "__main__":
    main()
