"""``optim_target_modules`` -> the weights a low-rank optimizer (GaLore, APOLLO) projects.

The matching is Hugging Face's, so a pattern that works with ``transformers.Trainer``
selects the same weights here (``trainer_utils.check_target_module_exists`` plus the
loop in ``trainer_optimizer._setup_low_rank_optimizer``):

- a ``str`` must match a whole module name (``re.fullmatch``); the special values
  ``"all-linear"`` / ``"all_linear"`` select every ``nn.Linear`` (``lm_head`` included);
- a ``list`` / ``tuple`` item matches a module by exact name, else as a *substring* of the
  name, else as a whole-name regex, tried in that order over all items;
- only ``nn.Linear`` modules (subclasses included) are targets, and only their ``.weight``
  (a targeted Linear's bias is an ordinary parameter).

Where HF logs one warning per matched non-Linear module (the log spam of
transformers#29822), we record every match with the reason it was or was not selected:
``explain_targets`` shows that table, and ``select_targets``' error quotes it.

Three deliberate differences, each refusing what HF would silently get wrong:

- a frozen weight (``requires_grad=False``) is never a target (HF makes it one, and the
  optimizer then carries state for a weight that never gets a gradient);
- the root module (name ``""``) is never matched (HF fullmatches ``".*"`` against it);
- an empty pattern is an error (in a list HF's substring rule makes ``""`` match every
  module; as a str it can only match the root).

A weight is named as ``model.named_parameters()`` names it. A tied weight (``lm_head``
sharing the embedding's matrix) is listed there only under its first name, so HF's
name-based selection never makes it a target through ``lm_head``; we give the same
result and say why in the table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import nn

from .bounded_regex import BoundedPattern, UnsupportedPatternError, compile_bounded
from .errors import TargetModulesError, TargetModulesTypeError, shown

__all__ = [
    "ALL_LINEAR",
    "TargetMatch",
    "TargetSelection",
    "explain_targets",
    "select_targets",
]

#: The value that selects every ``nn.Linear``; ``"all_linear"`` is accepted too, as in HF.
ALL_LINEAR = "all-linear"
_ALL_LINEAR_SPELLINGS = frozenset({"all-linear", "all_linear"})

#: How ``patterns`` was read: the whole-value special case, one regex, or a list of items.
_MODE_ALL_LINEAR = "all-linear"
_MODE_REGEX = "regex"
_MODE_LIST = "list"

_EXAMPLE = 'optim_target_modules=[r".*attn.*", r".*mlp.*"] or optim_target_modules="all-linear"'
_MAX_LINEAR_SHOWN = 8
_MAX_IGNORED_SHOWN = 5


@dataclass(frozen=True, init=False)
class TargetMatch:
    """One module that a pattern matched, and whether its weight became a target.

    ``how`` is ``"exact"``, ``"substring"``, ``"regex"`` or ``"all-linear"``; ``reason``
    says why a match was not selected (empty when it was); ``parameter`` is the selected
    weight's name (``"<module>.weight"``) and ``numel`` its size (0 when not selected).
    """

    module_name: str
    module_type: str
    pattern: str
    how: str
    selected: bool
    reason: str
    parameter: str | None
    numel: int

    def __init__(self, module_name: str, module_type: str, pattern: str, how: str,
                 selected: bool, reason: str, parameter: str | None, numel: int) -> None:
        # One per matched module, every build: the generated frozen __init__ (a guarded
        # setattr per field) took 2.8 us, this 0.5 us (11k matches in a 10k-tensor Llama).
        # The instance is as frozen afterwards.
        self.__dict__.update(module_name=module_name, module_type=module_type,
                             pattern=pattern, how=how, selected=selected, reason=reason,
                             parameter=parameter, numel=numel)


@dataclass(frozen=True, eq=False)
class TargetSelection:
    """What ``optim_target_modules`` selects in one model.

    ``matches`` are in ``model.named_modules()`` order, which is also the order in which
    ``model.named_parameters()`` lists their weights. ``mode`` records how ``patterns``
    was read (``"all-linear"``, ``"regex"`` for a single str, ``"list"``), because the same
    single pattern matches differently as a str and as a one-item list.
    ``trainable_numel`` is the model's trainable parameter count, for the share shown by
    ``str()``. ``parameter_names`` and ``numel`` are the selected weights and their size.

    ``matches`` (one :class:`TargetMatch` per matched module, with the reason for each
    ignored one) is built when first read: the factory needs only the selected names, and
    on a 10k-tensor model the 11k match records (and the garbage collections their
    allocation triggers) cost as much as the rest of the build.
    """

    patterns: tuple[str, ...]
    mode: str
    parameter_names: tuple[str, ...]
    numel: int
    _explain: Callable[[], tuple[TargetMatch, ...]] = field(repr=False)
    _count_trainable: Callable[[], int] = field(repr=False)

    @cached_property
    def matches(self) -> tuple[TargetMatch, ...]:
        """Every matched module with its verdict, in ``named_modules()`` order."""
        return self._explain()

    @cached_property
    def trainable_numel(self) -> int:
        """The model's trainable parameter count, for the share ``str()`` shows."""
        return self._count_trainable()

    @property
    def ignored(self) -> tuple[TargetMatch, ...]:
        """Matches whose weight is not a target (non-Linear, frozen, tied...)."""
        return tuple(m for m in self.matches if not m.selected)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TargetSelection):
            return NotImplemented
        return (self.patterns, self.mode, self.trainable_numel, self.matches) == (
            other.patterns, other.mode, other.trainable_numel, other.matches)

    def __hash__(self) -> int:
        return hash((self.patterns, self.mode, self.parameter_names))

    def describe_patterns(self) -> str:
        """``optim_target_modules=...`` as the user wrote it, and how it is matched."""
        return f"optim_target_modules={_show_patterns(self.patterns, self.mode)}"

    def __str__(self) -> str:
        lines = [f"{self.describe_patterns()}  [{_MODE_HELP[self.mode]}]"]
        if not self.matches:
            lines.append("no module matched")
            return "\n".join(lines)
        lines.extend(_table(self.matches))
        lines.append(self._totals())
        return "\n".join(lines)

    def _totals(self) -> str:
        chosen = len(self.parameter_names)
        text = (
            f"selected {chosen} of {len(self.matches)} matched modules: "
            f"{chosen} weight(s), {self.numel:,} parameters"
        )
        if self.trainable_numel:
            share = 100.0 * self.numel / self.trainable_numel
            text += f" ({share:.1f}% of {self.trainable_numel:,} trainable)"
        return text


