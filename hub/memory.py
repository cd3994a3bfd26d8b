"""Memory before training: how many bytes of optimizer state and of gradients an optimizer
will hold for a model, without building it.

    est = optimhub.estimate("galore_adamw", model, optim_args="rank=128",
                            optim_target_modules=[r".*attn.*", r".*mlp.*"])
    est.state_bytes, est.bytes_per_param, est.grad_bytes

The arguments are ``create_optimizer``'s and are resolved by the same code (names,
``optim_args``, capability rules, ``optim_target_modules``), so a configuration that would
fail to build fails here too. Nothing is built, no backend is imported and no tensor's
data is read: ``model`` may live on the meta device, so a 70B model costs nothing to
describe. ``model`` may also be a Llama layer-shape spec such as
``"llama:hidden=4096,layers=32,vocab=32000,intermediate=11008"`` (see
:func:`parse_model_spec`).

Each spec's formula lives with its plugin: ``register.builder(name, builder,
estimator=fn)``, where ``fn(EstimateRequest) -> StateEstimate`` predicts what the backend
really holds (every tensor :func:`optimhub.testing.state_bytes` counts). Without an
estimator the spec's ``state_bytes_per_param`` (registry.toml) is used; without either,
:class:`EstimateUnavailableError`: no silent guess. The helpers below (dense moments,
factored second moments, block-wise quantized state, low-rank shapes) keep estimators
short; which numbers to pass them (block sizes, small-tensor rules) is the plugin's
knowledge, never the core's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import (
    CapabilityError,
    EstimateUnavailableError,
    OptimArgsError,
    OptimHubError,
    closest,
)
from .spec import ArgSpec, Capability, OptimizerSpec

__all__ = [
    "ADAMW_STATE_BYTES_PER_PARAM",
    "EstimateRequest",
    "EstimateUnavailableError",
    "Estimator",
    "FlatModel",
    "LlamaShape",
    "LlamaShaped",
    "MemoryEstimate",
    "ParamShape",
    "StateEstimate",
    "blockwise_bytes",
    "dense_bytes",
    "dense_estimator",
    "describe_model",
    "estimate",
    "estimate_from_request",
    "factored_elements",
    "flat_model",
    "low_rank_grad_shape",
    "parse_model_spec",
    "parse_param_count",
    "peak_gradient_bytes",
    "projection_side",
]

#: The yardstick every estimate is shown next to: AdamW with two fp32 moments.
ADAMW_STATE_BYTES_PER_PARAM = 8


# ============================================================================ the contract
@dataclass(frozen=True)
class ParamShape:
    """One parameter as an estimator sees it: a shape, never data.

    ``is_target`` marks a weight selected by ``optim_target_modules`` (low-rank specs);
    ``module_type`` is the class name of the module that owns it (``"Linear"``,
    ``"Embedding"``...), for backends that treat some modules apart (bitsandbytes keeps
    embeddings in 32 bits). A tied weight appears once, under the name
    ``named_parameters()`` gives it.
    """

    name: str
    shape: tuple[int, ...]
    dtype_bytes: int
    trainable: bool = True
    is_target: bool = False
    module_type: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype_bytes


@dataclass(frozen=True)
class EstimateRequest:
    """What an estimator receives: the spec, its typed options (defaults filled in, as
    ``BuildRequest.options``), the model's parameters as shapes, and whether the run is
    layerwise (one optimizer per parameter, stepped in backward)."""

    spec: OptimizerSpec
    options: Mapping[str, Any]
    params: tuple[ParamShape, ...]
    layerwise: bool = False

    @property
    def trainable(self) -> tuple[ParamShape, ...]:
        """The parameters the optimizer gets (the hub passes only these)."""
        return tuple(p for p in self.params if p.trainable)

    @property
    def targets(self) -> tuple[ParamShape, ...]:
        """Trainable weights selected by ``optim_target_modules``."""
        return tuple(p for p in self.params if p.trainable and p.is_target)

    @property
    def dense(self) -> tuple[ParamShape, ...]:
        """Trainable parameters that are not targets (a low-rank optimizer's plain ones)."""
        return tuple(p for p in self.params if p.trainable and not p.is_target)

    def option(self, name: str, default: Any = None) -> Any:
        """An option's typed value, or ``default`` when it is unset (the backend's own)."""
        value = self.options.get(name, default)
        return default if value is None else value


@dataclass(frozen=True)
class StateEstimate:
    """An estimator's answer, in bytes.

    ``grad_bytes`` left as None means the usual rule (:func:`peak_gradient_bytes`: every
    gradient, or one parameter's for fused-backward and layerwise runs); a backend that
    differs sets it. ``notes`` say what the figure assumes or where the state lives.
    """

    state_bytes: int
    grad_bytes: int | None = None
    notes: tuple[str, ...] = ()


#: An estimator: the plugin's formula for what its backend holds.
Estimator = Callable[[EstimateRequest], StateEstimate]


@dataclass(frozen=True)
class MemoryEstimate:
    """What ``optimhub.estimate`` answers, next to the AdamW fp32 yardstick.

    ``source`` says where the figure came from: ``"plugin"`` (the plugin's estimator) or
    ``"registry"`` (the spec's ``state_bytes_per_param`` times the trainable count).
    ``baseline_*`` is AdamW with fp32 moments (8 bytes per trainable parameter) and every
    gradient held.
    """

    name: str
    source: str
    trainable_params: int
    total_params: int
    param_bytes: int
    state_bytes: int
    grad_bytes: int
    baseline_state_bytes: int
    baseline_grad_bytes: int
    layerwise: bool = False
    notes: tuple[str, ...] = ()

    @property
    def bytes_per_param(self) -> float:
        """Optimizer state per trainable parameter."""
        return self.state_bytes / self.trainable_params if self.trainable_params else 0.0

    @property
    def total_bytes(self) -> int:
        """Optimizer state plus gradients at their peak (weights and activations not counted)."""
        return self.state_bytes + self.grad_bytes

    @property
    def baseline_total_bytes(self) -> int:
        return self.baseline_state_bytes + self.baseline_grad_bytes

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for ``--json``)."""
        return {
            "name": self.name,
            "source": self.source,
            "layerwise": self.layerwise,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "param_bytes": self.param_bytes,
            "state_bytes": self.state_bytes,
            "state_bytes_per_param": self.bytes_per_param,
            "grad_bytes": self.grad_bytes,
            "total_bytes": self.total_bytes,
            "adamw_fp32": {
                "state_bytes": self.baseline_state_bytes,
                "state_bytes_per_param": float(ADAMW_STATE_BYTES_PER_PARAM),
                "grad_bytes": self.baseline_grad_bytes,
                "total_bytes": self.baseline_total_bytes,
            },
            "notes": list(self.notes),
        }


# ============================================================================ helpers
def dense_bytes(params: Iterable[ParamShape], moments: int, dtype_bytes: int | None = None
                ) -> int:
    """``moments`` full-size buffers per parameter, in the parameter's dtype unless
    ``dtype_bytes`` is given (AdamW: 2; SGD with momentum: 1; AMSGrad: 3)."""
    return sum(p.numel * moments * (dtype_bytes or p.dtype_bytes) for p in params)


def dense_estimator(moments: int, doc: str) -> Estimator:
    """The estimator of a backend that keeps ``moments`` full-size buffers per parameter in
    the parameter's dtype, whatever its options; ``doc`` names the buffers."""

    def estimate_dense(request: EstimateRequest) -> StateEstimate:
        return StateEstimate(dense_bytes(request.trainable, moments))

    estimate_dense.__doc__ = doc
    return estimate_dense


