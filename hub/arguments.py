"""The user's arguments, in the Hugging Face ``TrainingArguments`` vocabulary.

``create_optimizer`` accepts ``None``, a dict, :class:`OptimizerArguments`, or any object
shaped like ``transformers.TrainingArguments`` (read by attribute), plus keyword
overrides that win. Whatever the form, the result is one validated
``OptimizerArguments``: names and defaults are HF's, but values are checked (a string
learning rate, a beta of 1.0, a NaN weight decay are errors here, not surprises later).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import OptimArgsError, OptimArgsTypeError, closest, shown
from .role_types import WEIGHT_DECAY_POLICIES

__all__ = ["OptimizerArguments", "resolve_arguments", "resolve_warmup_steps"]


@dataclass(frozen=True)
class OptimizerArguments:
    """The optimizer-related fields of HF ``TrainingArguments``, with HF's defaults.

    ``param_group_rules``, ``layerwise``, ``weight_decay_policy`` and ``layer_decay`` are
    optimhub's own additions: per-parameter ``lr`` / ``weight_decay`` overrides (see
    :class:`optimhub.ParamGroupRule`); the optimizer-in-backward mode for any spec that
    allows it; which parameters ``weight_decay`` applies to (``"hf"``: HF's name-based
    split; ``"matrices"`` / ``"matrices_and_embeddings"``: by role, see
    ``optimhub.param_groups.WEIGHT_DECAY_POLICIES``); and timm's layer-wise learning-rate
    decay (block ``i`` of ``L`` trains at ``lr * layer_decay ** (L + 1 - depth)``). ``warmup_steps``
    and ``max_steps`` matter to optimizers with a warmup of their own (schedule-free):
    as in HF, a ``warmup_steps`` below 1 is a ratio of ``max_steps``.
    """

    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim_args: str | Mapping[str, Any] | None = None
    optim_target_modules: str | Sequence[str] | None = None
    param_group_rules: Sequence[Any] = field(default_factory=tuple)
    warmup_steps: float = 0
    max_steps: int = -1
    layerwise: bool = False
    weight_decay_policy: str = "hf"
    layer_decay: float | None = None
    #: The fields the user gave explicitly (set by :func:`resolve_arguments`, not an
    #: argument): a dict key or keyword, or, read from an object, a value other than the
    #: default. A TrainingArguments left at HF's defaults always carries betas and eps;
    #: only an explicit value the optimizer cannot use is an error.
    explicit: frozenset[str] | None = field(default=None, init=False, repr=False,
                                            compare=False)

    @property
    def betas(self) -> tuple[float, float]:
        return (self.adam_beta1, self.adam_beta2)

    def warmup_step_count(self) -> int:
        """``warmup_steps`` as a whole number of steps, never a float.

        HF's rule (5.x): a value >= 1 is a step count; a value in (0, 1) is a ratio of
        the total steps, rounded up. HF passes a ratio through to schedule-free unchanged,
        so its step 0 runs at 10x the learning rate for 0.1; here a ratio needs
        ``max_steps`` and becomes an int, or it is an error.
        """
        total = self.max_steps if self.max_steps > 0 else None
        return resolve_warmup_steps(self.warmup_steps, total, warmup_name="warmup_steps",
                                    total_name="max_steps")


FIELDS = tuple(f.name for f in dataclasses.fields(OptimizerArguments) if f.init)
_DEFAULTS = OptimizerArguments()
#: Short spellings users know from torch optimizers, accepted as overrides and dict keys.
SHORT_NAMES = {"lr": "learning_rate", "eps": "adam_epsilon", "betas": ("adam_beta1", "adam_beta2")}


def resolve_arguments(args: Any = None, overrides: Mapping[str, Any] | None = None
                      ) -> OptimizerArguments:
    """Merge ``args`` (any accepted form) and ``overrides`` into validated arguments."""
    values, explicit = _read(args)
    given = _normalise(dict(overrides or {}), source="keyword argument")
    values.update(given)
    resolved = OptimizerArguments(**values)
    object.__setattr__(resolved, "explicit", frozenset(explicit | given.keys()))
    _validate(resolved)
    return resolved


def resolve_warmup_steps(
    warmup: float | None,
    total: int | None,
    *,
    warmup_name: str = "num_warmup_steps",
    total_name: str = "num_training_steps",
) -> int:
    """A warmup given as steps or as a ratio, as a whole number of steps.

    HF's rule (``TrainingArguments.get_warmup_steps``, 5.x): a value >= 1 is a step count
    (``int(w)``); a value in (0, 1) is a ratio of the total, rounded up
    (``ceil(total * w)``, the same float product as HF, so the counts agree). Nothing is
    guessed: ``None`` is 0, and a bool, a negative or non-finite value, a float >= 1 that is
    not whole and a ratio without a total are errors naming the value and the fix. The
    names are parameters so the optimizer-side warmup (``warmup_steps`` / ``max_steps``)
    can share this rule with the same wording.
    """
    if warmup is None:
        return 0
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Real):
        raise OptimArgsTypeError(
            f"{warmup_name}={shown(warmup)} ({type(warmup).__name__}) is not a number: give a "
            f"whole number of steps (e.g. 100) or a ratio of {total_name} in (0, 1) (e.g. 0.05)"
        )
    if not math.isfinite(warmup) or warmup < 0:
        raise OptimArgsError(
            f"{warmup_name}={shown(warmup)} is not valid: a warmup is a whole number of steps >= 0 "
            f"or a ratio of {total_name} in (0, 1)"
        )
    if warmup == 0 or warmup >= 1:
        if warmup != int(warmup):
            raise OptimArgsError(
                f"{warmup_name}={shown(warmup)} is neither a whole number of steps nor a ratio "
                f"below 1: give {math.floor(warmup)} or {math.ceil(warmup)} steps, or a ratio of "
                f"{total_name} such as 0.05"
            )
        return int(warmup)
    if total is None:
        raise OptimArgsError(
            f"{warmup_name}={shown(warmup)} is a ratio of the training length, but {total_name} "
            f"was not given: pass {total_name} (the total number of optimizer steps), or give "
            "the warmup as a whole number of steps"
        )
    return math.ceil(total * warmup)


def _read(args: Any) -> tuple[dict[str, Any], set[str]]:
    """The values ``args`` gives, and which of them were given explicitly."""
    if args is None:
        return {}, set()
    if isinstance(args, OptimizerArguments):
        values = {name: getattr(args, name) for name in FIELDS}
        # Resolved arguments know what was explicit (a route's view of the top-level ones
        # narrows it); ones built by hand count every non-default value.
        return values, set(_changed(values) if args.explicit is None else args.explicit)
    if isinstance(args, Mapping):
        values = _normalise(dict(args), source="args key")
        return values, set(values)
    if isinstance(args, (str, bytes, int, float, Sequence)):
        raise OptimArgsTypeError(
            f"args must be None, a dict, optimhub.OptimizerArguments or a "
            f"TrainingArguments-like object; got {type(args).__name__} {shown(args)}"
        )
    # TrainingArguments-like: read the fields it has, by attribute; keep our defaults else.
    values = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    return values, _changed(values)


def _changed(values: Mapping[str, Any]) -> set[str]:
    """The fields of an arguments object that differ from the defaults (HF's): an object
    always carries every field, so only a changed one says the user asked for it."""
    changed = set()
    for name, value in values.items():
        try:
            same = bool(value == getattr(_DEFAULTS, name))
        except Exception:  # a value that cannot be compared is certainly not the default
            same = False
        if not same:
            changed.add(name)
    return changed


def _normalise(values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Map short names to HF names and reject unknown keys (no silent ignores)."""
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key == "betas":
            result.update(_split_betas(value))
        elif key in SHORT_NAMES:
            result[SHORT_NAMES[key]] = value
        elif key in FIELDS:
            result[key] = value
        else:
            valid = sorted({*FIELDS, *SHORT_NAMES})
            near = closest(str(key), valid)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise OptimArgsError(
                f"unknown {source} {shown(key)}.{hint} Valid: {', '.join(valid)}. "
                "Options of one optimizer go in optim_args (see `optimhub info NAME`)."
            )
    return result


def _split_betas(value: Any) -> dict[str, Any]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise OptimArgsTypeError(
            f"betas must be a pair like (0.9, 0.999), got {shown(value)}; optimizers with three "
            "betas take the third through optim_args"
        )
    return {"adam_beta1": value[0], "adam_beta2": value[1]}


def _validate(args: OptimizerArguments) -> None:
    _number("learning_rate", args.learning_rate, low=0.0, low_open=True)
    _number("weight_decay", args.weight_decay, low=0.0)
    _number("adam_beta1", args.adam_beta1, low=0.0, high=1.0)
    _number("adam_beta2", args.adam_beta2, low=0.0, high=1.0)
    # eps = 0 turns every gradient entry that is exactly 0 into 0/0 = NaN in Adam.
    _number("adam_epsilon", args.adam_epsilon, low=0.0, low_open=True)
    _number("warmup_steps", args.warmup_steps, low=0.0)
    if not isinstance(args.layerwise, bool):
        raise OptimArgsTypeError(f"layerwise must be True or False, got {shown(args.layerwise)}")
    if isinstance(args.max_steps, bool) or not isinstance(args.max_steps, int):
        raise OptimArgsTypeError(f"max_steps must be an int, got {shown(args.max_steps)}")
    if args.weight_decay_policy not in WEIGHT_DECAY_POLICIES:
        near = closest(str(args.weight_decay_policy), WEIGHT_DECAY_POLICIES)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise OptimArgsError(
            f"weight_decay_policy={args.weight_decay_policy!r} is not known.{hint} Policies: "
            f"{', '.join(WEIGHT_DECAY_POLICIES)} ('hf', the default, is HF's name-based split)"
        )
    if args.layer_decay is not None:
        _number("layer_decay", args.layer_decay, low=0.0, low_open=True)
        if args.layer_decay > 1:
            raise OptimArgsError(
                f"layer_decay must be in (0, 1] (each block nearer the input trains at that "
                f"factor of the next one's lr), got {args.layer_decay!r}"
            )
    if not isinstance(args.optim_args, (str, Mapping, type(None))):
        raise OptimArgsTypeError(
            f"optim_args must be a string like 'rank=1,scale=128' or a dict, "
            f"got {type(args.optim_args).__name__} {shown(args.optim_args)}"
        )


def _number(name: str, value: Any, *, low: float, high: float | None = None,
            low_open: bool = False) -> None:
    """Finite real number in [low, high) (or (low, high) with low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptimArgsTypeError(
            f"{name} must be a number, got {type(value).__name__} {shown(value)}"
        )
    if not math.isfinite(value):
        raise OptimArgsError(f"{name} must be finite, got {shown(value)}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value >= high):
        interval = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g})'}"
        raise OptimArgsError(f"{name} must be in {interval}, got {shown(value)}")
