"""The ``optimhub`` command line: see what is available, what an optimizer needs, what it
will do with each parameter (``explain``), and what is wrong with this machine, before a
GPU-hour is spent.

``--help``, ``--version``, ``list``, ``info`` and ``plugins`` read specs alone and import
neither torch nor any backend (unless an installed third-party plugin imports them at its
own import); ``doctor`` imports the backends (that is its job), ``estimate`` and
``compare`` import torch when they run. Tables fit the terminal (:mod:`optimhub.tables`).

Exit status, for every subcommand:

- 0: done; for ``doctor`` and ``plugins``, nothing wrong was found;
- 1: a problem was found: ``plugins``, a plugin failed to load; ``doctor``, a plugin failed
  to load, a NAME given is not usable here, or (no NAME given) an installed backend fails
  to import (``--exit-zero`` reports without failing); ``compare``, a run failed
  unexpectedly; any command, an unexpected error (a bug: its traceback goes to stderr);
- 2: bad input: the command line, an unknown name, a refused configuration, a missing
  backend (the message names the fix);
- 130: interrupted;
- 141: whoever read stdout stopped reading (``optimhub list | head -1``): the output ends
  quietly, as that of a process ended by SIGPIPE.

With ``--json``, stdout carries exactly one JSON document: the answer, or on failure
``{"error": message, "type": exception class}`` (``"UsageError"`` for a bad command
line); the message also goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import OptimHubError
from .tables import render_table, terminal_width

Command = Callable[[argparse.Namespace], int]

#: Exit codes (see the module docstring).
OK, PROBLEM_FOUND, BAD_INPUT, INTERRUPTED, CLOSED_PIPE = 0, 1, 2, 130, 141


class _UsageError(Exception):
    """argparse's complaint about the command line, raised instead of exiting at once so
    ``--json`` can answer it with an object too."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, but text wraps only at spaces: an example such as
    ``llama:hidden=4096,layers=32`` is never split mid-token, whatever the width; and an
    indented line of a description or epilog (a command example) is kept as written."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False,
                             break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines, prose = [], []
        for line in [*text.splitlines(), ""]:
            if line.strip() and not line.startswith(" "):
                prose.append(line)
                continue
            if prose:
                lines += textwrap.wrap(" ".join(" ".join(prose).split()), width,
                                       initial_indent=indent, subsequent_indent=indent,
                                       break_long_words=False, break_on_hyphens=False)
                prose = []
            lines.append(indent + line)
        return "\n".join(lines).rstrip()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="optimhub",
        description="The memory-efficient PyTorch optimizers, one front door.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"optimhub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    listing = add("list", help="list optimizer names (no backend imported)")
    listing.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'adamw*'")
    listing.add_argument("--pattern", dest="pattern_option", metavar="P",
                         help="the same pattern as an option, e.g. --pattern 'pto_ada*'")
    listing.add_argument("--backend", metavar="B",
                         help="only names of this backend (plugin, pip name or namespace)")
    listing.add_argument("--capability", action="append", metavar="C",
                         help="only names with this capability (repeatable)")
    listing.add_argument("--available", action="store_true", help="only names usable here")
    listing.set_defaults(run=_list)

    info = add("info", help="what one optimizer is and what it needs")
    info.add_argument("name")
    info.set_defaults(run=_info)

    plugins = add("plugins", help="loaded plugins and their load errors",
                  description="The plugins loaded and those that failed. Exit status 1 "
                  "when a plugin failed to load.")
    plugins.set_defaults(run=_plugins)

    doctor = add("doctor", help="is every backend installed and usable here?",
                 description="Imports the backends and checks the device. Exit status 1 "
                 "when a plugin failed to load, when a NAME given is not usable here, or "
                 "(no NAME given) when an installed backend fails to import.")
    doctor.add_argument("names", nargs="*", metavar="NAME",
                        help="the optimizers you mean to use (default: every installed one)")
    doctor.set_defaults(run=_doctor)

    for sub in (plugins, doctor):
        sub.add_argument("--exit-zero", action="store_true",
                         help="report problems but exit 0")
    _add_estimate_parser(add)
    _add_compare_parser(add)
    _add_explain_parser(add)

    for sub in (listing, info, plugins, doctor):
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None and (isinstance(argv, str) or not isinstance(argv, Sequence)
                             or not all(isinstance(a, str) for a in argv)):
        raise TypeError(f"main() takes a list of str arguments, got {argv!r}")
    arguments = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in arguments  # known before parsing: a usage error honours it too
    try:
        args = _build_parser().parse_args(arguments)
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe is met here, not in the interpreter's last flush
        return code
    except _UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        _report(f"{exc.parser.prog}: {exc}", "UsageError", as_json,
                shown=f"{exc.parser.prog}: error: {exc}")
        raise SystemExit(BAD_INPUT) from None
    except OptimHubError as exc:
        return _fail(exc, BAD_INPUT, as_json)
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        traceback.print_exc()
        print("optimhub: this is a bug in optimhub or a plugin; please report it with the "
              "traceback above", file=sys.stderr)
        return _fail(exc, PROBLEM_FOUND, as_json)


