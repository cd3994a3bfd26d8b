"""Parameter groups: HF's weight-decay split, the low-rank target group, user rules.

Without targets or rules, ``build_param_groups`` returns exactly the two groups that
``transformers.Trainer.create_optimizer()`` builds (decay first, then no-decay), with
one difference: an empty group is dropped, because several backends reject or
mis-handle a group without parameters (state-dict round trips, per-group statistics,
layerwise wrappers that build one optimizer per group).

Everything here is bookkeeping on names, ``id()`` and ``requires_grad``; no tensor's data
is read, so it works on meta-device and sharded models alike.
"""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .bounded_regex import UnsupportedPatternError, compile_bounded
from .errors import OptimArgsError, OptimArgsTypeError, TargetModulesError, closest, shown
from .role_types import WEIGHT_DECAY_POLICIES, ParameterRole, Role

__all__ = [
    "NO_DECAY_MODULE_TYPES",
    "NO_DECAY_NAME_PATTERNS",
    "WEIGHT_DECAY_POLICIES",
    "ParamGroupRule",
    "ParamGroups",
    "build_param_groups",
    "decay_names_by_role",
    "decay_parameter_names",
    "decayed_by_name",
    "no_decay_by_name",
    "parse_rules",
]

#: HF's ``forbidden_name_patterns`` (``Trainer.get_decay_parameter_names``): a parameter
#: whose lower-cased full name matches one of these (``re.search``) is not decayed.
NO_DECAY_NAME_PATTERNS: tuple[str, ...] = (
    r"bias",
    r"layernorm",
    r"rmsnorm",
    r"(?:^|\.)norm(?:$|\.)",
    r"_norm(?:$|\.)",
)

#: Module types whose parameters are never decayed, whatever their names (HF's list).
NO_DECAY_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm,)

_EMPTY: Mapping[str, object] = MappingProxyType({})

#: Keys a target-group option may not use: the hub sets these itself.
_RESERVED_GROUP_KEYS = ("params", "weight_decay", "lr")


# -- weight decay --------------------------------------------------------------------

#: The patterns as one regex: a name matches it where it matches any of them.
_NO_DECAY_REGEX = re.compile("|".join(f"(?:{p})" for p in NO_DECAY_NAME_PATTERNS))
#: Text that every match of some pattern contains: each pattern is a plain run of letters
#: holding one of these, between optional non-capturing groups (a test checks it). Most
#: names hold none, and ``in`` finds that in a fraction of a regex search's time.
_NO_DECAY_LITERALS = ("bias", "norm")


def no_decay_by_name(name: str) -> bool:
    """Whether HF leaves the parameter called ``name`` undecayed because of its name
    (``NO_DECAY_NAME_PATTERNS``, searched in the lower-cased name)."""
    lowered = name.lower()
    for literal in _NO_DECAY_LITERALS:
        if literal in lowered:
            return _NO_DECAY_REGEX.search(lowered) is not None
    return False


def decayed_by_name(names: Iterable[str], excluded: Collection[str] = ()) -> set[str]:
    """The ``names`` not in ``excluded`` that HF decays by name: ``no_decay_by_name`` for
    each, inlined (a call per name is a tenth of a build on 10k tensors)."""
    search = _NO_DECAY_REGEX.search
    first, second = _NO_DECAY_LITERALS  # no_decay_by_name's prefilter, unrolled
    return {name for name in names
            if name not in excluded
            and not ((first in (low := name.lower()) or second in low) and search(low))}


