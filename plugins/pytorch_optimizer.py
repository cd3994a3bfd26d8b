"""Built-in plugin: pytorch-optimizer (pip ``pytorch-optimizer``), about 120 optimizers under
the namespace ``pto_`` (``pto_adan``, ``pto_sophiah``, ``pto_soap``...).

The specs are generated data: ``tools/generate_pytorch_optimizer_catalog.py`` writes the
registry.toml section from the library's constructors and the reviewed tables at its top
(exclusions, measured capabilities and state). This module supplies one builder for all
of them, which finds the class by the name without its namespace (``pto_adan`` ->
``pytorch_optimizer`` key ``adan``) and handles the few constructor shapes that are not
``Class(param_groups, **kwargs)``:

- the model instead of param groups (LOMO, AdaLOMO, AdamMini: capability ``needs_model``);
  AdamMini's hidden size and heads come from ``optim_args`` or ``model.config``;
- the SAM family's ``base_optimizer`` class, chosen by the typed option ``base_optimizer``
  (``sgd`` or ``adamw``), and WSAM's model;
- the Muon family (``matrix_only``): every group is a Muon group (``use_muon=True``); the
  core has already refused non-matrix parameters;
- GaLore / APOLLO / Fira: the low-rank target groups carry ``rank``, ``update_proj_gap``,
  ``scale`` and ``projection_type`` (the hub's shared low-rank helpers);
- a required constructor argument the user did not give is refused naming the option
  (Ranger21's ``num_iterations`` defaults to ``max_steps``; BSAM's ``num_data`` has none).

State memory: a dense name's spec states its fp32 bytes per parameter (k buffers the size
of the parameter, in its dtype); the size-dependent ones are estimated by a formula below
or, where a formula is impractical (block and Kronecker preconditioners), by the measured
meta-device probe of ``plugins/_state_probe.py`` (which imports the backend).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optimhub.plugin import (
    BackendUnavailableError,
    BuildRequest,
    Capability,
    EstimateRequest,
    ObjectCodec,
    OptimArgsError,
    Register,
    StateEstimate,
    dense_bytes,
    factored_elements,
    hookimpl,
    low_rank_grad_shape,
    low_rank_groups,
    projection_side,
)

from ._attention_shape import attention_shape

if TYPE_CHECKING:  # torch is imported when a name is built, not at `optimhub list`
    import torch

#: State tensors a class keeps flat for a plain parameter but in the parameter's shape for
#: a DTensor (AdaMuon's ``v``): saved in the parameter's shape, so that a checkpoint saved
#: by one process reshards onto FSDP2 ranks and back (``_saved_in_parameter_shape``).
FLAT_STATE = {"adamuon": ("v",)}
#: Optimizers whose first argument is the model, not the param groups.
MODEL_FIRST = ("lomo", "adalomo", "adammini")
#: The SAM family: a base optimizer class and a closure.
SAM_FAMILY = ("sam", "wsam", "friendlysam", "looksam")
#: Constructor arguments the builder supplies itself.
SUPPLIED = {"self", "params", "model", "base_optimizer"}


def optimizer_class(key: str) -> type:
    """pytorch-optimizer's class for its registry key (``adan``), SAM family included."""
    import pytorch_optimizer
    from pytorch_optimizer.optimizer import OPTIMIZERS

    sam = {name.lower(): getattr(pytorch_optimizer, name)
           for name in ("SAM", "WSAM", "FriendlySAM", "LookSAM")}
    classes = {**OPTIMIZERS, **sam}
    if key not in classes:
        raise BackendUnavailableError(
            f"pytorch-optimizer {_version()} has no optimizer {key!r}; install the version "
            "the catalog was generated from: pip install 'pytorch-optimizer==4.1.*'"
        )
    return classes[key]


def _version() -> str:
    from optimhub.plugin import installed_version

    return installed_version("pytorch-optimizer") or "?"


#: Objects pytorch-optimizer keeps in its state (projectors, Shampoo's preconditioners and
#: grafting), saved as plain data so checkpoints load with ``weights_only=True``.
STATE_OBJECTS = ObjectCodec({
    "pytorch_optimizer.optimizer.utils.galore": ("GaLoreProjector",),
    "pytorch_optimizer.optimizer.utils.preconditioner": ("PreConditioner",),
    "pytorch_optimizer.optimizer.utils.graft": (
        "Graft", "SGDGraft", "SQRTNGraft", "AdaGradGraft", "RMSPropGraft"),
})


