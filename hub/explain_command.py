"""``optimhub explain NAME|ROUTES --model SPEC``: the command-line glue around
:func:`optimhub.explain.explain`.

The model is a ``llama:`` layer-shape spec (:mod:`optimhub.model_shapes`), built on the
meta device, so a 7B configuration is explained without allocating its weights. Bad input
exits with status 2 through the CLI's error handling, before anything is built.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

__all__ = ["add_explain_parser", "run"]


def add_explain_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the ``explain`` subcommand through the CLI's ``add`` (its subparser maker)."""
    explain = add(
        "explain", help="which optimizer steps each parameter, with its lr, decay and state",
        description="For every trainable parameter of the model: its role, the route and "
        "optimizer that will step it, its learning rate, weight decay and optimizer state, "
        "then totals per route. NAME is an optimizer name or a route set such as "
        "'matrix, conv -> muon_torch; * -> adamw_torch'. Nothing is built.",
    )
    explain.add_argument("name", metavar="NAME|ROUTES")
    explain.add_argument("--model", required=True, metavar="SPEC",
                         help="layer shapes, e.g. llama:hidden=4096,layers=32,vocab=32000,"
                         "intermediate=11008,heads=32 (built on the meta device)")
    explain.add_argument("--optim-args", metavar="TEXT", help="options of NAME (a preset's "
                         "too, e.g. muon's 'fallback=adamw_bnb_8bit')")
    explain.add_argument("--lr", type=float, metavar="LR", help="learning_rate")
    explain.add_argument("--weight-decay", type=float, metavar="WD", help="weight_decay")
    explain.add_argument("--weight-decay-policy", metavar="POLICY",
                         help="hf (default), matrices or matrices_and_embeddings")
    explain.add_argument("--layer-decay", type=float, metavar="F",
                         help="timm's layer-wise lr decay, in (0, 1]")
    explain.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                         help="parameter dtype (default fp32, or the --model spec's)")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .explain import explain
    from .model_shapes import parse_model_spec

    model = parse_model_spec(args.model, dtype=args.dtype).build()
    overrides: dict[str, Any] = {"optim_args": args.optim_args}
    given = {"learning_rate": args.lr, "weight_decay": args.weight_decay,
             "weight_decay_policy": args.weight_decay_policy, "layer_decay": args.layer_decay}
    overrides.update({k: v for k, v in given.items() if v is not None})
    result = explain(args.name, model, **overrides)
    if args.json:
        print(json.dumps({**result.as_dict(), "model": args.model}, indent=2))
    else:
        print(result)
    return 0
