"""The conformance suite: what every optimizer in the catalog (built-in or third-party) must do.

A plugin author runs it against their plugin; the project runs it over the whole catalog::

    import optimhub.testing as ot

    report = ot.check_optimizer("sign_sgd")          # raises ConformanceError on a failure
    print(report.state_bytes_per_param, report.losses)

    # in a pytest file:
    @pytest.mark.parametrize("name", ot.parametrize_catalog("sign_*"))
    def test_conformance(name):
        ot.assert_conformance(name)

The checks, each named in the report and in a failure's message:

- ``builds``: ``create_optimizer`` builds it and ``optimhub.spec_of`` returns its spec;
  a ``matrix_only`` name (the Muon family) is checked in its routed form
  (:func:`optimhub.routing.matrix_only_routes`: the matrices to it, the rest to AdamW),
  the only form in which it trains a whole model;
- ``loss_decreases``: driven by ``optimhub.drive`` (the one loop that honours every
  capability) on a fixed batch of a small LM, the loss after ``steps`` steps is below the
  first step's;
- ``resume``: ``state_dict()`` mid-run, through ``torch.save`` and
  ``torch.load(weights_only=True)``, into a fresh model and a fresh optimizer built by the
  hub, continues to *exactly* the parameters of the uninterrupted run (``resume_atol``
  relaxes this only for backends documented as non-deterministic);
- one check per capability the spec claims (``schedule_free``, ``fused_backward``,
  ``layerwise``, ``layerwise_capable``, ``low_bit_state``, ``low_rank``, ``needs_model``,
  ``target_modules``, ``matrix_only``): the claim is true of the object the hub builds
  (a ``matrix_only`` spec built by its plain name must refuse a model with vectors;
  ``create_graph`` and ``closure_required`` are honoured by the driver) (``low_bit_state``
  and ``layerwise`` both ways: what is not claimed must not be there either);
- ``weight_decay_changes``: for specs that take weight decay, the trained run replayed
  with every param group's ``weight_decay`` raised before its last two steps ends
  elsewhere, as weight-decay schedules need; a spec that declares ``static_weight_decay``
  must end at the same weights;
- ``declared_memory``: a spec's ``state_bytes_per_param`` matches :func:`state_bytes`
  (where it does not depend on tensor sizes: not for low-bit or low-rank specs);
- ``missing_backend``: with the backend made unimportable, ``create_optimizer`` raises
  ``MissingBackendError`` naming ``spec.install_command``.

It also measures optimizer memory honestly (:func:`state_bytes`): every tensor the
optimizer object holds, wherever the backend keeps it.

This module ships in the wheel: it imports nothing from the project's tests, and pytest
only inside the helpers made for pytest.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .backends import backend_status, cuda_available
from .checkpoint import spec_of
from .errors import (
    BackendUnavailableError,
    CapabilityError,
    MissingBackendError,
    TargetModulesError,
)
from .factory import create_optimizer
from .layerwise import LayerwiseOptimizer
from .listing import get_spec, list_optimizers
from .optim_args import split_optim_args
from .routing import matrix_only_routes
from .spec import Capability, OptimizerSpec
from .state_size import is_low_bit, state_bytes, state_bytes_per_param, state_tensors
from .training import TrainingDriver, drive

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_RANK",
    "DEFAULT_TARGET_MODULES",
    "CheckOutcome",
    "ConformanceError",
    "ConformanceReport",
    "Readiness",
    "TinyLM",
    "assert_conformance",
    "check_missing_backend",
    "check_optimizer",
    "conformance_batch",
    "conformance_loss",
    "conformance_marks",
    "conformance_model",
    "hidden_backend",
    "parametrize_catalog",
    "readiness",
    "state_bytes",
    "state_bytes_per_param",
    "state_tensors",
]

#: Defaults for the small problem. Large enough that every optimizer moves the loss of a
#: fixed batch within a few steps; per-name tuning belongs in the caller's settings.
DEFAULT_LR = 1e-2
DEFAULT_STEPS = 8
DEFAULT_RANK = 4
DEFAULT_TARGET_MODULES = (r".*attn.*", r".*mlp.*")
SEED = 0


# ============================================================================ the problem
class TinyLM(nn.Module):
    """A one-block causal-LM-shaped model with Hugging Face module names.

    ``layers.0.attn.{q,k,v,o}_proj`` and ``layers.0.mlp.{up,down}_proj`` are what
    ``optim_target_modules`` patterns select; the embedding and ``lm_head`` stay out of
    them, as in real models. The two MLP weights have 4096 elements: the smallest size
    at which bitsandbytes and torchao keep 8-bit (or 4-bit) state, so low-bit claims are
    observable, while the whole model (~17k parameters) steps in milliseconds.
    """

    def __init__(self, vocab: int = 64, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        block = nn.Module()
        block.input_layernorm = nn.LayerNorm(width)
        block.attn = nn.ModuleDict(
            {k: nn.Linear(width, width) for k in ("q_proj", "k_proj", "v_proj", "o_proj")}
        )
        block.mlp = nn.ModuleDict(
            {"up_proj": nn.Linear(width, hidden), "down_proj": nn.Linear(hidden, width)}
        )
        self.layers = nn.ModuleList([block])
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        length = tokens.shape[-1]
        causal = torch.full((length, length), float("-inf"), device=tokens.device).triu(1)
        for block in self.layers:
            h = block.input_layernorm(x)
            q, k, v = (block.attn[n](h) for n in ("q_proj", "k_proj", "v_proj"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + causal
            x = x + block.attn["o_proj"](torch.softmax(scores, dim=-1) @ v)
            x = x + block.mlp["down_proj"](torch.relu(block.mlp["up_proj"](x)))
        return self.lm_head(self.norm(x))


def conformance_model(seed: int = SEED) -> TinyLM:
    """The suite's model, identical for a given seed, without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyLM()


