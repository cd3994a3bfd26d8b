"""The code ``optimhub info NAME`` prints, generated from the spec's own contract.

Each snippet writes what the optimizer needs and nothing it would refuse: the low-rank
names get target modules, a schedule-free name ``lr_scheduler_type="constant"``, an
in-backward name ``max_grad_norm=0`` (:mod:`optimhub.trainer_settings`), and a loop with
special needs goes through ``optimhub.drive``. A test executes the snippets of every
catalog name on a tiny model (tests/test_snippets.py), so what is printed runs.

Each snippet assumes ``model`` (and for the Trainer, ``TrainingArguments``, ``Trainer``
and ``data``) in scope, as a reader's script has them.
"""

from __future__ import annotations

from .optim_args import format_optim_args
from .spec import UNSET, Capability, OptimizerSpec
from .trainer_settings import required_settings, stock_trainer_problem, trainer_problem

__all__ = ["EXAMPLE_TARGET_MODULES", "python_snippet", "stock_trainer_snippet",
           "trainer_snippet"]

#: Target patterns the snippets use: every attention and MLP weight of a HF decoder.
EXAMPLE_TARGET_MODULES = '[r".*attn.*", r".*mlp.*"]'
_WIDTH = 88


def python_snippet(spec: OptimizerSpec) -> str:
    """``optimhub.create_optimizer`` with what the spec needs, and ``optimhub.drive`` when
    the loop must do something special."""
    lr = ["lr=1e-3"] if spec.has_hyperparameter("lr") else []  # AliG: its own step size
    items = [_name(spec), "model", *lr, *_option_items(spec)]
    lines = ["import optimhub", _call("optimizer = optimhub.create_optimizer", items)]
    special = (spec.has(Capability.FUSED_BACKWARD) or spec.has(Capability.SCHEDULE_FREE)
               or spec.runs_layerwise())
    if spec.has(Capability.CLOSURE_REQUIRED):
        lines.append("# each step needs a closure: optimhub.drive(optimizer, closure=...)")
    elif special:
        lines.append("driver = optimhub.drive(optimizer, model=model)  "
                     "# each batch: driver.backward(loss); driver.step()")
    return "\n".join(lines)


def trainer_snippet(spec: OptimizerSpec) -> str | None:
    """``OptimHubTrainer`` with ``TrainingArguments`` the contract accepts (None: the
    Trainer cannot train this optimizer; :func:`trainer_problem` says why)."""
    if trainer_problem(spec) is not None:
        return None
    return "\n".join([
        "from optimhub.integrations.transformers import OptimHubTrainer",
        _call("args = TrainingArguments", _training_arguments(spec)),
        _call("trainer = OptimHubTrainer",
              ["model=model", "args=args", f"optim={_name(spec)}", "train_dataset=data"]),
    ])


def stock_trainer_snippet(spec: OptimizerSpec) -> str | None:
    """The stock ``transformers.Trainer`` with the hub as its optimizer factory (None: the
    stock loop cannot drive it; :func:`stock_trainer_problem` says why)."""
    if stock_trainer_problem(spec) is not None:
        return None
    return "\n".join([
        "from optimhub.integrations.transformers import hub_optimizer",
        _call("args = TrainingArguments", _training_arguments(spec)),
        _call("trainer = Trainer",
              ["model=model", "args=args", "train_dataset=data",
               f"optimizer_cls_and_kwargs=hub_optimizer({_name(spec)}, args)"]),
    ])


def _name(spec: OptimizerSpec) -> str:
    """The name to write, quoted: a ``matrix_only`` optimizer (the Muon family) is written in
    its routed form, matrices to it (with the example option, which belongs to the route)
    and the rest to AdamW, as it must run on a whole model."""
    if spec.has(Capability.MATRIX_ONLY):
        option = _example_option(spec)
        return f'"matrix, conv -> {spec.name}{f"({option})" if option else ""}; * -> adamw_torch"'
    return f'"{spec.name}"'


def _training_arguments(spec: OptimizerSpec) -> list[str]:
    items = ['output_dir="out"', "learning_rate=1e-3"]
    items += [f"{s.field}={_literal(s.value)}" for s in required_settings(spec)]
    return items + _option_items(spec)


def _example_option(spec: OptimizerSpec) -> str | None:
    """optim_args text: an option the catalog gives an ``example`` for (one the backend
    needs, without a default), else the first option at its default (None: neither)."""
    needed = [a for a in spec.args.values() if a.example is not UNSET]
    if needed:
        return format_optim_args({needed[0].name: needed[0].example})
    if spec.args:
        first = next(iter(spec.args.values()))
        if first.has_default:
            return format_optim_args({first.name: first.default})
    return None


def _option_items(spec: OptimizerSpec) -> list[str]:
    items = []
    option = _example_option(spec)
    if option is not None and not spec.has(Capability.MATRIX_ONLY):  # routed: in its route
        items.append(f"optim_args={_literal(option)}")
    if spec.has(Capability.TARGET_MODULES):
        items.append(f"optim_target_modules={EXAMPLE_TARGET_MODULES}")
    return items


def _literal(value: object) -> str:
    """A Python literal, str in double quotes (the style of the rest of the snippet)."""
    if isinstance(value, str) and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return repr(value)


def _call(prefix: str, items: list[str]) -> str:
    """``prefix(item, item, ...)`` with the items wrapped under the opening parenthesis."""
    indent = " " * (len(prefix) + 1)
    lines, line = [], prefix + "("
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else ")")
        if len(line) + len(piece.rstrip()) > _WIDTH and line.strip() != prefix + "(":
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line)
    return "\n".join(lines)
