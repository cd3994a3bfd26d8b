"""The pluggy hook specifications of optimhub: what a plugin may implement.

There is one hook. It is handed a ``register`` object and calls it once per optimizer it
provides (the llm / tox 4 style), so the hub knows which plugin provided which name
without collecting and guessing at return values.

A plugin module looks like this::

    import optimhub

    @optimhub.hookimpl
    def optimhub_register_optimizers(register):
        register.optimizer(optimhub.OptimizerSpec(...), build_my_optimizer)

and is announced in its distribution's ``pyproject.toml``::

    [project.entry-points.optimhub]
    my_plugin = "my_package.optimhub_plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registration import Register

PROJECT_NAME = "optimhub"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def optimhub_register_optimizers(register: Register) -> None:
    """Register the optimizers this plugin provides.

    Call ``register.optimizer(spec, builder)`` for each new name: ``spec`` is an
    :class:`optimhub.OptimizerSpec` (or a mapping in the registry.toml entry format, see
    :func:`optimhub.spec_from_mapping`) and ``builder`` is a callable taking an
    :class:`optimhub.BuildRequest` and returning the backend's optimizer object.

    Built-in plugins, whose specs live in registry.toml, call
    ``register.builder(name, builder)`` instead.

    Import heavy backends inside the builder, never at module import: listing optimizers
    must not pay for them.
    """