def build(request: BuildRequest) -> torch.optim.Optimizer:
    """The class by its key, constructed the way its signature asks, with its checkpoint
    hooks."""
    optimizer = _construct(request)
    _install_checkpoint_hooks(optimizer)
    if request.spec.bare_name in FLAT_STATE:
        _saved_in_parameter_shape(optimizer, FLAT_STATE[request.spec.bare_name])
    return optimizer


def _construct(request: BuildRequest) -> torch.optim.Optimizer:
    key = request.spec.bare_name
    cls = optimizer_class(key)
    kwargs = _with_required(request, cls, dict(request.kwargs))
    if key in MODEL_FIRST:
        if key == "adammini":
            kwargs.update(_adam_mini_shape(request))
        return cls(request.model, **kwargs)
    groups = request.param_groups
    if key in SAM_FAMILY:
        return _build_sam(request, cls, groups, kwargs)
    if request.spec.has(Capability.MATRIX_ONLY):
        groups = [{**group, "use_muon": True} for group in groups]
    if request.spec.has(Capability.LOW_RANK):
        groups, _ = low_rank_groups(request)
    if key in ("scion", "scionlight"):
        kwargs["norm_type"] = int(inspect.signature(cls.__init__).parameters["norm_type"].default)
    return cls(groups, **kwargs)


