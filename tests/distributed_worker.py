"""One rank of tests/test_distributed.py, run as a script: one process per rank.

    python tests/distributed_worker.py RANK WORLD_SIZE OUT_DIR

The parent sets MASTER_ADDR and MASTER_PORT. Every run below happens inside the same pair of
processes, because starting a process and importing the backends costs seconds; one spawn per
optimizer would dominate the test's time.

1. **DDP**: for every optimizer in ``CASES``, a fresh ``make_tiny_lm(width=64)`` is wrapped in
   ``DistributedDataParallel`` (gloo, CPU). The optimizer is built by
   ``optimhub.create_optimizer`` from the *wrapped* model, and ``STEPS`` steps are driven by
   ``optimhub.drive``. Rank r trains on its half of each step's global batch, and DDP averages
   the gradients.
2. **FSDP2** (``fully_shard``, one shard per rank): the plain elementwise optimizers, which
   are expected to work, including layerwise mode, GaLore and APOLLO. Also bnb 8-bit, which
   the hub refuses on DTensor parameters; for it the error is recorded.
3. **Evidence for the DDP refusals**: ``lomo_optim.Lomo`` is built by hand on a DDP model
   (the hub refuses it, capability ``no_ddp``), and a layerwise ``adamw_torch`` is built on
   the model before the model is wrapped (so the hub cannot see the wrapper). This records
   whether their in-backward updates leave the replicas different.
4. **Single process** references for every optimizer in ``CASES``, with no collectives. They
   are split between the ranks so that the two cores compute them in parallel:
   ``"accumulated"`` feeds the two half-batches as two micro-batches with gradient
   accumulation, and ``"global"`` feeds the whole global batch at once (see ``train``).

Every rank saves its results with ``torch.save``, as plain dicts of tensors, strings and ints.
The test reads them with ``weights_only=True``, so it never imports a backend itself.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from conftest import lm_batch, lm_loss, make_tiny_lm  # tests/ is sys.path[0] for a script
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import optimhub
from optimhub.backends import is_installed

STEPS = 5
#: The global batch of every step; each of the two ranks gets half of it.
GLOBAL_BATCH = 8
WIDTH = 64  # q/k/v/o_proj are 64x64 = 4096 elements: bnb's min_8bit_size, so 8-bit state
VOCAB = 32
LENGTH = 8
#: Collectives fail after this instead of hanging when the other rank died.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)

#: name -> create_optimizer arguments. The hyperparameters are not the defaults, so a dropped
#: one would show, and weight decay exercises the decay / no-decay groups.
CASES: dict[str, dict[str, Any]] = {
    "adamw_torch": {"learning_rate": 1e-3, "weight_decay": 0.01},
    "adamw_bnb_8bit": {"learning_rate": 1e-3, "weight_decay": 0.01},
    "schedule_free_adamw": {"learning_rate": 2e-3, "weight_decay": 0.01, "warmup_steps": 2},
    "apollo_adamw": {
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "optim_target_modules": [r".*\.attn\..*", r".*\.mlp\..*"],
        # rank 4 < 64; the projection is refreshed every 2nd step: at steps 0, 2 and 4 of 5
        "optim_args": "rank=4,update_proj_gap=2",
    },
    # One SVD, at step 0 (update_proj_gap stays 200): an SVD refresh on a gradient that
    # differs by rounding can rotate the subspace (two single-process summation orders
    # then differ by 2.4e-4 after refreshes at steps 2 and 4), which would swamp the
    # comparison with one process on the whole batch.
    "galore_adamw": {
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "optim_target_modules": [r".*\.attn\..*", r".*\.mlp\..*"],
        "optim_args": "rank=4",
    },
    # A routed optimizer: torch's Muon on the matrices, AdamW on the rest, as one object.
    "muon": {"learning_rate": 1e-3, "weight_decay": 0.01},
}
#: The parameter whose APOLLO projector seed is recorded (the seed advances at every refresh).
APOLLO_PROBE = "layers.0.attn.q_proj.weight"

#: FSDP2 run -> (optimizer name, create_optimizer arguments). Expected to work: the
#: elementwise optimizers, layerwise mode too (FSDP2 runs post-accumulate-grad hooks on the
#: sharded parameter *after* the reduce-scatter), and GaLore (its SVD of a DTensor gradient
#: yields a replicated DTensor projector), and APOLLO (the hub steps its projected weights as
#: whole tensors, since its plain-tensor random projector cannot meet a DTensor gradient).
#: Expected to be refused before building (no_fsdp2): bnb (its custom optimizer ops have no
#: DTensor sharding rule).
FSDP2_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "adamw_torch": ("adamw_torch", CASES["adamw_torch"]),
    "adamw_torch-layerwise": ("adamw_torch", {**CASES["adamw_torch"], "layerwise": True}),
    "schedule_free_adamw": ("schedule_free_adamw", CASES["schedule_free_adamw"]),
    "galore_adamw": ("galore_adamw", CASES["galore_adamw"]),
    "apollo_adamw": ("apollo_adamw", CASES["apollo_adamw"]),
    "adamw_bnb_8bit": ("adamw_bnb_8bit", CASES["adamw_bnb_8bit"]),
}


def global_batch(step: int) -> torch.Tensor:
    return lm_batch(seed=100 + step, vocab=VOCAB, batch=GLOBAL_BATCH, length=LENGTH)


def local_batch(step: int, rank: int, world_size: int) -> torch.Tensor:
    return global_batch(step).chunk(world_size)[rank]


def new_model() -> nn.Module:
    """The tiny LM at width 64, with the k_proj biases frozen.

    A key bias adds the same q.b to every score of a query, and softmax ignores that. Its
    gradient is therefore exactly zero in exact arithmetic, and pure rounding noise (about
    1e-10) in floats. Adam divides that noise by its own RMS, so it moves the bias by about
    lr per step, in a direction chosen by rounding alone. Two summation orders then disagree
    there by about lr: measured 4.8e-5 after 5 steps at lr 1e-3. Freezing the bias keeps it
    out of the comparison.
    """
    model = make_tiny_lm(vocab=VOCAB, width=WIDTH, layers=2)
    for layer in model.layers:
        layer.attn["k_proj"].bias.requires_grad_(False)
    return model


def _inner(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole parameters, under their unwrapped names: DDP's ``module.`` prefix is
    dropped, and FSDP2 shards are gathered (a collective: every rank must call this)."""
    result = {}
    for name, param in _inner(model).named_parameters():
        tensor = param.detach()
        if hasattr(tensor, "full_tensor"):  # a DTensor shard (FSDP2)
            tensor = tensor.full_tensor()
        result[name] = tensor.clone()
    return result


