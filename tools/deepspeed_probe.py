"""Probe: do the hub's optimizers run under DeepSpeed ZeRO 1-3 on this CPU machine, and do
they match one process? Not part of the test suite (DeepSpeed is not a dependency).

    pip install deepspeed            # 0.19.8 was probed; its CPU accelerator uses gloo
    .venv/bin/python tools/deepspeed_probe.py [--names adamw_torch,apollo_adamw]

Two processes, the model, data, settings and one-process reference of
tools/distributed_matrix.py (5 steps, lr 1e-2); the hub builds the client optimizer and
``deepspeed.initialize(model=..., optimizer=...)`` wraps it with
``zero_allow_untested_optimizer``. Prints, per stage and name, the largest difference of
the final weights from one process, or the error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_matrix as matrix

NAMES = ("adamw_torch", "adamw_bnb_8bit", "apollo_adamw", "galore_adamw",
         "schedule_free_adamw", "muon", "adafactor")


def _worker(rank: int, names: list[str], out: Path) -> None:
    import deepspeed

    import optimhub
    from optimhub.testing import _config

    warnings.simplefilter("ignore")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    deepspeed.init_distributed(dist_backend="gloo")
    references = {n: matrix._train(n, None, None) for n in names}
    results = {}
    for stage in (1, 2, 3):
        for name in names:
            try:
                torch.manual_seed(0)
                model = matrix.new_model()
                spec = optimhub.get_spec(name)
                optimizer = _config(spec, matrix.STEPS, None, None, None, 0.0, "cpu",
                                    {}).build(model)
                if hasattr(optimizer, "train"):
                    optimizer.train()  # schedule-free
                config = {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2,
                          "zero_optimization": {"stage": stage},
                          "zero_allow_untested_optimizer": True}
                engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                  config=config)
                for step in range(matrix.STEPS):
                    engine.backward(matrix._loss_fn(engine, step, rank)())
                    engine.step()
                params = [p for _, p in engine.module.named_parameters()]
                with deepspeed.zero.GatheredParameters(params, enabled=stage == 3):
                    weights = {n: p.detach().clone()
                               for n, p in engine.module.named_parameters()}
                difference = matrix._max_difference(weights, references[name]["train"])
                results[f"zero{stage}/{name}"] = f"trained; {difference:.2e} from one process"
            except Exception as exc:
                results[f"zero{stage}/{name}"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    if rank == 0:
        (out / "results.json").write_text(json.dumps(results, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--names", default=",".join(NAMES))
    args = parser.parse_args(argv)
    names = args.names.split(",")
    if args.worker:
        _worker(int(args.worker[0]), names, Path(args.worker[1]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        matrix.spawn(lambda rank: [sys.executable, __file__, "--worker", str(rank), str(out),
                                   "--names", ",".join(names)], out, 900)
        print((out / "results.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(matrix.run_as_worker(main) if "--worker" in sys.argv else main())
