"""Is the hub free? Build and step time through optimhub, by hand, and through the HF Trainer.

For every catalog name that runs here, on a config-built ``LlamaForCausalLM`` with a few
hundred named modules, side by side in one process, interleaved (each round runs every
path, in a rotating order; medians over the rounds; warm-up first and excluded):

- **build**: ``optimhub.create_optimizer(name, model, ...)`` vs the same optimizer built by
  hand (``benchmarks/direct.py``, shared with the state-memory benchmark: the decay /
  no-decay groups, the target group and the constructor call a user writes) vs
  ``transformers.Trainer(...).create_optimizer()`` for HF's names (one Trainer per name,
  ``trainer.optimizer = None`` before each call);
- **step**: ``optimizer.step()`` after the same backward on identical model copies, the
  hub's object vs the by-hand object (LOMO: ``fused_backward``; layerwise names: the
  backward with its in-hook steps). The hub returns the backend's own object, so this
  ratio must be 1.00 within noise; an A/A run (by hand vs by hand) shows the noise.

Times are CPU time of this process by default (``--clock wall`` for elapsed time): on a
shared machine, elapsed time also counts waiting for a CPU, and a longer call is
preempted more often, which would penalise the slower path beyond its cost. torch runs
on one thread (``--threads``). The hub's first call in a process loads the plugins and the
catalog; it is reported on its own and kept out of the table. Every hub / by-hand pair is
checked to be the same optimizer (class, groups by parameter name, group hyperparameters)
before it is timed. Always exits 0: it measures, the reader judges.

    .venv/bin/python benchmarks/overhead.py [--names adamw_torch,sgd] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from direct import DIRECT, LR, TARGET_MODULES, DirectRun, build_direct, hub_kwargs
from tables import table
from torch import nn

import optimhub
from optimhub.backends import is_installed

GOAL_BUILD_VS_HAND = 1.20
GOAL_BUILD_VS_HF = 1.0
STEP_TOLERANCE = 0.10
#: The low-rank rank: below every target's smaller side (64) of the benchmark model.
RANK = 8
#: A build round repeats each path's build back to back, the same number of times for
#: every path of a name: as often as the slowest path fits in about this long.
SAMPLE_SECONDS = 0.03
MAX_REPEATS = 30
#: ``step()`` calls timed per round on one backward's gradients (plain loops).
STEPS_PER_ROUND = 5
#: What the step columns time, per loop kind (``DirectRun.kind``).
STEP_LABELS = {"plain": "step()", "schedule_free": "step()", "fused": "fused bwd",
               "layerwise": "bwd+steps"}
#: The build-cost scaling table: Llama depths giving about 150, 600, 2.5k and 10k parameter
#: tensors (9 per layer, 3 more), a MoE-shaped model with many experts, the names timed.
SCALING_LAYERS = (16, 66, 275, 1100)
MOE_LAYERS, MOE_EXPERTS = 24, 128
SCALING_NAMES = ("adamw_torch", "galore_adamw", "muon", "galore_plus_adamw_8bit")
GOAL_SCALING_VS_HAND = 1.5
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


# ----------------------------------------------------------------------------- the model
def tiny_llama(layers: int = 24, hidden: int = 64, vocab: int = 256, seed: int = 0) -> nn.Module:
    """A config-built ``LlamaForCausalLM``; 24 layers: 319 named modules, 219 tensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class _Expert(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)


class _MoE(nn.Module):
    def __init__(self, hidden: int, inner: int, experts: int) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden, experts, bias=False)  # the router
        self.experts = nn.ModuleList(_Expert(hidden, inner) for _ in range(experts))


class _Attention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, name, nn.Linear(hidden, hidden, bias=False))


class _MoELayer(nn.Module):
    def __init__(self, hidden: int, inner: int, experts: int) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(hidden)
        self.self_attn = _Attention(hidden)
        self.post_attention_layernorm = nn.RMSNorm(hidden)
        self.mlp = _MoE(hidden, inner, experts)


