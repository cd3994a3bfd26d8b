"""Resharding checkpoints: ``torch.distributed.checkpoint`` (DCP) saved at one world size and
loaded at another, for the hub's optimizers under FSDP2.

    .venv/bin/python tools/distributed_checkpoint.py [--names adamw_torch,apollo_adamw]

(a name may also be a route set without commas, e.g.
``"matrix -> adamw_torch(layerwise=true); * -> adamw_torch"``, built at the matrix's lr)

Three phases, each one spawn (the same model, data and settings as
tools/distributed_matrix.py, 4 steps, the checkpoint after step 2):

1. **one process**: trains, saves a DCP checkpoint after step 2, and goes on to step 4
   (the uninterrupted run);
2. **two processes, FSDP2**: the same with a sharded model (saving its shards), and, from
   phase 1's checkpoint, a fresh FSDP2 model and optimizer that load it (1 -> 2) and train
   steps 3 and 4;
3. **one process**: a fresh model and optimizer load phase 2's checkpoint (2 -> 1) and
   train steps 3 and 4.

The state goes through ``optimhub.distributed_checkpoint.save`` / ``.load``: DCP's own
``get_state_dict`` / ``set_state_dict`` (parameter names as keys, DTensors where sharded),
as torchtitan and accelerate save FSDP2 models, plus the hub's stamp as one more entry of
the checkpoint, checked before anything loads. ``measure`` returns, per name, each run's
final weights' largest difference from the uninterrupted one-process run;
tests/test_distributed_checkpoint.py asserts that they are all 0 (bit for bit). For
``adamw_torch`` it also loads both checkpoints into ``sgd`` (the stamp must refuse them,
at the other world size, leaving the weights untouched).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_matrix as matrix

#: One name per kind of optimizer state: plain Adam moments (sharded like the parameter),
#: low-rank projector state (APOLLO: whole tensors and a projector object), layerwise
#: mode (one optimizer per parameter, state keyed by parameter name), and schedule-free
#: (train/eval modes: the priming step must be taken in train mode), heavyball's nested
#: per-transform state (dicts under int keys, a Python set among the values), a routed
#: optimizer (Muon's routes: one state in torch's layout over two route optimizers), and
#: heavyball's PSGD (an optimizer-wide entry outside state and groups, a priming step its
#: automatic scale refuses, scalars its bucketing reshapes, float64 state, random draws).
NAMES = ("adamw_torch", "apollo_adamw", "adamw_torch_layerwise", "schedule_free_adamw",
         "heavyball_adamw", "muon", "heavyball_psgdkron")
STEPS = 4
SAVE_AFTER = 2
#: The name whose checkpoints are also loaded into ``sgd`` (1 -> 2 and 2 -> 1), to see the
#: stamp refuse them.
REFUSED_FROM = "adamw_torch"


def _build(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    from optimhub import create_optimizer, get_spec
    from optimhub.testing import DEFAULT_LR, _config

    if "->" in name:  # a route set (no commas: --names splits on them), at the matrix's lr
        return create_optimizer(name, model, lr=DEFAULT_LR)

    layerwise = name.endswith("_layerwise") and name not in _catalog()
    base = name.removesuffix("_layerwise") if layerwise else name
    spec = get_spec(base)
    # The distributed matrix's settings for the name (tests/catalog_settings.py, where an
    # algorithm needs an option on the tiny model).
    settings = dict(matrix._catalog_settings().get(base, {}))
    if layerwise:
        settings["layerwise"] = True
    return _config(spec, STEPS, settings.pop("lr", None), settings.pop("optim_args", None),
                   None, 0.0, "cpu", settings).build(model)


def _folder(name: str) -> str:
    """A name as a folder name (a route set has spaces, '->', '*' and ';')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _catalog() -> set[str]:
    import optimhub

    return {s.name for s in optimhub.list_optimizers()}


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range,
           rank: int | None) -> None:
    from optimhub import drive

    driver = drive(optimizer, model=model)
    for step in steps:
        driver.backward(matrix._loss_fn(model, step, rank)())
        driver.step()


def _save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, where: Path) -> None:
    """The hub's DCP checkpoint, and this rank's RNG state next to it, as a training loop
    saves it (the HF Trainer's ``rng_state_<rank>.pth``, accelerate's ``save_state``):
    heavyball's Muon family, Scion and KL-Shampoo draw from torch's global generator in
    every step (stochastic rounding), so without it their resumed run differs (7.6e-4 for
    ``heavyball_muon``, measured) whatever the optimizer state."""
    from optimhub import distributed_checkpoint

    distributed_checkpoint.save(model, optimizer, where)
    torch.save(torch.get_rng_state(), where / f"rng-{_rank()}.pt")


