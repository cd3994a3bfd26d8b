"""Probe: can ``OptimHubTrainer`` run on FSDP2 on CPU processes? What it gets instead.

    .venv/bin/python tools/trainer_fsdp2_probe.py [--unguarded]

Two gloo processes, ``use_cpu=True``, a tiny Llama, ``adamw_torch``, 3 steps; every rank
tries each supported way to ask accelerate (1.16) / the Trainer (transformers 5.24) for
FSDP2, one after the other:

- ``args``: ``TrainingArguments(fsdp="full_shard", fsdp_config={"version": 2, ...})``
  (the Trainer turns these into accelerate's ``FullyShardedDataParallelPlugin``);
- ``env``: ``ACCELERATE_USE_FSDP=true``, ``FSDP_VERSION=2`` (what ``accelerate launch
  --use_fsdp`` exports), no fsdp arguments;
- ``presharded``: a model already sharded with ``fully_shard`` (per decoder layer + root)
  given to the Trainer, no fsdp arguments.

Found: none gets FSDP. accelerate enables FSDP only for GPU-type distributed types
(``AcceleratorState.__init__``: the ``ACCELERATE_USE_FSDP`` / ``fsdp_plugin`` switch sits in
the branch for ``MULTI_GPU``, ``MULTI_NPU``, ...), so on CPU processes the state stays
``MULTI_CPU`` and ``prepare_model`` wraps the model in DistributedDataParallel: ``args``
and ``env`` train silently on DDP (``is_fsdp_enabled=False``); ``presharded`` fails inside
DDP's constructor (``aten.cat.default got mixed torch.Tensor and DTensor``). So
``OptimHubTrainer`` refuses all three at construction with a ``CapabilityError``
(``--unguarded`` runs the stock ``transformers.Trainer`` instead, to see what happens
without the refusal). ``measure()`` returns each case's outcome per rank;
tests/test_trainer_fsdp2_fallback.py asserts the refusals.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_matrix as matrix

VOCAB = 32
CASES = ("presharded", "args", "env")  # presharded first: it sets up the process group


def tiny_llama() -> torch.nn.Module:
    """A 2-layer Llama built from its config (seeded: the same weights on every rank)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64))


def dataset() -> list[dict[str, list[int]]]:
    """24 sequences of 12 tokens, each its own labels."""
    return [{"input_ids": [(s + i) % VOCAB for i in range(12)],
             "labels": [(s + i) % VOCAB for i in range(12)]} for s in range(24)]


def _case(case: str, rank: int, out: Path, unguarded: bool) -> str:
    """One way of asking for FSDP2: what the Trainer did (engine) or the error."""
    from transformers import Trainer, TrainingArguments

    from optimhub.integrations.transformers import OptimHubTrainer

    model = tiny_llama()
    fsdp: dict = {}
    if case == "presharded":
        import torch.distributed as dist
        from torch.distributed.fsdp import fully_shard

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=rank, world_size=2)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    elif case == "args":
        fsdp = {"fsdp": "full_shard", "fsdp_config": {
            "version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}}
    os.environ.pop("ACCELERATE_USE_FSDP", None)
    if case == "env":
        os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    args = TrainingArguments(
        output_dir=str(out / f"run-{case}"), use_cpu=True, ddp_backend="gloo", report_to=[],
        max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, save_strategy="no",
        disable_tqdm=True, seed=0, optim="adamw_torch", **fsdp)
    try:
        trainer = (Trainer if unguarded else OptimHubTrainer)(
            model=model, args=args, train_dataset=dataset())
        trainer.train()
    except Exception as exc:
        traceback.print_exc()
        return f"{type(exc).__name__}: {exc}"
    finally:
        os.environ.pop("ACCELERATE_USE_FSDP", None)
    return (f"trained: is_fsdp_enabled={trainer.is_fsdp_enabled}, distributed_type="
            f"{trainer.accelerator.state.distributed_type.value}, model wrapped in "
            f"{type(trainer.model_wrapped).__name__}")


def _worker(rank: int, out: Path, unguarded: bool) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    found = {case: _case(case, rank, out, unguarded) for case in CASES}
    torch.save(found, out / f"found-rank{rank}.pt")


def measure(*, unguarded: bool = False, timeout_s: float = 300) -> dict[str, list[str]]:
    """Per case, each rank's outcome (``"trained: ..."`` or ``"ErrorType: message"``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        matrix.spawn(lambda rank: [
            sys.executable, __file__, "--worker", str(rank), str(out),
            *(["--unguarded"] if unguarded else [])], out, timeout_s)
        ranks = [torch.load(out / f"found-rank{r}.pt", weights_only=True) for r in range(2)]
    return {case: [found[case] for found in ranks] for case in CASES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--unguarded", action="store_true",
                        help="the stock transformers.Trainer, without OptimHubTrainer's refusal")
    args = parser.parse_args()
    if args.worker:
        _worker(int(args.worker[0]), Path(args.worker[1]), args.unguarded)
        sys.stdout.flush()
        os._exit(0)  # saved: no wait on gloo's threads at shutdown (a rank aborted there)
    for case, outcomes in measure(unguarded=args.unguarded).items():
        print(f"{case:11} rank 0: {outcomes[0][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(matrix.run_as_worker(main) if "--worker" in sys.argv else main())