class _MoEModel(nn.Module):
    def __init__(self, layers: int, hidden: int, inner: int, experts: int, vocab: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(_MoELayer(hidden, inner, experts) for _ in range(layers))
        self.norm = nn.RMSNorm(hidden)


class MoEShaped(nn.Module):
    """A MoE-shaped decoder with one module per expert (as Mixtral, DeepSeek and Qwen-MoE
    are written outside transformers 5, which fuses the experts into 3-D tensors):
    ``model.layers.N.mlp.experts.E.{gate,up,down}_proj``, a router per layer, HF's names.
    Only its parameter layout matters here (no forward): what building an optimizer walks.
    """

    def __init__(self, layers: int = MOE_LAYERS, experts: int = MOE_EXPERTS, hidden: int = 32,
                 inner: int = 16, vocab: int = 256, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.model = _MoEModel(layers, hidden, inner, experts, vocab)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)


def fresh_copy(model: nn.Module) -> nn.Module:
    """An identical, independent model: no shared parameters, no hooks."""
    return copy.deepcopy(model)


# ----------------------------------------------------------------------------- same object?
def layout_diff(a: Any, model_a: nn.Module, b: Any, model_b: nn.Module) -> list[str]:
    """How two optimizers differ in class, groups (by parameter *name*) and group
    hyperparameters; empty when they are the same optimizer. Accepts the hub's objects and
    ``DirectRun``; layerwise ones are compared inner optimizer by inner optimizer."""
    a, b = _unwrap(a, model_a), _unwrap(b, model_b)
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return ["one is layerwise, the other is not"]
        if set(a) != set(b):
            return [f"layerwise over other parameters ({len(a)} vs {len(b)})"]
        for name in a:
            found = layout_diff(a[name], model_a, b[name], model_b)
            if found:
                return [f"{name}: {d}" for d in found]
        return []
    if type(a) is not type(b):
        return [f"class {type(a).__name__} vs {type(b).__name__}"]
    groups_a, groups_b = _groups_by_name(a, model_a), _groups_by_name(b, model_b)
    if len(groups_a) != len(groups_b):
        return [f"{len(groups_a)} vs {len(groups_b)} param groups"]
    diffs = []
    for index, ((names_a, hyper_a), (names_b, hyper_b)) in enumerate(
            zip(groups_a, groups_b, strict=True)):
        if names_a != names_b:
            diffs.append(f"group {index}: other parameters")
        for key in sorted(set(hyper_a) | set(hyper_b)):
            if not _same_value(hyper_a.get(key), hyper_b.get(key)):
                diffs.append(f"group {index}: {key}={hyper_a.get(key)!r} vs {hyper_b.get(key)!r}")
    return diffs


def _unwrap(optimizer: Any, model: nn.Module) -> Any:
    """The optimizer itself, or {parameter name: inner optimizer} for a layerwise one."""
    names = {id(p): n for n, p in model.named_parameters()}
    if isinstance(optimizer, DirectRun):
        if optimizer.kind != "layerwise":
            return optimizer.optimizers[0]
        return {names[id(o.param_groups[0]["params"][0])]: o for o in optimizer.optimizers}
    inner = getattr(optimizer, "inner", None)
    return dict(inner) if isinstance(inner, dict) else optimizer


def _groups_by_name(optimizer: Any, model: nn.Module) -> list[tuple[list[str], dict[str, Any]]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [([names[id(p)] for p in group["params"]],
             {k: v for k, v in group.items() if k != "params"})
            for group in optimizer.param_groups if group["params"]]


def _same_value(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return _same_value(_plain(x), _plain(y))
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(_same_value(i, j) for i, j in zip(x, y, strict=True))
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    return bool(x == y)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


# ----------------------------------------------------------------------------- timing
def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call takes on the chosen clock, with the garbage collector paused (it
    runs between timed calls; ``main`` froze the start-up heap, ~400k objects of torch and
    transformers whose full collection takes a second, so those runs stay short)."""
    gc.disable()
    try:
        started = _clock()
        result = run()
        return _clock() - started, result
    finally:
        gc.enable()


def _close(objects: Sequence[Any]) -> None:
    """Remove the hooks of layerwise objects and a by-hand run's bnb overrides."""
    for obj in objects:
        if isinstance(obj, DirectRun):
            obj.__exit__(None, None, None)
        elif callable(getattr(obj, "close", None)):
            obj.close()


def loop_of(name: str) -> str:
    """The loop kind the spec asks for, in ``DirectRun.kind``'s words."""
    spec = optimhub.get_spec(name)
    for capability, kind in ((optimhub.Capability.FUSED_BACKWARD, "fused"),
                             (optimhub.Capability.LAYERWISE, "layerwise"),
                             (optimhub.Capability.SCHEDULE_FREE, "schedule_free")):
        if spec.has(capability):
            return kind
    return "plain"


@dataclass
class BuildPath:
    """One way to build: ``setup(model)`` (untimed) then ``run(setup result)`` (timed)."""

    label: str
    run: Callable[[Any], Any]
    setup: Callable[[Any], Any] = lambda model: model
    fresh_model: bool = False
    repeats: int = 1
    samples: list[float] = field(default_factory=list)
    error: str | None = None

    def sample(self, shared: nn.Module, base: nn.Module) -> float:
        """Seconds per build over ``repeats`` back-to-back builds (timed as one)."""
        models = [fresh_copy(base) if self.fresh_model else shared for _ in range(self.repeats)]
        inputs = [self.setup(m) for m in models]
        seconds, built = _timed(lambda: [self.run(i) for i in inputs])
        _close(built)
        return seconds / self.repeats


def measure_builds(name: str, base: nn.Module, rounds: int, trainer: Any | None
                   ) -> tuple[dict[str, list[float]], str | None]:
    """Build-time samples per path ("hub", "hand", "hf"), and why HF failed (if it did).

    Names whose build hooks the model (LOMO, layerwise) get a fresh model per build, made
    outside the timed region; the others share one model.
    """
    overrides = hub_kwargs(name, RANK)
    fresh = loop_of(name) in ("fused", "layerwise")
    shared = fresh_copy(base)
    paths = [
        BuildPath("hub", lambda m: optimhub.create_optimizer(name, m, **overrides),
                  fresh_model=fresh),
        BuildPath("hand", lambda m: build_direct(name, m, RANK), fresh_model=fresh),
    ]
    if trainer is not None:
        def hf_build(t: Any) -> Any:
            t.optimizer = None
            return t.create_optimizer()
        paths.append(BuildPath("hf", hf_build, setup=lambda m: trainer))
    slowest = 0.0
    for path in paths:
        try:  # one untimed build: imports the backend, sizes the repeats
            slowest = max(slowest, path.sample(shared, base))
        except Exception as exc:  # the HF Trainer cannot build some names
            path.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    live = [p for p in paths if p.error is None]
    for path in live:
        path.repeats = max(1, min(MAX_REPEATS, round(SAMPLE_SECONDS / max(slowest, 1e-9))))
    for index in range(rounds):
        shift = index % len(live)
        for path in live[shift:] + live[:shift]:
            path.samples.append(path.sample(shared, base))
    hf_error = next((p.error for p in paths if p.label == "hf"), None)
    return {p.label: p.samples for p in paths}, hf_error


def measure_steps(name: str, base: nn.Module, rounds: int, warmup: int, batch: torch.Tensor,
                  *, control: bool = False
                  ) -> tuple[list[float], list[float], list[float], list[str]]:
    """Per round, the hub's and the by-hand object's timed operation.

    Plain loops: both models run the same backward, then ``step()`` is timed
    ``STEPS_PER_ROUND`` times on those gradients, alternating hub / by hand step by step
    (a step costs the same whatever the gradient holds), and the round keeps each side's
    median. Fused-backward and layerwise loops time the backward itself, which needs a
    forward each: one per object per round, in alternating order.

    ``control=True`` builds the first object by hand too (an A/A run): its ratio shows
    what noise and position alone do to the figure.
    """
    model_hub, model_hand = fresh_copy(base), fresh_copy(base)
    hub_run = (build_direct(name, model_hub, RANK) if control else
               optimhub.create_optimizer(name, model_hub, **hub_kwargs(name, RANK)))
    hand_run = build_direct(name, model_hand, RANK)
    loop = hand_run.kind
    hub = hub_run.optimizers[0] if isinstance(hub_run, DirectRun) else hub_run
    hand = hand_run.optimizers[0]
    if loop == "schedule_free" and not control:
        hub.train()  # build_direct has done it for its own
    layout = layout_diff(hub_run, model_hub, hand_run, model_hand)
    if loop != loop_of(name):
        layout.append(f"loop {loop!r} by hand, {loop_of(name)!r} by the spec")
    pairs = [(model_hub, hub), (model_hand, hand)]

    def loss_of(model: nn.Module) -> torch.Tensor:
        return model(input_ids=batch, labels=batch).loss

    def in_backward(model: nn.Module, optimizer: Any) -> float:
        loss = loss_of(model)
        if loop == "fused":
            return _timed(lambda: optimizer.fused_backward(loss, LR))[0]
        return _timed(loss.backward)[0]  # layerwise: the steps run in the hooks

    def one_round(steps: int) -> tuple[float, float]:
        if loop in ("fused", "layerwise"):
            times = {id(opt): in_backward(model, opt) for model, opt in pairs}
            pairs.reverse()
            return times[id(hub)], times[id(hand)]
        for model, _ in pairs:
            loss_of(model).backward()
        samples: dict[int, list[float]] = {id(hub): [], id(hand): []}
        for _ in range(steps):
            for _, optimizer in pairs:
                samples[id(optimizer)].append(_timed(optimizer.step)[0])
            pairs.reverse()
        for _, optimizer in pairs:
            optimizer.zero_grad(set_to_none=True)
        return statistics.median(samples[id(hub)]), statistics.median(samples[id(hand)])

    try:
        for _ in range(warmup):  # torchao compiles its step here; GaLore takes its first SVD
            one_round(1)
        hub_times, hand_times, ratios = [], [], []
        for _ in range(rounds):
            hub_time, hand_time = one_round(STEPS_PER_ROUND)
            hub_times.append(hub_time)
            hand_times.append(hand_time)
            ratios.append(hub_time / hand_time)
    finally:
        _close([hub_run, hand_run])
    return hub_times, hand_times, ratios, layout


# ----------------------------------------------------------------------------- one-offs
def first_call(base: nn.Module, repeats: int = 5) -> dict[str, tuple[float, float]]:
    """The hub's first build in this process (plugin loading + catalog) and the median of
    later ones, on both clocks (the first call also reads files: its wall time counts)."""
    model = fresh_copy(base)
    samples: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(1 + repeats):
        gc.disable()
        wall, cpu = time.perf_counter(), time.process_time()
        optimhub.create_optimizer("adamw_torch", model, lr=LR)
        samples["wall"].append(time.perf_counter() - wall)
        samples["cpu"].append(time.process_time() - cpu)
        gc.enable()
    return {clock: (values[0], statistics.median(values[1:]))
            for clock, values in samples.items()}


def build_breakdown(base: nn.Module, builds: int = 20, top: int = 10
                    ) -> list[tuple[str, float]]:
    """Where ``create_optimizer("adamw_torch")`` spends its time (cProfile, cumulative,
    as a share of the whole call; nested entries overlap)."""
    model = fresh_copy(base)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(builds):
        optimhub.create_optimizer("adamw_torch", model, lr=LR)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    hub_dir = str(Path(optimhub.__file__).parent)
    total = next(v[3] for k, v in stats.items()
                 if k[2] == "create_optimizer" and k[0].startswith(hub_dir))
    rows = []
    for (filename, line, function), (_, _, _, cumulative, _) in stats.items():
        if function == "create_optimizer" or cumulative < 0.03 * total:
            continue
        where = Path(filename).name
        for root in (hub_dir, str(Path(torch.__file__).parent.parent)):
            if filename.startswith(root):
                where = filename[len(root):].lstrip("/")
        rows.append((f"{where}:{line}({function})", cumulative / total))
    rows.sort(key=lambda row: -row[1])
    return rows[:top]


# ----------------------------------------------------------------------------- scaling
@dataclass
class ScalingRow:
    """Build times of one name on one model: median seconds per path."""

    model: str
    tensors: int
    name: str
    build: dict[str, list[float]]
    hf_error: str | None
    moe: bool = False


def scaling_models(layers: Sequence[int], moe: tuple[int, int] | None
                   ) -> list[tuple[str, bool, Callable[[], nn.Module]]]:
    """(label, is MoE, factory): the Llama depths, then the MoE-shaped model."""
    models: list[tuple[str, bool, Callable[[], nn.Module]]] = [
        (f"llama {n} layers", False,
         lambda n=n: tiny_llama(layers=n, hidden=32)) for n in layers]
    if moe is not None:
        moe_layers, experts = moe
        models.append((f"MoE {moe_layers}x{experts} experts", True,
                       lambda: MoEShaped(moe_layers, experts)))
    return models


def measure_scaling(layers: Sequence[int], moe: tuple[int, int] | None, names: Sequence[str],
                    rounds: int, output_dir: str, hf_names: set[str]) -> list[ScalingRow]:
    """Build time of each name on models of growing size: hub, by hand and the HF Trainer,
    interleaved per round as in the main table (``measure_builds``)."""
    import transformers

    rows = []
    for label, is_moe, factory in scaling_models(layers, moe):
        base = factory()
        tensors = sum(1 for _ in base.parameters())
        for name in names:
            trainer = None
            if name in hf_names:
                trainer = transformers.Trainer(model=fresh_copy(base),
                                               args=hf_arguments(name, output_dir))
            build, hf_error = measure_builds(name, base, rounds, trainer)
            del trainer
            rows.append(ScalingRow(label, tensors, name, build, hf_error, is_moe))
            print(f"  scaling: {label} ({tensors} tensors), {name}", file=sys.stderr,
                  flush=True)
        del base
        gc.collect()
    return rows


def growth_exponent(points: Sequence[tuple[int, float]]) -> float | None:
    """The least-squares slope of log(time) over log(tensors): 1.0 is linear growth."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def scaling_report(rows: list[ScalingRow]) -> str:
    header = ("model", "tensors", "name", "hub ms", "hand ms", "HF ms", "hub/hand", "hub/HF",
              "hub us/tensor", "hand us/tensor")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        b = row.build
        hub = statistics.median(b["hub"])
        hand = statistics.median(b["hand"])
        lines.append((
            row.model, str(row.tensors), row.name, _ms(b["hub"]), _ms(b["hand"]),
            "fails" if row.hf_error else _ms(b.get("hf", [])),
            _fmt(_ratio(b["hub"], b["hand"])), _fmt(_ratio(b["hub"], b.get("hf", []))),
            f"{hub / row.tensors * 1e6:.1f}", f"{hand / row.tensors * 1e6:.1f}",
        ))
    out = [table(lines), "", "fitted growth exponent of build time over tensors "
           "(least squares of log time on log tensors, Llama models; 1.00 = linear):"]
    for name in dict.fromkeys(r.name for r in rows):
        llama = [r for r in rows if r.name == name and not r.moe]
        parts = []
        for path in ("hub", "hand", "hf"):
            points = [(r.tensors, statistics.median(r.build[path])) for r in llama
                      if r.build.get(path) and not (path == "hf" and r.hf_error)]
            exponent = growth_exponent(points)
            label = {"hub": "hub", "hand": "by hand", "hf": "HF Trainer"}[path]
            parts.append(f"{label} {exponent:.2f}" if exponent is not None else f"{label} -")
        out.append(f"  {name}: " + ", ".join(parts))
    largest = max((r.tensors for r in rows if not r.moe), default=0)
    for row in rows:
        if row.moe or row.tensors == largest:
            ratio = _ratio(row.build["hub"], row.build["hand"])
            verdict = "ok" if ratio is not None and ratio <= GOAL_SCALING_VS_HAND else "OVER"
            out.append(f"goal hub/by-hand <= {GOAL_SCALING_VS_HAND:.2f} on {row.model} "
                       f"({row.tensors} tensors), {row.name}: {_fmt(ratio)}  {verdict}")
    notes = [f"  {r.model}, {r.name}: the HF Trainer fails: {r.hf_error}"
             for r in rows if r.hf_error]
    if notes:
        out += ["notes:", *notes]
    return "\n".join(out)


# ----------------------------------------------------------------------------- output
@dataclass
class NameResult:
    name: str
    loop: str
    build: dict[str, list[float]]
    hf_error: str | None
    step_hub: list[float]
    step_hand: list[float]
    step_ratios: list[float]
    layout: list[str]


def _ms(samples: Sequence[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f}" if samples else "-"


def _ratio(a: Sequence[float], b: Sequence[float]) -> float | None:
    return statistics.median(a) / statistics.median(b) if a and b else None


def _fmt(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"




def report(results: list[NameResult], skipped: list[tuple[str, str]]) -> str:
    rows: list[tuple[str, ...]] = [(
        "name", "build hub ms", "build hand ms", "build HF ms", "build hub/hand",
        "build hub/HF", "step hub ms", "step hand ms", "step hub/hand", "step ratio range",
        "timed", "same obj")]
    for r in results:
        b = r.build
        rows.append((
            r.name, _ms(b["hub"]), _ms(b["hand"]),
            "fails" if r.hf_error else _ms(b.get("hf", [])),
            _fmt(_ratio(b["hub"], b["hand"])), _fmt(_ratio(b["hub"], b.get("hf", []))),
            _ms(r.step_hub), _ms(r.step_hand),
            _fmt(statistics.median(r.step_ratios) if r.step_ratios else None),
            f"{min(r.step_ratios):.2f}-{max(r.step_ratios):.2f}" if r.step_ratios else "-",
            STEP_LABELS[r.loop], "yes" if not r.layout else "NO",
        ))
    out = [table(rows)]
    notes = [f"  {r.name}: the HF Trainer fails: {r.hf_error}" for r in results if r.hf_error]
    notes += [f"  {r.name}: NOT the same optimizer: {'; '.join(r.layout[:3])}"
              for r in results if r.layout]
    if notes:
        out.append("\n".join(["", "notes:", *notes]))
    if skipped:
        out.append("\n".join(["", "skipped:", *(f"  {n}: {why}" for n, why in skipped)]))
    return "\n".join(out)


def summary(results: list[NameResult]) -> str:
    vs_hand = [(r.name, _ratio(r.build["hub"], r.build["hand"])) for r in results]
    vs_hf = [(r.name, _ratio(r.build["hub"], r.build["hf"])) for r in results
             if r.build.get("hf") and not r.hf_error]
    steps = [(r.name, statistics.median(r.step_ratios)) for r in results if r.step_ratios]

    def line(label: str, pairs: list[tuple[str, float | None]], ok: Callable[[float], bool]
             ) -> str:
        values = [(n, v) for n, v in pairs if v is not None]
        if not values:
            return f"  {label}: no data"
        ratios = [v for _, v in values]
        missed = ", ".join(f"{n} {v:.2f}" for n, v in values if not ok(v))
        return (f"  {label}: {sum(ok(v) for v in ratios)}/{len(values)} names meet it; "
                f"median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-"
                f"{max(ratios):.2f}" + (f"\n    not met: {missed}" if missed else ""))

    return "\n".join([
        "goals:",
        line(f"build hub/by-hand <= {GOAL_BUILD_VS_HAND:.2f}", vs_hand,
             lambda v: v <= GOAL_BUILD_VS_HAND),
        line(f"build hub/HF <= {GOAL_BUILD_VS_HF:.2f}", vs_hf, lambda v: v <= GOAL_BUILD_VS_HF),
        line(f"step hub/by-hand = 1.00 +- {STEP_TOLERANCE:.2f}", steps,
             lambda v: abs(v - 1.0) <= STEP_TOLERANCE),
    ])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ----------------------------------------------------------------------------- main
def select_names(requested: list[str] | None, *, builds_only: bool = False
                 ) -> tuple[list[str], list[tuple[str, str]]]:
    """The names that run here, and why the others are skipped. ``builds_only`` (the
    scaling table, which times builds, not steps) keeps the routed names that
    ``direct.py`` builds by hand (their routes' optimizers, side by side)."""
    specs = ([optimhub.get_spec(n) for n in requested] if requested
             else optimhub.list_optimizers())
    runnable, skipped = [], []
    for spec in specs:
        if not is_installed(spec):
            skipped.append((spec.name, f"backend not installed ({spec.install_command})"))
        elif spec.has(optimhub.Capability.CUDA_ONLY) and not torch.cuda.is_available():
            skipped.append((spec.name, "CUDA only, and there is no CUDA device here"))
        elif (spec.routed or spec.has(optimhub.Capability.MATRIX_ONLY)) and not (
                builds_only and spec.name in DIRECT):
            skipped.append((spec.name, "routed (one optimizer per route): "
                            "benchmarks/routed.py times it against its routes"))
        elif spec.name not in DIRECT:
            skipped.append((spec.name, "no by-hand construction in benchmarks/direct.py"))
        else:
            runnable.append(spec.name)
    return runnable, skipped


def hf_arguments(name: str, output_dir: str) -> Any:
    """``TrainingArguments`` with what the hub and the by-hand code are given."""
    import transformers

    low_rank = optimhub.get_spec(name).has(optimhub.Capability.TARGET_MODULES)
    return transformers.TrainingArguments(
        output_dir=output_dir, optim=name, learning_rate=LR, report_to=[], use_cpu=True,
        optim_target_modules=TARGET_MODULES if low_rank else None,
        optim_args=f"rank={RANK}" if low_rank else None,
    )


def _layers_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"layer counts must be whole numbers >= 1: {text!r}")
    return values


def _moe_shape(text: str) -> tuple[int, int] | None:
    if text == "none":
        return None
    layers, _, experts = text.partition("x")
    try:
        shape = (int(layers), int(experts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--moe takes LAYERSxEXPERTS or none: {text!r}") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--moe takes LAYERSxEXPERTS >= 1: {text!r}")
    return shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", help="comma-separated catalog names (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per name")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed step rounds first (builds: one untimed build each)")
    parser.add_argument("--layers", type=int, default=24, help="Llama layers (12 modules each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier numbers on a shared 2-core machine)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: CPU time of this process (default); wall: elapsed time")
    scaling = parser.add_argument_group("build-cost scaling table")
    scaling.add_argument("--scaling-layers", type=_layers_list,
                         default=list(SCALING_LAYERS),
                         help="Llama depths, comma-separated (default: %(default)s; 9 "
                              "parameter tensors per layer)")
    scaling.add_argument("--moe", type=_moe_shape, default=(MOE_LAYERS, MOE_EXPERTS),
                         help=f"the MoE-shaped model, LAYERSxEXPERTS (default "
                              f"{MOE_LAYERS}x{MOE_EXPERTS}; 'none' to leave it out)")
    scaling.add_argument("--scaling-names", default=",".join(SCALING_NAMES),
                         help="names timed in the scaling table (default: %(default)s)")
    which = scaling.add_mutually_exclusive_group()
    which.add_argument("--no-scaling", action="store_true", help="leave the table out")
    which.add_argument("--scaling-only", action="store_true", help="print only that table")
    options = parser.parse_args(argv)
    if options.rounds < 1 or options.warmup < 1:
        parser.error("--rounds and --warmup must be at least 1")
    requested = ([n.strip() for n in options.names.split(",") if n.strip()]
                 if options.names else None)
    scaling_names = [n.strip() for n in options.scaling_names.split(",") if n.strip()]

    global _clock
    _clock = CLOCKS[options.clock]
    warnings.simplefilter("ignore")  # the same for every path; keeps the table readable
    torch.set_num_threads(options.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    load_start = os.getloadavg()[0]
    base = tiny_llama(layers=options.layers)
    gc.collect()
    gc.freeze()  # later collections skip the start-up objects (see _timed)
    first_calls = first_call(base)  # before anything else touches the plugins

    try:
        names, skipped = select_names(requested)
        scaling_names, scaling_skipped = select_names(scaling_names, builds_only=True)
    except optimhub.OptimHubError as exc:
        print(f"overhead.py: {exc}", file=sys.stderr)
        return 2
    if options.scaling_only:
        names, skipped = [], []
    from transformers.training_args import OptimizerNames

    hf_names = {o.value for o in OptimizerNames}
    batch = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    results = []
    scaling_rows: list[ScalingRow] = []
    control: list[float] | None = None
    started, cpu_started = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as output_dir:
        for name in names:
            name_started = time.process_time()
            trainer = None
            if name in hf_names:
                trainer = transformers.Trainer(model=fresh_copy(base),
                                               args=hf_arguments(name, output_dir))
            build, hf_error = measure_builds(name, base, options.rounds, trainer)
            del trainer
            step_hub, step_hand, ratios, layout = measure_steps(
                name, base, options.rounds, options.warmup, batch)
            results.append(NameResult(name, loop_of(name), build, hf_error, step_hub,
                                      step_hand, ratios, layout))
            print(f"  measured {name} ({time.process_time() - name_started:.1f} s of CPU)",
                  file=sys.stderr, flush=True)
        if not options.no_scaling:
            scaling_rows = measure_scaling(options.scaling_layers, options.moe, scaling_names,
                                           options.rounds, output_dir, hf_names)
    control_name = next((r.name for r in results if r.loop == "plain"), None)
    if control_name is not None:
        control = measure_steps(control_name, base, options.rounds, options.warmup, batch,
                                control=True)[2]
    elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started

    modules = sum(1 for _ in base.modules())
    tensors = sum(1 for _ in base.parameters())
    numel = sum(p.numel() for p in base.parameters())
    print(f"optimhub overhead: build and step time ({options.clock} clock), median of "
          f"{options.rounds} interleaved rounds after warm-up ({options.warmup} step rounds, "
          f"1 build); a build round times every path the same number of back-to-back builds, "
          f"a step round {STEPS_PER_ROUND} step() calls alternating hub and by hand")
    print(f"machine: {_cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({options.threads} thread), transformers {transformers.__version__}, "
          f"python {platform.python_version()}")
    print(f"load average (1 min): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"measuring took {elapsed:.0f} s ({cpu_elapsed:.0f} s of CPU)")
    if results:
        print(f"model: LlamaForCausalLM, {options.layers} layers, hidden 64: {modules} "
              f"modules, {tensors} parameter tensors, {numel / 1e6:.2f}M parameters; batch "
              "2x32 tokens")
        print(f"settings: lr {LR}, weight decay 0 (two groups still: HF's decay / no-decay "
              f"split); GaLore/APOLLO targets {TARGET_MODULES}, rank {RANK} (apollo_mini: 1)\n")
        print("hub first call in a process (adamw_torch; loads the plugins and the catalog, "
              "once; kept out of the table):")
        for clock, (first, later) in first_calls.items():
            print(f"  {clock:4s}: first call {first * 1000:.1f} ms; later builds: "
                  f"{later * 1000:.1f} ms; one-time cost {(first - later) * 1000:.1f} ms")
        print()
        print(report(results, skipped))
        print()
        print(summary(results))
        if control:
            print(f"  control (A/A): {control_name} by hand vs {control_name} by hand, step "
                  f"ratio {statistics.median(control):.2f} (range {min(control):.2f}-"
                  f"{max(control):.2f}): the noise floor of the step column")
        print("\nwhere the hub's build time goes (adamw_torch, cProfile over 20 builds; "
              "cumulative share of create_optimizer, nested entries overlap):")
        for where, share in build_breakdown(base):
            print(f"  {share * 100:5.1f}%  {where}")
        print("\ncolumns: 'hand' = the groups and the constructor call a user writes "
              "(benchmarks/direct.py); 'HF' = Trainer.create_optimizer(); 'step ratio range' "
              "= the lowest and highest per-round step ratio; 'timed' = what the step "
              "columns time; 'same obj' = the hub's and the by-hand object have the same "
              "class, groups and hyperparameters.")
    if scaling_rows:
        print(f"\nbuild-cost scaling ({options.clock} clock, median of {options.rounds} "
              "interleaved rounds): config-built LlamaForCausalLM (hidden 32) of growing "
              "depth, and a MoE-shaped model with one module per expert (hidden 32); "
              f"GaLore targets {TARGET_MODULES}, rank {RANK}")
        print(scaling_report(scaling_rows))
    if scaling_skipped and not options.no_scaling:
        print("scaling names skipped: " + "; ".join(f"{n}: {why}" for n, why in scaling_skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