def _load(model: torch.nn.Module, optimizer: torch.optim.Optimizer, where: Path) -> None:
    """Load the checkpoint, then this rank's RNG state (rank 0's where the checkpoint was
    saved by fewer ranks): after the load, whose priming step may draw from it."""
    from optimhub import distributed_checkpoint

    distributed_checkpoint.load(model, optimizer, where)
    rng = where / f"rng-{_rank()}.pt"
    torch.set_rng_state(torch.load(rng if rng.exists() else where / "rng-0.pt"))


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _refusal(engine: str | None, where: Path) -> str:
    """Loading ``where`` (an ``adamw_torch`` checkpoint) into ``sgd``: the hub's error, and
    whether the fresh model's weights stayed as they were."""
    torch.manual_seed(1)
    model = matrix.new_model()
    if engine is not None:
        model = matrix._wrapped(engine, model)
    optimizer = _build("sgd", model)
    before = matrix._weights(model)
    try:
        _load(model, optimizer, where)
    except Exception as exc:
        untouched = matrix._max_difference(matrix._weights(model), before) == 0.0
        return f"{type(exc).__name__} (weights untouched: {untouched}): {exc}"[:400]
    return "loaded"


def _run(name: str, engine: str | None, rank: int | None, out: Path, phase: int
         ) -> dict[str, Any]:
    """One name in one phase: the final weights of its runs, or the error."""
    result: dict[str, Any] = {}
    try:
        matrix.seed_everything()
        model = matrix.new_model()
        if engine is not None:
            model = matrix._wrapped(engine, model)
        optimizer = _build(name, model)
        if phase == 3:  # 2 -> 1
            if name == REFUSED_FROM:
                result["refused"] = _refusal(engine, out / _folder(name) / "saved-by-2")
            _load(model, optimizer, out / _folder(name) / "saved-by-2")
            _train(model, optimizer, range(SAVE_AFTER, STEPS), rank)
            result["resumed"] = matrix._weights(model)
            return result
        _train(model, optimizer, range(SAVE_AFTER), rank)
        _save(model, optimizer,
              out / _folder(name) / ("saved-by-1" if phase == 1 else "saved-by-2"))
        _train(model, optimizer, range(SAVE_AFTER, STEPS), rank)
        result["uninterrupted"] = matrix._weights(model)
        if phase == 2:  # 1 -> 2
            if name == REFUSED_FROM:
                result["refused"] = _refusal(engine, out / _folder(name) / "saved-by-1")
            matrix.seed_everything()
            model = matrix._wrapped(engine, matrix.new_model())
            optimizer = _build(name, model)
            _load(model, optimizer, out / _folder(name) / "saved-by-1")
            _train(model, optimizer, range(SAVE_AFTER, STEPS), rank)
            result["resumed"] = matrix._weights(model)
    except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"[:400]
    return result


def _worker(rank: int, world_size: int, phase: int, names: list[str], out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        engine = "fsdp2" if world_size > 1 else None
        results = {n: _run(n, engine, rank if engine else None, out, phase) for n in names}
        if world_size > 1:
            dist.barrier()
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    torch.save(results, out / f"phase{phase}-rank{rank}.pt")


def measure(names: list[str], workdir: Path | None = None, timeout_s: float = 600
            ) -> dict[str, dict[str, Any]]:
    """Per name: ``{"1->2": diff, "2->1": diff, "fsdp2": diff}`` (max |difference| from the
    uninterrupted one-process run) or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = Path(tmp)
        for phase, world_size in ((1, 1), (2, 2), (3, 1)):
            matrix.spawn(lambda rank, phase=phase, world_size=world_size: [
                sys.executable, __file__, "--worker", str(rank), str(world_size), str(out),
                "--phase", str(phase), "--names", ",".join(names)],
                out, timeout_s, world_size=world_size)
        one = torch.load(out / "phase1-rank0.pt", weights_only=True)
        two = torch.load(out / "phase2-rank0.pt", weights_only=True)
        back = torch.load(out / "phase3-rank0.pt", weights_only=True)
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        errors = [r["error"] for r in (one[name], two[name], back[name]) if "error" in r]
        if errors:
            result[name] = {"error": errors[0]}
            continue
        reference = one[name]["uninterrupted"]
        result[name] = {
            "fsdp2": matrix._max_difference(two[name]["uninterrupted"], reference),
            "1->2": matrix._max_difference(two[name]["resumed"], reference),
            "2->1": matrix._max_difference(back[name]["resumed"], reference),
        }
        if "refused" in two[name]:
            result[name]["refused 1->2"] = two[name]["refused"]
            result[name]["refused 2->1"] = back[name]["refused"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("RANK", "WORLD", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--names", default=",".join(NAMES))
    args = parser.parse_args(argv)
    names = args.names.split(",")
    if args.worker:
        rank, world_size, out = args.worker
        _worker(int(rank), int(world_size), args.phase, names, Path(out))
        return 0
    for name, cell in measure(names).items():
        print(f"{name:28} {cell}")
    return 0


if __name__ == "__main__":
    sys.exit(matrix.run_as_worker(main) if "--worker" in sys.argv else main())
