"""Every runnable catalog name built by hand, without optimhub, and the two-step harness
that measures what an optimizer holds: shared by ``benchmarks/state_memory.py`` and
``tests/test_state_memory.py``.

It lives here, not in tests/, because it is the benchmark's own material: code that knows
the backends by name and constructs each class as its documentation says, the way a user
without the hub would. The test imports it so the benchmark's claim (hub == direct, to the
byte) is checked on every CI run rather than only when someone runs the script.

Groups are made by hand the Hugging Face way: decay / no-decay (biases and norm weights),
plus one low-rank group holding the attention and MLP weights with the backend's keys.
The rank is passed as given, so callers keep it at or below every target's smaller side
(the hub caps it per weight; :func:`build_direct` refuses a rank it would have to cap).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import optimhub
from optimhub.testing import state_bytes

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
#: The modules whose weights low-rank names project (HF's usual choice).
TARGET_MODULES = [r".*attn.*", r".*mlp.*"]
STEPS = 2
#: Names whose rank is part of what they are (APOLLO-Mini is rank 1): not overridden.
FIXED_RANK = {"apollo_mini": 1}

#: Loss of a model on one batch.
Loss = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def quiet_backend_warnings() -> None:
    """Silence the per-step warnings of GrokAdamW (deprecated autocast), bnb's and the
    hub's paged-without-CUDA notices: a table, not a log, is the benchmark's output."""
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.autocast.*")
    warnings.filterwarnings("ignore", message=r"CUDA is not available.*Disabling autocast")
    warnings.filterwarnings("ignore", message=r"Paged optimizers are not supported on CPU")
    warnings.filterwarnings("ignore", category=optimhub.OptimHubWarning)


# ============================================================================ the loop
def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1)
    )


def batches(vocab: int, steps: int = STEPS, batch: int = 2, length: int = 9
            ) -> list[torch.Tensor]:
    return [torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(s))
            for s in range(steps)]


#: What a name needs beyond lr on the reference models (the same is given to the hand build).
EXTRA: dict[str, dict[str, Any]] = {
    "adam_mini": {"optim_args": "hidden_size=64,num_attention_heads=4"},
    "pto_adammini": {"optim_args": "hidden_size=64,num_attention_heads=4"},
    "pto_ranger21": {"max_steps": 10},
    "pto_alice": {"optim_args": "rank=8,leading_basis=4"},
    "pto_adashift": {"optim_args": "keep_num=2"},  # its queue full after the 2 steps
    "heavyball_psgdlra": {"optim_args": "precond_init_scale=0.1"},
}


def matrices_only(model: nn.Module) -> nn.Module:
    """The model with only its 2-D weights trainable: what a matrix_only name is given."""
    for param in model.parameters():
        param.requires_grad_(param.dim() == 2)
    return model


def hub_kwargs(name: str, rank: int) -> dict[str, Any]:
    """What the hub is given: lr, and for low-rank names the targets and the rank."""
    spec = optimhub.get_spec(name)
    lr = {"lr": LR} if spec.has_hyperparameter("lr") else {}  # AliG, A2Grad: their own step
    kwargs: dict[str, Any] = {**lr, **EXTRA.get(name, {})}
    if spec.has("target_modules"):
        kwargs["optim_target_modules"] = TARGET_MODULES
    if "rank" in spec.args and "optim_args" not in kwargs:  # Alice: its own rank in EXTRA
        # a routed preset's low-rank route targets its own matrices
        kwargs["optim_args"] = f"rank={FIXED_RANK.get(name, rank)}"
    return kwargs


def hub_name(name: str) -> Any:
    """What the hub builds for ``name`` on a whole model: a matrix-only name (the Muon
    family) in its routed form, the rest to AdamW."""
    if optimhub.get_spec(name).has("matrix_only"):
        from optimhub.routing import matrix_only_routes

        return matrix_only_routes(name)
    return name


def measure_hub(name: str, model: nn.Module, data: list[torch.Tensor], rank: int,
                loss: Loss = lm_loss) -> int:
    """Bytes of state after ``len(data)`` steps of the optimizer the hub builds (driven by
    ``optimhub.drive``, so schedule-free, fused-backward and layerwise names step right)."""
    optimizer = optimhub.create_optimizer(hub_name(name), model, **hub_kwargs(name, rank))
    closure = None
    if optimhub.get_spec(name).has("closure_required"):
        def closure() -> torch.Tensor:
            with torch.enable_grad():
                optimizer.zero_grad(set_to_none=True)
                value = loss(model, current[0])
                value.backward()
            return value
    current = [data[0]]
    driver = optimhub.drive(optimizer, model=model, closure=closure)
    for batch in data:
        current[0] = batch
        driver.backward(loss(model, batch))
        driver.step()
    measured = state_bytes(optimizer)
    if hasattr(optimizer, "close"):
        optimizer.close()
    return measured


def measure_direct(name: str, model: nn.Module, data: list[torch.Tensor], rank: int,
                   loss: Loss = lm_loss) -> int:
    """The same, for the backend class constructed by hand (:func:`build_direct`)."""
    with build_direct(name, model, rank) as run:
        for batch in data:
            def closure(batch: torch.Tensor = batch) -> torch.Tensor:
                with torch.enable_grad():
                    run.optimizers[0].zero_grad(set_to_none=True)
                    value = loss(model, batch)
                    value.backward()
                return value

            run.train_step(loss(model, batch), closure)
        return run.state_bytes()


# ============================================================================ groups
def target_names(model: nn.Module) -> set[str]:
    """The weights of the attention and MLP Linears (what TARGET_MODULES selects)."""
    return {f"{n}.weight" for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and (".self_attn." in n or ".mlp." in n
                                             or ".attn." in n)}


#: Names built by hand with galore-torch's own SVD projector (proj_type "std"). For a
#: float32 gradient it keeps ``Vh[:rank]`` / ``U[:, :rank]`` as views, which keep the whole
#: factor alive; the hub's projector keeps only those rows / columns.
SVD_PROJECTED = frozenset({"galore_adamw", "galore_adamw_layerwise", "galore_adafactor",
                           "galore_adafactor_layerwise",
                           "galore_plus_adamw_8bit"})  # its matrix route is galore_adamw
#: Of those, the ones that cast every gradient to float32 first (GaLore's Adafactor).
FLOAT32_GRADIENTS = frozenset({"galore_adafactor", "galore_adafactor_layerwise"})


def whole_factor_surplus(name: str, model: nn.Module, rank: int) -> int:
    """Bytes the by-hand ``name`` keeps beyond what its projectors use: for each target
    whose gradient is float32, the whole SVD factor behind the view minus its rank rows
    (a tall m x n weight: (n - r) x n) or columns (a wide one: m x (m - r)). What the
    hub's state is smaller by; 0 for every other name."""
    if name not in SVD_PROJECTED:
        return 0
    params = dict(model.named_parameters())
    surplus = 0
    for target in target_names(model):
        param = params[target]
        if param.dtype != torch.float32 and name not in FLOAT32_GRADIENTS:
            continue  # galore-torch casts the slice back: a copy of just the slice
        m, n = param.shape
        r = min(rank, m, n)
        surplus += 4 * ((n - r) * n if m >= n else m * (m - r))
    return surplus


