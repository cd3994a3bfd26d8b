"""What an optimizer *is*, as data: ``OptimizerSpec``, its typed options (``ArgSpec``)
and its ``Capability`` flags.

A spec is frozen and complete: the core decides everything (which arguments are valid,
which checks to run before building, which loop contract applies) from the spec alone,
never from the spelling of a name. Built-in specs come from registry.toml; a third-party
plugin builds the same objects in Python.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "ARG_TYPES",
    "HYPERPARAMETERS",
    "ROUTE_ARGUMENT_KEYS",
    "UNSET",
    "ArgSpec",
    "Capability",
    "OptimizerSpec",
    "RouteTemplate",
]


class _Unset:
    """Marks an ArgSpec without a default: the key is passed to the backend only when given."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class Capability(str, enum.Enum):
    """A fact about an optimizer that changes how it must be built or driven.

    The value is the spelling used in registry.toml and on the command line. Each member
    is read by the core (factory, training loop, CLI or conformance suite); the
    ``explanation`` says what it asks of the user's code.
    """

    SCHEDULE_FREE = "schedule_free"
    FUSED_BACKWARD = "fused_backward"
    NEEDS_MODEL = "needs_model"
    TARGET_MODULES = "target_modules"
    LOW_RANK = "low_rank"
    LAYERWISE = "layerwise"
    LAYERWISE_CAPABLE = "layerwise_capable"
    LOW_BIT_STATE = "low_bit_state"
    PAGED = "paged"
    CUDA_ONLY = "cuda_only"
    CLOSURE_REQUIRED = "closure_required"
    NO_DDP = "no_ddp"
    NO_FSDP2 = "no_fsdp2"
    NO_DCP = "no_dcp"
    DEEPSPEED_ZERO = "deepspeed_zero"
    DEEPSPEED_ZERO3 = "deepspeed_zero3"
    SINGLE_GROUP = "single_group"
    MATRIX_ONLY = "matrix_only"
    STATIC_WEIGHT_DECAY = "static_weight_decay"
    CREATE_GRAPH = "create_graph"

    @property
    def explanation(self) -> str:
        return _EXPLANATIONS[self]


_EXPLANATIONS: dict[Capability, str] = {
    Capability.SCHEDULE_FREE: (
        "schedule-free: call optimizer.train() before training steps and optimizer.eval() "
        "before evaluating or saving; use a constant learning-rate schedule (warmup is the "
        "optimizer's own)"
    ),
    Capability.FUSED_BACKWARD: (
        "fused backward: loss.backward() + step() are replaced by the backend's "
        "fused_backward(loss, lr); no gradient accumulation; clipping only through the backend"
    ),
    Capability.NEEDS_MODEL: "needs the model itself (nn.Module), not only its parameters",
    Capability.TARGET_MODULES: (
        "needs optim_target_modules: the Linear layers whose weights get the low-rank update"
    ),
    Capability.LOW_RANK: "keeps low-rank (projected) state for the targeted 2-D weights",
    Capability.LAYERWISE: (
        "layerwise: steps each parameter inside backward (optimizer in backward); no gradient "
        "accumulation, no gradient clipping, step() is a no-op"
    ),
    Capability.LAYERWISE_CAPABLE: "can run layerwise (one optimizer per parameter, in backward)",
    Capability.LOW_BIT_STATE: "keeps optimizer state in 8 bits or fewer",
    Capability.PAGED: "pages optimizer state to CPU memory under GPU memory pressure (CUDA)",
    Capability.CUDA_ONLY: "runs only on a CUDA device",
    Capability.CLOSURE_REQUIRED: "step(closure) needs a closure that recomputes the loss",
    Capability.NO_DDP: "cannot run under DistributedDataParallel",
    Capability.NO_FSDP2: (
        "cannot step parameters sharded by FSDP2 (fully_shard), or any DTensor parameter: "
        "measured, it fails or does not match one process; DistributedDataParallel works"
    ),
    Capability.NO_DCP: (
        "its state does not resume through torch.distributed.checkpoint (measured: the "
        "first step after loading fails, or the resumed run is off); "
        "optimhub.distributed_checkpoint refuses it before saving or loading: save "
        "optimizer.state_dict() with torch.save on each rank instead"
    ),
    Capability.DEEPSPEED_ZERO: (
        "steps like one process under DeepSpeed ZeRO stages 1 and 2, which hand it flat "
        "1-D partitions of each param group: measured bit for bit (an elementwise update); "
        "OptimHubTrainer refuses a name without it under those stages"
    ),
    Capability.DEEPSPEED_ZERO3: (
        "steps like one process under DeepSpeed ZeRO stage 3, which also calls step() once "
        "per parameter sub-group with the other groups emptied (a step count kept per group "
        "runs ahead there): measured bit for bit; OptimHubTrainer refuses a name without it "
        "under stage 3"
    ),
    Capability.MATRIX_ONLY: (
        "updates only hidden 2-D weight matrices (Muon family): the other parameters need a "
        "fallback optimizer, which a routed optimizer provides"
    ),
    Capability.CREATE_GRAPH: (
        "second-order: every backward must keep the graph (loss.backward(create_graph=True)) "
        "so step() can take Hessian-vector products"
    ),
    Capability.SINGLE_GROUP: (
        "one learning rate and one weight decay for every parameter (it takes the model, "
        "not param groups): no param_group_rules"
    ),
    Capability.STATIC_WEIGHT_DECAY: (
        "reads its weight decay once, when it is built: a change of a param group's "
        "weight_decay between steps is ignored, so weight-decay schedules are refused"
    ),
}

