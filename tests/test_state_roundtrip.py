"""Optimizer state round trips, for every catalog name that runs here.

Train K steps; save the weights, the optimizer state and the RNG state the way a training
script does (``torch.save``); load them with ``torch.load(weights_only=True,
map_location="cpu")`` into a *fresh* model and a fresh optimizer built through the hub;
train M more steps: the parameters (and, for schedule-free optimizers, the evaluation
weights too) must equal the uninterrupted run's exactly. Every run goes through
``optimhub.drive``, so schedule-free, fused-backward and layerwise names are trained as
their capabilities say.

The conformance suite (``optimhub.testing``) has a resume check of its own; its pieces are
private, so this test is written against the public API (``conformance_model``,
``conformance_batch``, ``conformance_loss``, ``conformance_marks``, ``readiness``,
``state_bytes``) and adds what that check does not: the optimhub stamp, ``map_location``,
a different batch per step, the evaluation weights, and a control run without the state
that shows the state was needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from catalog_settings import SETTINGS

import optimhub
import optimhub.testing as ot
from optimhub.layerwise import LayerwiseOptimizer
from optimhub.optim_args import split_optim_args
from optimhub.routing import matrix_only_routes

#: Steps before the checkpoint and after it.
STEPS = (2, 2)
#: Names that hold the weights still for their first steps (RAdam's rectification: 4 steps;
#: AdaShift: until its queue of keep_num gradients is full): resume in the middle of them,
#: so that the step count must survive, and finish after them.
STEPS_OF = {"schedule_free_radam": (3, 3), "pto_radam": (3, 3),
            "pto_schedulefreeradam": (3, 3), "pto_adashift": (2, 3)}

#: Names whose default momentum is 0: their state (a momentum buffer, SAM's perturbation)
#: carries nothing from step to step, so the control run could not tell a lost state from
#: a restored one. With momentum the state matters, and must survive.
STATE_OPTIONS = {name: {"momentum": 0.9} for name in ("pto_alig", "pto_qhm", "pto_sgdp",
                                                       "pto_wsam")}


def _catalog() -> list[Any]:
    """Every catalog name: CUDA-only ones marked ``cuda`` and skipped without CUDA, names
    whose backend is missing or unusable here skipped with the reason."""
    params = []
    for spec in optimhub.list_optimizers():
        marks = ot.conformance_marks(spec)
        state = ot.readiness(spec)
        if state.action == "missing":
            marks.append(pytest.mark.skip(reason=state.reason))
        params.append(pytest.param(spec.name, id=spec.name, marks=marks))
    return params


def _settings(spec: optimhub.OptimizerSpec) -> dict[str, Any]:
    """The conformance suite's small-problem settings: its learning rate (none for an
    optimizer that takes none), a rank for low-rank names, HF-style attention/MLP targets
    where target modules are needed, and the per-name settings of tests/test_conformance.py
    (tests/catalog_settings.py)."""
    settings: dict[str, Any] = {"lr": ot.DEFAULT_LR} if spec.has_hyperparameter("lr") else {}
    if "rank" in spec.args:
        settings["optim_args"] = {"rank": ot.DEFAULT_RANK}
    if spec.has(optimhub.Capability.TARGET_MODULES):
        settings["optim_target_modules"] = list(ot.DEFAULT_TARGET_MODULES)
    if spec.name in STATE_OPTIONS:
        settings["optim_args"] = {**settings.get("optim_args", {}), **STATE_OPTIONS[spec.name]}
    extra = dict(SETTINGS.get(spec.name, {}))
    if isinstance(extra.get("optim_args"), str):  # merged with the rank, not instead of it
        given = split_optim_args(extra.pop("optim_args"), optimizer=spec.name)
        settings["optim_args"] = {**settings.get("optim_args", {}), **given}
    return {**settings, **extra}


class _Run:
    """A model, its optimizer built by the hub, and the driver that honours its spec."""

    def __init__(self, name: str, device: torch.device, seed: int = 0) -> None:
        spec = optimhub.get_spec(name)
        self.model = ot.conformance_model(seed).to(device)
        settings = _settings(spec)
        built: Any = name
        if spec.has(optimhub.Capability.MATRIX_ONLY):  # the Muon family, in its routed form
            built = matrix_only_routes(name, optim_args=settings.pop("optim_args", None))
        self.optimizer = optimhub.create_optimizer(built, self.model, **settings)
        self.device = device
        self.spec = spec

    def start(self) -> _Run:
        closure = self._closure() if self.spec.has(optimhub.Capability.CLOSURE_REQUIRED) else None
        self.driver = optimhub.drive(self.optimizer, model=self.model, closure=closure)
        return self

    def _closure(self) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            with torch.enable_grad():
                self.optimizer.zero_grad(set_to_none=True)
                loss = ot.conformance_loss(self.model, self.batch)
                loss.backward()
            return loss

        return closure

    def train(self, steps: range) -> None:
        for step in steps:
            self.batch = ot.conformance_batch(seed=100 + step).to(self.device)
            self.driver.backward(ot.conformance_loss(self.model, self.batch))
            self.driver.step()

    def save(self, path: Path) -> None:
        """Weights, optimizer state and RNG, as a training script saves them."""
        with self.driver.saving():  # schedule-free: the evaluation weights, as users must
            torch.save({"model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "rng": torch.get_rng_state(),
                        "cuda_rng": (torch.cuda.get_rng_state(self.device)
                                     if self.device.type == "cuda" else None)}, path)

    def restore(self, checkpoint: dict[str, Any], *, optimizer_state: bool = True) -> _Run:
        """Load a checkpoint into this (fresh) run."""
        self.model.load_state_dict(checkpoint["model"])
        if optimizer_state:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"].cpu())  # map_location may have moved it
        if checkpoint["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint["cuda_rng"].cpu(), self.device)
        return self.start()

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The training weights and the evaluation weights (the same but schedule-free)."""
        train = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        with self.driver.evaluating():
            evaluated = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return {"train": train, "eval": evaluated}

    def close(self) -> None:
        if isinstance(self.optimizer, LayerwiseOptimizer):
            self.optimizer.close()