def decay_parameter_names(model: nn.Module) -> set[str]:
    """The parameter names that get weight decay, exactly as HF's Trainer decides.

    A mirror of ``Trainer.get_decay_parameter_names`` (``trainer_pt_utils.
    get_parameter_names``): parameters inside any ``nn.LayerNorm`` child are excluded,
    and so is every name whose lower-cased form matches ``NO_DECAY_NAME_PATTERNS``. The
    module tree is walked as HF walks it (``named_children`` of every module, every path
    to a shared module) so that the odd cases agree too: a custom RMSNorm class is
    excluded only through its name, a tied weight is listed under every module that holds
    it, and ``None`` entries of ``_parameters`` (a bias-less Linear) are listed as HF does.

    HF tests each name against the patterns once per level of the tree, on the part of
    the name below that level; here each full name is tested once. The two agree: every
    such part starts after a dot of the full name, and every pattern that matches a part
    (``bias``, ``layernorm``, ``rmsnorm``, ``(^|.)norm(.|$)``, ``_norm(.|$)``) matches the
    full name at the same place.

    ``create_optimizer`` does not call this (it classifies the parameters in the one walk
    that lists them, :class:`optimhub.parameter_source.ParameterSource`); it is the
    reference that classification is tested against, and HF's answer for a model.
    """
    names: set[str] = set()
    _collect_decay_names(model, "", names)
    return names


def _collect_decay_names(module: nn.Module, prefix: str, names: set[str]) -> None:
    names.update(f"{prefix}{key}" for key in module._parameters
                 if not no_decay_by_name(f"{prefix}{key}"))
    for child_name, child in module.named_children():
        if not isinstance(child, NO_DECAY_MODULE_TYPES):
            _collect_decay_names(child, f"{prefix}{child_name}.", names)


#: ``weight_decay_policy`` values. ``"hf"`` (the default) is HF's name-based split above.
#: ``"matrices"`` decays by role (:mod:`optimhub.roles`): weight matrices, the output head,
#: conv kernels and expert stacks; never a normalisation layer (by type, whatever its
#: name), a bias, another 1-D parameter or an embedding. ``"matrices_and_embeddings"``
#: decays the embeddings too.
_DECAYED_ROLES: Mapping[str, frozenset[Role]] = {
    "matrices": frozenset({Role.MATRIX, Role.HEAD, Role.CONV, Role.EXPERT}),
    "matrices_and_embeddings": frozenset({Role.MATRIX, Role.HEAD, Role.CONV, Role.EXPERT,
                                          Role.EMBEDDING}),
}


def decay_names_by_role(roles: Mapping[str, ParameterRole], policy: str) -> set[str]:
    """The names a role-based ``weight_decay_policy`` decays (not for ``"hf"``)."""
    decayed = _DECAYED_ROLES[policy]
    return {name for name, entry in roles.items() if entry.role in decayed}


# -- rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamGroupRule:
    """Per-parameter overrides: every trainable parameter whose name ``pattern`` matches
    (``re.search``) gets this ``lr`` and/or ``weight_decay``.

    Validated on construction, so a bad rule fails before any optimizer is built.
    """

    pattern: str
    lr: float | None = None
    weight_decay: float | None = None

    def __post_init__(self) -> None:
        _check_pattern(self.pattern)
        object.__setattr__(self, "lr", _check_number("lr", self.lr, allow_zero=False))
        object.__setattr__(
            self, "weight_decay", _check_number("weight_decay", self.weight_decay, allow_zero=True)
        )
        if self.lr is None and self.weight_decay is None:
            raise OptimArgsError(
                f"param group rule for pattern {shown(self.pattern)} overrides nothing: give lr "
                "and/or weight_decay, e.g. {'pattern': 'lm_head', 'lr': 1e-4}."
            )

    def matches(self, name: str) -> bool:
        """Whether the rule applies to the parameter called ``name`` (``re.search``'s answer,
        in linear time: rules come from configs, see ``bounded_regex``)."""
        return compile_bounded(self.pattern).search(name)

    def describe(self) -> str:
        """The rule as it would be written, without the fields it leaves unset."""
        fields = [f"pattern={shown(self.pattern)}"]
        if self.lr is not None:
            fields.append(f"lr={self.lr!r}")
        if self.weight_decay is not None:
            fields.append(f"weight_decay={self.weight_decay!r}")
        return f"ParamGroupRule({', '.join(fields)})"