def _fail(exc: BaseException, code: int, as_json: bool) -> int:
    try:
        _report(str(exc), type(exc).__name__, as_json)
    except BrokenPipeError:
        return _closed_pipe()
    return code


def _report(message: str, kind: str, as_json: bool, *, shown: str | None = None) -> None:
    print(shown or f"optimhub: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "type": kind}))
        sys.stdout.flush()


def _closed_pipe() -> int:
    """Python's own advice for SIGPIPE: point stdout at devnull, so the interpreter's
    final flush of what is still buffered does not fail (and print) again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (captured in tests): nothing is flushed at exit
    return CLOSED_PIPE


# ---- list ------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    from . import listing
    from .backends import is_installed

    specs = listing.list_optimizers(
        args.pattern_option or args.pattern, capability=args.capability,
        available=True if args.available else None, backend=args.backend,
    )
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
    print(render_table(
        ["name", "backend", "installed", "capabilities", "summary"],
        [[r["name"] + "".join(f" ({a})" for a in r["aliases"]), r["backend"],
          "yes" if r["installed"] else "no", ", ".join(r["capabilities"]) or "-",
          r["summary"]] for r in rows],
        detail=4,
    ))
    print(f"\n{len(rows)} optimizers. `optimhub info NAME` explains one.")
    return OK


# ---- info ------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    from .backends import backend_status
    from .listing import get_spec
    from .snippets import python_snippet, stock_trainer_snippet, trainer_snippet
    from .trainer_settings import stock_trainer_problem, trainer_problem

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
        "example_python": python_snippet(spec),
        "example_trainer": trainer_snippet(spec),
        "trainer_problem": trainer_problem(spec),
        "example_stock_trainer": stock_trainer_snippet(spec),
        "stock_trainer_problem": stock_trainer_problem(spec),
    }
    if args.json:
        return _print_json(data)
    print(_info_text(data))
    return OK


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


def _info_text(data: dict[str, Any]) -> str:
    backend = data["backend"]
    width = terminal_width()
    lines = _wrapped(f"{data['name']}: {data['summary']}", width)
    if data["aliases"]:
        lines += _wrapped(f"aliases: {', '.join(data['aliases'])}", width)
    if data["based_on"]:
        lines.append(f"based on: {data['based_on']} (same backend and builder)")
    if data["paper"]:
        lines.append(f"paper: {data['paper']}")
    state = ("installed " + (backend["version"] or "") if backend["installed"]
             else "NOT installed")
    lines.append("")
    lines += _wrapped(f"backend: {backend['distribution']} (import {backend['import_name']}), "
                      f"{state}", width)
    lines += _wrapped(f"install: {backend['install']}", width)
    if backend["problem"]:
        lines += _wrapped(f"problem here: {backend['problem']}", width)
    lines += ["", "what your training loop must know:"]
    if data["capabilities"]:
        for text in data["capabilities"].values():
            lines += _wrapped(f"  - {text}", width, "    ")
    else:
        lines.append("  - nothing special: a plain optimizer (backward, step, zero_grad)")
    lines.append("")
    lines += _wrapped("takes from TrainingArguments: " + ", ".join(data["hyperparameters"]),
                      width)
    if data["fixed"]:
        lines += _wrapped("pinned by this name: " + ", ".join(
            f"{k}={v!r}" for k, v in data["fixed"].items()), width)
    lines += ["", "optim_args:"]
    if data["optim_args"]:
        lines.append(render_table(
            ["key", "type", "default", "allowed", "doc"],
            [[a["key"] + (" *" if a["target_group"] else ""), a["type"],
              "(backend's)" if a["default_is_backend"] else repr(a["default"]),
              a["allowed"], a["doc"]] for a in data["optim_args"]],
            indent="  ", width=width, detail=4,
        ))
        if any(a["target_group"] for a in data["optim_args"]):
            lines.append("  * applies to the target (low-rank) parameter group")
    else:
        lines.append("  (none)")
    lines += ["", "Python:", *_indented(data["example_python"])]
    lines += ["", "Hugging Face Trainer (optimhub's subclass):"]
    lines += (_indented(data["example_trainer"]) if data["example_trainer"]
              else _wrapped(f"  not possible: {data['trainer_problem']}", width, "  "))
    lines += ["", "Hugging Face Trainer (the stock class, no subclass):"]
    lines += (_indented(data["example_stock_trainer"]) if data["example_stock_trainer"]
              else _wrapped(f"  not possible: {data['stock_trainer_problem']}", width, "  "))
    return "\n".join(lines)


def _wrapped(text: str, width: int | None, indent: str = "") -> list[str]:
    """Prose lines fitted to the terminal (code is never wrapped: it is copied)."""
    if width is None or len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def _indented(code: str) -> list[str]:
    return ["  " + line for line in code.splitlines()]


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
    code = PROBLEM_FOUND if failures and not args.exit_zero else OK
    if args.json:
        _print_json({"plugins": plugins, "failures": failures})
        return code
    print(render_table(
        ["plugin", "kind", "distribution", "optimizers"],
        [[p["name"], "built-in" if p["builtin"] else "entry point",
          f"{p['distribution']} {p['version']}" if p["distribution"] else "optimhub",
          ", ".join(p["optimizers"]) or "-"] for p in plugins],
    ))
    if failures:
        print("\nload errors:")
        print(render_table(
            ["plugin", "distribution", "failed at", "error"],
            [[f["plugin"], f"{f['distribution']} {f['version'] or ''}".strip()
              if f["distribution"] else "-", f["stage"], f["message"]] for f in failures],
            indent="  ",
        ))
    else:
        print("\nno load errors")
    return code


# ---- doctor ----------------------------------------------------------------------------
def _doctor(args: argparse.Namespace) -> int:
    from .backends import backend_status, cuda_available
    from .listing import get_spec, list_optimizers
    from .plugin_host import get_registry

    selected = [get_spec(name) for name in args.names]  # an unknown name fails here
    device = "CUDA" if cuda_available() else "CPU only"
    backends: dict[tuple[str, str], list[Any]] = {}
    for spec in selected or list_optimizers():
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
    problems = [f"plugin fault: {f}" for f in failures]
    if selected:
        problems += [f"{name} is not usable here: {problem}" for row in rows
                     for name, problem in row["unusable"].items()]
    else:
        problems += [f"{row['backend']} is installed but does not import"
                     for row in rows if row["installed"] and not row["importable"]]
    code = PROBLEM_FOUND if problems and not args.exit_zero else OK
    if args.json:
        _print_json({"device": device, "selected": [s.name for s in selected],
                     "backends": rows, "plugin_failures": failures, "problems": problems})
        return code
    print(f"device: {device}\n")
    print(render_table(
        ["backend", "installed", "importable", "usable here", "fix"],
        [[r["backend"], r["version"] or "no", "yes" if r["importable"] else "no",
          f"{len(r['usable'])}/{len(r['usable']) + len(r['unusable'])}", r["fix"]]
         for r in rows],
        detail=4,
    ))
    unusable = [[name, problem or ""] for row in rows for name, problem in row["unusable"].items()]
    if unusable:
        print("\nnot usable here:")
        print(render_table(["name", "why"], unusable, indent="  "))
    for failure in failures:
        print(f"plugin fault: {failure}")
    if problems:
        print(f"\n{len(problems)} problem{'s' if len(problems) != 1 else ''}"
              + (" (--exit-zero: exit status 0)" if args.exit_zero else ""))
    return code


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
_ESTIMATE_EXAMPLES = """\
examples:
  optimhub estimate adamw_bnb_8bit --params 7B --dtype bf16
  optimhub estimate galore_adamw --optim-args rank=128 \\
      --model llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32 \\
      --optim-target-modules '.*attn.*' '.*mlp.*'
  optimhub estimate adafactor --model gpt2:n_embd=768,n_layer=12,n_head=12
  optimhub estimate lomo --model path/to/config.json --dtype bf16
"""


def _add_estimate_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    estimate = add(
        "estimate", help="bytes of optimizer state and gradients, before training",
        description="Optimizer state and peak gradient memory of NAME for a model, next to "
        "AdamW with fp32 state. Nothing is built and no backend is imported. Weights and "
        "activations are not counted.",
        epilog=_ESTIMATE_EXAMPLES,
    )
    estimate.add_argument("name")
    model = estimate.add_mutually_exclusive_group(required=True)
    model.add_argument("--params", metavar="N", help="a bare parameter count (7B, 125M, "
                       "6.7e9), taken as 4096x4096 matrices; low-rank names need --model")
    model.add_argument("--model", metavar="SPEC", help="the model's layer shapes: "
                       "llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32 "
                       "(keys hidden, layers, vocab, intermediate, heads, kv_heads, head_dim, "
                       "tied, dtype; no transformers needed); or any transformers "
                       "architecture with its config's sizes, e.g. "
                       "gpt2:n_embd=768,n_layer=12,n_head=12; or a config.json (a file or "
                       "the folder holding it); built on the meta device, nothing downloaded")
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
    from .config_models import model_from_text
    from .memory import estimate
    from .model_shapes import flat_model, parse_param_count
    from .targets import ALL_LINEAR

    if args.model is not None:
        model, dtype = model_from_text(args.model, dtype=args.dtype)
        described = f"{args.model} ({dtype})"
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
    return OK


def _estimate_text(result: Any, described: str) -> str:
    count = result.trainable_params
    mode = ", layerwise" if result.layerwise else ""
    width = terminal_width()
    lines = [
        *_wrapped(f"{result.name}{mode}: {described}", width),
        *_wrapped(f"{count:,} trainable of {result.total_params:,} parameters; weights "
                  f"{_bytes(result.param_bytes)} (not counted below, nor activations)", width),
        "",
        render_table(
            ["", result.name, "adamw (fp32 state)"],
            [["optimizer state", _bytes(result.state_bytes), _bytes(result.baseline_state_bytes)],
             ["bytes per parameter", f"{result.bytes_per_param:.3f}", "8.000"],
             ["gradients at peak", _bytes(result.grad_bytes), _bytes(result.baseline_grad_bytes)],
             ["state + gradients", _bytes(result.total_bytes),
              _bytes(result.baseline_total_bytes)]],
            width=width,
        ),
        "",
        "source: " + ("the plugin's estimator" if result.source == "plugin"
                      else "registry.toml state_bytes_per_param"),
    ]
    for note in result.notes:
        lines += _wrapped(f"note: {note}", width, "  ")
    return "\n".join(lines)


def _bytes(count: int) -> str:
    """Human-readable (GiB) and exact."""
    return f"{count / 2**30:.2f} GiB ({count:,} B)"


# ---- compare ---------------------------------------------------------------------------
def _add_compare_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    compare = add(
        "compare", help="train a tiny model once per optimizer and compare them",
        description="Train the same small built-in causal LM on the same synthetic data "
        "once per optimizer (adamw_torch is always included: step times are relative to "
        "it), then print loss, state memory per parameter, step time and status, and "
        "write compare.png and results.json into --out. Names that cannot run here are "
        "listed with the reason. The PNG needs matplotlib: pip install 'optimhub[compare]'.",
    )
    compare.add_argument("names", nargs="+", metavar="NAME",
                         help="optimizer names or aliases, or route sets in quotes")
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


# ---- explain (hub/explain_command.py) --------------------------------------------------
def _add_explain_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    from .explain_command import add_explain_parser

    add_explain_parser(add)


# ---- output helpers --------------------------------------------------------------------
def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, default=str))
    return OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
