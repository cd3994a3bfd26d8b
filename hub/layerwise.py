"""Layerwise mode (optimizer in backward) for any optimizer whose spec allows it.

Each parameter gets its own backend optimizer, stepped from the parameter's
``register_post_accumulate_grad_hook`` as soon as its gradient is ready, and the
gradient is freed right after: peak gradient memory drops to about one parameter's
worth. This is the one place the hub returns its own object rather than the backend's:
a small ``torch.optim.Optimizer`` that owns the per-parameter ones, so one LR scheduler
drives them all (the learning rate of each outer group is copied into its inner
optimizers before they step) and the reported learning rate is the real one.

Contracts (checked by the training-loop helpers): no gradient accumulation, no gradient
clipping (updates happen inside backward), ``step()`` has nothing left to do after a
backward (it steps only gradients set outside backward, such as DCP's priming step).

Its ``state_dict`` has torch's layout (``state`` and ``param_groups`` by parameter
position, plus a ``layerwise`` marker and the hub's stamp) and ``optimizer.state`` is a
live view of the inner optimizers' states, so ``torch.distributed.checkpoint``'s
``get_state_dict`` / ``set_state_dict`` treat it as any torch optimizer (they key the state
by parameter name, prime an empty state with a zero-gradient ``step()`` at lr 0, and load
through ``load_state_dict``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from .backends import build_lock
from .checkpoint import check_listed, check_state, stamp_of, stamp_state, torch_layout_parts
from .errors import CapabilityError, CheckpointError, shorten, shown

__all__ = ["INNER_GROUP_KEY", "LAYERWISE_KEY", "OWNED_PARAMETERS", "InnerStates",
           "LayerwiseOptimizer"]

#: The marker of a layerwise optimizer's state dict (a plain optimizer refuses it).
LAYERWISE_KEY = "layerwise"
#: The key, in a parameter's state entry, of its inner optimizer's group values that
#: stepping changed (a backend may count its steps in its param group): torch's layout
#: has one group per outer group, DCP keeps nothing else, so they travel with the entry.
INNER_GROUP_KEY = "layerwise_inner_group"


class _InBackwardOwners:
    """Which live optimizer updates each parameter inside backward (weakly, by identity).

    A second optimizer on such a parameter would step it twice per backward, or never see
    its gradient (freed inside backward). An entry lasts as long as both the parameter and
    its owner live, and until the owner releases it (``LayerwiseOptimizer.close()``).
    Checking and claiming happen under the process-wide build lock (:meth:`claiming`), so
    of several threads building on one model at once exactly one wins.
    """

    def __init__(self) -> None:
        self._owners: dict[int, tuple[weakref.ref[torch.Tensor], weakref.ref[object]]] = {}

    def owner(self, tensor: object) -> object | None:
        """The live optimizer that updates ``tensor`` inside backward, or None."""
        entry = self._owners.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]()

    def __contains__(self, tensor: object) -> bool:
        return self.owner(tensor) is not None

    def refuse_owned(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Raise the documented ``CapabilityError`` if another live optimizer updates any
        of these parameters inside backward."""
        for name, param in named:
            owner = self.owner(param)
            if owner is not None:
                raise CapabilityError(_owned_message(name, owner))

    @contextmanager
    def claiming(
        self, named: Iterable[tuple[str, torch.Tensor]]
    ) -> Iterator[Callable[[object], None]]:
        """Check that no parameter is owned and let the caller build and ``claim(owner)``,
        as one atomic step (other threads' checks wait until the claim is made)."""
        named = list(named)
        with build_lock():
            self.refuse_owned(named)
            yield lambda owner: self.claim(owner, [p for _, p in named])

    def claim(self, owner: object, params: Iterable[torch.Tensor]) -> None:
        """Record ``owner`` as the optimizer updating ``params`` inside backward."""
        with build_lock():
            for param in params:
                key = id(param)
                self._owners[key] = (
                    weakref.ref(param, lambda _ref, key=key: self._forget(key, _ref)),
                    weakref.ref(owner),
                )

    def release(self, owner: object, params: Iterable[torch.Tensor]) -> None:
        """Forget ``owner``'s claim on ``params`` (after it removed its hooks)."""
        with build_lock():
            for param in params:
                if self.owner(param) is owner:
                    del self._owners[id(param)]

    def _forget(self, key: int, ref: weakref.ref[torch.Tensor]) -> None:
        entry = self._owners.get(key)
        if entry is not None and entry[0] is ref:
            del self._owners[key]

    def __len__(self) -> int:
        """Entries held (some may be dead): 0 means no parameter is owned, so a build
        skips the per-parameter check."""
        return len(self._owners)


