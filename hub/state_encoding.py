"""Python objects kept in optimizer state, saved as plain data so that checkpoints load with
``torch.load(weights_only=True)``.

Some backends keep an object per parameter in ``optimizer.state`` (GaLore's and APOLLO's
projectors). ``torch.save`` pickles it, so loading needs ``weights_only=False``: arbitrary
code from a file. An :class:`ObjectCodec` names the classes a backend keeps; installed on an
optimizer, its ``state_dict`` post-hook turns each such object into a tagged dict of its
attributes (tensors, numbers, strings, lists of tensors) and its ``load_state_dict``
pre-hook rebuilds it. Only the named classes are ever rebuilt: a checkpoint never makes
optimhub import or construct anything else. Both hooks are torch's own, on the instance:
nothing on the step path.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, OptimHubWarning

if TYPE_CHECKING:
    import torch

__all__ = ["OBJECT_TAG", "ObjectCodec", "install_state_codec"]

#: Marks an object saved as a plain dict; the value is the object's class path.
OBJECT_TAG = "__optimhub_object__"
#: The tag optimhub 0.1 wrote (for projectors); still read.
_LEGACY_TAGS = (OBJECT_TAG, "__optimhub_projector__")

_SAFE_SCALARS = (bool, int, float, str, type(None))  # and tensors


@dataclass(frozen=True)
class ObjectCodec:
    """The classes (``module -> class names``) whose instances in optimizer state are saved
    as plain data and rebuilt on load."""

    known: Mapping[str, tuple[str, ...]]

    def is_known(self, obj: Any) -> bool:
        cls = type(obj)
        return cls.__name__ in self.known.get(cls.__module__, ())

    def encode(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
               ) -> dict[str, Any] | None:
        """``state_dict`` post-hook. torch hands out the live per-parameter state dicts, so
        entries are copied, never changed in place."""
        state = state_dict["state"]
        if not any(self.is_known(v) for entry in state.values() for v in _values(entry)):
            return None
        packed = {key: self._map_entry(entry, self.is_known, _pack)
                  for key, entry in state.items()}
        return {**state_dict, "state": packed}

    def decode(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
               ) -> dict[str, Any] | None:
        """``load_state_dict`` pre-hook. It runs before torch's own copying, which would
        mangle the dict's strings (torch rebuilds every iterable, a str included, from its
        items). Tensors move to the device of their parameter, as torch moves the rest."""
        state = state_dict.get("state", {})
        if not any(_is_packed(v) for entry in state.values() for v in _values(entry)):
            return None
        params = _saved_index_to_param(optimizer, state_dict)
        unpacked = {
            key: self._map_entry(entry, _is_packed,
                                 lambda data, key=key: self._unpack(data, params.get(key)))
            for key, entry in state.items()
        }
        return {**state_dict, "state": unpacked}

    @staticmethod
    def _map_entry(entry: Any, match: Any, convert: Any) -> Any:
        if not isinstance(entry, Mapping) or not any(match(v) for v in entry.values()):
            return entry
        return {k: convert(v) if match(v) else v for k, v in entry.items()}

    def _unpack(self, data: Mapping[str, Any], param: torch.Tensor | None) -> Any:
        path = next(data[tag] for tag in _LEGACY_TAGS if tag in data)
        module, _, name = str(path).rpartition(".")
        if name not in self.known.get(module, ()):
            known = ", ".join(f"{m}.{c}" for m, cs in self.known.items() for c in cs)
            raise CheckpointError(
                f"the optimizer state names class {path!r}, which optimhub does not rebuild "
                f"(known: {known}); load it with the optimizer that saved it"
            )
        cls = getattr(importlib.import_module(module), name)
        obj = cls.__new__(cls)
        obj.__dict__.update(
            {key: _to_device(value, param) for key, value in data["attributes"].items()}
        )
        return obj


def install_state_codec(optimizer: torch.optim.Optimizer, codec: ObjectCodec) -> bool:
    """Make the optimizer's state dicts loadable with ``torch.load(weights_only=True)``.

    Returns False (and installs nothing) for classes that override ``state_dict`` or
    ``load_state_dict`` without running torch's hooks (bitsandbytes-based ones): their
    objects stay pickled, as the backend saves them.
    """
    import torch

    cls = type(optimizer)
    base = torch.optim.Optimizer
    if cls.state_dict is not base.state_dict or cls.load_state_dict is not base.load_state_dict:
        return False
    optimizer.register_state_dict_post_hook(codec.encode)
    optimizer.register_load_state_dict_pre_hook(codec.decode)
    return True


def _values(entry: Any) -> Any:
    return entry.values() if isinstance(entry, Mapping) else ()


def _is_packed(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(tag in obj for tag in _LEGACY_TAGS)


def _pack(obj: Any) -> Any:
    attributes = dict(vars(obj))
    unsafe = {k: type(v).__name__ for k, v in attributes.items() if not _is_safe(v)}
    cls = type(obj)
    if unsafe:
        warnings.warn(
            f"optimhub: {cls.__module__}.{cls.__name__} holds {unsafe}, which cannot be "
            "saved as plain data; it stays a pickled object, so load this optimizer state "
            "with torch.load(weights_only=False)",
            OptimHubWarning,
            stacklevel=5,
        )
        return obj
    for key, value in attributes.items():
        if isinstance(value, (list, tuple)):
            attributes[key] = list(value)
    return {OBJECT_TAG: f"{cls.__module__}.{cls.__name__}", "attributes": attributes}


def _is_safe(value: Any) -> bool:
    import torch

    if isinstance(value, (list, tuple)):
        return all(isinstance(item, torch.Tensor) for item in value)
    return isinstance(value, (*_SAFE_SCALARS, torch.Tensor))


def _to_device(value: Any, param: torch.Tensor | None) -> Any:
    import torch

    if param is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device=param.device)
    if isinstance(value, list):
        return [_to_device(item, param) for item in value]
    return value


def _saved_index_to_param(
    optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]
) -> dict[Any, torch.Tensor]:
    """Saved parameter index -> this optimizer's parameter, paired as torch pairs them.

    A layout mismatch is left to ``load_state_dict`` itself, which raises its own error.
    """
    saved = chain.from_iterable(g["params"] for g in state_dict.get("param_groups", []))
    current = chain.from_iterable(g["params"] for g in optimizer.param_groups)
    return dict(zip(saved, current, strict=False))
