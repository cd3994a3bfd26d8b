"""The Trainer on FSDP2: ``OptimHubTrainer`` on a model that transformers shards when it loads
it, on two gloo CPU processes, against the same Trainer on DDP.

    .venv/bin/python tools/trainer_fsdp2.py [--cases adamw_torch,lomo]

accelerate (1.16) never turns its FSDP plugin on for CPU processes
(tools/trainer_fsdp2_probe.py). transformers (5.24) has a second way that does not go
through accelerate: ``from_pretrained(..., distributed_config=DistributedConfig(
fsdp_size=2))`` applies ``fully_shard`` to the model as it loads it (the model's
``fsdp_plan``: each decoder layer, then the root), and the Trainer then neither wraps it in
DDP nor shards it again (``is_distributed_loading_by_transformers``). That runs on CPU
processes, so this tool trains through it.

Three runs, one spawn each, on a tiny Llama saved from its config (nothing is downloaded):

- ``ddp``: two processes, the plain model, which the Trainer wraps in DDP;
- ``fsdp2``: two processes, the model sharded at load time;
- ``one``: one process with the global batch (both ranks' sequences), the reference of the
  cases that DDP refuses (LOMO's fused backward).

Each case is an optimizer and a loop: the step after backward (``adamw_torch``,
``schedule_free_adamw``, the low-rank ``apollo_adamw`` and ``galore_adamw``, the routed
``muon``), the in-backward ones (``adamw_torch`` with ``layerwise=True``, ``lomo``), and two
that must be refused before anything is built (``adamw_bnb_8bit``, whose spec says
``no_fsdp2``; a layerwise optimizer on a model with one trainable parameter FSDP2 did not
shard). ``measure()`` returns each case's outcome and largest weight difference from its
reference; tests/test_trainer_fsdp2.py asserts them (``EXPECTED``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_matrix as matrix
import trainer_fsdp2_probe as probe

STEPS = 3
PER_RANK_BATCH = 2
TARGETS = [r".*attn.*", r".*mlp.*"]


@dataclass(frozen=True)
class Case:
    """One Trainer run per engine: ``optim`` (``layerwise``) compared on FSDP2 with
    ``reference`` (``"ddp"``, ``"one"``, or ``"ddp:<case>"``: another case's DDP run, for an
    in-backward mode that DDP refuses but whose optimizer steps after backward there; None
    for a case that must be refused)."""

    optim: str
    reference: str | None = "ddp"
    layerwise: bool = False
    optim_args: str | None = None
    targets: bool = False
    replicated_parameter: bool = False


CASES = {
    "adamw_torch": Case("adamw_torch"),
    "schedule_free_adamw": Case("schedule_free_adamw"),
    "apollo_adamw": Case("apollo_adamw", optim_args="rank=4", targets=True),
    "galore_adamw": Case("galore_adamw", optim_args="rank=4", targets=True),
    "muon": Case("muon"),
    "adamw_torch layerwise": Case("adamw_torch", reference="ddp:adamw_torch", layerwise=True),
    "lomo": Case("lomo", reference="one"),
    "adamw_bnb_8bit": Case("adamw_bnb_8bit", reference=None),
    "adamw_torch layerwise, a parameter not sharded": Case(
        "adamw_torch", reference=None, layerwise=True, replicated_parameter=True),
}
ENGINES = ("one", "ddp", "fsdp2")
SEPARATOR = ";"  # between case labels on a worker's command line

#: Each case's FSDP2 outcome: ("equal" | "close", bound) against its reference, or
#: ("refused", [the start of the hub's message, what else it must say]).
EXPECTED: dict[str, tuple[str, Any]] = {
    "adamw_torch": ("equal", 0.0),
    "schedule_free_adamw": ("equal", 0.0),
    "apollo_adamw": ("equal", 0.0),
    # GaLore's projections run as DTensor matrix products, which sum per shard and then
    # across ranks: its projected weights end 0.6e-7 to 1e-6 from DDP (a few dozen ulps).
    # Adam divides each gradient by its own RMS, so these rounding differences grow in the
    # forward of the next steps to 2.3e-5 on the embedding after 3 steps at lr 1e-2
    # (measured); a rank stepping on its own gradient would be off by about lr.
    "galore_adamw": ("close", 1e-4),
    "muon": ("equal", 0.0),
    "adamw_torch layerwise": ("equal", 0.0),
    # The one process averages the loss of 4 sequences at once, each rank of 2: rounding of
    # the mean (measured 3.7e-9 at lr 1e-2; a rank stepping on its own gradient is ~1e-3 off).
    "lomo": ("close", 1e-7),
    "adamw_bnb_8bit": ("refused", [
        "CapabilityError: optimizer 'adamw_bnb_8bit' cannot step parameters sharded by FSDP2",
        "Use DistributedDataParallel (DDP) for it"]),
    "adamw_torch layerwise, a parameter not sharded": ("refused", [
        "CapabilityError: optimizer 'adamw_torch' updates the parameters inside backward "
        "(layerwise)", "not 'model.norm.extra'",
        "distributed_config=DistributedConfig(fsdp_size=N)"]),
}


def save_model(directory: Path) -> None:
    """The tiny Llama, saved from its config for ``from_pretrained``."""
    probe.tiny_llama().save_pretrained(directory)


def _train(case: Case, engine: str, model_dir: Path, out: Path) -> dict[str, Any]:
    """One Trainer run: the full weights after training, or the error."""
    from transformers import LlamaForCausalLM, TrainingArguments
    from transformers.distributed import DistributedConfig

    from optimhub.integrations.transformers import OptimHubTrainer

    sharded = {"distributed_config": DistributedConfig(fsdp_size=2)} if engine == "fsdp2" else {}
    model = LlamaForCausalLM.from_pretrained(model_dir, **sharded)
    if case.replicated_parameter:  # e.g. an adapter added after sharding: a plain tensor
        model.model.norm.register_parameter("extra", torch.nn.Parameter(torch.zeros(4)))
    distributed = {} if engine == "one" else {"ddp_backend": "gloo"}
    args = TrainingArguments(
        output_dir=str(out / f"run-{engine}"), use_cpu=True, report_to=[], seed=0,
        max_steps=STEPS, learning_rate=1e-2, save_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=PER_RANK_BATCH * (2 if engine == "one" else 1),
        max_grad_norm=0.0, lr_scheduler_type="constant", **distributed)
    try:
        trainer = OptimHubTrainer(
            model=model, args=args, train_dataset=probe.dataset(), optim=case.optim,
            optim_args=case.optim_args, layerwise=case.layerwise,
            optim_target_modules=TARGETS if case.targets else None)
        trainer.train()
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"weights": _full_weights(trainer.model)}


def _full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter whole (a shard's ``full_tensor()`` gathers: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in model.named_parameters()}


def _worker(rank: int, engine: str, cases: list[str], model_dir: Path, out: Path) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if engine == "one":
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
    else:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    found = {}
    for label in cases:
        matrix.seed_everything()
        found[label] = _train(CASES[label], engine, model_dir, out)
    if rank == 0:
        torch.save(found, out / f"{engine}.pt")
    import torch.distributed as dist

    if dist.is_initialized():  # leave together: a rank still in gloo's threads at
        dist.barrier()  # interpreter exit, its peer gone, hung until the deadline in CI
        dist.destroy_process_group()


def _reference(label: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if CASES[label].reference is None:
        return None
    engine, _, other = CASES[label].reference.partition(":")
    return runs[engine][other or label]


def judge(label: str, runs: dict[str, dict[str, Any]]) -> tuple[str, Any]:
    """The FSDP2 run of ``label`` against its reference: ``("equal", 0.0)``,
    ``("close", difference)``, ``("refused", message)`` or ``("fails", message)``."""
    fsdp2 = runs["fsdp2"][label]
    if "error" in fsdp2:
        refused = fsdp2["error"].startswith("CapabilityError")
        return ("refused" if refused else "fails", fsdp2["error"])
    reference = _reference(label, runs)
    if reference is None:
        return ("fails", "trained, but it was expected to be refused")
    if "error" in reference:
        return ("fails", f"the reference failed: {reference['error']}")
    difference = max(float((reference["weights"][n] - w).abs().max())
                     for n, w in fsdp2["weights"].items())
    return ("equal" if difference == 0 else "close", difference)


def measure(cases: list[str] | None = None, timeout_s: float = 300) -> dict[str, tuple[str, Any]]:
    """Every case's FSDP2 outcome (``judge``), from one spawn per engine."""
    labels = list(cases or CASES)
    needed: dict[str, list[str]] = {engine: [] for engine in ENGINES}
    needed["fsdp2"] = labels
    for label in labels:
        if CASES[label].reference is not None:
            engine, _, other = CASES[label].reference.partition(":")
            needed[engine].append(other or label)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model_dir = out / "model"
        save_model(model_dir)
        runs: dict[str, dict[str, Any]] = {}
        for engine, wanted in needed.items():
            if not wanted:
                continue
            matrix.spawn(lambda rank, engine=engine, wanted=wanted: [
                sys.executable, __file__, "--worker", str(rank), engine,
                SEPARATOR.join(dict.fromkeys(wanted)), str(model_dir), str(out)],
                out, timeout_s, world_size=1 if engine == "one" else 2)
            runs[engine] = torch.load(out / f"{engine}.pt", weights_only=True)
    return {label: judge(label, runs) for label in labels}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--cases", help="comma-separated case labels (default: all)")
    args = parser.parse_args()
    if args.worker:
        rank, engine, cases, model_dir, out = args.worker
        _worker(int(rank), engine, cases.split(SEPARATOR), Path(model_dir), Path(out))
        sys.stdout.flush()
        os._exit(0)  # the results are saved: no wait on leftover threads at shutdown
    chosen = args.cases.split(",") if args.cases else None
    for label, (outcome, detail) in measure(chosen).items():
        shown = f"{detail:.2g}" if isinstance(detail, float) else str(detail)[:160]
        print(f"{label:50} {outcome:8} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(matrix.run_as_worker(main) if "--worker" in sys.argv else main())