#: optim_args value types an ArgSpec may declare.
ARG_TYPES = ("int", "float", "bool", "str", "int_tuple", "float_tuple")

#: The training hyperparameters a spec may accept, in the HF TrainingArguments sense:
#: lr <- learning_rate, betas <- (adam_beta1, adam_beta2), eps <- adam_epsilon,
#: weight_decay <- weight_decay (applied through the decay param group).
HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay")

#: What an option of a routed entry (its ``route`` field) may set on its route besides the
#: route optimizer's own options: the optimizer itself, or a training hyperparameter in
#: HF's vocabulary (a value of None leaves the top-level one in place).
ROUTE_ARGUMENT_KEYS = ("optimizer", "learning_rate", "lr_scale", "weight_decay", "betas",
                       "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay_policy",
                       "layer_decay")


@dataclass(frozen=True)
class ArgSpec:
    """One typed ``optim_args`` key of an optimizer.

    ``default`` is what the hub passes when the user gives nothing; ``UNSET`` means the key
    is not passed at all and the backend's own default applies. ``target_group`` options go
    into the low-rank target param group rather than the constructor. ``backend_key`` is
    the name the backend uses when it differs from the user-facing key.
    """

    name: str
    type: str
    doc: str
    default: Any = UNSET
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    length: int | None = None
    target_group: bool = False
    backend_key: str | None = None
    route: str | None = None
    #: A value the snippets of ``optimhub info`` write for an option the backend needs and
    #: has no default for (Ranger21's num_iterations, the run length).
    example: Any = UNSET

    def __post_init__(self) -> None:
        if self.type not in ARG_TYPES:
            raise ValueError(
                f"option {self.name!r}: unknown type {self.type!r}; "
                f"use one of {', '.join(ARG_TYPES)}"
            )
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.length is not None and not self.is_tuple:
            raise ValueError(f"option {self.name!r}: 'length' applies only to tuple types")

    @property
    def is_tuple(self) -> bool:
        return self.type.endswith("_tuple")

    @property
    def has_default(self) -> bool:
        return self.default is not UNSET

    @property
    def key(self) -> str:
        """The name the backend receives."""
        return self.backend_key or self.name

    def describe_allowed(self) -> str:
        """The allowed values in words, for error messages and ``optimhub info``."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            kind = {
                "int": "an integer",
                "float": "a number",
                "bool": "true or false",
                "str": "a string",
                "int_tuple": "a tuple of integers like (1,2)",
                "float_tuple": "a tuple of numbers like (0.9,0.95)",
            }[self.type]
            if self.length is not None:
                kind += f" of length {self.length}"
            text = kind + self._bounds_text()
        return text + (", or none" if self.nullable else "")

    def _bounds_text(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.exclusive_minimum is not None:
            parts.append(f"> {self.exclusive_minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.exclusive_maximum is not None:
            parts.append(f"< {self.exclusive_maximum:g}")
        return (" " + " and ".join(parts)) if parts else ""

    def bound_violation(self, number: float) -> str | None:
        """Why ``number`` is outside this option's bounds, or None when it is inside."""
        if isinstance(number, float) and not math.isfinite(number):
            return "it is not finite"
        if self.minimum is not None and number < self.minimum:
            return f"it must be >= {self.minimum:g}"
        if self.exclusive_minimum is not None and number <= self.exclusive_minimum:
            return f"it must be > {self.exclusive_minimum:g}"
        if self.maximum is not None and number > self.maximum:
            return f"it must be <= {self.maximum:g}"
        if self.exclusive_maximum is not None and number >= self.exclusive_maximum:
            return f"it must be < {self.exclusive_maximum:g}"
        return None


def _capability(value: Capability | str) -> Capability:
    try:
        return Capability(value)
    except ValueError:
        known = ", ".join(c.value for c in Capability)
        raise ValueError(f"unknown capability {value!r}; known: {known}") from None


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class RouteTemplate:
    """One route of a routed catalog entry (a preset such as ``muon``), as data.

    ``select`` are selector terms (roles, ``re:PATTERN``, ``type:ClassName``, ``*``: see
    :mod:`optimhub.selectors`); ``optimizer`` is the catalog name that steps what it
    selects; ``name`` labels the route in explanations, state dicts and option mappings.
    """

    name: str
    select: tuple[str, ...]
    optimizer: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "select", tuple(self.select))