_RULE_KEYS = ("pattern", "lr", "weight_decay")
_RULE_KEY_ALIASES = {
    "learning_rate": "lr",
    "wd": "weight_decay",
    "regex": "pattern",
    "name": "pattern",
    "params": "pattern",
}


def _check_pattern(pattern: object) -> None:
    if not isinstance(pattern, str):
        raise OptimArgsTypeError(
            f"a param group rule's pattern must be a str (a regex searched in parameter "
            f"names); got {shown(pattern)} ({type(pattern).__name__})."
        )
    if not pattern:
        raise OptimArgsError(
            "a param group rule's pattern is empty; write '.*' if the rule is meant for "
            "every parameter."
        )
    try:
        compile_bounded(pattern)
    except re.error as exc:
        raise OptimArgsError(
            f"param group rule pattern {shown(pattern)} is not a valid regular expression "
            f"({exc})."
        ) from exc
    except UnsupportedPatternError as exc:
        raise OptimArgsError(
            f"param group rule pattern {shown(pattern)} cannot be matched in bounded time: "
            f"{exc}."
        ) from None


def _check_number(key: str, value: object, *, allow_zero: bool) -> float | None:
    """``value`` as a float, or None; refuses bools, strings, non-finite and bad signs."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        yaml_hint = ""
        if isinstance(value, str):
            yaml_hint = " (YAML 1.1 reads 1e-4 without a dot as a string: write 1.0e-4)"
        raise OptimArgsTypeError(
            f"param group rule {key} must be a number; got {shown(value)} "
            f"({type(value).__name__}){yaml_hint}."
        )
    number = float(value)
    bound_ok = number >= 0.0 if allow_zero else number > 0.0
    if not math.isfinite(number) or not bound_ok:
        need = ">= 0" if allow_zero else "> 0"
        raise OptimArgsError(
            f"param group rule {key} must be finite and {need}; got {shown(value)}.")
    return number


def parse_rules(
    rules: Sequence[ParamGroupRule | Mapping[str, object]] | None,
) -> tuple[ParamGroupRule, ...]:
    """User rules (``ParamGroupRule`` or dicts such as ``{"pattern": "lm_head", "lr": 1e-4}``)
    as validated ``ParamGroupRule``s; every error names the rule by position and value."""
    if rules is None:
        return ()
    if isinstance(rules, (str, bytes, Mapping, ParamGroupRule)) or not isinstance(rules, Sequence):
        raise OptimArgsTypeError(
            f"param group rules must be a list of rules; got {shown(rules)} "
            f"({type(rules).__name__}). Wrap a single rule in a list: [{{'pattern': ..., "
            "'lr': ...}]."
        )
    return tuple(_parse_rule(index, raw) for index, raw in enumerate(rules))


def _parse_rule(index: int, raw: object) -> ParamGroupRule:
    try:
        if isinstance(raw, ParamGroupRule):
            return raw
        if isinstance(raw, Mapping):
            return ParamGroupRule(**_rule_fields(raw))
        raise OptimArgsTypeError(
            f"a rule must be a ParamGroupRule or a dict with keys {', '.join(_RULE_KEYS)}; "
            f"got {type(raw).__name__}."
        )
    except OptimArgsError as exc:
        raise type(exc)(f"param group rule #{index} {shown(raw)}: {exc}") from None


def _rule_fields(raw: Mapping[Any, object]) -> dict[str, Any]:
    unknown = [key for key in raw if key not in _RULE_KEYS]
    if unknown:
        key = unknown[0]
        guess = _RULE_KEY_ALIASES.get(key) if isinstance(key, str) else None
        if guess is None and isinstance(key, str):
            guess = next(iter(closest(key, _RULE_KEYS, n=1)), None)
        hint = f" Did you mean {guess!r}?" if guess else ""
        raise OptimArgsError(
            f"unknown key {shown(key)}; valid keys are {', '.join(_RULE_KEYS)}.{hint}")
    if "pattern" not in raw:
        raise OptimArgsError("missing 'pattern' (the regex searched in parameter names).")
    return dict(raw)


# -- groups --------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamGroups:
    """The groups handed to the backend and, in parallel, their parameters' names."""

    groups: list[dict[str, Any]]
    names: list[list[str]]