def hf_groups(model: nn.Module, low_rank: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """decay / no-decay groups (weight decay 0 here), plus the low-rank target group."""
    targets = target_names(model) if low_rank is not None else set()
    decay, no_decay, chosen = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in targets:
            if low_rank and low_rank["rank"] > min(param.shape):
                raise ValueError(f"rank {low_rank['rank']} > the smaller side of {name}")
            chosen.append(param)
        elif "bias" in name or "norm" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": 0.0}, {"params": no_decay, "weight_decay": 0.0}]
    if chosen:
        groups.append({"params": chosen, "weight_decay": 0.0, **(low_rank or {})})
    return [g for g in groups if g["params"]]


# ============================================================================ the runs
@dataclass
class DirectRun:
    """One hand-built optimizer (or one per parameter, for layerwise) and how to step it."""

    optimizers: list[Any]
    kind: str = "plain"  # plain | schedule_free | fused | layerwise | closure | create_graph
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def train_step(self, loss: torch.Tensor,
                   closure: Callable[[], torch.Tensor] | None = None) -> None:
        optimizer = self.optimizers[0]
        if self.kind == "fused":
            optimizer.fused_backward(loss, LR)
            return
        loss.backward(create_graph=self.kind == "create_graph")
        if self.kind == "closure":
            optimizer.step(closure)
            optimizer.zero_grad(set_to_none=True)
            return
        if self.kind == "layerwise":
            return  # stepped in the hooks
        for each in self.optimizers:  # several for the routed names: one per route
            each.step()
            each.zero_grad(set_to_none=True)

    def state_bytes(self) -> int:
        return sum(state_bytes(o) for o in self.optimizers)

    def __enter__(self) -> DirectRun:
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in self.cleanup:
            undo()


def build_direct(name: str, model: nn.Module, rank: int) -> DirectRun:
    """``name``'s backend class, constructed by hand on hand-made groups."""
    if name not in DIRECT:
        raise KeyError(f"no direct construction for {name!r}")
    return DIRECT[name](model, rank)


def _plain(factory: Callable[[list[dict[str, Any]]], Any], low_rank: dict[str, Any] | None = None,
           kind: str = "plain") -> Callable[[nn.Module, int], DirectRun]:
    def build(model: nn.Module, rank: int) -> DirectRun:
        keys = None if low_rank is None else {"rank": rank, **low_rank}
        optimizer = factory(hf_groups(model, keys))
        if kind == "schedule_free":
            optimizer.train()
        return DirectRun([optimizer], kind)

    return build


def _layerwise(factory: Callable[[list[dict[str, Any]]], Any], low_rank: dict[str, Any]
               ) -> Callable[[nn.Module, int], DirectRun]:
    """HF's layerwise recipe: one optimizer per parameter, stepped from its
    post-accumulate-grad hook."""

    def build(model: nn.Module, rank: int) -> DirectRun:
        run = DirectRun([], "layerwise")
        for group in hf_groups(model, {"rank": rank, **low_rank}):
            for param in group["params"]:
                optimizer = factory([{**group, "params": [param]}])
                run.optimizers.append(optimizer)
                handle = param.register_post_accumulate_grad_hook(_stepper(optimizer))
                run.cleanup.append(handle.remove)
        return run

    return build


def _stepper(optimizer: Any) -> Callable[[torch.Tensor], None]:
    def step(_: torch.Tensor) -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _bnb(cls: str, bits: int, **kwargs: Any) -> Callable[[nn.Module, int], DirectRun]:
    """A bitsandbytes class; 8-bit names keep embeddings in 32 bits (HF does the same, by
    module; here per parameter, dropped afterwards). Paging only where CUDA is."""

    def build(model: nn.Module, rank: int) -> DirectRun:
        return _bnb_run(cls, bits, model, hf_groups(model), **kwargs)

    return build


def _bnb_run(cls: str, bits: int, model: nn.Module, groups: list[dict[str, Any]],
             **kwargs: Any) -> DirectRun:
    """One bnb optimizer on ``groups`` of ``model`` (see :func:`_bnb`)."""
    import bitsandbytes as bnb

    extra = dict(kwargs)
    if "is_paged" in extra:
        extra["is_paged"] = extra["is_paged"] and torch.cuda.is_available()
    optimizer = getattr(bnb.optim, cls)(groups, optim_bits=bits, **extra)
    run = DirectRun([optimizer])
    if bits == 8:
        manager = bnb.optim.GlobalOptimManager.get_instance()
        for module in model.modules():
            if isinstance(module, nn.Embedding) and module.weight.requires_grad:
                manager.override_config(module.weight, "optim_bits", 32)
                key = id(module.weight)
                run.cleanup.append(lambda key=key: manager.pid2config.pop(key, None))
                weakref.finalize(module.weight, manager.pid2config.pop, key, None)
    return run


def _imported(module: str, attribute: str) -> Callable[..., Any]:
    def construct(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    return construct


def _lomo(model: nn.Module, rank: int) -> DirectRun:
    from lomo_optim import Lomo

    return DirectRun([Lomo(model, lr=LR, weight_decay=0.0)], "fused")


_ADAM = {"lr": LR, "betas": BETAS, "eps": EPS}
_APOLLO = {"proj": "random", "scale_type": "channel", "update_proj_gap": 200, "scale": 1.0,
           "proj_type": "std"}
_APOLLO_MINI = {**_APOLLO, "rank": FIXED_RANK["apollo_mini"], "scale_type": "tensor",
                "scale": 128.0}
_GALORE = {"update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}
_ADAFACTOR_ABSOLUTE = {"lr": LR, "relative_step": False, "scale_parameter": False}

_apollo = _imported("apollo_torch", "APOLLOAdamW")
_galore_adamw = _imported("galore_torch", "GaLoreAdamW")
_galore_adafactor = _imported("galore_torch", "GaLoreAdafactor")


def _torchao(attribute: str) -> Callable[[nn.Module, int], DirectRun]:
    construct = _imported("torchao.optim", attribute)
    return _plain(lambda g: construct(g, **_ADAM, block_size=256))


def _schedulefree(attribute: str, **kwargs: Any) -> Callable[[nn.Module, int], DirectRun]:
    construct = _imported("schedulefree", attribute)
    return _plain(lambda g: construct(g, lr=LR, **kwargs), kind="schedule_free")


def _hidden_matrices(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The split users write for Muon by hand: the 2-D weights of the blocks (no embedding,
    no head), and everything else."""
    matrices, rest = [], []
    for name, param in model.named_parameters():
        hidden = param.ndim >= 2 and "embed" not in name and "lm_head" not in name
        (matrices if hidden else rest).append(param)
    return matrices, rest


def _muon(adjust_lr_fn: str | None) -> Callable[[nn.Module, int], DirectRun]:
    """torch's Muon on the hidden matrices, AdamW on the rest (HF's decay split)."""

    def build(model: nn.Module, rank: int) -> DirectRun:
        matrices, rest = _hidden_matrices(model)
        return DirectRun([
            torch.optim.Muon(matrices, lr=LR, weight_decay=0.0, adjust_lr_fn=adjust_lr_fn),
            *_adamw_on(model, rest),
        ])

    return build


def _adamw_on(model: nn.Module, params: list[nn.Parameter]) -> list[torch.optim.Optimizer]:
    """AdamW (HF's decay split) on ``params``, as the Muon recipes step the rest; none when
    none of them trains."""
    chosen = {id(p) for p in params}
    groups = [{**g, "params": [p for p in g["params"] if id(p) in chosen]}
              for g in hf_groups(model)]
    groups = [g for g in groups if g["params"]]
    return [torch.optim.AdamW(groups, **_ADAM)] if groups else []


def _galore_plus_adamw_8bit(model: nn.Module, rank: int) -> DirectRun:
    """GaLore on the attention and MLP weights, bnb's 8-bit AdamW on the rest: two
    optimizers, as users combine them by hand."""
    targets = target_names(model)
    named = dict(model.named_parameters())
    galore = _galore_adamw([{"params": [named[n] for n in named if n in targets],
                             "weight_decay": 0.0, "rank": rank, **_GALORE}],
                           **_ADAM, no_deprecation_warning=True)
    chosen = {id(p) for n, p in named.items() if n not in targets}
    groups = [{**g, "params": [p for p in g["params"] if id(p) in chosen]}
              for g in hf_groups(model)]
    rest = _bnb_run("AdamW", 8, model, [g for g in groups if g["params"]], **_ADAM,
                    is_paged=False)
    return DirectRun([galore, *rest.optimizers], cleanup=rest.cleanup)


#: name -> how to build it by hand: (model, rank) -> DirectRun.
DIRECT: dict[str, Callable[[nn.Module, int], DirectRun]] = {
    "adamw_torch": _plain(lambda g: torch.optim.AdamW(g, **_ADAM)),
    "adamw_torch_fused": _plain(lambda g: torch.optim.AdamW(g, **_ADAM, fused=True)),
    "sgd": _plain(lambda g: torch.optim.SGD(g, lr=LR)),
    "adagrad": _plain(lambda g: torch.optim.Adagrad(g, lr=LR)),
    "rmsprop": _plain(lambda g: torch.optim.RMSprop(g, lr=LR)),
    "adafactor_torch": _plain(lambda g: torch.optim.Adafactor(g, lr=LR)),
    "adafactor": _plain(lambda g: _imported("transformers.optimization", "Adafactor")(
        g, **_ADAFACTOR_ABSOLUTE)),
    "apollo_adamw": _plain(lambda g: _apollo(g, **_ADAM), _APOLLO),
    "apollo_mini": _plain(lambda g: _apollo(g, **_ADAM), _APOLLO_MINI),
    "apollo_adamw_layerwise": _layerwise(lambda g: _apollo(g, **_ADAM), _APOLLO),
    "galore_adamw": _plain(lambda g: _galore_adamw(g, **_ADAM, no_deprecation_warning=True),
                           _GALORE),
    "galore_adamw_layerwise": _layerwise(
        lambda g: _galore_adamw(g, **_ADAM, no_deprecation_warning=True), _GALORE),
    "galore_adafactor": _plain(lambda g: _galore_adafactor(g, **_ADAFACTOR_ABSOLUTE), _GALORE),
    "galore_adafactor_layerwise": _layerwise(
        lambda g: _galore_adafactor(g, **_ADAFACTOR_ABSOLUTE), _GALORE),
    "grokadamw": _plain(lambda g: _imported("grokadamw", "GrokAdamW")(g, **_ADAM)),
    "lomo": _lomo,
    "adamw_bnb_8bit": _bnb("AdamW", 8, **_ADAM, is_paged=False),
    "paged_adamw_32bit": _bnb("AdamW", 32, **_ADAM, is_paged=True),
    "paged_adamw_8bit": _bnb("AdamW", 8, **_ADAM, is_paged=True),
    "lion_8bit": _bnb("Lion", 8, lr=LR, betas=BETAS),
    "lion_32bit": _bnb("Lion", 32, lr=LR, betas=BETAS),
    "paged_lion_32bit": _bnb("Lion", 32, lr=LR, betas=BETAS, is_paged=True),
    "paged_lion_8bit": _bnb("Lion", 8, lr=LR, betas=BETAS, is_paged=True),
    "rmsprop_bnb": _bnb("RMSprop", 32, lr=LR),
    "rmsprop_bnb_8bit": _bnb("RMSprop", 8, lr=LR),
    "rmsprop_bnb_32bit": _bnb("RMSprop", 32, lr=LR),
    "ademamix": _bnb("AdEMAMix", 32, lr=LR, betas=(*BETAS, 0.9999), eps=EPS),
    "ademamix_8bit": _bnb("AdEMAMix", 8, lr=LR, betas=(*BETAS, 0.9999), eps=EPS),
    "paged_ademamix_32bit": _bnb("AdEMAMix", 32, lr=LR, betas=(*BETAS, 0.9999), eps=EPS,
                                 is_paged=True),
    "paged_ademamix_8bit": _bnb("AdEMAMix", 8, lr=LR, betas=(*BETAS, 0.9999), eps=EPS,
                                is_paged=True),
    "adamw_torch_4bit": _torchao("AdamW4bit"),
    "adamw_torch_8bit": _torchao("AdamW8bit"),
    "stable_adamw": _plain(lambda g: _imported("optimi", "StableAdamW")(g, **_ADAM)),
    "schedule_free_adamw": _schedulefree("AdamWScheduleFree", betas=BETAS, eps=EPS),
    "schedule_free_radam": _schedulefree("RAdamScheduleFree", betas=BETAS, eps=EPS),
    "schedule_free_sgd": _schedulefree("SGDScheduleFree"),
    "sign_sgd": _plain(lambda g: _imported("optimhub_example_plugin", "SignSGD")(g, lr=LR)),
    "muon_torch": _muon(None),
    "muon": _muon("match_rms_adamw"),
    "galore_plus_adamw_8bit": _galore_plus_adamw_8bit,
    # optimhub's own optimizer (no other package has this update): its class, by hand.
    "adamweightdecay": _plain(lambda g: _imported("optimhub.plugins.mindformers",
                                                  "AdamWeightDecay")(g, **_ADAM)),
}


def _library_direct() -> dict[str, Callable[[nn.Module, int], DirectRun]]:
    """The catalogs' library classes by hand: ``Class(hf_groups(model), lr=LR, ...)`` with
    the library's defaults, and the constructor shapes their documentation gives (the
    model first, a base optimizer class, Muon groups, low-rank group keys)."""
    import importlib.util

    direct: dict[str, Callable[[nn.Module, int], DirectRun]] = {}
    if importlib.util.find_spec("pytorch_optimizer"):
        for spec in optimhub.list_optimizers(backend="pytorch_optimizer"):
            direct[spec.name] = _pto(spec)
    if importlib.util.find_spec("heavyball"):
        for spec in optimhub.list_optimizers(backend="heavyball"):
            direct[spec.name] = _heavyball(spec.bare_name)
    return direct


def _pto(spec: Any) -> Callable[[nn.Module, int], DirectRun]:
    key = spec.bare_name
    kind = ("closure" if spec.has("closure_required") else "create_graph"
            if spec.has("create_graph") else "fused" if spec.has("fused_backward")
            else "schedule_free" if spec.has("schedule_free") else "plain")

    def build(model: nn.Module, rank: int) -> DirectRun:
        import pytorch_optimizer
        from pytorch_optimizer.optimizer import OPTIMIZERS

        cls = {**OPTIMIZERS, "sam": pytorch_optimizer.SAM, "wsam": pytorch_optimizer.WSAM,
               "friendlysam": pytorch_optimizer.FriendlySAM,
               "looksam": pytorch_optimizer.LookSAM}[key]
        if key in ("lomo", "adalomo"):
            return DirectRun([cls(model, lr=LR)], kind)
        if key == "adammini":
            return DirectRun([cls(model, lr=LR, num_embeds=64, num_heads=4)], kind)
        low_rank = {"rank": rank, "update_proj_gap": 200, "scale": 0.25,
                    "projection_type": "std"} if spec.has("low_rank") else None
        groups = hf_groups(model, low_rank)
        fallback: list[torch.optim.Optimizer] = []
        if spec.has("matrix_only"):  # the class on the hidden matrices, AdamW on the rest
            matrices, rest = _hidden_matrices(model)
            hidden = {id(p) for p in matrices}
            groups = [{**g, "params": [p for p in g["params"] if id(p) in hidden],
                       "use_muon": True} for g in groups]
            groups = [g for g in groups if g["params"]]
            fallback = _adamw_on(model, rest)
        extra: dict[str, Any] = {"ranger21": {"num_iterations": 10},
                                 "alice": {"rank": 8, "leading_basis": 4},
                                 "adashift": {"keep_num": 2}}.get(key, {})
        if key in ("sam", "friendlysam", "looksam"):
            optimizer = cls(groups, base_optimizer=torch.optim.SGD, lr=LR)
        elif key == "wsam":
            optimizer = cls(model, groups, base_optimizer=torch.optim.SGD, lr=LR)
        elif key in ("scion", "scionlight"):
            optimizer = cls(groups, lr=LR, norm_type=1)
        else:
            optimizer = cls(groups, lr=LR, **extra)
        if kind == "schedule_free":
            optimizer.train()
        return DirectRun([optimizer, *fallback], kind)

    return build


def _heavyball(bare_name: str) -> Callable[[nn.Module, int], DirectRun]:
    def build(model: nn.Module, rank: int) -> DirectRun:
        import heavyball
        import heavyball.utils

        heavyball.utils.compile_mode = None  # eager on the CPU, as the plugin runs it
        cls = next(getattr(heavyball, n) for n in heavyball.__all__ if n.lower() == bare_name)
        extra: dict[str, Any] = {}
        if bare_name == "psgdlra":  # heavyball's default rank fails on param groups
            count = sum(p.numel() for p in model.parameters() if p.requires_grad)
            extra = {"precond_init_scale": 0.1, "rank": max(1, round(math.log2(count)))}
        optimizer = cls(hf_groups(model), lr=LR, **extra)
        if hasattr(optimizer, "train") and bare_name in ("sfadamw", "msamlaprop"):
            optimizer.train()
            return DirectRun([optimizer], "schedule_free")
        return DirectRun([optimizer])

    return build


DIRECT.update({
    "adam_mini": lambda model, rank: DirectRun([_imported("adam_mini", "Adam_mini")(
        [(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=LR, betas=BETAS,
        eps=EPS, weight_decay=0.0, dim=64, n_heads=4, verbose=False)]),
    "came": _plain(lambda g: _imported("came_pytorch", "CAME")(g, lr=LR)),
    "prodigy": _plain(lambda g: _imported("prodigyopt", "Prodigy")(g, lr=LR, betas=BETAS,
                                                                   eps=EPS)),
    **_library_direct(),
})


def runnable_names() -> Iterator[str]:
    """Catalog names that run on this machine (backend installed, device fits)."""
    from optimhub.testing import readiness

    for spec in optimhub.list_optimizers():
        if readiness(spec).action == "run":
            yield spec.name
