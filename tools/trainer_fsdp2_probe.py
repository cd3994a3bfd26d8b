"""Probe: which engine does ``OptimHubTrainer`` get on CPU when TrainingArguments ask for
FSDP2? Not part of the test suite.

    .venv/bin/python tools/trainer_fsdp2_probe.py

Two gloo processes, ``use_cpu=True``, ``fsdp="full_shard"`` with
``fsdp_config={"fsdp_version": 2, ...}``, a tiny Llama, 3 steps of ``adamw_torch``. Prints
what the Trainer reports (``is_fsdp_enabled``, accelerate's distributed type) and the
class that wrapped the model. Found with accelerate 1.16 and transformers 5.24: FSDP is
not enabled (``MULTI_CPU``) and the model is wrapped in DistributedDataParallel; accelerate
enables FSDP only for GPU-type distributed types.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_matrix as matrix

VOCAB = 32


def _worker(rank: int, out: Path) -> None:
    warnings.simplefilter("ignore")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from optimhub.integrations.transformers import OptimHubTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64))
    data = [{"input_ids": [(s + i) % VOCAB for i in range(12)],
             "labels": [(s + i) % VOCAB for i in range(12)]} for s in range(24)]
    args = TrainingArguments(
        output_dir=str(out / "run"), use_cpu=True, ddp_backend="gloo", report_to=[],
        max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, save_strategy="no",
        disable_tqdm=True, seed=0, optim="adamw_torch", fsdp="full_shard",
        fsdp_config={"fsdp_version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]},
    )
    trainer = OptimHubTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    if rank == 0:
        (out / "found.txt").write_text(
            f"is_fsdp_enabled={trainer.is_fsdp_enabled}, "
            f"distributed_type={trainer.accelerator.state.distributed_type}, "
            f"model wrapped in {type(trainer.model_wrapped).__name__}\n")


def main() -> int:
    if "--worker" in sys.argv:
        _worker(int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        matrix.spawn(lambda rank: [sys.executable, __file__, "--worker", str(rank), str(out)],
                     out, 600)
        print((out / "found.txt").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(matrix.run_as_worker(main) if "--worker" in sys.argv else main())
