"""Peak CUDA memory of a training step for every optimizer, on a ~1B-parameter Llama.

For each catalog name (default: every name in the catalog; those whose backend is not
installed are listed as skipped), one fresh subprocess builds a config-built
``LlamaForCausalLM`` directly on the GPU (hidden 2048, 16 layers, 32 heads, MLP 5632,
vocab 32000: 0.95B parameters; bfloat16 parameters by default, ``--dtype float32`` for
fp32 ones), builds the optimizer with ``optimhub.create_optimizer`` (GaLore / APOLLO:
``optim_target_modules`` = attention and MLP, their default rank), and runs ``--steps``
training steps through ``optimhub.drive`` (which honours every loop contract:
schedule-free ``train()``, LOMO's fused backward, layerwise steps inside backward) on one
batch of ``--batch`` x ``--seq`` tokens.

Per name it reports, from ``torch.cuda.max_memory_allocated()`` / ``memory_allocated()``:
the peak over the steps (the first step creates the optimizer state, so the peak includes
it), the model alone, the peak minus the model (gradients + optimizer state + activations
+ temporaries), what stays after the step minus the model, the optimizer state itself
(``optimhub.state_size.state_bytes``: every tensor the optimizer holds, each storage once),
and the peak as a ratio of ``adamw_torch``'s (always measured, as the baseline). A name
that fails (e.g. a CUDA-only backend pinned to an incompatible bitsandbytes) is listed
with its error. One subprocess per name keeps the peaks independent (no allocator cache,
no compiled kernels, no bitsandbytes overrides carried over); ``--jobs`` runs several at
once (CUDA's peak statistics are per process, so they do not mix; the GPU must hold them
all: a 1B model with AdamW needs under 20 GiB), and ``--budget`` stops starting new names
after that many seconds (the rest are listed as not measured), so that a run fits the
time a device is lent for.

Without CUDA it prints what it would measure and exits 0. ``--dry-run`` runs the same
subprocesses on the CPU with a tiny Llama of the same shape family (memory columns
empty, the state column measured): a rehearsal of every name's path before a GPU is
spent on it.

    .venv/bin/python benchmarks/gpu_peak_memory.py [--names adamw_torch,apollo_mini]
        [--dtype bfloat16] [--steps 2] [--batch 1] [--seq 512] [--jobs 4] [--budget 540]
    .venv/bin/python benchmarks/gpu_peak_memory.py --dry-run --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from tables import table

import optimhub

GIB = 2**30
BASELINE = "adamw_torch"
TARGETS = [r".*attn.*", r".*mlp.*"]
RESULT_TAG = "GPU_PEAK_RESULT "


def llama_config(dry_run: bool = False) -> Any:
    """Llama with TinyLlama's width and 16 layers: 0.95B parameters (``dry_run``: the
    same family at hidden 64, 2 layers, vocab 256)."""
    from transformers import LlamaConfig

    if dry_run:
        return LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=176,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                           max_position_embeddings=128)
    return LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
    )


class _Memory:
    """CUDA's allocator statistics, or nothing on the CPU (a dry run)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def settle(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def allocated(self) -> int | None:
        return torch.cuda.memory_allocated() if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        if not self.cuda:
            return None
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()


def worker(name: str, dtype: str, steps: int, batch: int, seq: int, dry_run: bool
           ) -> dict[str, Any]:
    """Build the model and the optimizer on the device, train ``steps`` steps, read the
    peaks."""
    from transformers import LlamaForCausalLM

    from optimhub.state_size import state_bytes

    warnings.simplefilter("ignore")
    device = torch.device("cpu" if dry_run else "cuda")
    memory = _Memory(device)
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(llama_config(dry_run)).to(getattr(torch, dtype))
    memory.settle()
    model_bytes = memory.allocated()
    spec = optimhub.get_spec(name)
    overrides: dict[str, Any] = {"lr": 1e-5}
    if spec.has(optimhub.Capability.TARGET_MODULES):
        overrides["optim_target_modules"] = TARGETS
    memory.reset_peak()
    started = time.perf_counter()
    optimizer = optimhub.create_optimizer(name, model, **overrides)
    driver = optimhub.drive(optimizer, model=model)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq), device=device,
                           generator=torch.Generator(device).manual_seed(0))
    losses = []
    for _ in range(steps):
        loss = model(input_ids=tokens, labels=tokens).loss
        driver.backward(loss)
        driver.step()
        losses.append(float(loss.detach()))
    peak = memory.peak()
    return {
        "name": name,
        "peak": peak,
        "model": model_bytes,
        "after": memory.allocated(),
        "state": state_bytes(optimizer),
        "params": sum(p.numel() for p in model.parameters()),
        "losses": losses,
        "seconds": round(time.perf_counter() - started, 1),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
    }


def run_worker(name: str, options: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", name, "--dtype", options.dtype,
               "--steps", str(options.steps), "--batch", str(options.batch),
               "--seq", str(options.seq)]
    if options.dry_run:
        command.append("--dry-run")
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=options.timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {options.timeout} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()] or ["(no output)"]
    return {"name": name, "error": lines[-1][:200]}


