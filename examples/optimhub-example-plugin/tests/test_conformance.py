"""The plugin's own test suite: optimhub's conformance suite over every name it provides.

Run from this folder after installing the plugin: ``pytest``. The same checks run on
every built-in optimizer: it builds, its loss decreases, ``state_dict()`` resumes to
exactly the same parameters, each claimed capability holds, and a missing backend gives
the install command.
"""

from __future__ import annotations

import pytest

import optimhub.testing as ot


@pytest.mark.parametrize("name", ot.parametrize_catalog("sign_*"))
def test_conformance(name: str) -> None:
    ot.assert_conformance(name)
