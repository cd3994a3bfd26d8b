"""Versions of installed distributions, read and compared in one place.

Reading package metadata costs about a millisecond and a process does not change its
packages, so the lookup is cached.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re

__all__ = ["installed_version", "version_tuple"]

_RELEASE = re.compile(r"\d+(?:\.\d+)*")


@functools.cache
def installed_version(distribution: str) -> str | None:
    """The installed version of a pip distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_tuple(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "0.50.2.dev0+cpu" -> (0, 50, 2)."""
    match = _RELEASE.match(version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else (0,)
