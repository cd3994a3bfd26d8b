"""What each ``optimhub compare`` run is given: learning rate, ``optim_args``, targets.

The defaults are derived from the spec (its capabilities and its declared options), never
from the spelling of a name, so a third-party plugin's optimizer gets sensible settings
too; the user overrides any of them per name (``--lr NAME=VALUE``,
``--optim-args NAME:k=v``). Everything here is checked before any training starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import OptimArgsError, OptimArgsTypeError, OptimHubError, PluginLoadError
from ..listing import get_spec
from ..optim_args import resolve_optim_args, split_optim_args
from ..route_plan import spec_for
from ..spec import Capability, OptimizerSpec

__all__ = [
    "BASELINE",
    "DEFAULT_RANK",
    "DEFAULT_TARGET_MODULES",
    "RunPlan",
    "default_lr",
    "parse_lr_overrides",
    "parse_optim_args_overrides",
    "plan_runs",
]

#: The dense reference every comparison includes: step times are relative to it.
BASELINE = "adamw_torch"
#: What ``optim_target_modules`` selects for specs that need it: every attention and MLP
#: projection of the compare model, the embedding and ``lm_head`` left dense (as HF
#: examples for GaLore/APOLLO do).
DEFAULT_TARGET_MODULES = (r".*attn.*", r".*mlp.*")
#: A rank that is small next to the model's width (64): the regime low-rank methods
#: are made for. A spec whose own default is smaller (APOLLO-Mini: 1) keeps its own.
DEFAULT_RANK = 8

#: Learning rates for the compare problem, by the kind of update the spec declares (see
#: default_lr). Measured on this problem (200 steps, final loss; entropy floor 1.28):
#: adamw_torch 1e-3: 2.18, 3e-3: 1.71, 1e-2: 1.69; grokadamw and adafactor are best at
#: 3e-3 (1.57, 1.76) and worse at 1e-2; apollo_adamw 3e-3: 2.26, 1e-2: 1.79; galore_adamw
#: 3e-3: 2.46, 1e-2: 2.21; schedule_free_adamw 3e-3: 1.91, 1e-2: 1.57; lomo 3e-2: 3.77,
#: 0.3: 2.53, 1.0: 2.04.
ADAPTIVE_LR = 3e-3
#: Low-rank methods apply a projected (GaLore: scaled by 0.25) update to the target layers:
#: their papers train at 1e-2 where AdamW is trained at ~1e-3, and so does this problem.
LOW_RANK_LR = 1e-2
#: Schedule-free AdamW wants 1-10x AdamW's learning rate (its authors' advice; measured).
SCHEDULE_FREE_LR = 1e-2
#: An optimizer that declares no state at all (0 bytes/param) cannot normalise its update:
#: it is plain SGD on the raw gradient, whose scale here calls for an lr of order 1.
STATELESS_LR = 1.0


@dataclass(frozen=True)
class RunPlan:
    """One run to do: the name as the user wrote it, its spec, and how to build it."""

    name: str
    spec: OptimizerSpec | None
    lr: float | None = None
    lr_source: str = ""
    optim_args: Mapping[str, Any] = field(default_factory=dict)
    target_modules: tuple[str, ...] | None = None
    baseline: bool = False
    added: bool = False
    unavailable: str = ""  # why it cannot run here, known before building

    @property
    def optimizer(self) -> str:
        return self.spec.name if self.spec is not None else self.name

    def create_kwargs(self) -> dict[str, Any]:
        """The ``create_optimizer`` keywords of this run. No weight decay (HF's default),
        for every run alike: decay is a regulariser, not what is compared here."""
        kwargs: dict[str, Any] = {"weight_decay": 0.0}
        if self.spec.has_hyperparameter("lr"):  # AliG, A2Grad: their own step size
            kwargs["lr"] = self.lr
        if self.optim_args:
            kwargs["optim_args"] = dict(self.optim_args)
        if self.target_modules:
            kwargs["optim_target_modules"] = list(self.target_modules)
        return kwargs


def default_lr(spec: OptimizerSpec) -> tuple[float, str]:
    """A learning rate for the compare problem from the spec alone, and why.

    The spec does not say how big an optimizer's steps are, but three things it declares
    do: no state at all (``state_bytes_per_param = 0``: a raw-gradient SGD step), a
    low-rank projected update (``low_rank``) and schedule-free averaging
    (``schedule_free``). Everything else is taken to be Adam-like (a normalised step).
    Override with ``--lr NAME=VALUE`` where this guess is wrong (e.g. plain ``sgd``,
    which does not declare its state size).
    """
    if spec.state_bytes_per_param == 0:
        return STATELESS_LR, "stateless"
    if spec.has(Capability.LOW_RANK):
        return LOW_RANK_LR, "low_rank"
    if spec.has(Capability.SCHEDULE_FREE):
        return SCHEDULE_FREE_LR, "schedule_free"
    return ADAPTIVE_LR, "adaptive"


def plan_runs(
    names: Sequence[str],
    *,
    lr: float | None = None,
    lr_by_name: Mapping[str, float] | None = None,
    optim_args_by_name: Mapping[str, str] | None = None,
) -> list[RunPlan]:
    """The runs for ``names`` (aliases allowed, duplicates dropped), the baseline first
    when the user did not name it. Unknown names and overrides for names not compared
    are errors; a name whose plugin failed to load becomes an unavailable run."""
    if not names:
        raise OptimArgsError("compare needs at least one optimizer name, e.g. "
                             "`optimhub compare adamw_torch apollo_adamw`")
    resolved = _resolve(names)
    added = all(spec is None or spec.name != BASELINE for _, spec, _ in resolved)
    if added:
        resolved.insert(0, (BASELINE, get_spec(BASELINE), ""))
    compared = {spec.name for _, spec, _ in resolved if spec is not None}
    lr_by_name = _by_canonical(lr_by_name or {}, compared, "--lr")
    args_by_name = _by_canonical(optim_args_by_name or {}, compared, "--optim-args")
    plans = []
    for index, (name, spec, problem) in enumerate(resolved):
        if spec is None:
            plans.append(RunPlan(name, None, unavailable=problem))
            continue
        plans.append(_plan(name, spec, lr, lr_by_name.get(spec.name),
                           args_by_name.get(spec.name), added=added and index == 0))
    return plans


def _resolve(names: Sequence[str]) -> list[tuple[str, OptimizerSpec | None, str]]:
    """(name as written, its spec, why it cannot be used) per name, the first of
    duplicates kept. An unknown name raises UnknownOptimizerError (with close names); a
    name whose plugin failed to load gets no spec and the hub's reason."""
    seen: set[str] = set()
    result: list[tuple[str, OptimizerSpec | None, str]] = []
    for name in names:
        try:  # a name, a routed name (muon) or a route set's text
            spec: OptimizerSpec | None = spec_for(name)
            problem = ""
        except PluginLoadError as exc:
            spec, problem = None, str(exc).splitlines()[0]
        key = spec.name if spec is not None else name
        if key not in seen:
            seen.add(key)
            result.append((name, spec, problem))
    return result


def _by_canonical(values: Mapping[str, Any], compared: set[str], option: str
                  ) -> dict[str, Any]:
    """Overrides keyed by canonical names; one for a name not compared is an error."""
    result: dict[str, Any] = {}
    for name, value in values.items():
        try:
            key: str | None = spec_for(name).name
        except OptimHubError:
            key = None
        if key not in compared:
            raise OptimArgsError(
                f"{option} names {name!r}, which is not being compared; compared: "
                f"{', '.join(sorted(compared)) or '(none)'}"
            )
        result[key] = value
    return result


def _plan(name: str, spec: OptimizerSpec, lr: float | None, lr_for_name: float | None,
          optim_args: str | None, *, added: bool) -> RunPlan:
    if lr_for_name is not None:
        chosen, source = lr_for_name, "--lr NAME="
    elif lr is not None:
        chosen, source = lr, "--lr"
    else:
        chosen, source = default_lr(spec)
    args = _default_optim_args(spec)
    if optim_args:
        args.update(split_optim_args(optim_args, optimizer=spec.name))
    typed = resolve_optim_args(spec, args)  # raises on a bad key or value, before training
    targets = DEFAULT_TARGET_MODULES if spec.has(Capability.TARGET_MODULES) else None
    return RunPlan(
        name=name, spec=spec, lr=chosen, lr_source=source,
        optim_args={key: typed[key] for key in args}, target_modules=targets,
        baseline=spec.name == BASELINE, added=added,
    )


def _default_optim_args(spec: OptimizerSpec) -> dict[str, Any]:
    """A small rank for low-rank specs (capped by the spec's own default). A rank whose
    default is None (the backend derives it, e.g. from the model) is left to the backend."""
    rank = spec.args.get("rank")
    if (rank is not None and rank.has_default and isinstance(rank.default, int)
            and rank.default > DEFAULT_RANK):
        return {"rank": DEFAULT_RANK}
    return {}


# ---- command-line forms --------------------------------------------------------------------
def parse_lr_overrides(values: Sequence[str]) -> tuple[float | None, dict[str, float]]:
    """``--lr 1e-3`` (every name) and ``--lr NAME=1e-3`` (one name), repeatable."""
    everyone: float | None = None
    by_name: dict[str, float] = {}
    for text in values:
        name, _, number = text.rpartition("=")
        value = _positive_float(number.strip(), text)
        if name:
            by_name[name.strip()] = value
        else:
            everyone = value
    return everyone, by_name


def parse_optim_args_overrides(values: Sequence[str]) -> dict[str, str]:
    """``--optim-args NAME:k=v,k2=v2``, repeatable (one per name)."""
    result: dict[str, str] = {}
    for text in values:
        name, colon, args = text.partition(":")
        if not colon or not name.strip():
            raise OptimArgsError(
                f"--optim-args {text!r}: write NAME:key=value[,key=value], e.g. "
                "--optim-args apollo_adamw:rank=4,scale=1"
            )
        if name.strip() in result:
            raise OptimArgsError(f"--optim-args given twice for {name.strip()!r}: "
                                 "put all its keys in one, separated by commas")
        result[name.strip()] = args.strip()
    return result


def _positive_float(text: str, given: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptimArgsTypeError(
            f"--lr {given!r}: the learning rate {text!r} is not a number; write --lr 1e-3 "
            "(every optimizer) or --lr NAME=1e-3 (one)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise OptimArgsError(f"--lr {given!r}: a learning rate must be a finite number > 0")
    return value
