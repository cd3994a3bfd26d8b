"""The exception hierarchy of optimhub.

Every error the hub raises on bad input is one of these, so a caller can catch
``OptimHubError`` for "optimhub refused this configuration" and still catch the
matching built-in (``ValueError``, ``TypeError``, ``ImportError``) as usual. Each
message says what was wrong, with which value, and what to do instead; each is
raised before any tensor is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches

__all__ = [
    "MAX_MESSAGE_LENGTH",
    "BackendUnavailableError",
    "BuildError",
    "CapabilityError",
    "CatalogError",
    "CatalogTypeError",
    "CheckpointError",
    "EstimateUnavailableError",
    "MissingBackendError",
    "OptimArgsError",
    "OptimArgsTypeError",
    "OptimHubError",
    "OptimHubWarning",
    "PluginLoadError",
    "RoutingError",
    "TargetModulesError",
    "TargetModulesTypeError",
    "UnknownOptimizerError",
    "closest",
    "shorten",
    "shown",
]


#: Longest message an optimhub error carries. Every value a message quotes is shortened
#: (:func:`shown`); this is the backstop for any message that still grows past it (a
#: module that quotes a value whole): its middle is cut, keeping what was wrong (the start)
#: and the fix (the end).
MAX_MESSAGE_LENGTH = 2_500


class OptimHubError(Exception):
    """Root of every error optimhub raises on purpose."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(_bounded(a) if isinstance(a, str) else a for a in args))


class OptimHubWarning(UserWarning):
    """Root of the warnings optimhub issues (plugin load faults, CPU fallbacks...)."""


class UnknownOptimizerError(OptimHubError, ValueError):
    """An optimizer name that no loaded plugin provides."""

    def __init__(self, name: str, known: Iterable[str], note: str = "", *,
                 suggestions: list[str] | None = None) -> None:
        self.name = name
        if suggestions is None:
            suggestions = closest(name, known) if len(name) <= 200 else []
        self.suggestions = suggestions if len(name) <= 200 else []
        hint = f" Did you mean {_quoted(self.suggestions)}?" if self.suggestions else ""
        super().__init__(
            f"Unknown optimizer {shorten(repr(name))}.{hint} Run `optimhub list` to see every name "
            f"(and `optimhub plugins` to see which plugins loaded).{note}"
        )


class OptimArgsError(OptimHubError, ValueError):
    """A bad ``optim_args`` entry or hyperparameter: unknown key, malformed text, bad value."""


class OptimArgsTypeError(OptimArgsError, TypeError):
    """A hyperparameter or option of the wrong Python type (a str where a float belongs...)."""


class RoutingError(OptimArgsError):
    """A route set that cannot be applied to this model: a parameter no route claims, a
    route that claims nothing, an optimizer that cannot take the parameters routed to it."""


class TargetModulesError(OptimHubError, ValueError):
    """``optim_target_modules`` missing, malformed, or matching nothing usable."""


class TargetModulesTypeError(TargetModulesError, TypeError):
    """``optim_target_modules`` of the wrong type (not a str or a list of str)."""


class MissingBackendError(OptimHubError, ImportError):
    """The backend package of an optimizer is not installed (or fails to import)."""


class BackendUnavailableError(OptimHubError, RuntimeError):
    """The backend is installed but cannot run here (needs CUDA, an NPU, a newer version...)."""


class CapabilityError(OptimHubError, ValueError):
    """A training-loop contract that this optimizer cannot honour was asked for."""


class PluginLoadError(OptimHubError, RuntimeError):
    """A plugin failed to import or register, or two plugins claim the same name."""


class BuildError(OptimHubError, RuntimeError):
    """A plugin's builder raised, or returned something that is not an optimizer."""


class EstimateUnavailableError(OptimHubError, LookupError):
    """No estimator for this optimizer, and no ``state_bytes_per_param`` in its spec."""


class CheckpointError(OptimHubError, ValueError):
    """A saved optimizer state that does not belong to this optimizer or model."""


class CatalogError(OptimHubError, ValueError):
    """An optimizer spec (from registry.toml or a plugin) is malformed."""


class CatalogTypeError(CatalogError, TypeError):
    """Catalog input of the wrong Python type (bytes or None where TOML text belongs)."""


def shorten(text: str, limit: int = 80) -> str:
    """A user value as shown in a message: long input is cut, so errors stay readable."""
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` as every message quotes a value: shortened by :func:`shorten`, so a
    megabyte-long value from a config gives a message of a few lines, whatever the entry
    point."""
    return shorten(repr(value), limit)


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    tail = MAX_MESSAGE_LENGTH // 3
    head = MAX_MESSAGE_LENGTH - tail - 60
    cut = len(message) - head - tail
    return f"{message[:head]} ... [{cut} characters cut] ... {message[-tail:]}"


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates that look most like ``word``: what a typo most likely meant (none for
    a word far longer than any name: that is no typo)."""
    if len(word) > 200:
        return []
    return get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def _quoted(names: Iterable[str]) -> str:
    return " or ".join(repr(n) for n in names)