def state_facts(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """For each parameter name: the dtypes of its optimizer-state tensors, and, for APOLLO,
    its current projector seed (a plain int, so that the file loads with weights_only=True)."""
    names = {id(p): n for n, p in _inner(model).named_parameters()}
    dtypes: dict[str, list[str]] = {}
    seeds: dict[str, int] = {}
    for param, state in optimizer.state.items():
        name = names[id(param)]
        dtypes[name] = sorted(
            f"{key}:{value.dtype}".replace("torch.", "")
            for key, value in state.items() if isinstance(value, torch.Tensor)
        )
        projector = state.get("projector")
        if projector is not None and hasattr(projector, "seed"):
            seeds[name] = int(projector.seed)
    return {"state_dtypes": dtypes, "projector_seeds": seeds}


def _has_fsdp2() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        return False
    return True


def _fully_sharded(model: nn.Module) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def train(name: str, arguments: dict[str, Any], *, mode: str, rank: int = 0,
          world_size: int = 2) -> dict[str, Any]:
    """Run ``STEPS`` steps of ``name``. ``mode`` is one of:

    - ``"ddp"`` / ``"fsdp2"``: this rank's part of a distributed run, on its half of each
      global batch;
    - ``"accumulated"``: one process that feeds the global batch as ``world_size``
      micro-batches with gradient accumulation. These are the same half-batch gradients
      that DDP averages, summed in the same order, so the result should equal DDP's bit for
      bit;
    - ``"global"``: one process that feeds the whole global batch in one forward pass (the
      mean loss over it). The gradient is the same up to the order of the floating-point
      sums.
    """
    model: nn.Module = new_model()
    if mode == "ddp":
        model = DistributedDataParallel(model)
    elif mode == "fsdp2":
        model = _fully_sharded(model)
    optimizer = optimhub.create_optimizer(name, model, arguments)
    accumulation = world_size if mode == "accumulated" else 1
    driver = optimhub.drive(optimizer, model=model, gradient_accumulation_steps=accumulation)
    seeds: list[int] = []
    for step in range(STEPS):
        if mode in ("ddp", "fsdp2"):
            micro_batches = [local_batch(step, rank, world_size)]
        elif mode == "accumulated":
            micro_batches = list(global_batch(step).chunk(world_size))
        else:
            micro_batches = [global_batch(step)]
        for tokens in micro_batches:
            driver.backward(lm_loss(model, tokens))
            driver.step()
        seeds.append(state_facts(optimizer, model)["projector_seeds"].get(APOLLO_PROBE, -1))
    result: dict[str, Any] = {"train": weights(model), "probe_seeds": seeds}
    result.update(state_facts(optimizer, model))
    driver.finish()  # schedule-free: switch to the averaged (x) weights; a no-op otherwise
    result["final"] = weights(model)
    return result


def fsdp2_run(run: str, rank: int, world_size: int) -> dict[str, Any]:
    """One ``FSDP2_RUNS`` entry. Any error is recorded as ``"error"``. Every rank raises at the
    same point (the optimizer step, after the collectives of backward), so the ranks stay in
    step."""
    name, arguments = FSDP2_RUNS[run]
    try:
        result = train(name, arguments, mode="fsdp2", rank=rank, world_size=world_size)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": "", "train": result["train"], "final": result["final"]}


def lomo_under_ddp(rank: int, world_size: int) -> dict[str, Any]:
    """LOMO built by hand on a DDP model (the hub refuses this): what each replica ends with."""
    from lomo_optim import Lomo

    model = DistributedDataParallel(new_model())
    optimizer = Lomo(model, lr=1e-2)
    for step in range(STEPS):
        optimizer.fused_backward(lm_loss(model, local_batch(step, rank, world_size)), 1e-2)
    return {"final": weights(model)}


def layerwise_built_before_ddp(rank: int, world_size: int) -> dict[str, Any]:
    """``adamw_torch`` in layerwise mode, built on the model *before* it is wrapped in DDP.

    The hub cannot refuse this, because it never sees the wrapper. The result shows why it
    refuses when it does see one."""
    model = new_model()
    optimizer = optimhub.create_optimizer("adamw_torch", model,
                                          {**CASES["adamw_torch"], "layerwise": True})
    wrapped = DistributedDataParallel(model)
    driver = optimhub.drive(optimizer, model=wrapped)
    for step in range(STEPS):
        driver.backward(lm_loss(wrapped, local_batch(step, rank, world_size)))
        driver.step()
    return {"final": weights(wrapped)}


def missing_backend(name: str) -> str | None:
    """Why ``name`` cannot be built here (its backend is not installed), or None."""
    spec = optimhub.get_spec(name)
    if is_installed(spec):
        return None
    return f"{spec.distribution} is not installed: {spec.install_command}"


def main(rank: int, world_size: int, out_dir: Path) -> None:
    torch.set_num_threads(1)  # two processes on two cores; this also fixes the order of sums
    missing = {}
    for name in {**CASES, **dict(FSDP2_RUNS.values())}:
        reason = missing_backend(name)
        if reason is not None:
            missing[name] = reason
            if rank == 0:
                (out_dir / f"skipped-{name}.txt").write_text(reason)
    available = {name: arguments for name, arguments in CASES.items() if name not in missing}
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        # Every rank runs the same names, in the same order.
        for name, arguments in available.items():
            result = train(name, arguments, mode="ddp", rank=rank, world_size=world_size)
            torch.save(result, out_dir / f"ddp-{name}-rank{rank}.pt")
        if _has_fsdp2():
            for run, (name, _) in FSDP2_RUNS.items():
                if name not in missing:
                    torch.save(fsdp2_run(run, rank, world_size),
                               out_dir / f"fsdp2-{run}-rank{rank}.pt")
        torch.save(layerwise_built_before_ddp(rank, world_size),
                   out_dir / f"ddp-layerwise-rank{rank}.pt")
        if importlib.util.find_spec("lomo_optim") is not None:
            torch.save(lomo_under_ddp(rank, world_size), out_dir / f"ddp-lomo-rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    references = [(name, mode) for name in available for mode in ("accumulated", "global")]
    for name, mode in references[rank::world_size]:
        result = train(name, available[name], mode=mode, world_size=world_size)
        torch.save(result, out_dir / f"{mode}-{name}.pt")


if __name__ == "__main__":
    rank_arg, world_arg, out_arg = sys.argv[1:4]
    try:
        main(int(rank_arg), int(world_arg), Path(out_arg))
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)  # do not wait for the gloo threads of a broken group