@dataclass(frozen=True)
class _Placement:
    """Where one trainable parameter goes: the key of its group.

    ``decayed`` (HF's decay/no-decay class) is part of the key so that ``weight_decay=0``
    still gives HF's two groups rather than one merged group: the group layout is what
    an optimizer state dict (a checkpoint) is indexed by.
    """

    target: bool
    decayed: bool
    weight_decay: float
    lr: float | None


def build_param_groups(
    named_params: Sequence[tuple[str, torch.nn.Parameter]],
    *,
    weight_decay: float,
    decay_names: Collection[str] | None,
    target_names: Collection[str] = (),
    target_options: Mapping[str, object] = _EMPTY,
    rules: Sequence[ParamGroupRule | Mapping[str, object]] = (),
    lr_scales: Mapping[str, float] = _EMPTY,
    base_lr: float | None = None,
) -> ParamGroups:
    """The parameter groups for the backend, in HF's layout.

    - Only ``requires_grad`` parameters are placed.
    - Without targets or rules: HF's decay group (``weight_decay``) then its no-decay
      group (``0.0``), each in ``named_params`` order; empty groups dropped.
      ``decay_names=None`` means the names carry no decay information (bare parameters
      rather than a model): everything decays, as ``torch.optim`` would do.
    - ``target_names`` go to their own group(s), after the others, with
      ``**target_options``. Unlike HF, which drops weight decay altogether for GaLore and
      APOLLO (its target groups replace the decay groups), targets keep their decay: the
      user asked for ``weight_decay`` and nothing in the low-rank update excludes it.
    - ``rules`` apply in order, a later rule's fields overriding an earlier one's; a rule's
      ``weight_decay`` replaces the decay/no-decay value and its ``lr`` becomes the
      group's ``"lr"``. Each rule must match a trainable parameter.
    - Groups are keyed by (target?, HF decay class, effective weight decay, rule lr); the
      decay class keeps ``weight_decay=0`` from merging HF's two groups. Parameters are
      visited in HF's order (decayed ones, then the rest, each in ``named_params``
      order), non-targets before targets, and a group sits where its first parameter is
      visited: with no rules this is exactly HF's layout.
    - ``lr_scales`` (name -> factor, e.g. timm's layer-wise decay) multiply a parameter's
      lr (its rule's, else ``base_lr``); a factor of 1 leaves the group as it was.
    """
    named_params = list(named_params)  # a generator (model.named_parameters()) is read thrice
    trainable = _trainable(named_params)
    parsed = parse_rules(rules)
    _check_weight_decay(weight_decay)
    _check_target_options(target_options)
    decayed = _decayed(trainable, decay_names)
    targets = _check_target_names(target_names, named_params, decayed)
    _check_rules_match(parsed, trainable, named_params)

    return _assemble(trainable, targets, decayed, float(weight_decay), parsed, target_options,
                     lr_scales, base_lr)