@dataclass(frozen=True, eq=False)
class OptimizerSpec:
    """Everything the hub knows about one optimizer name, before importing its backend.

    ``distribution`` (what pip installs) and ``import_name`` (what Python imports) are kept
    apart on purpose: they differ for most backends, and presence is checked with the
    import name. ``fixed`` are constructor keywords this name pins (``optim_bits=8``,
    ``fused=True``...), so bits, paging and fusion are spec fields, never name substrings.
    ``hyperparameters`` says which of lr / betas / eps / weight_decay the backend takes.
    ``base`` names the spec a derived name (a layerwise mode, a preset) is built from: in
    registry.toml it inherits the base's backend, options, fixed keywords and paper, and
    its plugin's builder and estimator unless the plugin registers its own.
    ``without_cuda`` are constructor keywords that replace ``fixed`` ones where CUDA is
    absent (paging off). ``constructor_weight_decay``: the backend takes weight decay as
    one constructor argument, not per param group (whether it then honours a scheduled
    change of a group's weight decay is a separate, measured fact: ``static_weight_decay``
    where it does not, as LOMO; Adam-mini copies it into groups it reads at every step).
    ``routes``: a routed entry (a preset such as ``muon``) is built by the hub's router
    from these routes, each stepped by its own catalog optimizer; its options go to the
    route their ``route`` field names, or, without one, to the route whose optimizer is
    ``base``. ``namespace``: the prefix a backend reserves for its names (``pto`` ->
    ``pto_adan``), so a catalog that fronts a library of a hundred optimizers cannot
    collide with Hugging Face's names or another plugin's.
    """

    name: str
    summary: str
    plugin: str
    distribution: str
    import_name: str
    extra: str | None = None
    min_version: str | None = None
    install_hint: str | None = None
    aliases: tuple[str, ...] = ()
    capabilities: frozenset[Capability] = frozenset()
    hyperparameters: frozenset[str] = frozenset(HYPERPARAMETERS)
    args: Mapping[str, ArgSpec] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    base: str | None = None
    paper: str | None = None
    state_bytes_per_param: float | None = None
    without_cuda: Mapping[str, Any] = field(default_factory=dict)
    constructor_weight_decay: bool = False
    routes: tuple[RouteTemplate, ...] = ()
    namespace: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "capabilities", frozenset(_capability(c) for c in
                                                           self.capabilities))
        object.__setattr__(self, "hyperparameters", frozenset(self.hyperparameters))
        object.__setattr__(self, "args", _frozen_mapping(self.args))
        object.__setattr__(self, "fixed", _frozen_mapping(self.fixed))
        object.__setattr__(self, "without_cuda", _frozen_mapping(self.without_cuda))
        object.__setattr__(self, "routes", tuple(self.routes))

    def __copy__(self) -> OptimizerSpec:
        return self  # frozen: a copy (of an optimizer that refers to it) shares it

    def __deepcopy__(self, memo: dict[int, Any]) -> OptimizerSpec:
        return self

    def has(self, capability: Capability | str) -> bool:
        """Whether this optimizer has ``capability`` (a member or its string value)."""
        return Capability(capability) in self.capabilities

    def has_hyperparameter(self, name: str) -> bool:
        """Whether the backend takes this training hyperparameter (lr, betas, eps, weight_decay)."""
        return name in self.hyperparameters

    def runs_layerwise(self, requested: bool = False) -> bool:
        """Whether it runs as one optimizer per parameter, stepped inside backward: a
        layerwise name, or any name with ``layerwise=True`` (``requested``)."""
        return requested or self.has(Capability.LAYERWISE)

    def updates_in_backward(self, layerwise: bool = False) -> bool:
        """Whether parameters change inside backward (fused backward or layerwise), so
        gradients cannot accumulate or be clipped between backward and step."""
        return self.has(Capability.FUSED_BACKWARD) or self.runs_layerwise(layerwise)

    @property
    def bare_name(self) -> str:
        """The name without its namespace prefix (``pto_adan`` -> ``adan``): what a user who
        knows the library, not the hub, types."""
        prefix = f"{self.namespace}_" if self.namespace else ""
        return self.name[len(prefix):] if prefix and self.name.startswith(prefix) else self.name

    @property
    def install_command(self) -> str:
        """The exact command that installs this optimizer's backend."""
        if self.install_hint:
            return self.install_hint
        if self.extra:
            return f'pip install "optimhub[{self.extra}]"'
        return f"pip install {self.distribution}"

    @property
    def routed(self) -> bool:
        """Whether the router builds it from ``routes`` (one optimizer per route)."""
        return bool(self.routes)

    @property
    def target_group_args(self) -> tuple[ArgSpec, ...]:
        """The options that go into the low-rank target param group."""
        return tuple(a for a in self.args.values() if a.target_group)

    def __repr__(self) -> str:
        caps = ",".join(sorted(c.value for c in self.capabilities))
        return f"OptimizerSpec({self.name!r}, plugin={self.plugin!r}, capabilities=[{caps}])"
