"""Shared machinery of the generated registry.toml sections (a library of many optimizers
behind one plugin): type each constructor parameter from its annotation or default,
document it from the class docstring, map the Hugging Face vocabulary, and splice the
section into registry.toml between its markers.

Each backend's script (``generate_pytorch_optimizer_catalog.py``,
``generate_heavyball_catalog.py``) holds only its reviewed tables in a :class:`Tables`.
The rules applied to every parameter:

- ``params`` / ``model`` and ``*args`` / ``**kwargs`` catch-alls are never options;
- ``lr`` and ``weight_decay`` are the HF hyperparameters; ``betas`` when the default is a
  pair (a three-beta optimizer keeps ``betas`` as a typed 3-tuple option, which
  adam_beta1/2 do not set); ``eps`` only where its default is Adam's 1e-8 (HF's
  adam_epsilon default: an eps of 0.1 or 1e-3 is not an Adam epsilon and stays an option
  with the library's default);
- a parameter is typed from its annotation (``float | None``, ``Literal[...]``, a tuple
  with a tuple default...), else from its default's Python type when the table allows it;
  a default that does not round-trip through ``format_optim_args`` (``inf``) or a library
  sentinel is left unset (the library's own default applies, and the doc says so);
- whatever cannot be typed must be declared by hand (``hand_args``) or dropped with the
  reason (``dropped_args``): the script stops otherwise.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "registry.toml"
STRUCTURAL = {"params", "model", "self"}
HF_ORDER = ("lr", "betas", "eps", "weight_decay")


@dataclass
class Tables:
    """One backend's generated section: its identity and its reviewed tables."""

    backend: str  # the [backends.X] key and plugin name
    distribution: str
    namespace: str
    min_version: str
    label: str  # shown in summaries, e.g. "pytorch-optimizer"
    classes: Callable[[], dict[str, type]]  # key -> class, sorted
    excluded: Mapping[str, str]
    capabilities: Mapping[str, list[str]]
    state: Mapping[str, float | str]
    hand_args: Mapping[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    dropped_args: Mapping[str, dict[str, str]] = field(default_factory=dict)
    option_sets: Mapping[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    entry_option_sets: Mapping[str, list[str]] = field(default_factory=dict)
    reference: Mapping[str, str] = field(default_factory=dict)
    all_hyperparameters: tuple[str, ...] = ()  # keys that take all four (via **kwargs)
    fixed: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    infer_from_default: bool = False
    sentinels: tuple[Any, ...] = ()
    #: Where a name's ``paper`` link points when the library's README names no paper for
    #: it: the library's own documentation.
    documentation: str = ""
    #: key -> the engines it must be refused on (``no_ddp``, ``no_fsdp2``, ``no_dcp``) or
    #: is measured to step like one process under (``deepspeed_zero``...), as the tools
    #: measured (tools/distributed_matrix.py, deepspeed_matrix.py, distributed_checkpoint.py).
    engine_limits: Mapping[str, list[str]] = field(default_factory=dict)

    @functools.cached_property
    def papers(self) -> dict[str, str]:
        """Paper links by folded class name, from the README table the distribution ships
        in its metadata (``| AdaBelief | ... | [paper](https://arxiv.org/...) |``)."""
        from importlib.metadata import metadata

        text = metadata(self.distribution).get_payload() or ""
        found: dict[str, str] = {}
        for line in text.splitlines():
            row = re.match(r"^\|\s*([^|]+?)\s*\|.*?\[paper\]\((https://[^)\s]+)\)", line)
            if row:
                for name in re.split(r"[,/]", row.group(1)):
                    found.setdefault(_folded(name), row.group(2))
        return found

    def paper(self, key: str) -> str:
        return self.papers.get(_folded(key), self.documentation)

    @property
    def begin(self) -> str:
        return "# " + "-" * 76 + f" {self.backend}"

    @property
    def end(self) -> str:
        return "# " + "-" * 76 + f" end {self.backend}"


def merged_limits(*tables: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The engine limits of each key from every measured table (distributed matrix,
    DeepSpeed, DCP), in the tables' order."""
    keys = sorted(set().union(*(table.keys() for table in tables)))
    return {key: [c for table in tables for c in table.get(key, [])] for key in keys}


def _folded(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# ============================================================================ introspection
def arg_docs(cls: type) -> tuple[str, dict[str, str]]:
    """The docstring's first line and its ``Args:`` entries."""
    doc = inspect.getdoc(cls) or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else cls.__name__
    docs: dict[str, str] = {}
    in_args, current = False, None
    for line in doc.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if in_args:
            if line and not line.startswith(" "):
                break
            match = re.match(r"^    (\w+)(?: \([^)]*\))?:\s*(.*)$", line)
            if match:
                current = match.group(1)
                docs[current] = match.group(2).strip()
            elif current and line.startswith("        "):
                docs[current] += " " + line.strip()
    return first, docs


def _tensor() -> type:
    import torch

    return torch.Tensor


def annotation_kind(annotation: Any, default: Any) -> tuple[str, bool, list[Any] | None] | None:
    """(type, nullable, choices) for an annotation, or None when it cannot be typed."""
    if annotation is inspect.Parameter.empty:
        return None
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "str", False, list(args)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        nullable = len(members) < len(args)
        if _tensor() in members and len(members) > 1:
            members = [m for m in members if m is not _tensor()]
        kinds = {annotation_kind(m, default) for m in members}
        if None in kinds or len({k[0] for k in kinds}) != 1:  # type: ignore[index]
            return None
        kind = next(iter(kinds))
        assert kind is not None
        return kind[0], nullable or kind[1], kind[2]
    base = typing.get_origin(annotation) or annotation
    if base is bool:
        return "bool", False, None
    if base is int:
        return ("int", False, None) if not hasattr(default, "name") else None
    if base is float:
        return "float", False, None
    if base is str:
        return "str", False, None
    if base is tuple and isinstance(default, tuple) and default:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in default):
            return "int_tuple", False, None
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in default):
            return "float_tuple", False, None
    return None


def default_kind(default: Any) -> tuple[str, bool, None] | None:
    """The type of an unannotated parameter, from its default's Python type."""
    for python, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if type(default) is python:
            return name, False, None
    if isinstance(default, tuple) and default:
        return annotation_kind(tuple, default)  # type: ignore[return-value]
    return None


# ============================================================================ output
def toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def inline(fields: Mapping[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in fields.items()) + " }"


def typed_options(t: Tables, key: str, cls: type
                  ) -> tuple[set[str], dict[str, dict[str, Any]], list[str]]:
    """(HF hyperparameters, options, untyped parameters) of one constructor."""
    from optimhub.optim_args import format_optim_args

    _, docs = arg_docs(cls)
    dropped = {**t.dropped_args.get("*", {}), **t.dropped_args.get(key, {})}
    hyper: set[str] = set()
    options: dict[str, dict[str, Any]] = {}
    untyped: list[str] = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in STRUCTURAL or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name in dropped or name in t.hand_args.get(key, {}):
            continue
        default = param.default
        sentinel = any(default is s for s in t.sentinels)
        has_default = default is not inspect.Parameter.empty and not sentinel
        if name in ("lr", "weight_decay"):
            hyper.add(name)
            continue
        if name == "betas" and isinstance(default, tuple) and len(default) == 2:
            hyper.add("betas")
            continue
        if name == "eps" and default == 1e-8:
            hyper.add("eps")
            continue
        kind = annotation_kind(param.annotation, default)
        if kind is None and t.infer_from_default and has_default:
            kind = default_kind(default)
        if kind is None:
            untyped.append(name)
            continue
        type_, nullable, choices = kind
        fields: dict[str, Any] = {"type": type_}
        representable = has_default and not (isinstance(default, float)
                                             and not math.isfinite(default))
        if representable:
            if default is None:
                nullable = True
            text = format_optim_args({name: default})
            if text.split("=", 1)[1] == "":
                raise SystemExit(f"{key}.{name}: default {default!r} does not round-trip")
            fields["default"] = list(default) if isinstance(default, tuple) else default
        if choices is not None:
            fields["choices"] = choices
        if nullable:
            fields["nullable"] = True
        if type_.endswith("_tuple") and isinstance(default, tuple):
            fields["length"] = len(default)
        doc = docs.get(name, "").rstrip(".") or name.replace("_", " ")
        if sentinel:
            doc += " (default: the library's own)"
        elif has_default and not representable:
            doc += f" (library default: {default}, not settable as a default here)"
        elif not has_default:
            doc += " (required)"
        fields["doc"] = doc[:1].upper() + doc[1:] + "."
        options[name] = fields
    for name, fields in t.hand_args.get(key, {}).items():
        options[name] = dict(fields)
    return hyper, options, untyped


def entry(t: Tables, key: str, cls: type) -> str:
    first, _ = arg_docs(cls)
    hyper, options, untyped = typed_options(t, key, cls)
    if untyped:
        raise SystemExit(
            f"{key}: parameters {untyped} cannot be typed from their annotations: declare "
            "them in hand_args or dropped_args (with the reason)"
        )
    if key in t.all_hyperparameters:
        hyper |= set(HF_ORDER)
    caps = [*t.capabilities.get(key, []),
            *(c for c in t.engine_limits.get(key, []) if c not in t.capabilities.get(key, []))]
    name = f"{t.namespace}_{key.lower()}"
    summary = f"{cls.__name__} ({t.label}): {first.rstrip('.')}."
    if key in t.reference:
        summary += f" The reference implementation is {t.reference[key]!r}."
    lines = [f"[optimizers.{name}]", f'backend = "{t.backend}"']
    if t.entry_option_sets.get(key):
        lines.append(f"option_sets = {toml_value(t.entry_option_sets[key])}")
    lines.append(f"summary = {toml_value(summary)}")
    lines.append(f"paper = {toml_value(t.paper(key))}")
    if caps:
        lines.append(f"capabilities = {toml_value(caps)}")
    order = [h for h in HF_ORDER if h in hyper]
    if order != list(HF_ORDER):
        lines.append(f"hyperparameters = {toml_value(order)}")
    state = t.state.get(key)
    if state is None:
        raise SystemExit(f"{key}: no state entry (measure it and add it)")
    if isinstance(state, float):
        lines.append(f"state_bytes_per_param = {state!r}")
    if "single_group" in caps and "weight_decay" in hyper:
        lines.append("constructor_weight_decay = true")
    if t.fixed.get(key):
        lines.append(f"fixed = {inline(t.fixed[key])}")
    if options:
        lines.append(f"[optimizers.{name}.args]")
        lines += [f"{option} = {inline(fields)}" for option, fields in sorted(options.items())]
    return "\n".join(lines)


def section(t: Tables) -> str:
    from importlib.metadata import version

    classes = t.classes()
    unknown = sorted(set(t.excluded) - set(classes))
    if unknown:
        raise SystemExit(f"excluded names no class: {unknown}")
    kept = [k for k in classes if k not in t.excluded]
    tables = (set(t.state) | set(t.capabilities) | set(t.hand_args) | set(t.fixed)
              | set(t.engine_limits)
              | set(t.entry_option_sets) | (set(t.dropped_args) - {"*"}))
    stale = sorted(tables - set(kept))
    if stale:
        raise SystemExit(f"table rows for names that are excluded or gone: {stale}")
    header = [
        t.begin,
        f"# Generated by tools/generate_{t.backend}_catalog.py from {t.distribution} "
        f"{version(t.distribution)}:",
        "# do not edit by hand; change the script's reviewed tables and rerun it. "
        f"{len(kept)} names, {len(t.excluded)} excluded:",
        *[f"#   {k}: {reason}" for k, reason in sorted(t.excluded.items())],
        f"[backends.{t.backend}]",
        f'plugin = "{t.backend}"',
        f'distribution = "{t.distribution}"',
        f'import_name = "{t.backend}"',
        f'extra = "{t.backend}"',
        f'namespace = "{t.namespace}"',
        f'min_version = "{t.min_version}"',
        "",
    ]
    for set_name, args in t.option_sets.items():
        header += [f"[option_sets.{set_name}]", *[f"{k} = {inline(v)}" for k, v in args.items()],
                   ""]
    body = "\n\n".join(entry(t, k, classes[k]) for k in kept)
    return "\n".join(header) + "\n" + body + "\n" + t.end + "\n"


def splice(t: Tables, text: str, new_section: str) -> str:
    """``text`` with the backend's generated section replaced (appended when absent)."""
    if t.begin + "\n" in text:
        start = text.index(t.begin + "\n")
        end = text.index(t.end, start) + len(t.end) + 1
        return text[:start] + new_section + text[end:]
    return text.rstrip("\n") + "\n\n" + new_section


def main(t: Tables, argv: list[str] | None = None, doc: str = "") -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if registry.toml is stale")
    args = parser.parse_args(argv)
    current = REGISTRY.read_text(encoding="utf-8")
    wanted = splice(t, current, section(t))
    if args.check:
        if wanted != current:
            print(f"registry.toml: the {t.backend} section is stale; run "
                  f"tools/generate_{t.backend}_catalog.py", file=sys.stderr)
            return 1
        return 0
    from optimhub.catalog import parse_catalog

    specs = parse_catalog(wanted)  # validate before writing
    REGISTRY.write_text(wanted, encoding="utf-8")
    print(f"wrote {sum(s.namespace == t.namespace for s in specs.values())} names")
    return 0