def run_all(names: list[str], options: argparse.Namespace) -> list[dict[str, Any]]:
    """Every name in its own subprocess, ``--jobs`` at a time; none started once
    ``--budget`` seconds have passed. Results in the order of ``names``."""
    started = time.monotonic()

    def one(name: str) -> dict[str, Any]:
        if options.budget and time.monotonic() - started > options.budget:
            return {"name": name, "error": f"not measured: the {options.budget} s budget "
                                           "was spent before it could start"}
        result = run_worker(name, options)
        print(f"  measured {name}" + (f" ({result['error']})" if "error" in result else ""),
              file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        return list(pool.map(one, names))


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def report(results: list[dict[str, Any]]) -> str:
    baseline = next((r["peak"] for r in results if r["name"] == BASELINE and r.get("peak")),
                    None)
    rows: list[tuple[str, ...]] = [(
        "name", "peak GiB", f"vs {BASELINE}", "model GiB", "peak - model GiB",
        "after step - model GiB", "optimizer state MiB", "loss first -> last", "s")]
    failed = []
    for r in results:
        if "error" in r:
            rows.append((r["name"], "fails", "", "", "", "", "", "", ""))
            failed.append(f"  {r['name']}: {r['error']}")
            continue
        peak, model, after = r["peak"], r["model"], r["after"]
        rows.append((
            r["name"], _gib(peak),
            f"{peak / baseline:.2f}" if baseline and peak else "-",
            _gib(model), _gib(peak - model if peak is not None else None),
            _gib(after - model if after is not None else None), f"{r['state'] / 2**20:.1f}",
            f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}", f"{r['seconds']:.0f}",
        ))
    return table(rows) + ("\n\nfailed:\n" + "\n".join(failed) if failed else "")


def select(requested: str | None) -> tuple[list[str], list[tuple[str, str]]]:
    """The names to measure (the baseline first) and the ones skipped, with why."""
    from optimhub.backends import is_installed

    specs = ([optimhub.get_spec(n.strip()) for n in requested.split(",") if n.strip()]
             if requested else optimhub.list_optimizers())
    names, skipped = [], []
    for spec in specs:
        if is_installed(spec):
            names.append(spec.name)
        else:
            skipped.append((spec.name, f"backend not installed ({spec.install_command})"))
    return [BASELINE, *(n for n in names if n != BASELINE)], skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", help="comma-separated catalog names (default: all)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="parameter dtype (optimizer state follows it for most backends)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per name")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per name")
    parser.add_argument("--jobs", type=int, default=1,
                        help="names measured at once, one process each (default 1)")
    parser.add_argument("--budget", type=int, default=0,
                        help="start no name after this many seconds (default: no limit)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same runs on the CPU with a tiny Llama: no memory measured")
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.dry_run and options.seq == parser.get_default("seq"):
        options.seq = 32

    if options.worker:
        result = worker(options.worker, options.dtype, options.steps, options.batch,
                        options.seq, options.dry_run)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    try:
        names, skipped = select(options.names)
    except optimhub.OptimHubError as exc:
        print(f"gpu_peak_memory.py: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available() and not options.dry_run:
        print("CUDA is not available (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}): nothing measured.\n"
              "On a machine with an NVIDIA GPU and a CUDA build of torch, this script measures "
              "torch.cuda.max_memory_allocated() over a training step of a 0.95B-parameter "
              f"Llama ({options.dtype} parameters, batch {options.batch}x{options.seq} tokens), "
              f"one subprocess per optimizer, relative to {BASELINE}:\n"
              f"  python benchmarks/gpu_peak_memory.py [--names a,b] [--dtype {options.dtype}] "
              "[--jobs 4] [--budget 540]\n"
              f"names it would measure: {','.join(names)}\n"
              + "".join(f"skipped: {name}: {why}\n" for name, why in skipped)
              + "(--dry-run rehearses every name's run on the CPU with a tiny model)")
        return 0

    started = time.perf_counter()
    results = run_all(names, options)
    first = next((r for r in results if "device" in r), None)
    print(f"peak {'CUDA ' if not options.dry_run else ''}memory of {options.steps} training "
          f"steps, one process per optimizer, {options.jobs} at a time "
          f"({first['device'] if first else 'CUDA'}; torch {torch.__version__}); took "
          f"{time.perf_counter() - started:.0f} s")
    if first:
        config = llama_config(options.dry_run)
        print(f"model: LlamaForCausalLM (hidden {config.hidden_size}, "
              f"{config.num_hidden_layers} layers, vocab {config.vocab_size}), "
              f"{first['params'] / 1e9:.2f}B {options.dtype} parameters; batch "
              f"{options.batch}x{options.seq} tokens; GaLore/APOLLO targets {TARGETS}; "
              f"{os.cpu_count()} CPUs\n")
    print(report(results))
    if skipped:
        print("\nskipped:")
        for name, why in skipped:
            print(f"  {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