def _differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [n for n in a if not torch.equal(a[n], b[n])]


def _uninterrupted(name: str, device: torch.device, path: Path, steps: tuple[int, int]
                   ) -> tuple[_Run, dict[str, dict[str, torch.Tensor]]]:
    """Train ``steps[0]`` steps, save to ``path``, train ``steps[1]`` more."""
    try:
        run = _Run(name, device).start()
    except optimhub.BackendUnavailableError as exc:
        pytest.skip(f"{name!r} cannot run here: {exc}")
    run.train(range(steps[0]))
    run.save(path)
    run.train(range(steps[0], sum(steps)))
    weights = run.weights()
    run.close()
    return run, weights


def _resumed(name: str, device: torch.device, checkpoint: dict[str, Any],
             steps: tuple[int, int], *, optimizer_state: bool = True
             ) -> dict[str, dict[str, torch.Tensor]]:
    """A fresh model (other initial weights: the checkpoint's must win) and a fresh
    optimizer built by the hub, restored from ``checkpoint`` and trained ``steps[1]``."""
    run = _Run(name, device, seed=1).restore(checkpoint, optimizer_state=optimizer_state)
    run.train(range(steps[0], sum(steps)))
    weights = run.weights()
    run.close()
    return weights


@pytest.mark.parametrize("name", _catalog())
def test_state_round_trips_exactly(name: str, tmp_path: Path) -> None:
    spec = optimhub.get_spec(name)
    device = torch.device("cuda" if spec.has(optimhub.Capability.CUDA_ONLY) else "cpu")
    path = tmp_path / "checkpoint.pt"
    steps = STEPS_OF.get(name, STEPS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        whole, expected = _uninterrupted(name, device, path, steps)
        has_state = ot.state_bytes(whole.optimizer, include_scalars=True) > 0

        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        stamp = checkpoint["optimizer"]["optimhub"]
        assert stamp["name"] == optimhub.spec_of(whole.optimizer).name and stamp["format"] == 1
        assert sorted(n for n, _ in stamp["params"]) == sorted(
            n for n, _ in whole.model.named_parameters())

        got = _resumed(name, device, checkpoint, steps)
        # Control: the same resume without the optimizer state ends elsewhere, so the
        # equality below is the state's doing (for optimizers that keep any).
        without_state = _resumed(name, device, checkpoint, steps, optimizer_state=False)

    for kind in ("train", "eval"):
        assert _differences(got[kind], expected[kind]) == [], f"{kind} weights after resume"
    initial = {n: p.detach() for n, p in ot.conformance_model().to(device).named_parameters()}
    assert _differences(expected["train"], initial), "training did not move the weights"
    if has_state:
        assert _differences(without_state["train"], expected["train"]), (
            "resuming without the optimizer state gave the same weights: the test cannot "
            "tell a lost state from a restored one")


def test_a_map_location_function_loads_cpu_to_cpu(tmp_path: Path) -> None:
    """``map_location=lambda storage, loc: storage`` (the idiom of older scripts) keeps
    everything on the CPU; the resumed run is exact."""
    path = tmp_path / "checkpoint.pt"
    cpu = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _, expected = _uninterrupted("adamw_torch", cpu, path, STEPS)
        checkpoint = torch.load(path, weights_only=True,
                                map_location=lambda storage, loc: storage)
        moments = [v for s in checkpoint["optimizer"]["state"].values() for v in s.values()]
        assert moments and all(t.device == cpu for t in moments)
        got = _resumed("adamw_torch", cpu, checkpoint, STEPS)
    assert _differences(got["train"], expected["train"]) == []


def _close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose weights differ by more than the two devices' rounding can explain
    (AdamW at lr=1e-2: a lost or misplaced state moves weights by ~1e-2 per step)."""
    return [n for n in a if not torch.allclose(a[n].cpu(), b[n].cpu(), rtol=1e-3, atol=1e-4)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("saved_on", "loaded_on"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_checkpoint_moves_between_cpu_and_cuda(saved_on: str, loaded_on: str,
                                                 tmp_path: Path) -> None:
    """Saved on one device, loaded with ``map_location`` onto the other: the optimizer's
    state lands on its parameters' device and training continues where it stopped (equal
    up to the two devices' rounding)."""
    path = tmp_path / "checkpoint.pt"
    with torch.random.fork_rng(devices=[0]):
        torch.manual_seed(0)
        _, expected = _uninterrupted("adamw_torch", torch.device(saved_on), path, STEPS)
        checkpoint = torch.load(path, weights_only=True, map_location=loaded_on)
        checkpoint["cuda_rng"] = None  # one device's generator does not restore the other
        run = _Run("adamw_torch", torch.device(loaded_on), seed=1).restore(checkpoint)
        state = [v for s in run.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor) and v.dim() > 0]
        assert state and all(t.device.type == loaded_on for t in state)
        run.train(range(STEPS[0], sum(STEPS)))
        got = run.weights()
        forgotten = _resumed("adamw_torch", torch.device(loaded_on), checkpoint, STEPS,
                             optimizer_state=False)
    assert _close_weights(got["train"], expected["train"]) == []
    assert _close_weights(forgotten["train"], expected["train"])  # the tolerance can tell
