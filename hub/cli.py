"""The ``optimhub`` command line: ``optimhub list`` for now (info, plugins, doctor,
estimate and compare come with the user-facing issue)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimhub", description="The memory-efficient PyTorch optimizers, one front door."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list optimizer names")
    listing.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'adamw*'")
    listing.add_argument("--capability", action="append", help="only names with this capability")
    listing.add_argument("--available", action="store_true", help="only names usable here")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _list(args: argparse.Namespace) -> int:
    from .backends import is_installed
    from .listing import list_optimizers

    specs = list_optimizers(args.pattern, capability=args.capability,
                            available=True if args.available else None)
    rows = [
        {
            "name": s.name,
            "backend": s.distribution,
            "installed": is_installed(s),
            "capabilities": sorted(c.value for c in s.capabilities),
            "summary": s.summary,
        }
        for s in specs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        mark = "yes" if row["installed"] else "no "
        print(f"{row['name']:<{width}}  {row['backend']:<14} {mark}  {row['summary']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    from .errors import OptimHubError

    try:
        return {"list": _list}[args.command](args)
    except OptimHubError as exc:
        print(f"optimhub: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
