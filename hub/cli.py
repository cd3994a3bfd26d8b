"""The ``optimhub`` command line: see what is available, what an optimizer needs, and
what is wrong with this machine, before a GPU-hour is spent.

Every listing takes ``--json``. Only ``doctor`` imports backends (that is its job); the
others read specs alone, so they answer in well under a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import OptimHubError

Command = Callable[[argparse.Namespace], int]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimhub",
        description="The memory-efficient PyTorch optimizers, one front door.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list optimizer names (no backend imported)")
    listing.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'adamw*'")
    listing.add_argument("--pattern", dest="pattern_option", metavar="P",
                         help="the same pattern as an option, e.g. --pattern 'pto_ada*'")
    listing.add_argument("--backend", metavar="B",
                         help="only names of this backend (plugin, pip name or namespace)")
    listing.add_argument("--capability", action="append", metavar="C",
                         help="only names with this capability (repeatable)")
    listing.add_argument("--available", action="store_true", help="only names usable here")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="what one optimizer is and what it needs")
    info.add_argument("name")
    info.set_defaults(run=_info)

    plugins = commands.add_parser("plugins", help="loaded plugins and their load errors")
    plugins.set_defaults(run=_plugins)

    doctor = commands.add_parser("doctor", help="is every backend installed and usable here?")
    doctor.set_defaults(run=_doctor)

    _add_estimate_parser(commands)
    _add_compare_parser(commands)

    for sub in (listing, info, plugins, doctor):
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None and (isinstance(argv, str) or not isinstance(argv, Sequence)
                             or not all(isinstance(a, str) for a in argv)):
        raise TypeError(f"main() takes a list of str arguments, got {argv!r}")
    args = _build_parser().parse_args(argv)
    try:
        return args.run(args)
    except OptimHubError as exc:
        print(f"optimhub: error: {exc}", file=sys.stderr)
        return 2


# ---- list ------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    from .backends import is_installed
    from .listing import list_optimizers

    specs = list_optimizers(args.pattern_option or args.pattern, capability=args.capability,
                            available=True if args.available else None, backend=args.backend)
    rows = [
        {
            "name": s.name,
            "aliases": list(s.aliases),
            "backend": s.distribution,
            "installed": is_installed(s),
            "capabilities": sorted(c.value for c in s.capabilities),
            "summary": s.summary,
        }
        for s in specs
    ]
    if args.json:
        return _print_json(rows)
    print(_table(
        ["name", "backend", "installed", "capabilities", "summary"],
        [[r["name"] + "".join(f" ({a})" for a in r["aliases"]), r["backend"],
          "yes" if r["installed"] else "no", ",".join(r["capabilities"]) or "-", r["summary"]]
         for r in rows],
    ))
    print(f"\n{len(rows)} optimizers. `optimhub info NAME` explains one.")
    return 0


# ---- info ------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    from .backends import backend_status
    from .listing import get_spec

    spec = get_spec(args.name)
    status = backend_status(spec)
    data = {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "paper": spec.paper,
        "plugin": spec.plugin,
        "based_on": spec.base,
        "backend": {"distribution": spec.distribution, "import_name": spec.import_name,
                    "installed": status.installed, "version": status.version,
                    "usable_here": status.usable, "problem": status.problem,
                    "install": spec.install_command},
        "capabilities": {c.value: c.explanation for c in sorted(spec.capabilities)},
        "hyperparameters": sorted(spec.hyperparameters),
        "fixed": dict(spec.fixed),
        "optim_args": [_arg_row(a) for a in spec.args.values()],
        "example_python": _python_example(spec),
        "example_trainer": _trainer_example(spec),
    }
    if args.json:
        return _print_json(data)
    print(_info_text(data))
    return 0


def _arg_row(arg: Any) -> dict[str, Any]:
    return {
        "key": arg.name,
        "type": arg.type,
        "default": arg.default if arg.has_default else None,
        "default_is_backend": not arg.has_default,
        "allowed": arg.describe_allowed(),
        "target_group": arg.target_group,
        "doc": arg.doc,
    }


def _example_options(spec: Any) -> dict[str, str]:
    options: dict[str, str] = {}
    if spec.args:
        first = next(iter(spec.args.values()))
        if first.has_default:
            from .optim_args import format_optim_args

            options["optim_args"] = format_optim_args({first.name: first.default})
    if spec.has("target_modules"):
        options["optim_target_modules"] = '[r".*attn.*", r".*mlp.*"]'
    return options


def _python_example(spec: Any) -> str:
    options = _example_options(spec)
    extra = "".join(
        f", {k}={v if k == 'optim_target_modules' else repr(v)}" for k, v in options.items()
    )
    return (f'optimizer = optimhub.create_optimizer("{spec.name}", model, '
            f"lr=1e-3{extra})")


def _trainer_example(spec: Any) -> str:
    options = _example_options(spec)
    fields = "".join(
        f", {k}={v if k == 'optim_target_modules' else repr(v)}" for k, v in options.items()
    )
    return (
        "from optimhub.integrations.transformers import OptimHubTrainer\n"
        f'args = TrainingArguments(output_dir="out", learning_rate=1e-3{fields})\n'
        f'trainer = OptimHubTrainer(model=model, args=args, optim="{spec.name}", '
        "train_dataset=data)"
    )


def _info_text(data: dict[str, Any]) -> str:
    backend = data["backend"]
    lines = [f"{data['name']}: {data['summary']}"]
    if data["aliases"]:
        lines.append(f"aliases: {', '.join(data['aliases'])}")
    if data["based_on"]:
        lines.append(f"based on: {data['based_on']} (same backend and builder)")
    if data["paper"]:
        lines.append(f"paper: {data['paper']}")
    state = ("installed " + (backend["version"] or "") if backend["installed"]
             else "NOT installed")
    lines += [
        "",
        f"backend: {backend['distribution']} (import {backend['import_name']}), {state}",
        f"install: {backend['install']}",
    ]
    if backend["problem"]:
        lines.append(f"problem here: {backend['problem']}")
    lines += ["", "what your training loop must know:"]
    if data["capabilities"]:
        lines += [f"  - {text}" for text in data["capabilities"].values()]
    else:
        lines.append("  - nothing special: a plain optimizer (backward, step, zero_grad)")
    lines += ["", "takes from TrainingArguments: " + ", ".join(data["hyperparameters"])]
    if data["fixed"]:
        lines.append("pinned by this name: " + ", ".join(f"{k}={v!r}" for k, v in
                                                          data["fixed"].items()))
    lines += ["", "optim_args:"]
    if data["optim_args"]:
        lines.append(_table(
            ["key", "type", "default", "allowed", "doc"],
            [[a["key"] + (" *" if a["target_group"] else ""), a["type"],
              "(backend's)" if a["default_is_backend"] else repr(a["default"]),
              a["allowed"], a["doc"]] for a in data["optim_args"]],
            indent="  ",
        ))
        if any(a["target_group"] for a in data["optim_args"]):
            lines.append("  * applies to the target (low-rank) parameter group")
    else:
        lines.append("  (none)")
    lines += ["", "Python:", "  " + data["example_python"], "", "Hugging Face Trainer:"]
    lines += ["  " + line for line in data["example_trainer"].splitlines()]
    return "\n".join(lines)


# ---- plugins ---------------------------------------------------------------------------
def _plugins(args: argparse.Namespace) -> int:
    from .plugin_host import get_registry

    registry = get_registry()
    plugins = [
        {
            "name": p.name,
            "builtin": p.builtin,
            "distribution": p.distribution,
            "version": p.version,
            "optimizers": sorted(n for n, e in registry.entries.items()
                                 if e.plugin.name == p.name),
        }
        for p in registry.plugins
    ]
    failures = [
        {"plugin": f.plugin.name, "distribution": f.plugin.distribution,
         "version": f.plugin.version, "stage": f.stage, "message": f.message,
         "names": list(f.names)}
        for f in registry.failures
    ]
    if args.json:
        return _print_json({"plugins": plugins, "failures": failures})
    print(_table(
        ["plugin", "kind", "distribution", "optimizers"],
        [[p["name"], "built-in" if p["builtin"] else "entry point",
          f"{p['distribution']} {p['version']}" if p["distribution"] else "optimhub",
          ", ".join(p["optimizers"]) or "-"] for p in plugins],
    ))
    if failures:
        print("\nload errors:")
        for f in failures:
            where = f" ({f['distribution']} {f['version'] or ''})" if f["distribution"] else ""
            print(f"  - {f['plugin']}{where} failed at {f['stage']}: {f['message']}")
    else:
        print("\nno load errors")
    return 0


# ---- doctor ----------------------------------------------------------------------------
def _doctor(args: argparse.Namespace) -> int:
    from .backends import backend_status, cuda_available
    from .listing import list_optimizers
    from .plugin_host import get_registry

    device = "CUDA" if cuda_available() else "CPU only"
    backends: dict[tuple[str, str], list[Any]] = {}
    for spec in list_optimizers():
        backends.setdefault((spec.distribution, spec.import_name), []).append(spec)
    rows = []
    for (distribution, import_name), specs in sorted(backends.items()):
        statuses = {s.name: backend_status(s, import_it=True) for s in specs}
        first = next(iter(statuses.values()))
        unusable = {n: st.problem for n, st in statuses.items() if not st.usable}
        rows.append({
            "backend": distribution,
            "import_name": import_name,
            "installed": first.installed,
            "version": first.version,
            "importable": first.installed and not any(
                "importing" in (st.problem or "") for st in statuses.values()),
            "usable": sorted(set(statuses) - set(unusable)),
            "unusable": unusable,
            "fix": _fix(specs, unusable),
        })
    failures = [str(f) for f in get_registry().failures]
    if args.json:
        return _print_json({"device": device, "backends": rows, "plugin_failures": failures})
    print(f"device: {device}\n")
    print(_table(
        ["backend", "installed", "importable", "usable here", "fix"],
        [[r["backend"], r["version"] or "no", "yes" if r["importable"] else "no",
          f"{len(r['usable'])}/{len(r['usable']) + len(r['unusable'])}", r["fix"] or "-"]
         for r in rows],
    ))
    for row in rows:
        for name, problem in row["unusable"].items():
            print(f"  {name}: {problem}")
    for failure in failures:
        print(f"plugin fault: {failure}")
    return 0


def _fix(specs: list[Any], unusable: dict[str, str | None]) -> str:
    if not unusable:
        return ""
    spec = next(s for s in specs if s.name in unusable)
    problem = unusable[spec.name] or ""
    if problem.startswith("not installed") or "importing" in problem:
        return spec.install_command
    if "CUDA" in problem:
        return "run on a machine with an NVIDIA GPU and a CUDA build of torch"
    return "see below"


# ---- estimate --------------------------------------------------------------------------
def _add_estimate_parser(commands: Any) -> None:
    estimate = commands.add_parser(
        "estimate", help="bytes of optimizer state and gradients, before training",
        description="Optimizer state and peak gradient memory of NAME for a model, next to "
        "AdamW with fp32 state. Nothing is built and no backend is imported. Weights and "
        "activations are not counted.",
    )
    estimate.add_argument("name")
    model = estimate.add_mutually_exclusive_group(required=True)
    model.add_argument("--params", metavar="N", help="a bare parameter count (7B, 125M, "
                       "6.7e9), taken as 4096x4096 matrices; low-rank names need --model")
    model.add_argument("--model", metavar="SPEC", help="layer shapes, e.g. llama:hidden=4096,"
                       "layers=32,vocab=32000,intermediate=11008,heads=32,kv_heads=32,tied=false")
    estimate.add_argument("--optim-args", metavar="TEXT", help='e.g. "rank=128,proj=svd"')
    estimate.add_argument("--optim-target-modules", nargs="+", metavar="PATTERN",
                          help="target layers (list items, as HF; a lone 'all-linear' "
                          "selects every Linear)")
    estimate.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                          help="parameter dtype (default fp32, or the --model spec's)")
    estimate.add_argument("--layerwise", action="store_true",
                          help="one optimizer per parameter, stepped inside backward")
    estimate.add_argument("--json", action="store_true", help="machine-readable output")
    estimate.set_defaults(run=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    from .memory import estimate
    from .model_shapes import flat_model, parse_model_spec, parse_param_count
    from .targets import ALL_LINEAR

    if args.model is not None:
        shape = parse_model_spec(args.model, dtype=args.dtype)
        model: Any = shape.build()
        described = f"{args.model} ({shape.dtype})"
    else:
        count = parse_param_count(args.params)
        model = flat_model(count, args.dtype or "fp32")
        described = f"{count:,} parameters as 4096x4096 matrices ({args.dtype or 'fp32'})"
    patterns = args.optim_target_modules
    if patterns and len(patterns) == 1 and patterns[0].replace("_", "-") == ALL_LINEAR:
        patterns = patterns[0]
    overrides: dict[str, Any] = {"optim_args": args.optim_args, "optim_target_modules": patterns}
    if args.layerwise:
        overrides["layerwise"] = True
    result = estimate(args.name, model, **overrides)
    if args.json:
        return _print_json({**result.as_dict(), "model": args.model or described})
    print(_estimate_text(result, described))
    return 0


def _estimate_text(result: Any, described: str) -> str:
    count = result.trainable_params
    mode = ", layerwise" if result.layerwise else ""
    lines = [
        f"{result.name}{mode}: {described}",
        f"{count:,} trainable of {result.total_params:,} parameters; weights "
        f"{_bytes(result.param_bytes)} (not counted below, nor activations)",
        "",
        _table(
            ["", result.name, "adamw (fp32 state)"],
            [["optimizer state", _bytes(result.state_bytes), _bytes(result.baseline_state_bytes)],
             ["bytes per parameter", f"{result.bytes_per_param:.3f}", "8.000"],
             ["gradients at peak", _bytes(result.grad_bytes), _bytes(result.baseline_grad_bytes)],
             ["state + gradients", _bytes(result.total_bytes),
              _bytes(result.baseline_total_bytes)]],
        ),
        "",
        "source: " + ("the plugin's estimator" if result.source == "plugin"
                      else "registry.toml state_bytes_per_param"),
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _bytes(count: int) -> str:
    """Human-readable (GiB) and exact."""
    return f"{count / 2**30:.2f} GiB ({count:,} B)"


# ---- compare ---------------------------------------------------------------------------
def _add_compare_parser(commands: Any) -> None:
    compare = commands.add_parser(
        "compare", help="train a tiny model once per optimizer and compare them",
        description="Train the same small built-in causal LM on the same synthetic data "
        "once per optimizer (adamw_torch is always included: step times are relative to "
        "it), then print loss, state memory per parameter, step time and status, and "
        "write compare.png and results.json into --out. Names that cannot run here are "
        "listed with the reason. The PNG needs matplotlib: pip install 'optimhub[compare]'.",
    )
    compare.add_argument("names", nargs="+", metavar="NAME", help="optimizer names or aliases")
    compare.add_argument("--steps", type=int, default=None, metavar="N",
                         help="training steps per optimizer (default 300)")
    compare.add_argument("--out", default=None, metavar="DIR",
                         help="folder for compare.png and results.json (default ./compare-out)")
    compare.add_argument("--lr", action="append", metavar="[NAME=]LR",
                         help="learning rate for every name, or NAME=LR for one (repeatable); "
                         "default: derived from each optimizer's spec")
    compare.add_argument("--optim-args", action="append", metavar="NAME:K=V[,K=V]",
                         help="optim_args for one name, e.g. NAME:rank=4,scale=1 "
                         "(repeatable; merged over the defaults)")
    compare.add_argument("--batch-size", type=int, default=16, metavar="B",
                         help="sequences per step (default 16)")
    compare.add_argument("--seed", type=int, default=0, help="model, data and run seed")
    compare.add_argument("--threads", type=int, default=1, metavar="N",
                         help="torch threads while training (default 1: the model is tiny, "
                         "and one thread keeps step times steady on a busy machine)")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    compare.add_argument("--json", action="store_true", help="print the table as JSON")
    compare.set_defaults(run=_compare)


def _compare(args: argparse.Namespace) -> int:
    from .compare.command import run

    return run(args)


# ---- output helpers --------------------------------------------------------------------
def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, default=str))
    return 0


def _table(headers: list[str], rows: list[list[str]], indent: str = "") -> str:
    """A plain aligned text table; the last column is left unpadded."""
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)])
              for i, h in enumerate(headers)]
    lines = []
    for row in [headers, ["-" * w for w in widths], *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append(indent + "  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