def _owned_message(name: str, owner: object) -> str:
    if isinstance(owner, LayerwiseOptimizer):
        who = "layerwise optimizer"
        how = "close() it (or leave its with-block), or drop every reference to it, first"
    else:
        who = f"{type(owner).__name__} optimizer (it updates in its fused backward)"
        how = ("its backward hooks cannot be removed, so build the new optimizer on a fresh "
               "copy of the model (e.g. reloaded from its checkpoint)")
    return (
        f"parameters such as {shown(name)} are stepped inside backward by a live {who}: a "
        f"second "
        f"optimizer would step them twice, or never see a gradient; {how}."
    )


#: Parameters stepped inside backward by a live optimizer (a LayerwiseOptimizer that is not
#: closed, or a fused-backward optimizer such as LOMO): another optimizer on them would
#: step them twice, or never see a gradient.
OWNED_PARAMETERS = _InBackwardOwners()

#: Group keys copied from the outer group into the inner optimizers before each step:
#: what LR schedulers and weight-decay schedulers change (a key the group lacks is skipped).
SYNCED_KEYS = ("lr", "weight_decay")


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Owns one optimizer per parameter (``inner``: name -> optimizer), stepped in backward.

    ``param_groups`` mirror the groups the hub built, so schedulers and logging work on
    this object as on any optimizer. ``close()`` (or leaving a ``with`` block) removes the
    hooks; until then a ``loss.backward()`` updates the parameters.
    """

    #: Its state_dict / load_state_dict stamp and check the state themselves (hub/checkpoint.py).
    checks_optimhub_stamp = True

    @property  # type: ignore[override]
    def state(self) -> InnerStates:
        """A read-only view of the inner optimizers' states, by parameter (what torch's
        ``optimizer.state`` is); DCP primes a fresh optimizer only when it is empty."""
        return InnerStates(self._inner_of, lambda: self.__dict__.get("inner", {}).values())

    def _inner_of(self, parameter: object) -> torch.optim.Optimizer | None:
        name = self.__dict__.get("_name_of", {}).get(id(parameter))
        return None if name is None else self.inner[name]

    @state.setter
    def state(self, value: Any) -> None:
        if "inner" in self.__dict__:  # torch's constructor sets an empty one first
            raise CapabilityError(
                "the state of a layerwise optimizer is its inner optimizers' state; load a "
                "state with load_state_dict()"
            )

    def __init__(
        self,
        groups: list[dict[str, Any]],
        names: list[list[str]],
        build_one: Callable[[dict[str, Any], str], torch.optim.Optimizer],
        defaults: Mapping[str, Any],
    ) -> None:
        super().__init__(groups, dict(defaults))
        self.inner: dict[str, torch.optim.Optimizer] = {}
        self._group_of: dict[str, dict[str, Any]] = {}
        self._name_of: dict[int, str] = {}
        #: Each inner optimizer's group values as built: what its stepping changes in them
        #: (a step count kept in the group) is saved with its state entry.
        self._built: dict[str, dict[str, Any]] = {}
        self._handles: list[Any] = []
        params: dict[str, torch.Tensor] = {}
        for group, group_names in zip(self.param_groups, names, strict=True):
            settings = {k: v for k, v in group.items() if k != "params"}
            for name, param in zip(group_names, group["params"], strict=True):
                self.inner[name] = build_one({**settings, "params": [param]}, name)
                self._built[name] = _group_values(self.inner[name])
                self._group_of[name] = group
                self._name_of[id(param)] = name
                params[name] = param
        # Hooks only once every inner optimizer built: a failed build leaves the model as it
        # was. Checking that no other optimizer owns a parameter and hooking them is one step.
        with OWNED_PARAMETERS.claiming(params.items()) as claim:
            for name, param in params.items():
                self._handles.append(
                    param.register_post_accumulate_grad_hook(self._hook_for(name)))
            claim(self)
        unhook = weakref.finalize(self, _remove_all, self._handles)
        unhook.atexit = False

    def _hook_for(self, name: str) -> Callable[[torch.Tensor], None]:
        # The hook holds the optimizer weakly: the model must not keep an optimizer alive
        # that nobody holds any more (its hooks would step the parameters for good, and its
        # ownership would refuse every later optimizer on them). When it is collected, a
        # finalizer removes the hooks.
        owner = weakref.ref(self)

        def step_in_backward(param: torch.Tensor) -> None:
            optimizer = owner()
            if optimizer is not None:
                optimizer._step_one(name)

        return step_in_backward

    def _step_one(self, name: str) -> None:
        inner = self.inner[name]
        outer = self._group_of[name]
        for group in inner.param_groups:
            for key in SYNCED_KEYS:
                if key in outer:
                    _assign(group, key, outer[key])
        inner.step()
        inner.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        """Step the parameters that hold a gradient set outside backward: after a backward
        there are none (each was stepped and freed inside it), so this does nothing then.
        A gradient set by hand is stepped as any optimizer would, e.g. DCP's priming step
        (zero gradients at lr 0), which creates a fresh optimizer's state to load into."""
        if closure is not None:
            raise CapabilityError(
                "a layerwise optimizer steps inside backward; step(closure) cannot re-run "
                "the loss. Call loss.backward() and leave step() without a closure."
            )
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._step_one(self._name_of[id(param)])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Gradients are already freed after each parameter's step; clear any leftovers."""
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    # ---- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """torch's layout: each parameter's inner state entry under its position in
        ``param_groups`` order, the outer groups listing positions; plus ``layerwise``
        (a marker: a plain optimizer refuses this state) and the hub's stamp."""
        state: dict[int, Any] = {}
        groups = []
        position = 0
        for group in self.param_groups:
            entry = {k: v for k, v in group.items() if k != "params"}
            entry["params"] = []
            for param in group["params"]:
                name = self._name_of[id(param)]
                saved = self.inner[name].state_dict()["state"].get(0)
                changed = _changed(_group_values(self.inner[name]), self._built[name])
                if changed:
                    saved = {**(saved or {}), INNER_GROUP_KEY: changed}
                if saved is not None:
                    state[position] = saved
                entry["params"].append(position)
                position += 1
            groups.append(entry)
        return stamp_state(self, {LAYERWISE_KEY: True, "state": state, "param_groups": groups})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Load torch's layout (what :meth:`state_dict` writes, or what DCP's
        ``set_state_dict`` passes: the same keyed by parameter name) or the earlier
        layerwise layout (``inner``: each parameter's own state dict by name).
        Everything is checked before any inner optimizer loads."""
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(
                f"an optimizer state must be a dict (what optimizer.state_dict() returns), "
                f"got {type(state_dict).__name__}"
            )
        if not state_dict.get(LAYERWISE_KEY) and not _from_dcp(state_dict):
            raise CheckpointError(
                "this is a layerwise optimizer, but the state dict was not saved by one "
                "(no 'layerwise' marker); load it into the optimizer that saved it"
            )
        ordered = "inner" not in state_dict  # torch's layout is positional
        state_dict = check_state(self, state_dict, ordered=ordered)  # the optimhub stamp
        loads = self._by_position(state_dict) if ordered else self._by_name(state_dict)
        for name, inner_state in loads.items():
            self.inner[name].load_state_dict(inner_state)
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"], strict=True):
            for key, value in saved_group.items():
                if key != "params":
                    group[key] = value

    def _by_position(self, state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Each inner optimizer's state dict from torch's layout, matched as torch matches
        it: the saved groups' parameter keys (positions, or DCP's names), in order, to this
        optimizer's parameters."""
        groups, state = torch_layout_parts(state_dict, "layerwise", "optimhub's 'inner' table")
        if len(groups) != len(self.param_groups):
            raise CheckpointError(
                f"the state has {len(groups)} param groups, this optimizer "
                f"{len(self.param_groups)}; it was saved with other settings"
            )
        for saved, group in zip(groups, self.param_groups, strict=True):
            if len(saved["params"]) != len(group["params"]):
                raise CheckpointError(
                    f"a saved param group has {len(saved['params'])} parameters, this "
                    f"optimizer's {len(group['params'])}; it was saved for another model "
                    "or with other trainable parameters"
                )
        loads = {}
        for saved, group in zip(groups, self.param_groups, strict=True):
            for key, param in zip(saved["params"], group["params"], strict=True):
                name = self._name_of[id(param)]
                inner = self.inner[name]
                settings = {k: v for k, v in inner.param_groups[0].items() if k != "params"}
                entry = dict(state[key]) if isinstance(state.get(key), Mapping) else None
                if entry is not None:
                    settings.update(entry.pop(INNER_GROUP_KEY, None) or {})
                loads[name] = {
                    "state": {0: entry} if entry else {},
                    "param_groups": [{**settings, "params": [0]}],
                }
        check_listed(groups, state, "layerwise")
        return loads

    def _by_name(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """The earlier layerwise layout (``inner``): strict by parameter name."""
        saved = state_dict["inner"]
        missing = sorted(set(self.inner) - set(saved))
        unexpected = sorted(set(saved) - set(self.inner))
        if missing or unexpected:
            raise CheckpointError(
                "layerwise state does not match the model's parameters: "
                f"missing {_few(missing)}, unexpected {_few(unexpected)}. Was it saved for "
                "another model or with other trainable parameters?"
            )
        if len(state_dict["param_groups"]) != len(self.param_groups):
            raise CheckpointError(
                f"the state has {len(state_dict['param_groups'])} param groups, this "
                f"optimizer {len(self.param_groups)}; it was saved with other settings"
            )
        return dict(saved)

    # ---- hooks -----------------------------------------------------------------------
    def close(self) -> None:
        """Remove the backward hooks: after this, backward no longer updates parameters."""
        _remove_all(self._handles)
        OWNED_PARAMETERS.release(self, (p for g in self.param_groups for p in g["params"]))

    @property
    def closed(self) -> bool:
        return not self._handles

    def __enter__(self) -> LayerwiseOptimizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[str, torch.optim.Optimizer]]:
        return iter(self.inner.items())

    def __repr__(self) -> str:
        kinds = sorted({type(o).__name__ for o in self.inner.values()})
        return f"LayerwiseOptimizer({len(self.inner)} x {'/'.join(kinds)})"


class InnerStates(Mapping[torch.Tensor, Any]):
    """``optimizer.state`` of an optimizer made of others (the layerwise optimizer's inner
    ones, a routed optimizer's routes): each parameter's state, read from the optimizer
    that owns it (``state[p]`` behaves as on that optimizer). Read-only."""

    def __init__(self, owner_of: Callable[[object], torch.optim.Optimizer | None],
                 optimizers: Callable[[], Iterable[torch.optim.Optimizer]]) -> None:
        self._owner_of = owner_of
        self._optimizers = optimizers

    def __getitem__(self, parameter: torch.Tensor) -> Any:
        owner = self._owner_of(parameter)
        if owner is None:
            raise KeyError("this tensor is not a parameter of this optimizer")
        return owner.state[parameter]

    def __contains__(self, parameter: object) -> bool:
        owner = self._owner_of(parameter)
        return owner is not None and parameter in owner.state

    def __iter__(self) -> Iterator[torch.Tensor]:
        for optimizer in self._optimizers():
            yield from optimizer.state

    def __len__(self) -> int:
        return sum(len(optimizer.state) for optimizer in self._optimizers())


def _group_values(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An inner optimizer's group values (a copy; tensors cloned), but the parameters and
    what the outer group sets before every step."""
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
            for k, v in optimizer.param_groups[0].items()
            if k != "params" and k not in SYNCED_KEYS}


def _changed(now: Mapping[str, Any], built: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``now`` that are new or differ from ``built``."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                    and a.shape == b.shape and bool(torch.equal(a, b)))
        try:
            return bool(a == b)
        except Exception:  # a value without a plain equality: keep it
            return False

    return {k: v for k, v in now.items() if k not in built or not same(v, built[k])}


def _from_dcp(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state without the layerwise marker is what DCP's ``set_state_dict`` loads:
    torch's layout keyed by parameter name, unstamped (DCP keeps only ``state`` and
    ``param_groups``). A positional or stamped state without the marker was saved by a
    plain optimizer."""
    groups, state = state_dict.get("param_groups"), state_dict.get("state")
    return (stamp_of(state_dict) is None and isinstance(state, Mapping)
            and isinstance(groups, list) and all(isinstance(key, str) for key in state)
            and all(isinstance(g, Mapping) and isinstance(g.get("params"), list)
                    and all(isinstance(key, str) for key in g["params"]) for g in groups))


def _remove_all(handles: list[Any]) -> None:
    """Remove the hooks of a collected (or closed) layerwise optimizer."""
    for handle in handles:
        handle.remove()
    handles.clear()


def _assign(group: dict[str, Any], key: str, value: Any) -> None:
    """Set a group value in place; some backends keep lr as a 0-d tensor."""
    current = group.get(key)
    if isinstance(current, torch.Tensor):
        current.fill_(value)
    else:
        group[key] = value


def _few(names: list[Any], limit: int = 5) -> str:
    if not names:
        return "none"
    listed = ", ".join(shorten(str(name)) for name in names[:limit])
    return f"[{listed}{', ...' if len(names) > limit else ''}] ({len(names)})"