_MODE_HELP = {
    _MODE_ALL_LINEAR: "every nn.Linear",
    _MODE_REGEX: "a str: re.fullmatch against each module name",
    _MODE_LIST: "a list: exact name, else substring, else re.fullmatch, per item",
}

_COLUMNS = ("module", "type", "pattern", "how", "selected", "params")


def _table(matches: Iterable[TargetMatch]) -> list[str]:
    """The rows of ``TargetSelection.__str__``, with aligned columns."""
    rows = [_COLUMNS] + [
        (
            m.module_name,
            m.module_type,
            m.pattern,
            m.how,
            "yes" if m.selected else f"no: {m.reason}",
            f"{m.numel:,}" if m.selected else "-",
        )
        for m in matches
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def explain_targets(
    model: nn.Module,
    patterns: str | Sequence[str],
    named_parameters: Sequence[tuple[str, Any]] | None = None,
    named_modules: Sequence[tuple[str, nn.Module]] | None = None,
) -> TargetSelection:
    """Every module that ``patterns`` matches in ``model``, selected or not, and why.

    This is the inspection tool: it raises only for malformed ``patterns`` (missing,
    wrong type, bad regex, empty) or a missing model, never because nothing matched,
    so that a user can see what a pattern does before training with it.

    ``named_parameters`` / ``named_modules``: ``list(model.named_parameters())`` and
    ``list(model.named_modules())`` when the caller has them already (the factory does),
    so that the model is not walked again for them.
    """
    selection = _selection(model, patterns, named_parameters, named_modules)
    _ = selection.matches, selection.trainable_numel  # the model as it is now
    return selection


def select_targets(
    model: nn.Module,
    patterns: str | Sequence[str] | None,
    named_parameters: Sequence[tuple[str, Any]] | None = None,
    named_modules: Sequence[tuple[str, nn.Module]] | None = None,
) -> TargetSelection:
    """The target weights of a low-rank optimizer; what the factory calls.

    Like ``explain_targets``, but a low-rank optimizer without targets would silently be
    plain Adam, so selecting no weight is a ``TargetModulesError`` that lists the model's
    real ``nn.Linear`` names and the matches that were ignored. The factory needs only
    ``parameter_names``: the per-module ``matches`` are worked out when first read.
    """
    selection = _selection(model, patterns, named_parameters, named_modules)
    if not selection.parameter_names:
        raise TargetModulesError(_nothing_selected_message(model, selection))
    return selection


def _selection(
    model: nn.Module,
    patterns: object,
    named_parameters: Sequence[tuple[str, Any]] | None,
    named_modules: Sequence[tuple[str, nn.Module]] | None,
) -> TargetSelection:
    """The selected weights now; the verdict on every matched module when asked: on a
    10k-tensor model the 11k match records of the full table (and the garbage
    collections they trigger) cost as much as the rest of the build."""
    items, mode = _normalize(patterns)
    _check_model(model)
    compiled = _compile(items, mode)
    if named_parameters is None:
        named_parameters = list(model.named_parameters())
    canonical = _canonical_names(named_parameters)
    # The root is never a target (HF fullmatches ".*" against it).
    modules = [(n, m) for n, m in (model.named_modules() if named_modules is None
                                   else named_modules) if n]
    rules = _first_rules(items, mode, compiled, modules)
    selected: list[str] = []
    numel = 0
    for (name, module), rule in zip(modules, rules, strict=True):
        if rule is not None and isinstance(module, nn.Linear):
            weight = _target_weight(name, module, canonical)
            if weight is not None:
                selected.append(f"{name}.weight")
                numel += weight.numel()

    def explain() -> tuple[TargetMatch, ...]:
        return tuple(_judge(name, module, *rule, canonical=canonical)
                     for (name, module), rule in zip(modules, rules, strict=True)
                     if rule is not None)

    def count_trainable() -> int:
        return sum(p.numel() for _, p in named_parameters if p.requires_grad)

    return TargetSelection(items, mode, tuple(selected), numel, explain, count_trainable)


# -- validation ----------------------------------------------------------------------


def _normalize(patterns: object) -> tuple[tuple[str, ...], str]:
    """``patterns`` as a tuple of str and the mode it is matched in; raises on bad input."""
    if patterns is None or (isinstance(patterns, (list, tuple)) and not patterns):
        raise TargetModulesError(
            f"optim_target_modules is required for a low-rank optimizer (got {shown(patterns)}): "
            f"give the Linear layers whose weights get the low-rank update, e.g. {_EXAMPLE}."
        )
    if isinstance(patterns, str):
        _check_not_empty(patterns, where="optim_target_modules")
        mode = _MODE_ALL_LINEAR if patterns in _ALL_LINEAR_SPELLINGS else _MODE_REGEX
        return (patterns,), mode
    if not isinstance(patterns, (list, tuple)):
        raise TargetModulesTypeError(
            "optim_target_modules must be a str (a regex, or 'all-linear') or a list of str; "
            f"got {shown(patterns)} ({type(patterns).__name__}). Example: {_EXAMPLE}."
        )
    for index, item in enumerate(patterns):
        if not isinstance(item, str):
            raise TargetModulesTypeError(
                f"optim_target_modules[{index}] is {shown(item)} ({type(item).__name__}); every "
                f"item must be a str (a module name, a substring of one, or a regex). "
                f"Got optim_target_modules={shown(patterns)}."
            )
        _check_not_empty(item, where=f"optim_target_modules[{index}]")
    return tuple(patterns), _MODE_LIST


def _check_not_empty(pattern: str, *, where: str) -> None:
    if not pattern:
        raise TargetModulesError(
            f"{where} is an empty string: as a list item it would match every module (as a "
            f"substring), as a str none. Write what you mean, e.g. {_EXAMPLE}."
        )


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TargetModulesTypeError(
            "optim_target_modules can only be resolved against the model (an nn.Module); "
            f"got {type(model).__name__}. Pass the model itself, not its parameters."
        )


def _compile(items: tuple[str, ...], mode: str) -> tuple[BoundedPattern, ...]:
    """Every pattern compiled up front, so a bad regex fails before any module is visited.

    Patterns come from configs: they are matched in linear time (``bounded_regex``), with
    ``re``'s syntax and answers, so a catastrophic one cannot hang the call.
    """
    if mode == _MODE_ALL_LINEAR:
        return ()
    compiled = []
    for item in items:
        try:
            compiled.append(compile_bounded(item))
        except re.error as exc:
            raise TargetModulesError(
                f"optim_target_modules pattern {shown(item)} is not a valid regular expression "
                f"({exc}). Escape special characters (re.escape) or use a plain module name."
            ) from exc
        except UnsupportedPatternError as exc:
            raise TargetModulesError(
                f"optim_target_modules pattern {shown(item)} cannot be matched in bounded time: "
                f"{exc}."
            ) from None
    return tuple(compiled)


# -- matching ------------------------------------------------------------------------


def _first_rules(
    items: tuple[str, ...],
    mode: str,
    compiled: tuple[BoundedPattern, ...],
    modules: Sequence[tuple[str, nn.Module]],
) -> list[tuple[str, str] | None]:
    """For each module, ``(pattern, how)`` of the first rule that matches it, as HF tries
    them, or None: the whole-value special case (all-linear), one regex (a str), or per
    list item exact name, else substring, else regex.

    Each regex runs once over the names no earlier rule took (``fullmatch_each``, a DFA
    that continues a name from its parent's state): when the items are module names (a
    routed GaLore's targets), substrings take nearly every Linear and the regexes see
    only what is left. The ``(pattern, how)`` pairs are shared, not made per module."""
    names = [name for name, _ in modules]
    if mode == _MODE_ALL_LINEAR:
        linear = (items[0], "all-linear")
        return [linear if isinstance(module, nn.Linear) else None for _, module in modules]
    if mode == _MODE_REGEX:
        exact, regex = (items[0], "exact"), (items[0], "regex")
        return [(exact if name == items[0] else regex) if hit else None
                for name, hit in zip(names, compiled[0].fullmatch_each(names), strict=True)]
    exact_rules = {item: (item, "exact") for item in items}
    substring_rules = [(item, (item, "substring")) for item in items]
    rules: list[tuple[str, str] | None] = []
    pending: list[int] = []
    for index, name in enumerate(names):
        rule = exact_rules.get(name)
        if rule is None:
            for item, hit in substring_rules:
                if item in name:
                    rule = hit
                    break
            else:
                pending.append(index)
        rules.append(rule)
    for item, pattern in zip(items, compiled, strict=True):
        if not pending:
            break
        regex = (item, "regex")
        still: list[int] = []
        for index, hit in zip(pending, pattern.fullmatch_each([names[i] for i in pending]),
                              strict=True):
            if hit:
                rules[index] = regex
            else:
                still.append(index)
        pending = still
    return rules


def _canonical_names(named_parameters: Sequence[tuple[str, Any]]) -> dict[int, str]:
    """Parameter id -> the one name ``named_parameters()`` gives it (the first, if tied)."""
    return {id(param): name for name, param in named_parameters}


def _target_weight(name: str, module: nn.Module, canonical: dict[int, str]) -> Any:
    """The weight of a matched module if it is a target, else None: a trainable
    ``nn.Linear`` weight listed under this module's name. The common case, asked for
    every matched Linear of every build; ``_rejection`` says why when it is None."""
    if not isinstance(module, nn.Linear):
        return None
    weight = _weight(module)
    if (isinstance(weight, nn.Parameter) and weight.requires_grad
            and canonical.get(id(weight)) == f"{name}.weight"):
        return weight
    return None


def _judge(
    name: str, module: nn.Module, pattern: str, how: str, *, canonical: dict[int, str]
) -> TargetMatch:
    """A matched module's verdict: is its weight a target, and if not, why not."""
    kind = type(module).__name__
    reason, weight = _rejection(name, module, canonical)
    if reason:
        return TargetMatch(name, kind, pattern, how, False, reason, None, 0)
    return TargetMatch(name, kind, pattern, how, True, "", f"{name}.weight", weight.numel())


def _rejection(name: str, module: nn.Module, canonical: dict[int, str]) -> tuple[str, Any]:
    """Why this matched module's weight is not a target ("" when it is one), and the
    weight."""
    if not isinstance(module, nn.Linear):
        return f"not an nn.Linear ({type(module).__name__})", None
    weight = _weight(module)
    if not isinstance(weight, nn.Parameter):
        return "has no weight parameter", weight
    listed = canonical.get(id(weight))
    if listed is None:
        return "weight is not a registered parameter of the model", weight
    if listed != f"{name}.weight":
        return f"weight is tied to {listed!r}, the only name the model lists it under", weight
    if not weight.requires_grad:
        return "weight is frozen (requires_grad=False)", weight
    return "", weight


def _weight(module: nn.Module) -> Any:
    """``getattr(module, "weight", None)``, read from ``_parameters`` when nothing else
    could answer the attribute (``Module.__getattr__`` costs about a microsecond, and
    this runs for every matched Linear of the model)."""
    if ("weight" in module._parameters and "weight" not in module.__dict__
            and _weight_is_registered(type(module))):
        return module._parameters["weight"]
    return getattr(module, "weight", None)


@functools.lru_cache(maxsize=1024)  # bounded: FSDP2 and tests make classes at run time
def _weight_is_registered(kind: type) -> bool:
    """No class attribute (a property, a descriptor) answers ``weight`` before the
    registered parameter does; per class, asked once."""
    return not hasattr(kind, "weight")


# -- the "nothing selected" error ----------------------------------------------------


def _nothing_selected_message(model: nn.Module, selection: TargetSelection) -> str:
    shown = selection.describe_patterns()
    parts = [
        f"{shown} selected no weight: a target must be a trainable nn.Linear module whose "
        "name the pattern matches."
    ]
    parts.extend(_ignored_lines(selection.ignored))
    parts.append(_linear_names_line(model))
    parts.extend(_hints(model, selection))
    parts.append(
        f"Use patterns that match these names, e.g. {_EXAMPLE}; "
        "optimhub.targets.explain_targets(model, patterns) shows what each pattern matches."
    )
    return "\n".join(parts)


def _ignored_lines(ignored: Sequence[TargetMatch]) -> list[str]:
    if not ignored:
        return ["No module name matched."]
    lines = [f"Matched but ignored ({len(ignored)}):"]
    lines += [
        f"  - {m.module_name} ({m.module_type}): {m.reason}" for m in ignored[:_MAX_IGNORED_SHOWN]
    ]
    if len(ignored) > _MAX_IGNORED_SHOWN:
        lines.append(f"  ... and {len(ignored) - _MAX_IGNORED_SHOWN} more")
    return lines


def _linear_modules(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if n and isinstance(m, nn.Linear)]


def _linear_names_line(model: nn.Module) -> str:
    linears = _linear_modules(model)
    if not linears and isinstance(model, nn.Linear):
        return (
            "The model is itself a single nn.Linear: targets are submodules, found by name, "
            "so wrap it (nn.Sequential(linear)) or choose another optimizer."
        )
    if not linears:
        return (
            "This model has no nn.Linear module: low-rank optimizers (GaLore, APOLLO) project "
            "only nn.Linear weights, so choose another optimizer for it."
        )
    shown = [
        name + ("" if module.weight.requires_grad else " (frozen)")
        for name, module in linears[:_MAX_LINEAR_SHOWN]
    ]
    more = f", ... ({len(linears)} in all)" if len(linears) > _MAX_LINEAR_SHOWN else ""
    return f"nn.Linear modules of this model: {', '.join(shown)}{more}."


def _hints(model: nn.Module, selection: TargetSelection) -> list[str]:
    """Advice for the two common slips: 'all-linear' in a list, a str used as a substring."""
    hints = []
    if selection.mode == _MODE_LIST and _ALL_LINEAR_SPELLINGS & set(selection.patterns):
        hints.append(
            "'all-linear' is special only as the whole value (optim_target_modules="
            "'all-linear'); inside a list it is an ordinary name pattern."
        )
    if selection.mode == _MODE_REGEX:
        pattern = selection.patterns[0]
        found = [n for n, _ in _linear_modules(model) if _searches(pattern, n)]
        if found:
            hints.append(
                f"A str pattern must match a whole module name (re.fullmatch): "
                f"{shown(pattern)} occurs inside {found[0]!r} but does not match all of it; "
                f"write {shown('.*' + pattern + '.*')}, or the list [{shown(pattern)}]."
            )
    return hints


def _searches(pattern: str, name: str) -> bool:
    return compile_bounded(pattern).search(name)


def _show_patterns(patterns: tuple[str, ...], mode: str) -> str:
    """As a message quotes them: shortened like every echoed value."""
    return shown(patterns[0]) if mode != _MODE_LIST else shown(list(patterns))