def _trainable(
    named_params: Sequence[tuple[str, torch.nn.Parameter]],
) -> list[tuple[str, torch.nn.Parameter]]:
    """The ``requires_grad`` entries, after checking names, types and duplicates.

    Each check is one comprehension over all entries (this runs per parameter: on 10k
    tensors, a loop with a branch per check costs twice as much); the slow search for the
    offending entry runs only when a check fails.
    """
    entries = [
        entry if (type(entry) is tuple and len(entry) == 2 and type(entry[0]) is str
                  and isinstance(entry[1], torch.Tensor)) else _unpack(entry)
        for entry in named_params
    ]
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        name = next(n for n, count in Counter(names).items() if count > 1)
        raise OptimArgsError(
            f"two parameters are both named {shown(name)}: names identify parameters for "
            "decay, targets and rules, so each must be unique."
        )
    trainable = [entry for entry in entries if entry[1].requires_grad]
    if len({id(param) for _, param in trainable}) != len(trainable):
        first: dict[int, str] = {}
        for name, param in trainable:
            if id(param) in first:
                raise OptimArgsError(
                    f"parameters {shown(first[id(param)])} and {shown(name)} are the same "
                    "tensor (tied weights?): an optimizer may hold each Parameter once. Pass "
                    "model.named_parameters(), which lists a shared Parameter only once."
                )
            first[id(param)] = name
    if not trainable:
        given = (
            f"all {len(names)} given have requires_grad=False"
            if names
            else "the list of parameters is empty"
        )
        raise OptimArgsError(
            f"no trainable parameters: {given}. Set requires_grad=True on what you want to train."
        )
    return trainable


def _unpack(entry: object) -> tuple[str, torch.Tensor]:
    if not (isinstance(entry, tuple) and len(entry) == 2):
        raise OptimArgsTypeError(
            f"named_params must hold (name, parameter) pairs, as model.named_parameters() "
            f"yields; got {type(entry).__name__}."
        )
    name, param = entry
    if not isinstance(name, str) or not isinstance(param, torch.Tensor):
        raise OptimArgsTypeError(
            f"named_params must hold (str, Parameter) pairs; got ({type(name).__name__}, "
            f"{type(param).__name__}) for {shown(name)}."
        )
    return name, param


def _check_weight_decay(weight_decay: object) -> None:
    ok = isinstance(weight_decay, numbers.Real) and not isinstance(weight_decay, bool)
    if not ok:
        raise OptimArgsTypeError(
            f"weight_decay must be a number; got {shown(weight_decay)} "
            f"({type(weight_decay).__name__})."
        )
    if not math.isfinite(float(weight_decay)) or float(weight_decay) < 0.0:  # type: ignore[arg-type]
        raise OptimArgsError(f"weight_decay must be finite and >= 0; got {shown(weight_decay)}.")


def _check_target_options(options: Mapping[str, object]) -> None:
    reserved = [key for key in _RESERVED_GROUP_KEYS if key in options]
    if reserved:
        raise OptimArgsError(
            f"target options may not set {', '.join(map(repr, reserved))}: the hub sets "
            "params and weight_decay itself, and a per-group lr comes from a param group rule."
        )


def _check_target_names(
    target_names: Collection[str], named_params: Sequence[tuple[str, torch.nn.Parameter]],
    trainable: Collection[str],
) -> frozenset[str]:
    """Targets as a set; a name that is not among the given parameters is a caller bug.
    ``trainable``: the trainable names, which hold every target but a frozen one: the
    set of all names is made only when a target is not among them."""
    targets = frozenset(target_names)
    if not targets or all(name in trainable for name in targets):
        return targets
    unknown = sorted(targets - {name for name, _ in named_params})
    if unknown:
        raise TargetModulesError(
            f"target parameter(s) {unknown[:5]} are not among the parameters given; select "
            "targets on the same model whose parameters are optimized."
        )
    return targets


def _decayed(
    trainable: Sequence[tuple[str, torch.nn.Parameter]], decay_names: Collection[str] | None
) -> dict[str, bool]:
    if decay_names is None:
        return {name: True for name, _ in trainable}
    lookup = decay_names if isinstance(decay_names, (set, frozenset)) else set(decay_names)
    return {name: name in lookup for name, _ in trainable}