def conformance_batch(seed: int = 1, vocab: int = 64, batch: int = 4, length: int = 17
                      ) -> torch.Tensor:
    """A fixed batch of token ids: the same data every step, so the loss must go down."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def conformance_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``model`` on ``tokens``."""
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )


# ============================================================================ readiness
@dataclass(frozen=True)
class Readiness:
    """Whether a name can be checked on this machine: ``run`` (check it), ``skip`` (it
    cannot run here, e.g. CUDA-only without CUDA), or ``missing`` (the backend is not
    installed: the check is that ``create_optimizer`` says how to install it)."""

    action: Literal["run", "skip", "missing"]
    reason: str = ""


def readiness(spec: OptimizerSpec | str) -> Readiness:
    """What the suite can do with ``spec`` here; never imports the backend."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if spec.has(Capability.CUDA_ONLY) and not cuda_available():
        return Readiness("skip", f"{spec.name!r} runs only on a CUDA device; none is available")
    status = backend_status(spec)
    if not status.installed:
        return Readiness("missing", f"backend not installed: {spec.install_command}")
    if not status.usable:
        return Readiness("skip", f"{spec.name!r} cannot run here: {status.problem}")
    return Readiness("run")


def conformance_marks(spec: OptimizerSpec | str, *, mark_cuda: bool = True) -> list[Any]:
    """pytest marks for one name: ``cuda`` for CUDA-only specs (register that marker, or
    pass ``mark_cuda=False``), plus a skip with the reason when it cannot run here."""
    import pytest

    spec = get_spec(spec) if isinstance(spec, str) else spec
    marks: list[Any] = []
    if mark_cuda and spec.has(Capability.CUDA_ONLY):
        marks.append(pytest.mark.cuda)
    state = readiness(spec)
    if state.action == "skip":
        marks.append(pytest.mark.skip(reason=state.reason))
    return marks


def parametrize_catalog(pattern: str | None = None, *, mark_cuda: bool = True) -> list[Any]:
    """``pytest.param(name, id=name, marks=...)`` for every catalog name matching the
    fnmatch ``pattern`` (all names when None), ready for ``@pytest.mark.parametrize``."""
    import pytest

    return [
        pytest.param(spec.name, id=spec.name, marks=conformance_marks(spec, mark_cuda=mark_cuda))
        for spec in list_optimizers(pattern)
    ]


def assert_conformance(name: str, **settings: Any) -> ConformanceReport | None:
    """The pytest entry point: run the suite if ``name`` runs here, check the install hint
    if its backend is missing, skip (with the reason) if it cannot run on this machine
    (CUDA-only without CUDA, or the backend raises ``BackendUnavailableError``).
    ``settings`` go to :func:`check_optimizer`. Returns the report when it ran."""
    import pytest

    spec = get_spec(name)
    state = readiness(spec)
    if state.action == "skip":
        pytest.skip(state.reason)
    if state.action == "missing":
        check_missing_backend(spec.name)
        return None
    try:
        return check_optimizer(spec.name, **settings)
    except BackendUnavailableError as exc:
        pytest.skip(f"{spec.name!r} cannot run here: {exc}")


# ============================================================================ the report
@dataclass(frozen=True)
class CheckOutcome:
    """One check: ``status`` is ``passed``, ``failed`` or ``skipped``; ``detail`` says
    what was measured or why it failed."""

    name: str
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True, eq=False)
class ConformanceReport:
    """What :func:`check_optimizer` checked and measured for one name."""

    name: str
    spec: OptimizerSpec
    optimizer_type: str
    settings: Mapping[str, Any]
    checks: tuple[CheckOutcome, ...]
    losses: tuple[float, ...] = ()
    final_loss: float | None = None
    resume_step: int | None = None
    resume_max_abs_diff: float | None = None
    state_bytes: int | None = None
    state_bytes_per_param: float | None = None
    dense_state_bytes_per_param: float | None = None
    low_bit_dtypes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[CheckOutcome, ...]:
        return tuple(c for c in self.checks if c.failed)

    def outcome(self, check: str) -> CheckOutcome:
        for outcome in self.checks:
            if outcome.name == check:
                return outcome
        raise KeyError(f"no check {check!r} in the report of {self.name!r}")

    def summary(self) -> str:
        lines = [f"conformance of {self.name!r} ({self.optimizer_type}): "
                 f"{'ok' if self.ok else 'FAILED'} in {self.seconds:.1f}s"]
        lines += [f"  {c.status:7} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """An optimizer failed one or more conformance checks; ``report`` has the details."""

    def __init__(self, message: str, report: ConformanceReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class _CheckFailed(Exception):
    """Raised inside a check with the sentence that explains the failure."""


class _CheckSkipped(Exception):
    """Raised inside a check that cannot observe anything, with the reason."""


# ============================================================================ the runs
@dataclass(frozen=True)
class _Config:
    """How the suite builds the optimizer: the caller's settings over the defaults."""

    spec: OptimizerSpec
    steps: int
    lr: float
    optim_args: dict[str, Any]
    optim_target_modules: Any
    overrides: Mapping[str, Any]
    resume_atol: float
    device: torch.device

    def model(self) -> nn.Module:
        """A fresh suite model (same initial weights every time) on the run's device."""
        return conformance_model().to(self.device)

    def kwargs(self, *, targets: bool = True, **extra: Any) -> dict[str, Any]:
        # An optimizer that takes no learning rate (AliG: its step is computed from the
        # loss) refuses an explicit one.
        lr = {"lr": self.lr} if self.spec.has_hyperparameter("lr") else {}
        kwargs: dict[str, Any] = {**lr, **self.overrides, **extra}
        if self.optim_args:
            kwargs["optim_args"] = dict(self.optim_args)
        if targets and self.optim_target_modules is not None:
            kwargs["optim_target_modules"] = self.optim_target_modules
        return kwargs

    def build(self, model: nn.Module, **extra: Any) -> torch.optim.Optimizer:
        kwargs = self.kwargs(**extra)
        if self.matrix_only:
            routes = matrix_only_routes(self.spec.name, optim_args=kwargs.pop("optim_args", None))
            return create_optimizer(routes, model, **kwargs)
        return create_optimizer(self.spec.name, model, **kwargs)

    @property
    def matrix_only(self) -> bool:
        """Built in its routed form: the suite's model has norms and biases."""
        return self.spec.has(Capability.MATRIX_ONLY)

    @property
    def layerwise(self) -> bool:
        return self.spec.runs_layerwise(bool(self.overrides.get("layerwise")))

    def describe(self) -> dict[str, Any]:
        return {"steps": self.steps, **self.kwargs(), "resume_atol": self.resume_atol,
                "device": str(self.device)}


