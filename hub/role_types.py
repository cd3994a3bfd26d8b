"""The names of parameter roles and what the router knows of one parameter: plain data, no
torch, so the catalog can validate route selectors without importing torch (``optimhub
list`` stays torch-free). :mod:`optimhub.roles` decides the roles from a model.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["ROLE_NAMES", "WEIGHT_DECAY_POLICIES", "ParameterRole", "Role"]


class Role(str, enum.Enum):
    """The role of a parameter; the value is its spelling in route selectors."""

    MATRIX = "matrix"
    EMBEDDING = "embedding"
    HEAD = "head"
    NORM = "norm"
    BIAS = "bias"
    SCALAR = "scalar"
    CONV = "conv"
    EXPERT = "expert"


#: Every role's spelling, in the order the docs list them.
ROLE_NAMES: tuple[str, ...] = tuple(r.value for r in Role)


class ParameterRole(NamedTuple):
    """One trainable parameter as the router sees it.

    ``module`` is the name of the module that registers it (``""`` for the root) and
    ``module_types`` the class names of that module's MRO (for ``type:`` selectors, so
    ``type:Linear`` also selects a subclass). ``tied`` lists the other names the same
    tensor is reachable under (an output head tied to the embedding). ``why`` says in a
    few words what decided the role.

    A named tuple: one per parameter, every routed build (10k on a large model). A
    frozen dataclass (an instance and its ``__dict__``, set field by field) cost twice the
    time to make, and the garbage collections its allocations trigger as much again.
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    module: str
    module_types: tuple[str, ...]
    why: str
    tied: tuple[str, ...] = ()

    @property
    def module_type(self) -> str:
        """The owning module's own class name."""
        return self.module_types[0] if self.module_types else ""

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


#: What ``weight_decay_policy`` may be (see :mod:`optimhub.param_groups`): ``"hf"`` is HF's
#: name-based split; the others decide by role.
WEIGHT_DECAY_POLICIES: tuple[str, ...] = ("hf", "matrices", "matrices_and_embeddings")
