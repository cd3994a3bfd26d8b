"""What each trainable parameter *is*: its role, from the module that owns it, its shape and
the model's own structure, never from the spelling of its name.

A router (:mod:`optimhub.routing`) sends parameters to optimizers by role (Muon takes the
hidden matrices, AdamW the rest), and the ``"matrices"`` weight-decay policy decays by
role. The roles:

- ``embedding``: the weight of an ``nn.Embedding`` / ``nn.EmbeddingBag``, or of the module
  ``model.get_input_embeddings()`` returns. A weight tied to the output head is one
  parameter, listed once by ``named_parameters()``, with this one role.
- ``head``: the output projection: the weight of ``model.get_output_embeddings()`` where
  the model has that method (every Hugging Face model), else the last ``nn.Linear`` whose
  output size is the input embedding's vocabulary.
- ``norm``: every parameter of a normalisation module, by type: ``LayerNorm``,
  ``RMSNorm``, ``GroupNorm``, the ``BatchNorm`` / ``InstanceNorm`` family, and any module
  with a class in its MRO whose name ends in ``Norm`` (``LlamaRMSNorm``, ``T5LayerNorm``).
- ``bias``: a 1-D parameter registered as ``bias`` by its (non-norm) module.
- ``scalar``: any other parameter with fewer than two dimensions (gates, temperatures,
  per-channel scales).
- ``conv``: an N-D (3-D or more) kernel of a convolution module (``nn.Conv1d/2d/3d`` and
  the transposed ones).
- ``expert``: any other parameter of 3 or more dimensions: a stack of matrices, such as
  the fused expert weights of a mixture-of-experts layer (Mixtral's ``gate_up_proj``).
- ``matrix``: every other 2-D parameter: the hidden weights of ``nn.Linear`` layers, GPT-2's
  ``Conv1D`` (stored transposed), a MoE router's weight.

Everything here reads module types, shapes and identities only, so it works on a model on
the meta device (a 70B configuration costs nothing to describe).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .role_types import ROLE_NAMES, ParameterRole, Role

if TYPE_CHECKING:
    from .parameter_source import ModelWalk

__all__ = [
    "ROLE_NAMES",
    "ParameterRole",
    "Role",
    "layer_count",
    "layer_indices",
    "parameter_roles",
]


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, InstanceNorm*d, SyncBatchNorm
)
_EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd,)


def parameter_roles(
    model: nn.Module | None, named: Iterable[tuple[str, torch.Tensor]] | None = None,
    walk: ModelWalk | None = None,
) -> dict[str, ParameterRole]:
    """The role of every parameter of ``model``, by name (``named_parameters()`` order and
    names, so a tied weight appears once).

    ``named`` restricts the answer to these (name, parameter) pairs (names as the model
    gives them). Without a model (bare parameters) only the shape decides: 2-D is
    ``matrix``, N-D ``expert``, the rest ``scalar``. ``walk``: ``model``'s
    (:func:`optimhub.parameter_source.walk_model`), which saves walking it again.
    """
    if model is None:
        return {name: _by_shape(name, tuple(p.shape), "", (), "no model: by shape alone")
                for name, p in (named or ())}
    if walk is None or not walk.modules_unique:
        walk = None
    structure = _Structure(model, walk)
    wanted = None if named is None else {name for name, _ in named}
    listed = walk.parameters if walk is not None else model.named_parameters()
    return {
        name: structure.role(name, param)
        for name, param in listed
        if wanted is None or name in wanted
    }


class _Structure:
    """The facts about a model that decide roles: who owns each parameter, which modules
    are its input embeddings and its output head, and which names a tied tensor has."""

    def __init__(self, model: nn.Module, walk: ModelWalk | None = None) -> None:
        self.aliases: dict[int, list[str]] = {}
        self._types: dict[type, tuple[tuple[str, ...], bool]] = {}
        if walk is not None:  # no module reached twice: the walk's lists are torch's
            self.modules = dict(walk.modules)
            if walk.repeated:
                first = {id(p): n for n, p in walk.parameters}
                for name, param in walk.repeated:
                    self.aliases.setdefault(id(param), [first[id(param)]]).append(name)
        else:
            self.modules = dict(model.named_modules(remove_duplicate=False))
            for name, param in model.named_parameters(remove_duplicate=False):
                self.aliases.setdefault(id(param), []).append(name)
        inputs = _call(model, "get_input_embeddings")
        self.input_embeddings = {id(m) for m in self.modules.values()
                                 if isinstance(m, _EMBEDDING_TYPES)}
        if isinstance(inputs, nn.Module):
            self.input_embeddings.add(id(inputs))
        head = _call(model, "get_output_embeddings")
        if not isinstance(head, nn.Module):
            head = _linear_to_vocabulary(self.modules.values(), inputs)
        weight = getattr(head, "weight", None) if head is not None else None
        self.head_weight = id(weight) if isinstance(weight, torch.Tensor) else None

    def role(self, name: str, param: torch.Tensor) -> ParameterRole:
        owner_name, _, attribute = name.rpartition(".")
        owner = self.modules.get(owner_name)
        types, norm = self._type_facts(type(owner)) if owner is not None else ((), False)
        shape = tuple(param.shape)
        aliases = self.aliases.get(id(param))
        tied = tuple(n for n in aliases if n != name) if aliases else ()
        role, why = self._decide(owner, param, shape, attribute, norm, tied)
        if role is None:  # decided by the shape alone
            return _by_shape(name, shape, owner_name, types,
                             f"{len(shape)}-D weight of {types[0] if types else 'the model'}",
                             tied)
        return ParameterRole(name, shape, role, owner_name, types, why, tied)

    def _decide(self, owner: nn.Module | None, param: torch.Tensor, shape: tuple[int, ...],
                attribute: str, norm: bool, tied: tuple[str, ...]
                ) -> tuple[Role | None, str]:
        if owner is not None and id(owner) in self.input_embeddings:
            return Role.EMBEDDING, (f"{type(owner).__name__} (input embeddings)"
                                    + (f", tied to {', '.join(tied)}" if tied else ""))
        if id(param) == self.head_weight:
            return Role.HEAD, "weight of the output head"
        if norm:
            return Role.NORM, f"{type(owner).__name__} is a normalisation layer"
        if len(shape) < 2:
            if attribute == "bias":
                return Role.BIAS, f"the bias of {type(owner).__name__}"
            return Role.SCALAR, f"{len(shape)}-D, not a bias"
        if len(shape) >= 3 and owner is not None and isinstance(owner, _CONV_TYPES):
            return Role.CONV, f"{len(shape)}-D kernel of {type(owner).__name__}"
        return None, ""

    def _type_facts(self, cls: type) -> tuple[tuple[str, ...], bool]:
        """An owner type's class names and whether it is a normalisation layer, once per
        type (a model has a few types and thousands of parameters)."""
        facts = self._types.get(cls)
        if facts is None:
            names = tuple(c.__name__ for c in cls.__mro__ if c not in (nn.Module, object))
            facts = self._types[cls] = (names, _is_norm_type(cls))
        return facts


def _by_shape(name: str, shape: tuple[int, ...], module: str, types: tuple[str, ...],
              why: str, tied: tuple[str, ...] = ()) -> ParameterRole:
    role = Role.MATRIX if len(shape) == 2 else Role.EXPERT if len(shape) > 2 else Role.SCALAR
    if role is Role.EXPERT:
        why += " (a stack of matrices)"
    return ParameterRole(name, shape, role, module, types, why, tied)


def _is_norm_type(module_type: type) -> bool:
    return issubclass(module_type, _NORM_TYPES) or any(
        cls.__name__.endswith("Norm") for cls in module_type.__mro__)


def _call(model: nn.Module, method: str) -> Any:
    """``model.get_input_embeddings()`` / ``get_output_embeddings()`` where it exists and
    answers (HF raises NotImplementedError on some base classes)."""
    function = getattr(model, method, None)
    if not callable(function):
        return None
    try:
        return function()
    except (NotImplementedError, AttributeError):
        return None


def _linear_to_vocabulary(modules: Iterable[nn.Module], inputs: Any) -> nn.Module | None:
    """A model without ``get_output_embeddings``: the last ``nn.Linear`` whose output size
    is the vocabulary of its input embedding (or, without one, of its first
    ``nn.Embedding``)."""
    modules = list(modules)
    embedding = inputs if isinstance(inputs, nn.Embedding) else next(
        (m for m in modules if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        return None
    vocabulary = embedding.num_embeddings
    heads = [m for m in modules if isinstance(m, nn.Linear) and m.out_features == vocabulary]
    return heads[-1] if heads else None


# ---- depth, for layer-wise learning-rate decay --------------------------------------------
def layer_indices(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, int]:
    """Each parameter's depth, as timm's layer-wise lr decay counts it: 0 for what comes
    before the stack of blocks (embeddings), ``i + 1`` inside block ``i``, and
    ``blocks + 1`` for what comes after it (final norm, head).

    The stack of blocks is the model's ``nn.ModuleList`` of same-typed modules holding the
    most parameters (``model.layers``, ``transformer.h``, ``blocks``). Without one, every
    parameter is at depth 0. Returns ``{name: depth}`` for ``names`` (default: all).
    """
    stack_name, size = _block_stack(model)
    depths: dict[str, int] = {}
    seen_stack = False
    prefix = f"{stack_name}." if stack_name else None
    for name, _ in model.named_parameters():
        if prefix is not None and name.startswith(prefix):
            seen_stack = True
            depths[name] = int(name[len(prefix):].split(".", 1)[0]) + 1
        else:
            depths[name] = size + 1 if seen_stack else 0
    if names is None:
        return depths
    return {name: depths[name] for name in names}


def layer_count(model: nn.Module) -> int:
    """How many blocks the model's stack holds (0 without a stack)."""
    return _block_stack(model)[1]


def _block_stack(model: nn.Module) -> tuple[str | None, int]:
    best: tuple[int, str | None, int] = (0, None, 0)
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        count = sum(p.numel() for p in module.parameters())
        if count > best[0]:
            best = (count, name, len(module))
    return best[1], best[2]