def _config(spec: OptimizerSpec, steps: int, lr: float | None, optim_args: Any,
            optim_target_modules: Any, resume_atol: float, device: Any,
            overrides: Mapping[str, Any]) -> _Config:
    """Per-capability defaults: a learning rate that moves a tiny model, a small rank for
    low-rank specs, HF-style attention/MLP targets where target modules are required, a
    CUDA device for CUDA-only specs."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (a resume needs a middle), got {steps}")
    if isinstance(optim_args, str):
        args: dict[str, Any] = dict(split_optim_args(optim_args, optimizer=spec.name))
    else:
        args = dict(optim_args or {})
    if "rank" in spec.args and "rank" not in args:
        args["rank"] = DEFAULT_RANK
    if optim_target_modules is None and spec.has(Capability.TARGET_MODULES):
        optim_target_modules = list(DEFAULT_TARGET_MODULES)
    if device is None:
        device = "cuda" if spec.has(Capability.CUDA_ONLY) else "cpu"
    return _Config(spec=spec, steps=steps, lr=DEFAULT_LR if lr is None else lr,
                   optim_args=args, optim_target_modules=optim_target_modules,
                   overrides=dict(overrides), resume_atol=resume_atol,
                   device=torch.device(device))


@dataclass
class _Run:
    """One training run of the suite (mutable while it runs)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    driver: TrainingDriver
    losses: list[float] = field(default_factory=list)
    final_loss: float | None = None
    final_params: dict[str, torch.Tensor] = field(default_factory=dict)
    snapshot: _Snapshot | None = None
    snapshot_error: BaseException | None = None
    #: The RNG state the run started from, to replay it (the weight_decay_changes probe).
    start_rng: tuple[torch.Tensor, torch.Tensor | None] | None = None


@dataclass(frozen=True)
class _Snapshot:
    """A checkpoint as a training script writes it: weights, optimizer state, RNG."""

    weights: bytes
    optimizer_state: bytes
    rng_state: tuple[torch.Tensor, torch.Tensor | None]


