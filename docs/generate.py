"""Write docs/optimizers.md and docs/capabilities.md from the built-in catalog.

    .venv/bin/python docs/generate.py          # rewrite both pages
    .venv/bin/python docs/generate.py --check  # exit 1 (naming the stale pages) if out of date

The pages are generated, never edited by hand, so that the documentation cannot drift
from registry.toml: ``tests/test_docs.py::test_generated_docs_are_current`` fails when a
catalog change was not followed by a run of this script. Only the built-in catalog
(``optimhub.catalog.load_catalog()``, i.e. registry.toml) is documented: third-party
plugins installed on the machine that runs this (the example ``sign_sgd``) document
themselves. The loaded registry is consulted only to check that every catalog name has
its builder, so a page never lists a name the hub cannot build.

The output depends on nothing but registry.toml and the text in this file (no versions,
no "installed" column), so it is the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from optimhub.catalog import load_catalog
from optimhub.optim_args import format_optim_args
from optimhub.plugin_host import get_registry
from optimhub.spec import ArgSpec, Capability, OptimizerSpec

DOCS = Path(__file__).resolve().parent

#: Where each capability is enforced and what the user's loop has to do about it. Every
#: Capability member needs an entry: a new capability without one stops the generator,
#: so it cannot ship undocumented.
LOOP_DUTIES: dict[Capability, str] = {
    Capability.SCHEDULE_FREE: (
        "Call `optimizer.train()` before training steps and `optimizer.eval()` before "
        "evaluating or saving (`optimhub.drive` does both: `driver.evaluating()`, "
        "`driver.saving()`, `driver.finish()`). Use the `constant` schedule: "
        "`create_scheduler` refuses a decaying one (unless "
        "`allow_decay_with_schedule_free=True`) and any scheduler warmup; give the warmup to "
        "the optimizer (`warmup_steps=`)."
    ),
    Capability.FUSED_BACKWARD: (
        "Replace `loss.backward(); optimizer.step()` by the backend's "
        "`optimizer.fused_backward(loss, lr)` (`driver.backward(loss)` does it, with the "
        "scheduler's lr, and calls `grad_norm(loss)` first when the backend clips). "
        "`gradient_accumulation_steps > 1` and loop-side clipping (`max_grad_norm`) are "
        "refused: clip with the backend's own `clip_grad_norm` option."
    ),
    Capability.NEEDS_MODEL: (
        "Pass the `nn.Module` to `create_optimizer`, not `model.parameters()` "
        "(`CapabilityError` otherwise)."
    ),
    Capability.TARGET_MODULES: (
        "Give `optim_target_modules` (a regex, a list of names/regexes, or `\"all-linear\"`); "
        "without it, or when it selects no trainable `nn.Linear` weight, `create_optimizer` "
        "raises `TargetModulesError`. Check a pattern first with "
        "`optimhub.explain_targets(model, patterns)`."
    ),
    Capability.LOW_RANK: (
        "Nothing in the loop. The targeted 2-D weights keep projected (low-rank) state; "
        "`rank` is capped at each weight's smaller side."
    ),
    Capability.LAYERWISE: (
        "The name always runs layerwise: parameters are updated inside `loss.backward()`, "
        "`step()` is a no-op. No gradient accumulation, no loop-side clipping "
        "(`CapabilityError` from `optimhub.drive`), no DDP. Call `optimizer.close()` (or use "
        "`with optimizer:`) to remove the backward hooks when done."
    ),
    Capability.LAYERWISE_CAPABLE: (
        "Nothing by default. With `layerwise=True` the hub builds one optimizer per "
        "parameter, stepped inside backward, and the `layerwise` rules apply."
    ),
    Capability.LOW_BIT_STATE: (
        "Nothing in the loop. Small tensors (under 4096 elements for bitsandbytes and "
        "torchao) keep full-precision state."
    ),
    Capability.PAGED: (
        "Nothing in the loop. Without CUDA the optimizer is built unpaged, with one "
        "`OptimHubWarning`."
    ),
    Capability.CUDA_ONLY: (
        "Run on a CUDA device. Without one, `create_optimizer` raises "
        "`BackendUnavailableError` before building anything."
    ),
    Capability.CLOSURE_REQUIRED: (
        "Pass `closure=` (a function that recomputes the loss and calls backward) to "
        "`optimhub.drive`; a driver without one is refused."
    ),
    Capability.NO_DDP: (
        "Train in one process: building it for a `DistributedDataParallel` model raises "
        "`CapabilityError` (see [distributed.md](distributed.md))."
    ),
    Capability.NO_FSDP2: (
        "Use `DistributedDataParallel` (or one process): building it for a model sharded by "
        "FSDP2 (`fully_shard`, DTensor parameters) raises `CapabilityError` before anything "
        "is built. The measured matrix and the reason per name are in "
        "[distributed.md](distributed.md#every-name-under-ddp-and-fsdp2)."
    ),
    Capability.NO_DCP: (
        "Checkpoint it with `torch.save(optimizer.state_dict())` on each rank and resume at "
        "the same world size: `optimhub.distributed_checkpoint.save` / `.load` raise "
        "`CapabilityError` before writing or reading anything. The measurement is in "
        "[distributed.md](distributed.md#every-name-that-runs-under-fsdp2-measured-once-not-in-the-test-suite)."
    ),
    Capability.DEEPSPEED_ZERO: (
        "Nothing in the loop under DeepSpeed ZeRO 1 or 2 (with `gradient_clipping` as one "
        "process would clip). Without it, `OptimHubTrainer` refuses the name under those "
        "stages before building. The measured matrix and the reasons are in "
        "[distributed.md](distributed.md#deepspeed-via-the-hf-trainer)."
    ),
    Capability.DEEPSPEED_ZERO3: (
        "Nothing in the loop under DeepSpeed ZeRO 3. Without it, `OptimHubTrainer` refuses "
        "the name under stage 3 before building (see "
        "[distributed.md](distributed.md#deepspeed-via-the-hf-trainer))."
    ),
    Capability.SINGLE_GROUP: (
        "Nothing in the loop. `param_group_rules` are refused: it applies one learning rate "
        "and one weight decay to every parameter."
    ),
    Capability.MATRIX_ONLY: (
        "Give it the weight matrices only, with a fallback for the rest: build the routed "
        "form (`'matrix, conv -> NAME; * -> adamw_torch'`, or a preset such as `muon`; see "
        "[user-guide.md](user-guide.md#routing)). A plain `create_optimizer(NAME, model)` on "
        "a model with vectors raises `CapabilityError` naming that form."
    ),
    Capability.STATIC_WEIGHT_DECAY: (
        "Keep the weight decay constant: `create_weight_decay_scheduler` (and "
        "`weight_decay_schedule=`) raises `CapabilityError`, since a changed "
        "`group[\"weight_decay\"]` would be ignored (see "
        "[weight-decay schedules](user-guide.md#weight-decay-schedules))."
    ),
    Capability.CREATE_GRAPH: (
        "Keep the graph in backward: `loss.backward(create_graph=True)` (`driver.backward(loss)` "
        "does it), so `step()` can take Hessian-vector products; `zero_grad(set_to_none=True)` "
        "frees it. A plain `backward()` makes `step()` fail."
    ),
}

HEADER = (
    "<!-- Generated by docs/generate.py from registry.toml. Do not edit: change the catalog "
    "(or the generator) and run `.venv/bin/python docs/generate.py`. -->"
)

_HYPERPARAMETER_SOURCE = {
    "lr": "`learning_rate`",
    "betas": "`adam_beta1`, `adam_beta2`",
    "eps": "`adam_epsilon`",
    "weight_decay": "`weight_decay`",
}


# ---------------------------------------------------------------------------- helpers
def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`"


def _value(arg: ArgSpec, value: object) -> str:
    """A value as the user writes it in optim_args text (``none``, ``true``, ``(1,2)``)."""
    return format_optim_args({arg.name: value}).split("=", 1)[1]


def _default(arg: ArgSpec) -> str:
    return _code(_value(arg, arg.default)) if arg.has_default else "backend's"


def _paper(spec: OptimizerSpec) -> str:
    return f"[paper]({spec.paper})" if spec.paper else ""


def _install(spec: OptimizerSpec) -> str:
    if spec.import_name.split(".")[0] == "torch":
        return "nothing (torch)"
    if spec.extra:
        return _code(spec.install_command)
    return "see below"


def _capability_links(spec: OptimizerSpec) -> str:
    names = sorted(c.value for c in spec.capabilities)
    return ", ".join(f"[`{n}`](capabilities.md#{n})" for n in names) or "–"


def _grouped(catalog: Mapping[str, OptimizerSpec]) -> dict[str, list[OptimizerSpec]]:
    """Specs by plugin, in registry.toml order (which groups the sections by backend)."""
    groups: dict[str, list[OptimizerSpec]] = {}
    for spec in catalog.values():
        groups.setdefault(spec.plugin, []).append(spec)
    return groups


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    headers = list(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------- optimizers
def optimizers_page(catalog: Mapping[str, OptimizerSpec]) -> str:
    groups = _grouped(catalog)
    lines = [
        HEADER,
        "",
        "# Optimizers",
        "",
        f"The {len(catalog)} built-in names, from {len(groups)} plugins. The same information "
        "is one command away on your machine, with whether each backend is installed there: "
        "`optimhub list`, `optimhub info NAME` (or `optimhub.list_optimizers()`, "
        "`optimhub.get_spec(name)`). Third-party plugins add names of their own: see "
        "[writing-plugins.md](writing-plugins.md). What each capability asks of your training "
        "loop is in [capabilities.md](capabilities.md); where a name behaves differently from "
        "the Hugging Face Trainer, [differences-from-transformers.md]"
        "(differences-from-transformers.md) says so.",
        "",
        "## At a glance",
        "",
    ]
    rows = [
        [
            f"[`{s.name}`](#{s.name})",
            ", ".join(_code(a) for a in s.aliases) or "–",
            _code(s.distribution),
            _code(s.extra) if s.extra else "–",
            ", ".join(sorted(c.value for c in s.capabilities)) or "–",
            s.summary,
            _paper(s),
        ]
        for specs in groups.values()
        for s in specs
    ]
    lines += _table(
        ["name", "aliases", "backend", "extra", "capabilities", "summary", "paper"], rows
    )
    for plugin, specs in groups.items():
        first = specs[0]
        lines += ["", f"## {plugin}", ""]
        lines.append(
            f"Backend distribution `{first.distribution}` (imported as `{first.import_name}`), "
            f"built by the built-in plugin `optimhub.plugins.{plugin}`."
        )
        if first.namespace:
            lines += ["", (
                f"Every name is in the namespace `{first.namespace}`: `{first.namespace}_` and "
                "the library's own name in lower case (see [namespaces.md](namespaces.md)). "
                f"The entries are generated by `tools/generate_{plugin}_catalog.py` from the "
                "library's constructors; its reviewed tables list what is excluded and why."
            )]
        for spec in specs:
            lines += ["", *_optimizer_section(spec)]
    return "\n".join(lines) + "\n"


def _route_note(spec: OptimizerSpec, arg: ArgSpec) -> str:
    """For a routed entry: which route the option goes to."""
    if not spec.routes:
        return ""
    route = arg.route or next(t.name for t in spec.routes if t.optimizer == spec.base)
    return f" (route `{route}`)"


def _optimizer_section(spec: OptimizerSpec) -> list[str]:
    lines = [f"### `{spec.name}`", "", spec.summary, ""]
    facts = [("install", _install(spec))]
    if spec.install_hint:
        facts = [("install", _code(spec.install_hint))]
    if spec.aliases:
        facts.append(("aliases", ", ".join(_code(a) for a in spec.aliases)))
    facts.append(("capabilities", _capability_links(spec)))
    taken = [_HYPERPARAMETER_SOURCE[h] for h in ("lr", "betas", "eps", "weight_decay")
             if spec.has_hyperparameter(h)]
    facts.append(("takes from TrainingArguments", ", ".join(taken) or "nothing"))
    if spec.fixed:
        pinned = ", ".join(_code(f"{k}={v!r}") for k, v in spec.fixed.items())
        facts.append(("constructor keywords it pins", pinned))
    if spec.base:
        facts.append(("variant of", f"[`{spec.base}`](#{spec.base})"))
    if spec.routes:
        routes = "; ".join(f"`{t.name}`: `{', '.join(t.select)}` → [`{t.optimizer}`]"
                           f"(#{t.optimizer})" for t in spec.routes)
        facts.append(("routes (the first that selects a parameter takes it)", routes))
    if spec.min_version:
        facts.append(("needs", f"`{spec.distribution}>={spec.min_version}`"))
    if spec.state_bytes_per_param is not None:
        facts.append(("optimizer state", f"about {spec.state_bytes_per_param:g} bytes per "
                                         "parameter (large fp32 weights)"))
    if spec.paper:
        facts.append(("paper", f"<{spec.paper}>"))
    lines += [f"- {key}: {value}" for key, value in facts]
    lines.append("")
    if not spec.args:
        lines.append("No `optim_args`: any key is refused.")
        return lines
    lines.append("`optim_args`:")
    lines.append("")
    rows = [
        [
            _code(arg.name) + (" \\*" if arg.target_group else ""),
            arg.type,
            _default(arg),
            arg.describe_allowed(),
            arg.doc + _route_note(spec, arg),
        ]
        for arg in spec.args.values()
    ]
    lines += _table(["key", "type", "default", "allowed", "doc"], rows)
    if spec.target_group_args:
        lines += ["", "\\* goes into the low-rank target param group, not the constructor."]
    return lines


# ---------------------------------------------------------------------------- capabilities
def capabilities_page(catalog: Mapping[str, OptimizerSpec]) -> str:
    missing = [c.value for c in Capability if c not in LOOP_DUTIES]
    if missing:
        raise SystemExit(
            f"docs/generate.py: no LOOP_DUTIES entry for capabilities {missing}: say what "
            "the training loop must do about each before generating the docs"
        )
    lines = [
        HEADER,
        "",
        "# Capabilities",
        "",
        "A capability is a fact about an optimizer that changes how it must be built or "
        "driven. Each name declares its capabilities in registry.toml (a plugin: in its "
        "`OptimizerSpec`); the core reads them, never the spelling of a name, to decide which "
        "checks run before building (`create_optimizer`), which loop contract applies "
        "(`optimhub.drive`, `create_scheduler`, the Trainer integration) and what the "
        "conformance suite verifies (`optimhub.testing`). `optimhub list --capability C` and "
        "`optimhub.list_optimizers(capability=C)` filter by them.",
        "",
        "| capability | what it means | built-in names | what your loop must do |",
        "|---|---|---|---|",
    ]
    sections: list[str] = []
    for capability in Capability:
        names = [s.name for s in catalog.values() if s.has(capability)]
        listed = ", ".join(f"[`{n}`](optimizers.md#{n})" for n in names) or "none built in"
        lines.append(
            "| " + " | ".join(_cell(c) for c in (
                f"[`{capability.value}`](#{capability.value})",
                capability.explanation,
                listed,
                LOOP_DUTIES[capability],
            )) + " |"
        )
        sections += [
            "",
            f"## `{capability.value}`",
            "",
            f"{capability.explanation[0].upper()}{capability.explanation[1:]}.",
            "",
            f"- built-in names ({len(names)}): {listed}",
            f"- your loop: {LOOP_DUTIES[capability]}",
        ]
    lines.append("")
    lines.append(
        "The loop contracts are explained with a runnable example in "
        "[training-loops.md](training-loops.md)."
    )
    return "\n".join(lines + sections) + "\n"


# ---------------------------------------------------------------------------- driver
PAGES: dict[str, Callable[[Mapping[str, OptimizerSpec]], str]] = {
    "optimizers.md": optimizers_page,
    "capabilities.md": capabilities_page,
}


def render() -> dict[Path, str]:
    """Every generated page's path and its text."""
    catalog = load_catalog()
    unbuilt = sorted(set(catalog) - set(get_registry().entries))
    if unbuilt:
        raise SystemExit(
            f"docs/generate.py: catalog names without a loaded builder: {unbuilt}; "
            "`optimhub plugins` shows which plugin failed to load"
        )
    return {DOCS / name: page(catalog) for name, page in PAGES.items()}


def stale_pages() -> list[Path]:
    """The generated pages whose file differs from what the catalog gives now."""
    return [
        path for path, text in render().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def write() -> list[Path]:
    """Rewrite every generated page; returns the ones that changed."""
    changed = []
    for path, text in render().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a generated page is out of date (write nothing)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(f"stale: {path.relative_to(DOCS.parent)} (run .venv/bin/python "
                  "docs/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
