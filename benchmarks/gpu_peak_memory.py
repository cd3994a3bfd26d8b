"""Peak CUDA memory of a training step for every optimizer, on a ~1B-parameter Llama.

For each catalog name (default: every name whose backend is installed), one fresh
subprocess builds a config-built ``LlamaForCausalLM`` directly on the GPU (hidden 2048,
16 layers, 32 heads, MLP 5632, vocab 32000: 0.95B parameters; bfloat16 parameters by
default, ``--dtype float32`` for fp32 ones), builds the optimizer with
``optimhub.create_optimizer`` (GaLore / APOLLO: ``optim_target_modules`` = attention and
MLP, their default rank), and runs ``--steps`` training steps through ``optimhub.drive``
(which honours every loop contract: schedule-free ``train()``, LOMO's fused backward,
layerwise steps inside backward) on one batch of ``--batch`` x ``--seq`` tokens.

Per name it reports, from ``torch.cuda.max_memory_allocated()`` / ``memory_allocated()``:
the peak over the steps (the first step creates the optimizer state, so the peak includes
it), the model alone, the peak minus the model (gradients + optimizer state + activations
+ temporaries), what stays after the step minus the model (the optimizer state), and the
peak as a ratio of ``adamw_torch``'s (always measured, as the baseline). A name that fails
(e.g. a CUDA-only backend pinned to an incompatible bitsandbytes) is listed with its error.
One subprocess per name keeps the peaks independent (no allocator cache, no compiled
kernels, no bitsandbytes overrides carried over).

Without CUDA it prints what it would measure and exits 0.

    .venv/bin/python benchmarks/gpu_peak_memory.py [--names adamw_torch,apollo_mini]
        [--dtype bfloat16] [--steps 2] [--batch 1] [--seq 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from typing import Any

import torch
from tables import table

import optimhub

GIB = 2**30
BASELINE = "adamw_torch"
TARGETS = [r".*attn.*", r".*mlp.*"]
RESULT_TAG = "GPU_PEAK_RESULT "


def llama_config(vocab: int = 32000) -> Any:
    """Llama with TinyLlama's width and 16 layers: 0.95B parameters."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
    )


def worker(name: str, dtype: str, steps: int, batch: int, seq: int) -> dict[str, Any]:
    """Build the model and the optimizer on the GPU, train ``steps`` steps, read the peaks."""
    from transformers import LlamaForCausalLM

    warnings.simplefilter("ignore")
    device = torch.device("cuda")
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(llama_config()).to(getattr(torch, dtype))
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    model_bytes = torch.cuda.memory_allocated()
    spec = optimhub.get_spec(name)
    overrides: dict[str, Any] = {"lr": 1e-5}
    if spec.has(optimhub.Capability.TARGET_MODULES):
        overrides["optim_target_modules"] = TARGETS
    torch.cuda.reset_peak_memory_stats()
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
    torch.cuda.synchronize()
    return {
        "name": name,
        "peak": torch.cuda.max_memory_allocated(),
        "model": model_bytes,
        "after": torch.cuda.memory_allocated(),
        "params": sum(p.numel() for p in model.parameters()),
        "losses": losses,
        "device": torch.cuda.get_device_name(),
    }


def run_worker(name: str, options: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", name, "--dtype", options.dtype,
               "--steps", str(options.steps), "--batch", str(options.batch),
               "--seq", str(options.seq)]
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




def report(results: list[dict[str, Any]]) -> str:
    baseline = next((r["peak"] for r in results if r["name"] == BASELINE and "peak" in r), None)
    rows: list[tuple[str, ...]] = [(
        "name", "peak GiB", f"vs {BASELINE}", "model GiB", "peak - model GiB",
        "after step - model GiB", "loss first -> last")]
    for r in results:
        if "error" in r:
            rows.append((r["name"], "fails", "", "", "", "", r["error"]))
            continue
        rows.append((
            r["name"], f"{r['peak'] / GIB:.2f}",
            f"{r['peak'] / baseline:.2f}" if baseline else "-",
            f"{r['model'] / GIB:.2f}", f"{(r['peak'] - r['model']) / GIB:.2f}",
            f"{(r['after'] - r['model']) / GIB:.2f}",
            f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}",
        ))
    return table(rows)


def default_names() -> list[str]:
    from optimhub.backends import is_installed

    return [s.name for s in optimhub.list_optimizers() if is_installed(s)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", help="comma-separated catalog names (default: all installed)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="parameter dtype (optimizer state follows it for most backends)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per name")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per name")
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if not torch.cuda.is_available():
        names = options.names or ", ".join(default_names())
        print("CUDA is not available (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}): nothing measured.\n"
              "On a machine with an NVIDIA GPU and a CUDA build of torch, this script measures "
              "torch.cuda.max_memory_allocated() over a training step of a 0.95B-parameter "
              f"Llama ({options.dtype} parameters, batch {options.batch}x{options.seq} tokens), "
              f"one subprocess per optimizer, relative to {BASELINE}:\n"
              f"  python benchmarks/gpu_peak_memory.py [--names a,b] [--dtype {options.dtype}]\n"
              f"names it would measure: {names}")
        return 0
    if options.worker:
        result = worker(options.worker, options.dtype, options.steps, options.batch,
                        options.seq)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    names = [n.strip() for n in options.names.split(",")] if options.names else default_names()
    names = [BASELINE, *(n for n in names if n != BASELINE)]
    results = []
    for name in names:
        results.append(run_worker(name, options))
        print(f"  measured {name}", file=sys.stderr, flush=True)
    first = next((r for r in results if "device" in r), None)
    print(f"peak CUDA memory of {options.steps} training steps, one process per optimizer "
          f"({first['device'] if first else 'CUDA'}; torch {torch.__version__})")
    if first:
        print(f"model: LlamaForCausalLM (hidden 2048, 16 layers, vocab 32000), "
              f"{first['params'] / 1e9:.2f}B {options.dtype} parameters; batch "
              f"{options.batch}x{options.seq} tokens; GaLore/APOLLO targets {TARGETS}\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