def factored_elements(shape: Sequence[int]) -> int:
    """Elements of an Adafactor-style factored second moment for one tensor: one row and
    one column statistic per matrix (``shape[:-1]`` plus ``shape[:-2] + shape[-1:]``), the
    full tensor for vectors."""
    if len(shape) < 2:
        return math.prod(shape)
    return math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]


def blockwise_bytes(
    numel: int,
    *,
    bits: int,
    block_size: int,
    scale_bytes: int = 4,
    ceil_blocks: bool = True,
) -> int:
    """One block-wise quantized buffer of ``numel`` values: ``bits`` per value plus one
    ``scale_bytes`` scale per block (the last, partial block counts when ``ceil_blocks``).
    Which tensors are quantized at all (a minimum size, a divisibility rule) and the bytes
    of code tables are the backend's: its plugin decides."""
    blocks = -(-numel // block_size) if ceil_blocks else numel // block_size
    return -(-numel * bits // 8) + blocks * scale_bytes


#: How each ``proj_type`` of the GaLore/APOLLO family picks the projected side of an
#: (m, n) gradient: "right" keeps (m, r), "left" keeps (r, n), "both" keeps (r, r).
_SIDES: Mapping[str, Callable[[int, int], str]] = {
    "std": lambda m, n: "right" if m >= n else "left",
    "reverse_std": lambda m, n: "left" if m >= n else "right",
    "right": lambda m, n: "right",
    "left": lambda m, n: "left",
    "full": lambda m, n: "both",
}


def projection_side(shape: Sequence[int], proj_type: str) -> str:
    """``"right"``, ``"left"`` or ``"both"``: which side of a 2-D gradient a low-rank
    projector of this ``proj_type`` multiplies (``std`` keeps the smaller side)."""
    if proj_type not in _SIDES or len(shape) != 2:
        raise OptimArgsError(
            f"no low-rank projection for proj_type={proj_type!r} on shape {tuple(shape)}: "
            f"a 2-D weight and one of {', '.join(_SIDES)} are needed"
        )
    return _SIDES[proj_type](shape[0], shape[1])


def low_rank_grad_shape(shape: Sequence[int], rank: int, side: str) -> tuple[int, int]:
    """The projected gradient of an (m, n) weight: what the low-rank moments are shaped
    like. ``rank`` is capped at the smaller side (the hub caps it when it builds)."""
    m, n = shape
    r = min(rank, m, n)
    return {"right": (m, r), "left": (r, n), "both": (r, r)}[side]


def peak_gradient_bytes(request: EstimateRequest) -> int:
    """Gradient bytes alive at the peak of one step.

    Every trainable parameter's gradient for an ordinary optimizer. A fused-backward or
    layerwise run applies and frees each gradient inside backward, so about one
    parameter's worth (the largest) is alive; autograd may hold one more in flight.
    """
    trainable = request.trainable
    if not trainable:
        return 0
    if request.layerwise or request.spec.has(Capability.FUSED_BACKWARD):
        return max(p.nbytes for p in trainable)
    return sum(p.nbytes for p in trainable)


# ============================================================================ models
def describe_model(model: nn.Module, targets: Iterable[str] = ()) -> tuple[ParamShape, ...]:
    """The parameters of ``model`` as shapes (any device, meta included; no data read).

    Named and deduplicated as ``named_parameters()`` does (a tied weight once); the names
    in ``targets`` are marked ``is_target``.
    """
    chosen = set(targets)
    owners = {name: type(module).__name__ for name, module in model.named_modules()}
    return tuple(
        ParamShape(
            name=name,
            shape=tuple(param.shape),
            dtype_bytes=param.element_size(),
            trainable=param.requires_grad,
            is_target=name in chosen,
            module_type=owners.get(name.rpartition(".")[0], ""),
        )
        for name, param in model.named_parameters()
    )


_DTYPES: Mapping[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
}

#: The keys of a ``llama:`` model spec, typed like ``optim_args``.
_LLAMA_KEYS: Mapping[str, ArgSpec] = {
    a.name: a
    for a in (
        ArgSpec("hidden", "int", "hidden size (hidden_size)", minimum=1),
        ArgSpec("layers", "int", "decoder layers (num_hidden_layers)", minimum=1),
        ArgSpec("vocab", "int", "vocabulary size (vocab_size)", minimum=1),
        ArgSpec("intermediate", "int", "MLP width (intermediate_size)", minimum=1),
        ArgSpec("heads", "int", "attention heads (default 1)", default=1, minimum=1),
        ArgSpec("kv_heads", "int", "key/value heads (default: heads)", nullable=True,
                default=None, minimum=1),
        ArgSpec("head_dim", "int", "width of one head (default: hidden / heads)",
                nullable=True, default=None, minimum=1),
        ArgSpec("tied", "bool", "lm_head shares the embedding matrix", default=False),
        ArgSpec("dtype", "str", "parameter dtype", default="fp32", choices=tuple(_DTYPES)),
    )
}
_REQUIRED_LLAMA_KEYS = ("hidden", "layers", "vocab", "intermediate")
_MODEL_SPEC_EXAMPLE = "llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32"


@dataclass(frozen=True)
class LlamaShape:
    """The layer shapes of a Llama-style decoder (HF ``LlamaForCausalLM``): what a
    ``llama:`` model spec describes. ``build()`` makes the module (meta device by default)
    with HF's parameter names, so ``optim_target_modules`` patterns match as on the real
    model."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int = 1
    kv_heads: int | None = None
    head_dim: int | None = None
    tied: bool = False
    dtype: str = "fp32"

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def build(self, device: str | torch.device = "meta") -> LlamaShaped:
        """The model, with parameters of ``self.dtype`` on ``device``."""
        return LlamaShaped(self, device=device)


def parse_model_spec(text: str, *, dtype: str | None = None) -> LlamaShape:
    """``"llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32,
    kv_heads=8,tied=false,dtype=bf16"`` -> :class:`LlamaShape`.

    The part after ``llama:`` uses the ``optim_args`` grammar and typing (so
    ``tied=false`` is False, not a truthy string). ``hidden``, ``layers``, ``vocab`` and
    ``intermediate`` are required. ``dtype`` (fp32, bf16, fp16) sets the dtype when the
    text names none; a different one in the text is an error.
    """
    from .optim_args import coerce_value, split_optim_args

    if not isinstance(text, str):
        raise OptimArgsError(f"a model spec is text like {_MODEL_SPEC_EXAMPLE!r}; got {text!r}")
    family, colon, body = text.partition(":")
    if not colon or family.strip().lower() != "llama":
        raise OptimArgsError(
            f"model spec {text!r}: only the 'llama:' family is known; write e.g. "
            f"{_MODEL_SPEC_EXAMPLE!r}"
        )
    try:
        raw = split_optim_args(body)
        unknown = [k for k in raw if k not in _LLAMA_KEYS]
        if unknown:
            guess = closest(unknown[0], list(_LLAMA_KEYS), n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise OptimArgsError(
                f"unknown key {unknown[0]!r}.{hint} Valid keys: {', '.join(_LLAMA_KEYS)}"
            )
        missing = [k for k in _REQUIRED_LLAMA_KEYS if k not in raw]
        if missing:
            raise OptimArgsError(f"{', '.join(missing)} missing; e.g. {_MODEL_SPEC_EXAMPLE!r}")
        if dtype is not None:
            given = coerce_value(_LLAMA_KEYS["dtype"], raw.get("dtype", dtype))
            if given != coerce_value(_LLAMA_KEYS["dtype"], dtype):
                raise OptimArgsError(
                    f"it says dtype={given}, but dtype {dtype!r} was asked for; give one"
                )
            raw = {**raw, "dtype": dtype}
        values = {
            key: coerce_value(arg, raw[key]) if key in raw else arg.default
            for key, arg in _LLAMA_KEYS.items()
        }
    except OptimArgsError as exc:
        message = str(exc).removeprefix("optim_args: ").removeprefix("optim_args")
        raise type(exc)(f"model spec {text!r}: {message}") from None
    shape = LlamaShape(**values)
    if shape.head_dim is None and shape.hidden % shape.heads:
        raise OptimArgsError(
            f"model spec {text!r}: hidden={shape.hidden} is not a multiple of "
            f"heads={shape.heads}; give head_dim= or another head count"
        )
    if shape.heads % shape.kv:
        raise OptimArgsError(
            f"model spec {text!r}: heads={shape.heads} is not a multiple of "
            f"kv_heads={shape.kv} (grouped-query attention shares each key/value head)"
        )
    return shape


class LlamaShaped(nn.Module):
    """A Llama-style decoder with HF's module names (``model.layers.N.self_attn.q_proj``,
    ``model.layers.N.mlp.gate_proj``, ``model.norm``, ``lm_head``...).

    On the meta device it describes a model of any size for free. On a real device it
    also trains (RMSNorm, causal grouped-query attention without rotary embeddings, SwiGLU
    MLP): enough for measuring what an optimizer holds on exactly the shapes an estimate
    was made for, not a faithful Llama.
    """

    def __init__(self, shape: LlamaShape, device: str | torch.device = "meta") -> None:
        super().__init__()
        self.shape = shape
        kw: dict[str, Any] = {"device": device, "dtype": _DTYPES[shape.dtype]}
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(shape.vocab, shape.hidden, **kw)
        self.model.layers = nn.ModuleList(_DecoderLayer(shape, kw) for _ in range(shape.layers))
        self.model.norm = nn.RMSNorm(shape.hidden, **kw)
        self.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False, **kw)
        if shape.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))


class _DecoderLayer(nn.Module):
    def __init__(self, shape: LlamaShape, kw: dict[str, Any]) -> None:
        super().__init__()
        hidden, width, kv_width = shape.hidden, shape.heads * shape.head_width, (
            shape.kv * shape.head_width)
        self.heads, self.kv_heads, self.head_dim = shape.heads, shape.kv, shape.head_width
        self.self_attn = nn.Module()
        for name, (inp, out) in {"q_proj": (hidden, width), "k_proj": (hidden, kv_width),
                                 "v_proj": (hidden, kv_width), "o_proj": (width, hidden)}.items():
            setattr(self.self_attn, name, nn.Linear(inp, out, bias=False, **kw))
        self.mlp = nn.Module()
        for name, (inp, out) in {"gate_proj": (hidden, shape.intermediate),
                                 "up_proj": (hidden, shape.intermediate),
                                 "down_proj": (shape.intermediate, hidden)}.items():
            setattr(self.mlp, name, nn.Linear(inp, out, bias=False, **kw))
        self.input_layernorm = nn.RMSNorm(hidden, **kw)
        self.post_attention_layernorm = nn.RMSNorm(hidden, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        attn, mlp = self.self_attn, self.mlp
        h = self.input_layernorm(x)
        q, k, v = (proj(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
        h = self.post_attention_layernorm(x)
        return x + mlp.down_proj(nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))


#: Side of the square matrices a bare parameter count is taken as (a 7B-class layer).
FLAT_SIDE = 4096


class FlatModel(nn.Module):
    """``N`` parameters with no architecture: what ``--params N`` describes.

    Taken as 2-D weights of ``FLAT_SIDE x FLAT_SIDE`` (``nn.Linear`` named ``flat.K``),
    then one ``FLAT_SIDE``-wide matrix for the rest and a vector for what is left. Only
    shape-dependent state (factored moments, small-tensor rules) depends on this choice;
    low-rank optimizers need real layer shapes and refuse it.
    """

    def __init__(self, count: int, dtype: str = "fp32", device: str | torch.device = "meta"
                 ) -> None:
        super().__init__()
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise OptimArgsError(f"a parameter count must be a whole number >= 1, got {count!r}")
        self.count = count
        kw: dict[str, Any] = {"device": device, "dtype": _DTYPES[dtype]}
        square = FLAT_SIDE * FLAT_SIDE
        full, rest = divmod(count, square)
        rows, tail = divmod(rest, FLAT_SIDE)
        shapes = [(FLAT_SIDE, FLAT_SIDE)] * full + ([(rows, FLAT_SIDE)] if rows else [])
        self.flat = nn.ModuleList(nn.Linear(i, o, bias=False, **kw) for o, i in shapes)
        self.rest = nn.ParameterList([nn.Parameter(torch.empty(tail, **kw))] if tail else [])


def flat_model(count: int, dtype: str = "fp32") -> FlatModel:
    """A meta-device :class:`FlatModel` of ``count`` parameters."""
    if dtype not in _DTYPES:
        raise OptimArgsError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    return FlatModel(count, dtype)


_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"(?P<number>\d[\d_]*(?:\.\d+)?(?:e\d+)?)(?P<suffix>[kmbgt]?)")


def parse_param_count(text: str) -> int:
    """``"7B"``, ``"6.7e9"``, ``"125M"``, ``"6_738_415_616"`` -> a whole parameter count."""
    match = _COUNT.fullmatch(str(text).strip().lower())
    value = None
    if match:
        number = match["number"].replace("_", "")
        scale = _SUFFIXES.get(match["suffix"], 1)
        exact = float(number) * scale
        value = int(exact) if exact == int(exact) and exact >= 1 else None
    if value is None:
        raise OptimArgsError(
            f"parameter count {text!r} is not a whole number >= 1; write e.g. 7B, 125M, "
            "6.7e9 or 6738415616"
        )
    return value


def _as_module(model: Any) -> nn.Module:
    if isinstance(model, str):
        return parse_model_spec(model).build()
    if isinstance(model, nn.Module):
        return model
    raise OptimArgsError(
        f"estimate needs the model (an nn.Module, on any device: meta is enough) or a model "
        f"spec like {_MODEL_SPEC_EXAMPLE!r}; got {type(model).__name__}. For a bare "
        "parameter count: `from optimhub.memory import flat_model`; flat_model(N)."
    )


# ============================================================================ estimate
def estimate(name: str, model: nn.Module | str, args: Any = None, **overrides: Any
             ) -> MemoryEstimate:
    """Bytes of optimizer state and peak gradients that ``create_optimizer(name, model,
    args, **overrides)`` would hold, without building it or reading a tensor.

    ``model`` is an ``nn.Module`` (put a big one on the meta device), a ``llama:`` model
    spec (:func:`parse_model_spec`) or a :class:`FlatModel`. Bad arguments raise what
    ``create_optimizer`` raises; a name without any estimate raises
    :class:`EstimateUnavailableError`. The backend need not be installed.
    """
    from .arguments import resolve_arguments
    from .factory import check_build_inputs
    from .optim_args import resolve_optim_args
    from .plugin_host import get_registry
    from .targets import select_targets

    entry = get_registry().get(name)
    spec = entry.spec
    settings = resolve_arguments(args, overrides)
    options = resolve_optim_args(spec, settings.optim_args)
    module = _as_module(model)
    if spec.has(Capability.TARGET_MODULES) and isinstance(module, FlatModel):
        raise CapabilityError(
            f"optimizer {spec.name!r} keeps low-rank state shaped by each target layer, and "
            "a bare parameter count has no layers: describe the model instead (an nn.Module, "
            f"or `--model {_MODEL_SPEC_EXAMPLE}`)"
        )
    source = check_build_inputs(spec, module, settings)  # a DDP wrapper: the model inside
    module = source.module or module
    targets: tuple[str, ...] = ()
    if spec.has(Capability.TARGET_MODULES):
        targets = select_targets(module, settings.optim_target_modules).parameter_names
    request = EstimateRequest(
        spec=spec,
        options=options,
        params=describe_model(module, targets),
        layerwise=spec.has(Capability.LAYERWISE) or settings.layerwise,
    )
    return estimate_from_request(request, entry.estimator, plugin=entry.plugin.describe())


def estimate_from_request(
    request: EstimateRequest, estimator: Estimator | None, *, plugin: str = "its plugin"
) -> MemoryEstimate:
    """Run ``estimator`` (or the spec's ``state_bytes_per_param``) on a prepared request."""
    spec = request.spec
    trainable = request.trainable
    count = sum(p.numel for p in trainable)
    if estimator is not None:
        result = _run_estimator(estimator, request, plugin)
        source = "plugin"
    elif spec.state_bytes_per_param is not None:
        result = StateEstimate(
            round(spec.state_bytes_per_param * count),
            notes=(f"from registry: {spec.state_bytes_per_param:g} bytes per parameter, "
                   "whatever the shapes and dtypes",),
        )
        source = "registry"
    else:
        raise EstimateUnavailableError(
            f"no estimate available for {spec.name!r}: {plugin} registers no estimator "
            "for it and its spec has no state_bytes_per_param. The plugin can pass "
            "estimator= to register.builder / register.optimizer."
        )
    grads = result.grad_bytes if result.grad_bytes is not None else peak_gradient_bytes(request)
    full_grads = sum(p.nbytes for p in trainable)
    return MemoryEstimate(
        name=spec.name,
        source=source,
        trainable_params=count,
        total_params=sum(p.numel for p in request.params),
        param_bytes=sum(p.nbytes for p in request.params),
        state_bytes=int(result.state_bytes),
        grad_bytes=int(grads),
        baseline_state_bytes=ADAMW_STATE_BYTES_PER_PARAM * count,
        baseline_grad_bytes=full_grads,
        layerwise=request.layerwise,
        notes=tuple(result.notes),
    )


def _run_estimator(estimator: Estimator, request: EstimateRequest, plugin: str
                   ) -> StateEstimate:
    try:
        result = estimator(request)
    except OptimHubError:
        raise
    except Exception as exc:
        raise EstimateUnavailableError(
            f"{plugin} failed to estimate {request.spec.name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, StateEstimate) or isinstance(result.state_bytes, bool) or not (
        isinstance(result.state_bytes, int) and result.state_bytes >= 0
    ):
        raise EstimateUnavailableError(
            f"{plugin} returned {result!r} as the estimate for {request.spec.name!r}; an "
            "estimator returns StateEstimate(state_bytes=<int >= 0>) from optimhub.memory"
        )
    return result