def _serialize(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _deserialize(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def _closure(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor
             ) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            loss = conformance_loss(model, batch)
            loss.backward()
        return loss

    return closure


def _start(config: _Config, model: nn.Module, optimizer: torch.optim.Optimizer,
           batch: torch.Tensor) -> _Run:
    closure = (_closure(model, optimizer, batch)
               if config.spec.has(Capability.CLOSURE_REQUIRED) else None)
    return _Run(model, optimizer, drive(optimizer, model=model, closure=closure))


def _train_step(run: _Run, batch: torch.Tensor) -> float:
    loss = conformance_loss(run.model, batch)
    value = float(loss.detach())
    run.driver.backward(loss)
    run.driver.step()
    return value


def _take_snapshot(run: _Run) -> None:
    """Save inside ``driver.saving()`` (schedule-free: the eval weights), as users must."""
    try:
        with run.driver.saving():
            run.snapshot = _Snapshot(
                weights=_serialize(run.model.state_dict()),
                optimizer_state=_serialize(run.optimizer.state_dict()),
                rng_state=_rng_state(run.model),
            )
    except Exception as exc:  # reported by the resume check
        run.snapshot_error = exc


def _rng_state(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The RNG states a checkpoint keeps (backends may draw random projections)."""
    device = next(model.parameters()).device
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(model: nn.Module, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], next(model.parameters()).device)


def _finish(run: _Run, batch: torch.Tensor) -> None:
    run.final_params = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    with run.driver.evaluating(), torch.no_grad():
        run.final_loss = float(conformance_loss(run.model, batch))


def _train(config: _Config, batch: torch.Tensor, resume_step: int, *,
           replay: _Run | None = None, raise_decay_before: int | None = None) -> _Run:
    """The uninterrupted run, with a checkpoint taken before step ``resume_step``.

    ``replay``: start from the RNG state that run started from, so that this one repeats it
    exactly; ``raise_decay_before``: raise every param group's weight decay by 0.1 before
    that step (the ``weight_decay_changes`` probe).
    """
    model = config.model()
    if replay is not None and replay.start_rng is not None:
        _set_rng_state(model, replay.start_rng)
    start_rng = _rng_state(model)
    run = _start(config, model, config.build(model), batch)
    run.start_rng = start_rng
    for step in range(config.steps):
        if step == resume_step:
            _take_snapshot(run)
        if step == raise_decay_before:
            for group in run.optimizer.param_groups:
                group["weight_decay"] = float(group.get("weight_decay", 0.0)) + 0.1
        run.losses.append(_train_step(run, batch))
    _finish(run, batch)
    return run


# ============================================================================ the checks
class _Checks:
    """Runs the checks in order, recording each outcome; later checks that depend on an
    earlier one are skipped (with the reason) when it failed."""

    def __init__(self, config: _Config) -> None:
        self.config = config
        self.spec = config.spec
        self.outcomes: list[CheckOutcome] = []
        self.measured: dict[str, Any] = {}
        self.batch = conformance_batch().to(config.device)
        self.resume_step = config.steps // 2
        self.run: _Run | None = None

    def record(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except BackendUnavailableError:
            raise  # it cannot run here: not a conformance failure (see check_optimizer)
        except _CheckFailed as exc:
            self.outcomes.append(CheckOutcome(name, "failed", str(exc)))
            return False
        except _CheckSkipped as exc:
            self.skip(name, str(exc))
            return False
        except Exception as exc:
            self.outcomes.append(CheckOutcome(name, "failed", _describe(exc)))
            return False
        self.outcomes.append(CheckOutcome(name, "passed", detail))
        return True

    def skip(self, name: str, reason: str) -> None:
        self.outcomes.append(CheckOutcome(name, "skipped", reason))

    def run_all(self) -> None:
        if self.record("builds", self.builds):
            self.record("loss_decreases", self.loss_decreases)
        else:
            self.skip("loss_decreases", "it does not build")
        for check, needs_run, applies in self._checks_after_training():
            if not applies:
                continue
            if needs_run and self.run is None:
                self.skip(check.__name__, "no trained optimizer to check (training failed)")
            else:
                self.record(check.__name__, check)

    def _checks_after_training(self) -> list[tuple[Callable[[], str], bool, bool]]:
        """(check, whether it needs the trained run, whether it applies to this spec)."""
        has = self.spec.has
        return [
            (self.resume, True, True),
            (self.low_bit_state, True, True),  # both ways: claimed <=> observed
            (self.layerwise, True, True),  # both ways
            (self.schedule_free, True, has(Capability.SCHEDULE_FREE)),
            (self.fused_backward, True, has(Capability.FUSED_BACKWARD)),
            (self.layerwise_capable, False, has(Capability.LAYERWISE_CAPABLE)),
            (self.low_rank, True, has(Capability.LOW_RANK)),
            (self.weight_decay_changes, True, self.spec.has_hyperparameter("weight_decay")),
            (self.declared_memory, True, self._memory_is_size_independent()),
            (self.needs_model, False, has(Capability.NEEDS_MODEL)),
            (self.matrix_only, False, has(Capability.MATRIX_ONLY)),
            (self.target_modules, False, has(Capability.TARGET_MODULES)),
            (self.missing_backend, False, True),
        ]

    # ---- a. builds ----------------------------------------------------------------------
    def builds(self) -> str:
        optimizer = self.config.build(self.config.model())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise _CheckFailed(f"create_optimizer returned {type(optimizer).__name__}")
        found = spec_of(optimizer)
        if self.config.matrix_only:
            if self.spec.name not in [route.optimizer for route in found.routes]:
                raise _CheckFailed(f"no route of {found!r} is stepped by {self.spec.name!r}")
        elif found is not self.spec:
            raise _CheckFailed(f"optimhub.spec_of(optimizer) is {found!r}, not {self.spec!r}")
        self.measured["optimizer_type"] = type(optimizer).__name__
        _close(optimizer)
        return f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"

    # ---- b. the loss goes down --------------------------------------------------------
    def loss_decreases(self) -> str:
        run = _train(self.config, self.batch, self.resume_step)
        self.run = run
        self.measured["losses"] = tuple(run.losses)
        self.measured["final_loss"] = run.final_loss
        self.measured["state_bytes"] = state_bytes(run.optimizer)
        self.measured["state_bytes_per_param"] = state_bytes_per_param(run.optimizer)
        first, final = run.losses[0], run.final_loss
        shown = ", ".join(f"{x:.4f}" for x in run.losses)
        if not all(math.isfinite(x) for x in [*run.losses, final]):
            raise _CheckFailed(f"the loss is not finite: [{shown}] then {final}")
        if not final < first:
            raise _CheckFailed(
                f"the loss did not decrease in {self.config.steps} steps at lr="
                f"{self.config.lr:g}: [{shown}], after the last step {final:.4f}; tune lr/"
                "optim_args/steps in the settings if the optimizer is just slow here"
            )
        return f"{first:.4f} -> {final:.4f} in {self.config.steps} steps"

    # ---- c. resume from a checkpoint -------------------------------------------------------
    def resume(self) -> str:
        run = self._trained()
        if run.snapshot_error is not None:
            raise _CheckFailed(f"saving the state failed: {_describe(run.snapshot_error)}")
        if run.snapshot is None:
            raise _CheckFailed("no checkpoint was taken")
        try:
            state = _deserialize(run.snapshot.optimizer_state)
        except Exception as exc:
            raise _CheckFailed(
                "optimizer.state_dict() does not load with torch.load(weights_only=True) "
                f"(the safe default since torch 2.6): {_describe(exc)}"
            ) from exc
        model = self.config.model()
        model.load_state_dict(_deserialize(run.snapshot.weights))
        optimizer = self.config.build(model)
        optimizer.load_state_dict(state)
        _set_rng_state(model, run.snapshot.rng_state)
        resumed = _start(self.config, model, optimizer, self.batch)
        for _ in range(self.resume_step, self.config.steps):
            _train_step(resumed, self.batch)
        _close(optimizer)
        return self._compare_resumed(run, resumed)

    def _compare_resumed(self, run: _Run, resumed: _Run) -> str:
        worst, worst_name = 0.0, ""
        for name, param in resumed.model.named_parameters():
            expected = run.final_params[name]
            if torch.equal(param.detach(), expected):
                continue
            diff = float((param.detach().double() - expected.double()).abs().max())
            if not diff <= worst:  # also catches NaN
                worst, worst_name = diff, name
        self.measured["resume_max_abs_diff"] = worst
        where = f"step {self.resume_step} of {self.config.steps}"
        atol = self.config.resume_atol
        if worst_name and not worst <= atol:
            raise _CheckFailed(
                f"resuming from a checkpoint at {where} does not continue the run: "
                f"{worst_name} differs from the uninterrupted run by {worst:.3g} "
                f"(allowed: {'exactly equal' if atol == 0 else atol})"
            )
        return f"from {where}: " + ("identical" if not worst_name else f"max diff {worst:.3g}")

    def _trained(self) -> _Run:
        if self.run is None:
            raise _CheckFailed("no trained optimizer to check (training failed)")
        return self.run

    # ---- d. capabilities ------------------------------------------------------------------
    def low_bit_state(self) -> str:
        run = self._trained()
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state_tensors(run.optimizer)
                         if is_low_bit(t.dtype)})
        self.measured["low_bit_dtypes"] = tuple(dtypes)
        claimed = self.spec.has(Capability.LOW_BIT_STATE)
        if claimed and not dtypes:
            kinds = sorted({str(t.dtype) for t in state_tensors(run.optimizer)})
            raise _CheckFailed(
                "the spec claims low_bit_state, but no state tensor has 8 bits or fewer "
                f"after {self.config.steps} steps (state dtypes: {kinds or 'none'})"
            )
        if dtypes and not claimed:
            raise _CheckFailed(
                f"the state holds {', '.join(dtypes)} tensors, but the spec does not declare "
                "low_bit_state"
            )
        return f"state dtypes <= 8 bits: {', '.join(dtypes)}" if dtypes else "none (as declared)"

    def layerwise(self) -> str:
        run = self._trained()
        is_layerwise = isinstance(run.optimizer, LayerwiseOptimizer)
        if self.config.layerwise != is_layerwise:
            raise _CheckFailed(
                f"expected {'a' if self.config.layerwise else 'no'} LayerwiseOptimizer, got "
                f"{type(run.optimizer).__name__}"
            )
        return type(run.optimizer).__name__

    def schedule_free(self) -> str:
        optimizer = self._trained().optimizer
        for mode in ("train", "eval"):
            if not callable(getattr(optimizer, mode, None)):
                raise _CheckFailed(f"a schedule-free optimizer has no {mode}() method")
        weights = self._trained().model.parameters
        for mode in ("eval", "train"):
            getattr(optimizer, mode)()
            once = [p.detach().clone() for p in weights()]
            getattr(optimizer, mode)()
            if not all(torch.equal(a, b) for a, b in zip(once, weights(), strict=True)):
                raise _CheckFailed(f"calling {mode}() twice changes the weights (not idempotent)")
        optimizer.eval()
        evaluated = [p.detach().clone() for p in weights()]
        optimizer.train()
        if all(torch.equal(a, b) for a, b in zip(evaluated, weights(), strict=True)):
            raise _CheckFailed("eval() and train() give the same weights after training")
        return "train()/eval() exist, are idempotent and switch the weights"

    def fused_backward(self) -> str:
        run = self._trained()
        before = [p.detach().clone() for p in run.model.parameters()]
        try:
            run.optimizer.step()
        except (NotImplementedError, CapabilityError) as exc:
            return f"step() raises {type(exc).__name__}"
        changed = not all(torch.equal(a, b) for a, b in
                          zip(before, run.model.parameters(), strict=True))
        raise _CheckFailed(
            "step() of a fused-backward optimizer returned without error"
            + (" and changed the weights" if changed else ", silently doing nothing")
            + "; it must raise NotImplementedError or optimhub.CapabilityError"
        )

    def layerwise_capable(self) -> str:
        if self.config.layerwise:
            return "the main run was layerwise"
        model = self.config.model()
        optimizer = self.config.build(model, layerwise=True)
        if not isinstance(optimizer, LayerwiseOptimizer):
            raise _CheckFailed(f"layerwise=True built {type(optimizer).__name__}")
        before = [p.detach().clone() for p in model.parameters()]
        run = _start(self.config, model, optimizer, self.batch)
        losses = [_train_step(run, self.batch) for _ in range(2)]
        changed = sum(not torch.equal(a, b) for a, b in
                      zip(before, model.parameters(), strict=True))
        optimizer.close()
        if not all(math.isfinite(x) for x in losses) or changed == 0:
            raise _CheckFailed(
                f"layerwise=True: after 2 steps {changed} parameters changed, losses {losses}"
            )
        return f"{optimizer!r}: {changed} of {len(before)} parameters updated in backward"

    def low_rank(self) -> str:
        measured = self.measured.get("state_bytes_per_param")
        if measured is None:
            raise _CheckFailed("no trained optimizer to measure (training failed)")
        dense = _dense_adamw_bytes_per_param(self.config.model(), self.batch)
        self.measured["dense_state_bytes_per_param"] = dense
        if not measured < dense:
            raise _CheckFailed(
                f"a low-rank optimizer holds {measured:.3f} bytes of state per parameter, "
                f"not less than dense AdamW's {dense:.3f} on the same model"
            )
        return f"{measured:.3f} bytes/param < dense AdamW {dense:.3f}"

    def weight_decay_changes(self) -> str:
        """The trained run replayed from its seed, with every group's weight decay raised
        by 0.1 before the last two steps: honoured (the default) means the final weights
        differ; a spec that declares ``static_weight_decay`` means they are identical."""
        run = self._trained()
        if any(c.name == "loss_decreases" and not c.passed for c in self.outcomes):
            raise _CheckSkipped("the optimizer did not train (loss_decreases), so what its "
                                "weight decay does cannot be observed")
        changed_at = self.config.steps - 2  # late: some backends skip their first updates
        probe = _train(self.config, self.batch, self.resume_step, replay=run,
                       raise_decay_before=changed_at)
        _close(probe.optimizer)
        same = all(torch.equal(value, run.final_params[name])
                   for name, value in probe.final_params.items())
        where = f"before step {changed_at + 1} of {self.config.steps}"
        if self.spec.has(Capability.STATIC_WEIGHT_DECAY):
            if not same:
                raise _CheckFailed(
                    f"the spec declares {Capability.STATIC_WEIGHT_DECAY.value}, but raising "
                    f"group['weight_decay'] {where} changed the update: drop the capability "
                    "(weight-decay schedules would work)"
                )
            return f"a change {where} is ignored, as declared"
        if same:
            raise _CheckFailed(
                f"raising every param group's weight_decay by 0.1 {where} changed nothing: "
                "the backend reads its weight decay once, so a weight-decay schedule would be "
                f"silently ignored; declare '{Capability.STATIC_WEIGHT_DECAY.value}' in the spec"
            )
        return f"a change {where} changes the update"

    def _memory_is_size_independent(self) -> bool:
        """A declared bytes/param is checkable on the tiny model only where it does not
        depend on tensor sizes: low-bit state starts at 4096 elements, low-rank state
        scales with the rank and the targets. A ``matrix_only`` spec runs in its routed form,
        whose state includes the fallback's (AdamW's) for the other parameters: its constant
        is checked by the estimate tests instead, route by route."""
        return self.spec.state_bytes_per_param is not None and not (
            self.spec.has(Capability.LOW_BIT_STATE) or self.spec.has(Capability.LOW_RANK)
            or self.spec.has(Capability.MATRIX_ONLY))

    def declared_memory(self) -> str:
        measured = self.measured.get("state_bytes_per_param")
        declared = self.spec.state_bytes_per_param
        if measured is None or declared is None:
            raise _CheckFailed("no trained optimizer to measure (training failed)")
        if not math.isclose(measured, declared, rel_tol=0.01, abs_tol=0.01):
            raise _CheckFailed(
                f"the spec declares state_bytes_per_param={declared:g}, but the optimizer "
                f"holds {measured:.3f} bytes of state per fp32 parameter"
            )
        return f"{measured:.3f} bytes/param, as declared"

    def needs_model(self) -> str:
        return self._refused(list(self.config.model().parameters()), "bare parameters refused",
                             "the spec needs the model, but bare parameters")

    def matrix_only(self) -> str:
        model = conformance_model().to(self.config.device)  # every parameter trainable
        return self._refused(model, "non-matrix parameters refused", "the spec is "
                             "matrix_only, but a model with biases and norms", limit=120)

    def _refused(self, source: Any, refused: str, built: str, *, limit: int | None = None
                 ) -> str:
        """Build on ``source``: the check passes when the hub raises CapabilityError."""
        try:
            optimizer = create_optimizer(self.spec.name, source, **self.config.kwargs())
        except CapabilityError as exc:
            return f"{refused}: {_first_line(exc)[:limit]}"
        _close(optimizer)
        raise _CheckFailed(f"{built} built {type(optimizer).__name__} without CapabilityError")

    def target_modules(self) -> str:
        try:
            optimizer = create_optimizer(self.spec.name, self.config.model(),
                                         **self.config.kwargs(targets=False))
        except TargetModulesError as exc:
            return f"no optim_target_modules refused: {_first_line(exc)}"
        _close(optimizer)
        raise _CheckFailed("the spec needs optim_target_modules, but it built "
                           f"{type(optimizer).__name__} without them (no TargetModulesError)")

    # ---- e. the backend made unimportable ---------------------------------------------
    def missing_backend(self) -> str:
        if _is_torch(self.spec):
            return "not applicable: the backend is torch itself"
        with hidden_backend(self.spec.import_name):
            return _expect_missing_backend(self.spec, self.config)


def _expect_missing_backend(spec: OptimizerSpec, config: _Config | None) -> str:
    kwargs = config.kwargs() if config is not None else {}
    model = config.model() if config is not None else conformance_model()
    try:
        optimizer = create_optimizer(spec.name, model, **kwargs)
    except MissingBackendError as exc:
        if spec.install_command not in str(exc):
            raise _CheckFailed(
                f"MissingBackendError does not name the install command "
                f"{spec.install_command!r}: {exc}"
            ) from exc
        return f"MissingBackendError names {spec.install_command!r}"
    except Exception as exc:
        raise _CheckFailed(
            f"without its backend, create_optimizer raised {_describe(exc)} instead of "
            "MissingBackendError"
        ) from exc
    _close(optimizer)
    raise _CheckFailed(
        f"create_optimizer built {type(optimizer).__name__} although the backend "
        f"{spec.import_name!r} cannot be imported"
    )


def _dense_adamw_bytes_per_param(model: nn.Module, batch: torch.Tensor) -> float:
    """Plain torch AdamW on the suite's model: the yardstick of ``low_rank``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=DEFAULT_LR)
    conformance_loss(model, batch).backward()
    optimizer.step()
    return state_bytes_per_param(optimizer)


def _is_torch(spec: OptimizerSpec) -> bool:
    return spec.import_name.split(".")[0] == "torch"


@contextlib.contextmanager
def hidden_backend(import_name: str) -> Iterator[None]:
    """Make ``import_name`` (and its submodules) unimportable for the duration, as if it
    were not installed: ``sys.modules[name] = None`` makes both ``import`` and
    ``importlib.util.find_spec`` fail. Everything is put back afterwards."""
    if import_name.split(".")[0] == "torch":
        raise ValueError("hiding torch would break the process; nothing to check there")
    prefix = import_name + "."
    names = [n for n in list(sys.modules) if n == import_name or n.startswith(prefix)]
    saved = {n: sys.modules[n] for n in names}
    try:
        for name in {import_name, *names}:
            sys.modules[name] = None  # type: ignore[assignment]
        yield
    finally:
        for name in [n for n in list(sys.modules) if n == import_name or n.startswith(prefix)]:
            del sys.modules[name]
        sys.modules.update(saved)


def check_missing_backend(name: str) -> str:
    """For a name whose backend is not installed here: ``create_optimizer`` must raise
    ``MissingBackendError`` naming the install command. Raises ``ConformanceError``."""
    spec = get_spec(name)
    try:
        return _expect_missing_backend(spec, None)
    except _CheckFailed as exc:
        raise ConformanceError(
            f"optimizer {spec.name!r} failed conformance check 'missing_backend': {exc}"
        ) from exc


def _close(optimizer: Any) -> None:
    """Remove a layerwise optimizer's hooks from a model the suite is done with."""
    if isinstance(optimizer, LayerwiseOptimizer):
        optimizer.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


# ============================================================================ entry point
def check_optimizer(
    name: str,
    *,
    steps: int = DEFAULT_STEPS,
    optim_args: str | Mapping[str, Any] | None = None,
    optim_target_modules: str | Sequence[str] | None = None,
    lr: float | None = None,
    resume_atol: float = 0.0,
    device: str | torch.device | None = None,
    raise_on_failure: bool = True,
    **overrides: Any,
) -> ConformanceReport:
    """Run every conformance check on ``name``; returns the report, or raises
    :class:`ConformanceError` naming the optimizer and each failed check.

    ``optim_args``, ``optim_target_modules``, ``lr`` and ``overrides`` (any
    ``create_optimizer`` keyword: ``weight_decay=``, ``betas=``, ``layerwise=``...) are
    how the optimizer is built; unset, the suite uses ``lr=1e-2``, ``rank=4`` for specs
    with a ``rank`` option and ``[".*attn.*", ".*mlp.*"]`` for specs that need target
    modules. ``resume_atol`` > 0 allows a resumed run to differ from the uninterrupted
    one: use it only for a backend documented as non-deterministic, and say so.
    ``device`` defaults to CUDA for CUDA-only specs and to the CPU otherwise.

    A backend that refuses to run in this environment (``BackendUnavailableError``: no
    CUDA, an incompatible version of a dependency) is not a conformance failure: that
    error propagates. The caller's RNG state is left as it was.
    """
    spec = get_spec(name)
    config = _config(spec, steps, lr, optim_args, optim_target_modules, resume_atol, device,
                     overrides)
    started = time.perf_counter()
    checks = _Checks(config)
    with torch.random.fork_rng(devices=_cuda_indices(config.device)):
        torch.manual_seed(SEED)
        try:
            checks.run_all()
        finally:
            if checks.run is not None:
                _close(checks.run.optimizer)
    report = _report(checks, time.perf_counter() - started)
    if raise_on_failure and not report.ok:
        failed = "; ".join(f"check {c.name!r}: {c.detail}" for c in report.failures)
        raise ConformanceError(
            f"optimizer {spec.name!r} failed conformance {failed}\n{report.summary()}", report
        )
    return report


def _cuda_indices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG the suite forks (none on the CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _report(checks: _Checks, seconds: float) -> ConformanceReport:
    measured = checks.measured
    return ConformanceReport(
        name=checks.spec.name,
        spec=checks.spec,
        optimizer_type=measured.get("optimizer_type", "?"),
        settings=types.MappingProxyType(checks.config.describe()),
        checks=tuple(checks.outcomes),
        losses=measured.get("losses", ()),
        final_loss=measured.get("final_loss"),
        resume_step=checks.resume_step,
        resume_max_abs_diff=measured.get("resume_max_abs_diff"),
        state_bytes=measured.get("state_bytes"),
        state_bytes_per_param=measured.get("state_bytes_per_param"),
        dense_state_bytes_per_param=measured.get("dense_state_bytes_per_param"),
        low_bit_dtypes=measured.get("low_bit_dtypes", ()),
        seconds=seconds,
    )
