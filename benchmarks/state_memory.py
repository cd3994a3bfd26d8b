"""Optimizer state memory of every runnable name, measured, built directly and estimated.

On one reference model (a two-layer Llama-shaped decoder, hidden 256, from
``optimhub.model_shapes.LlamaShaped``: big enough that 8-bit quantization applies), each name
is built twice, through the hub and by hand (``benchmarks/direct.py``: the backend class
constructed as its documentation says), stepped twice, and measured with
``optimhub.testing.state_bytes`` (every tensor the optimizer object holds, wherever the
backend keeps it). Columns, in bytes of state per trainable parameter:

- ``hub``: built by ``optimhub.create_optimizer`` (driven by ``optimhub.drive``);
- ``direct``: built by hand; ``hub-direct`` is the difference in bytes: 0, except for
  GaLore, whose by-hand projector (galore-torch's own) keeps the whole SVD factor of a
  float32 gradient alive behind a view where the hub's keeps the rank rows / columns it
  uses (the difference must be exactly that surplus, ``direct.whole_factor_surplus``);
- ``estimate``: ``optimhub.estimate`` before anything was built, and its error;
- ``vs AdamW``: ``hub`` / 8.0 (AdamW with fp32 moments).

    .venv/bin/python benchmarks/state_memory.py [--names adamw_torch,galore_adamw] [--json]

Always exits 0: it measures, the tests judge (tests/test_state_memory.py, test_estimate.py).
torchao compiles its step per tensor shape: expect a minute for its two names on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from direct import (
    DIRECT,
    batches,
    hub_kwargs,
    hub_name,
    matrices_only,
    measure_direct,
    measure_hub,
    quiet_backend_warnings,
    runnable_names,
    whole_factor_surplus,
)

import optimhub
from optimhub.model_shapes import parse_model_spec

REFERENCE = "llama:hidden=256,layers=2,vocab=2048,intermediate=688,heads=8"
RANK = 32
ADAMW = 8.0


def measure(name: str) -> dict[str, Any]:
    shape = parse_model_spec(REFERENCE)
    data = batches(shape.vocab)
    row: dict[str, Any] = {"name": name}
    started = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = shape.build("cpu")
        if optimhub.get_spec(name).has("matrix_only"):
            model = matrices_only(model)
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        row["estimate_bytes"] = optimhub.estimate(
            hub_name(name), model, **hub_kwargs(name, RANK)).state_bytes
        row["hub_bytes"] = measure_hub(name, model, data, RANK)
        if name in DIRECT:
            torch.manual_seed(0)
            other = shape.build("cpu")
            if optimhub.get_spec(name).has("matrix_only"):
                other = matrices_only(other)
            row["direct_bytes"] = measure_direct(name, other, data, RANK)
            row["factor_surplus"] = whole_factor_surplus(name, model, RANK)
        row["params"] = count
    except Exception as exc:  # a table row, not a crash: the tests judge
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    headers = ["name", "hub B/param", "direct B/param", "hub-direct (B)", "estimate B/param",
               "estimate err", "vs AdamW"]
    lines = []
    for row in rows:
        if "error" in row:  # listed under the table (report), not in a column
            continue
        count, hub = row["params"], row["hub_bytes"]
        direct = row.get("direct_bytes")
        estimate = row["estimate_bytes"]
        error = "exact" if estimate == hub else (
            f"{(estimate - hub) / hub:+.2%}" if hub else f"{estimate - hub:+,} B")
        lines.append([
            row["name"], f"{hub / count:.4f}",
            "-" if direct is None else f"{direct / count:.4f}",
            "-" if direct is None else f"{hub - direct:,}",
            f"{estimate / count:.4f}", error, f"{hub / count / ADAMW:.3f}",
        ])
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in lines)]) for i, h in enumerate(headers)]
    out = []
    for cells in [headers, ["-" * w for w in widths], *lines]:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(out)


def report(data: dict[str, Any]) -> str:
    """The table and its summary lines, from what ``--json`` writes."""
    rows = data["rows"]
    count = next((r["params"] for r in rows if "params" in r), 0)
    lines = [f"reference model: {data['model']} ({count:,} parameters, fp32); low-rank names: "
             f"rank {data['rank']} on the attention and MLP weights; state after 2 steps", "",
             table(rows)]
    compared = [r for r in rows if "direct_bytes" in r]
    equal = [r["name"] for r in compared if r["hub_bytes"] == r["direct_bytes"]]
    saving = [r["name"] for r in compared if r["factor_surplus"]
              and r["hub_bytes"] == r["direct_bytes"] - r["factor_surplus"]]
    other = [r["name"] for r in compared if r["name"] not in equal and r["name"] not in saving]
    inexact = [r["name"] for r in rows if "error" not in r
               and r["estimate_bytes"] != r["hub_bytes"]]
    lines.append(f"\nhub == direct for {len(equal)} names")
    if saving:
        lines.append(f"hub == direct minus the unused part of galore-torch's SVD factors for "
                     f"{len(saving)} names: {', '.join(saving)}")
    if other:
        lines.append(f"DIFFERENT: {', '.join(other)}")
    measured = [r for r in rows if "error" not in r]
    lines.append(f"estimate == measured for {len(measured) - len(inexact)} names"
                 + (f"; NOT for {', '.join(inexact)}" if inexact else ""))
    for row in rows:
        if "error" in row:
            lines.append(f"not measured: {row['name']}: {row['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", help="comma-separated names (default: every runnable one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--render", metavar="FILE",
                        help="print the table of a saved --json run (measure nothing)")
    args = parser.parse_args(argv)
    if args.render:
        print(report(json.loads(Path(args.render).read_text())))
        return 0
    quiet_backend_warnings()
    names = args.names.split(",") if args.names else list(runnable_names())
    rows = []
    for name in names:
        rows.append(measure(name))
        print(f"  measured {name} ({rows[-1]['seconds']} s)", file=sys.stderr, flush=True)
    data = {"model": REFERENCE, "rank": RANK, "rows": rows}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