def _install_checkpoint_hooks(optimizer: torch.optim.Optimizer) -> None:
    """Checkpoints that load with ``torch.load(weights_only=True)``: the objects in the
    state (``STATE_OBJECTS``) saved as plain data, and AdaShift's gradient queue (a
    ``collections.deque``) as a list.

    That list always has ``keep_num`` tensors (the queue's bound), the slots not yet filled
    as zeros, with ``grad_queue_length`` saying how many are real: DCP loads only as many
    entries as the fresh optimizer's list has, and a primed one has one gradient queued,
    so the rest of a saved queue was silently dropped (measured 5.4e-3 off). A list saved
    without the length (before) loads whole, as it did.

    pytorch-optimizer's ``load_state_dict`` runs torch's, then walks the *given* state dict
    again to restore containers (a deque's bound included): so loading decodes in place,
    before both, rather than through the hub's ``install_state_codec`` (which leaves the
    given dict as it is).
    """
    from collections import deque

    def save(_: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict = STATE_OBJECTS.encode(optimizer, state_dict) or state_dict
        bounds = {pid: g.get("keep_num") for g in state_dict["param_groups"]
                  for pid in g["params"]}
        state = {k: _padded_queue(v, bounds[k])
                 if isinstance(v, dict) and isinstance(v.get("grad_queue"), deque) else v
                 for k, v in state_dict["state"].items()}
        return {**state_dict, "state": state}

    def load(_: Any, state_dict: dict[str, Any]) -> None:
        # torch hands the hook a shallow copy; pytorch-optimizer re-reads the caller's dict,
        # so the shared inner "state" mapping is what must change.
        decoded = STATE_OBJECTS.decode(optimizer, state_dict)
        if decoded is not None:
            state_dict["state"].update(decoded["state"])
        bounds = {pid: g.get("keep_num") for g in state_dict["param_groups"]
                  for pid in g["params"]}
        for key, entry in state_dict["state"].items():
            if isinstance(entry, dict) and isinstance(entry.get("grad_queue"), list):
                queue = entry["grad_queue"][:entry.pop(_QUEUE_LENGTH, None)]
                entry["grad_queue"] = deque(queue, maxlen=bounds[key])

    optimizer.register_state_dict_post_hook(save)
    optimizer.register_load_state_dict_pre_hook(load)
    from ._entry_in_groups import shared_state_in_groups

    shared_state_in_groups(optimizer)  # EmoNavi's state["ema"] through DCP (see the module)


_QUEUE_LENGTH = "grad_queue_length"


def _padded_queue(entry: dict[str, Any], bound: int | None) -> dict[str, Any]:
    """AdaShift's queue as a list of ``bound`` tensors, zeros after the real ones, and
    their count (see ``_install_checkpoint_hooks``)."""
    import torch

    queue = list(entry["grad_queue"])
    like = queue[0] if queue else entry.get("exp_avg")
    if bound is None or not isinstance(like, torch.Tensor):
        return {**entry, "grad_queue": queue}
    padding = [torch.zeros_like(like) for _ in range(bound - len(queue))]
    return {**entry, "grad_queue": queue + padding, _QUEUE_LENGTH: len(queue)}


def _saved_in_parameter_shape(optimizer: torch.optim.Optimizer, keys: tuple[str, ...]) -> None:
    """Save the state tensors under ``keys`` in their parameter's shape and take them back
    flat where the class keeps them flat (a plain parameter; a DTensor's are in its shape).

    AdaMuon keeps ``v`` as ``p.flatten()`` in one process but in ``p``'s shape under
    FSDP2, and DCP reshards a saved tensor only onto the same global shape: a one-process
    checkpoint failed to load on two ranks ("Size mismatch between saved [4096] and current
    [64, 64]", tools/distributed_checkpoint.py). Only elementwise operations touch ``v``, so
    its shape is layout, not value: the resumed run is the same bit for bit. Saving gives a
    view (DCP's load writes through it into the live tensor), loading a flat view."""

    def flat(parameter: Any) -> bool:
        return type(parameter).__name__ != "DTensor" and parameter.dim() > 1

    def save(_: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
        state = dict(state_dict["state"])
        for saved, group in zip(state_dict["param_groups"], optimizer.param_groups,
                                strict=True):
            for key, param in zip(saved["params"], group["params"], strict=True):
                entry = state.get(key)
                if not isinstance(entry, dict) or not flat(param):
                    continue
                state[key] = {k: v.view(param.shape) if k in keys and v.dim() == 1
                              and v.numel() == param.numel() else v for k, v in entry.items()}
        return {**state_dict, "state": state}

    def load(_: Any) -> None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                entry = optimizer.state.get(param)
                if not entry or not flat(param):
                    continue
                for k in keys:
                    if k in entry and entry[k].shape == param.shape:
                        entry[k] = entry[k].reshape(-1)

    optimizer.register_state_dict_post_hook(save)
    optimizer.register_load_state_dict_post_hook(load)


def _with_required(request: BuildRequest, cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Fill or refuse the constructor's required arguments before anything is built."""
    name = request.spec.name
    for param in list(inspect.signature(cls.__init__).parameters.values()):
        if (param.name in SUPPLIED or param.name in kwargs or param.default is not param.empty
                or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL)):
            continue
        if param.name == "num_iterations" and request.arguments.max_steps > 0:
            kwargs["num_iterations"] = request.arguments.max_steps
            continue
        hint = " (or set max_steps)" if param.name == "num_iterations" else ""
        raise OptimArgsError(
            f"optimizer {name!r} needs the option {param.name!r}, which has no default: "
            f"give it, e.g. optim_args='{param.name}=...'{hint}"
        )
    return kwargs


def _adam_mini_shape(request: BuildRequest) -> dict[str, int]:
    shape = attention_shape(request.spec.name, request.options, request.model)
    return {"num_embeds": shape.hidden_size, "num_heads": shape.num_attention_heads,
            "num_query_groups": shape.num_key_value_heads}


def _build_sam(request: BuildRequest, cls: type, groups: list[dict[str, Any]],
               kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """``SAM(params, base_optimizer=<class>, rho..., **base_kwargs)``: the base optimizer
    gets lr (and betas/eps for AdamW, momentum for SGD) through SAM's ``**kwargs``."""
    import torch

    base = kwargs.pop("base_optimizer")
    momentum = kwargs.pop("momentum")
    if base == "sgd":
        kwargs.pop("betas", None)
        kwargs.pop("eps", None)
        kwargs["momentum"] = momentum
        base_class: type = torch.optim.SGD
    else:
        if momentum:
            raise OptimArgsError(
                f"optimizer {request.spec.name!r}: momentum={momentum!r} applies to the SGD "
                "base optimizer only; with base_optimizer='adamw' use adam_beta1 instead"
            )
        base_class = torch.optim.AdamW
    if request.spec.bare_name == "wsam":
        return cls(request.model, groups, base_optimizer=base_class, **kwargs)
    return cls(groups, base_optimizer=base_class, **kwargs)


# ============================================================================ memory
#: Small tensors besides the dense buffers, measured (key -> bytes per parameter tensor,
#: bytes per optimizer): a 1-element fp32 statistic per tensor (AdaNorm's gradient norm,
#: SWATS' SGD-switch estimate, QHAdam's two bias weights), or 1-element tensors that every
#: group shares (D-Adaptation's and Prodigy's running sums, MADGRAD's int64 step count).
#: DAdaptAdan's ``d`` becomes one more such tensor once its estimate grows: a value the
#: estimate cannot know (4 B).
SCALAR_STATE: dict[str, tuple[int, int]] = {
    "adanorm": (4, 0), "swats": (4, 0), "qhadam": (8, 0),
    "dadaptadagrad": (0, 12), "dadaptadam": (0, 4), "dadaptadan": (0, 4),
    "dadaptlion": (0, 4), "dadaptsgd": (0, 4), "prodigy": (0, 8), "madgrad": (0, 8),
}


def estimate_dense(request: EstimateRequest) -> StateEstimate:
    """k buffers the size of each parameter, in its dtype; k from the spec's measured fp32
    bytes per parameter; plus the few bytes of scalar state some keep (``SCALAR_STATE``)."""
    per_param = request.spec.state_bytes_per_param or 0.0
    per_tensor, per_optimizer = SCALAR_STATE.get(request.spec.bare_name, (0, 0))
    return StateEstimate(dense_bytes(request.trainable, round(per_param / 4))
                         + per_tensor * len(request.trainable) + per_optimizer)


def estimate_factored(request: EstimateRequest) -> StateEstimate:
    """AdaLOMO: a row and a column second-moment statistic per matrix, the full variance
    for vectors, in fp32 (Adafactor's factoring)."""
    return StateEstimate(sum(4 * factored_elements(p.shape) for p in request.trainable))


def estimate_scalars(request: EstimateRequest) -> StateEstimate:
    """ASGD: no buffer the size of a parameter; in each parameter group, the previous and
    current parameter and gradient norms of the group (four 1-element fp32 tensors)."""
    return StateEstimate(16 * request.param_groups)


def estimate_a2grad(request: EstimateRequest) -> StateEstimate:
    """A2Grad: the averaged gradient and the iterate (two buffers the parameter's size),
    and a 1-element fp32 ``v_k`` per parameter (``variant='exp'``: a second, ``v_kk``)."""
    scalars = 8 if request.option("variant", "uni") == "exp" else 4
    return StateEstimate(dense_bytes(request.trainable, 2) + scalars * len(request.trainable))


def estimate_adashift(request: EstimateRequest) -> StateEstimate:
    """AdaShift keeps the last ``keep_num`` gradients (a queue) besides its two moments:
    this is the state once the queue is full (it grows by one gradient per step before)."""
    keep = int(request.option("keep_num", 10))
    return StateEstimate(dense_bytes(request.trainable, keep + 2),
                         notes=(f"after {keep} steps (keep_num); fewer before",))


def estimate_low_rank(request: EstimateRequest) -> StateEstimate:
    """GaLore / APOLLO / Fira: Adam's two moments at the projected shape for each target
    (with its projection matrix: the rank-r orthogonal factor, fp32), dense Adam for the
    rest."""
    rank = int(request.option("rank", 128))
    proj = request.option("projection_type", "std")
    total = dense_bytes(request.dense, 2)
    for param in request.targets:
        side = projection_side(param.shape, "full" if proj == "full" else
                               ("std" if proj == "random" else proj))
        rows, cols = low_rank_grad_shape(param.shape, rank, side)
        m, n = param.shape
        r = min(rank, m, n)
        projector = {"right": n * r, "left": m * r, "both": m * r + n * r}[side]
        total += 2 * rows * cols * param.dtype_bytes + 4 * projector
    return StateEstimate(total)


def estimate_probe(request: EstimateRequest) -> StateEstimate:
    """Measured: the real optimizer stepped twice on meta-device parameters of these shapes
    (no data, no memory; imports pytorch-optimizer). For preconditioners whose sizes
    follow block, dimension and rank rules a formula would restate."""
    key = request.spec.bare_name
    cls = optimizer_class(key)
    from ._state_probe import ProbeUnavailable, meta_parameters, probe_state_bytes  # torch

    params = meta_parameters((p.shape, p.dtype_bytes) for p in request.trainable)
    kwargs = _probe_kwargs(request)
    if key in MODEL_FIRST:
        raise OptimArgsError(f"no meta-device probe for {request.spec.name!r} (it takes the model)")
    groups: list[dict[str, Any]] = [{"params": params}]
    if request.spec.has(Capability.MATRIX_ONLY):
        groups = [{"params": params, "use_muon": True}]
    try:
        measured = probe_state_bytes(lambda: cls(groups, **kwargs), params)
    except ProbeUnavailable as exc:
        raise OptimArgsError(
            f"the memory probe of {request.spec.name!r} failed ({exc}); report it"
        ) from exc
    return StateEstimate(measured, notes=("measured on meta-device parameters (a probe)",))


def _probe_kwargs(request: EstimateRequest) -> dict[str, Any]:
    spec = request.spec
    kwargs: dict[str, Any] = {}
    if spec.has_hyperparameter("lr"):
        kwargs["lr"] = 1e-3
    if spec.has_hyperparameter("betas"):
        kwargs["betas"] = (0.9, 0.999)
    if spec.has_hyperparameter("eps"):
        kwargs["eps"] = 1e-8
    for name, value in request.options.items():
        arg = spec.args[name]
        if not arg.target_group:
            kwargs[arg.key] = value
    return kwargs


def _as_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, columns) view several pytorch-optimizer classes take of a parameter: a
    vector as a column, a tensor of more dimensions as its first dimension by the rest."""
    numel = math.prod(shape)
    if len(shape) < 2:
        return numel, 1
    return shape[0], numel // shape[0]


def estimate_nero(request: EstimateRequest) -> StateEstimate:
    """Nero: one second moment per output neuron (per row) of a matrix, per element of a
    vector; its per-parameter scale is a 0-d tensor (bookkeeping, not counted)."""
    return StateEstimate(sum(p.dtype_bytes * (p.numel if len(p.shape) <= 1 else p.shape[0])
                             for p in request.trainable))


def estimate_racs(request: EstimateRequest) -> StateEstimate:
    """RACS: a row and a column statistic of the (rows, columns) view (and a 0-d
    threshold)."""
    return StateEstimate(sum(p.dtype_bytes * sum(_as_matrix(p.shape))
                             for p in request.trainable))


def estimate_alice(request: EstimateRequest) -> StateEstimate:
    """Alice on the (m, n) view, r = min(rank, m): the basis U (m x r), Q (r x r), the two
    projected moments (r x n each) and the compensation scale p (n); phi is 0-d."""
    rank = int(request.option("rank", 256))
    total = 0
    for param in request.trainable:
        m, n = _as_matrix(param.shape)
        r = min(rank, m)
        total += param.dtype_bytes * (m * r + r * r + 2 * r * n + n)
    return StateEstimate(total)


def estimate_spam(request: EstimateRequest) -> StateEstimate:
    """SPAM: Adam's two moments, for a matrix only over its mask's ``int(density * numel)``
    entries (plus the boolean mask, one byte per element). Exact until the first mask
    resampling (every update_proj_gap steps), which draws each entry with probability
    density: the same count on average, exactly so at the default density 1."""
    density = float(request.option("density", 1.0))
    total = 0
    for param in request.trainable:
        if len(param.shape) == 2:
            total += param.numel + 2 * int(density * param.numel) * param.dtype_bytes
        else:
            total += 2 * param.numel * param.dtype_bytes
    return StateEstimate(total)


def estimate_sara(request: EstimateRequest) -> StateEstimate:
    """SaRA keeps moments only for the weights whose magnitude is below its threshold when
    it starts: a count that depends on the weights' values, which an estimate does not
    read (it sees shapes only). Refused, with the bound."""
    bound = sum(p.numel + 2 * p.numel * p.dtype_bytes for p in request.trainable)
    raise OptimArgsError(
        f"no memory estimate for {request.spec.name!r}: SaRA keeps Adam moments only for "
        "the weights below its threshold at the start, a count that depends on the weight "
        f"values, not their shapes; at most {bound:,} bytes (a boolean mask and two moments "
        "for every weight). Measure it on the model: optimhub.testing.state_bytes"
    )


def estimate_conda(request: EstimateRequest) -> StateEstimate:
    """Measured on the CPU per parameter shape (``probe_per_shape``): Conda's full-rank
    GaLore projector keeps views of an SVD factor whose size a meta-device probe does not
    see; every parameter's state is its own, so shapes can be probed one at a time."""
    cls = optimizer_class(request.spec.bare_name)
    from ._state_probe import ProbeUnavailable, probe_per_shape  # imports torch

    kwargs = _probe_kwargs(request)
    try:
        measured = probe_per_shape(lambda params: cls(params, **kwargs),
                                   ((p.shape, p.dtype_bytes) for p in request.trainable))
    except ProbeUnavailable as exc:
        raise OptimArgsError(f"no memory estimate for {request.spec.name!r}: {exc}") from exc
    return StateEstimate(measured, notes=("measured per parameter shape on the CPU (a probe)",))


#: pytorch-optimizer's AdamMini blocks, by parameter-name substring (its own rules,
#: adam_mini.py: ``embed_blocks``, ``qk_blocks`` and the fused-attention names).
_PTO_ADAM_MINI_EMBED = ("embed", "embd", "wte", "lm_head.weight", "output.weight")
_PTO_ADAM_MINI_QK = ("k_proj.weight", "q_proj.weight", "wq.weight", "wk.weight")
_PTO_ADAM_MINI_FUSED = ("attn.attn.weight", "attn.qkv.weight")


def estimate_adam_mini(request: EstimateRequest) -> StateEstimate:
    """pytorch-optimizer's AdamMini (its port differs from the authors' package): float32
    state whatever the weights' dtype; embedding/output weights keep both Adam moments; a
    query/key weight its first moment and one second moment per head (``hidden_size**2 /
    num_attention_heads`` weights per head); a fused QKV weight one per query group and
    slot; every other weight its first moment only (its one second moment is 0-d). Without
    the attention shape in optim_args a query/key weight is counted with one second
    moment per row, an upper bound."""
    hidden = request.option("hidden_size")
    heads = request.option("num_attention_heads")
    groups = request.option("num_key_value_heads") or heads
    total, notes = 0, ()
    for p in request.trainable:
        if any(block in p.name for block in _PTO_ADAM_MINI_EMBED):
            total += 8 * p.numel
        elif any(block in p.name for block in _PTO_ADAM_MINI_QK):
            if hidden and heads:
                total += 4 * p.numel + 4 * (p.numel // (hidden * hidden // heads))
            else:
                total += 4 * p.numel + 4 * p.shape[0]
                notes = ("query/key second moments counted per row (an upper bound): give "
                         "hidden_size and num_attention_heads for the exact count",)
        elif any(block in p.name for block in _PTO_ADAM_MINI_FUSED) and heads and groups:
            total += 4 * p.numel + 4 * groups * (heads // groups + 2)
        else:
            total += 4 * p.numel
    return StateEstimate(total, notes=notes)


#: Size-dependent estimators, by the generator's STATE names.
ESTIMATORS: dict[str, Callable[[EstimateRequest], StateEstimate]] = {
    "adalomo": estimate_factored,
    "asgd": estimate_scalars,
    "a2grad": estimate_a2grad,
    "adashift": estimate_adashift,
    "galore": estimate_low_rank,
    "apollo": estimate_low_rank,
    "fira": estimate_low_rank,
    "adammini": estimate_adam_mini,
    "nero": estimate_nero,
    "racs": estimate_racs,
    "alice": estimate_alice,
    "spam": estimate_spam,
    "sara": estimate_sara,
    "conda": estimate_conda,
}


def estimate(request: EstimateRequest) -> StateEstimate:
    """The name's formula, else its dense constant, else the measured probe."""
    spec = request.spec
    if spec.bare_name in ESTIMATORS:
        return ESTIMATORS[spec.bare_name](request)
    if spec.state_bytes_per_param is not None:
        return estimate_dense(request)
    return estimate_probe(request)


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    for name in register.catalog_names():
        register.builder(name, build, estimator=estimate)