def _check_rules_match(
    rules: Sequence[ParamGroupRule],
    trainable: Sequence[tuple[str, torch.nn.Parameter]],
    named_params: Sequence[tuple[str, torch.nn.Parameter]],
) -> None:
    """A rule that matches no trainable parameter is almost surely a typo: refuse it."""
    names = [name for name, _ in trainable]
    for index, rule in enumerate(rules):
        if any(rule.matches(name) for name in names):
            continue
        frozen = [n for n, p in named_params if not p.requires_grad and rule.matches(n)]
        why = (
            f"it matches only frozen parameters ({', '.join(frozen[:3])})"
            if frozen
            else "it matches no parameter name"
        )
        raise OptimArgsError(
            f"param group rule #{index} {rule.describe()} matches no trainable parameter: "
            f"{why}. The pattern is searched (re.search) in names such as "
            f"{', '.join(shown(n) for n in names[:5])}."
        )


def _place(
    name: str,
    target: bool,
    decayed: bool,
    weight_decay: float,
    rules: Sequence[ParamGroupRule],
    lr_scale: float = 1.0,
    base_lr: float | None = None,
) -> _Placement:
    wd = float(weight_decay) if decayed else 0.0
    lr: float | None = None
    for rule in rules:
        if not rule.matches(name):
            continue
        if rule.weight_decay is not None:
            wd = rule.weight_decay
        if rule.lr is not None:
            lr = rule.lr
    if lr_scale != 1.0:
        unscaled = lr if lr is not None else base_lr
        if unscaled is None:
            raise OptimArgsError(
                f"parameter {name!r} has an lr scale of {lr_scale!r} but no learning rate to "
                "scale: give base_lr (the optimizer's learning_rate)"
            )
        lr = unscaled * lr_scale
    return _Placement(target, decayed, wd, lr)


def _assemble(
    trainable: Sequence[tuple[str, torch.nn.Parameter]],
    targets: frozenset[str],
    decayed: Mapping[str, bool],
    weight_decay: float,
    rules: Sequence[ParamGroupRule],
    target_options: Mapping[str, object],
    lr_scales: Mapping[str, float] = _EMPTY,
    base_lr: float | None = None,
) -> ParamGroups:
    """Groups in HF's order: decayed parameters before the rest, targets last.

    HF visits the decayed parameters, then the others, each in ``named_params`` order,
    targets after the rest, and a group sits where its first parameter is visited. A
    group's key fixes both classes (target?, decayed?), so one pass in ``named_params``
    order collects every group's members, and the few groups are then put in class order
    (a stable sort: groups of one class keep the order of their first members). Without
    rules or lr scales the key is fixed by the two classes, so each of the (at most four)
    keys is made once rather than once per parameter.
    """
    # Keyed by the placement, or without rules and scales by its two classes (a tuple of
    # two bools hashes faster than the frozen dataclass, whose hash is made per call).
    members: dict[Any, tuple[_Placement, list[str], list[torch.nn.Parameter]]] = {}
    for name, param in trainable:
        if rules or lr_scales:
            key: Any = _place(name, name in targets, decayed[name], weight_decay, rules,
                              lr_scales.get(name, 1.0), base_lr)
        else:
            key = (name in targets, decayed[name])
        entry = members.get(key)
        if entry is None:
            placement = key if isinstance(key, _Placement) else _Placement(
                key[0], key[1], weight_decay if key[1] else 0.0, None)
            entry = members[key] = (placement, [], [])
        entry[1].append(name)
        entry[2].append(param)
    ordered = sorted(members.values(), key=lambda item: (item[0].target, not item[0].decayed))
    groups = [_group_dict(placement, params, target_options) for placement, _, params in ordered]
    return ParamGroups(groups, [names for _, names, _ in ordered])


def _group_dict(
    key: _Placement, params: list[torch.nn.Parameter], target_options: Mapping[str, object]
) -> dict[str, Any]:
    group: dict[str, Any] = {"params": params, "weight_decay": key.weight_decay}
    if key.target:
        group.update(target_options)
    if key.lr is not None:
        group["lr"] = key.lr
    return group
