"""The conformance suite (optimhub.testing) over the whole catalog, and tests of the suite.

Every catalog name gets one test: names that run here must pass ``check_optimizer``;
CUDA-only names are skipped with the reason (and marked ``cuda``); names whose backend is
not installed must fail with ``MissingBackendError`` naming the install command. Names
added by new plugins are picked up automatically.

A failure here is a finding about a plugin or backend: report it (name, check, message),
do not tune it away. ``SETTINGS`` is only for optimizers whose *algorithm* needs other
settings on the suite's tiny problem, each with its reason.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
import torch
from catalog_settings import SETTINGS
from torch import nn

import optimhub
import optimhub.testing as ot
from optimhub.plugin_host import PluginHost, get_registry

# ---------------------------------------------------------------------------- the catalog

#: Findings: names that fail a check here, each with what was measured. The test expects
#: the failure (strict), so a fix upstream shows up as an unexpected pass.
#: (heavyball's PSGD family resumed inexactly until plugins/_saved_dtypes.py: torch's load
#: cast its float64 state to float32.)
KNOWN_FAILURES: dict[str, str] = {}


def _catalog_params() -> list[Any]:
    params = ot.parametrize_catalog()
    for index, param in enumerate(params):
        if param.id in KNOWN_FAILURES:
            xfail = pytest.mark.xfail(strict=True, raises=ot.ConformanceError,
                                      reason=KNOWN_FAILURES[param.id])
            params[index] = pytest.param(*param.values, id=param.id, marks=[*param.marks, xfail])
    return params


@pytest.mark.parametrize("name", _catalog_params())
def test_catalog_conformance(name: str) -> None:
    report = ot.assert_conformance(name, **SETTINGS.get(name, {}))
    if report is not None:
        assert report.ok
        assert report.losses and report.final_loss is not None


def test_settings_table_names_only_catalog_names() -> None:
    """A renamed or removed optimizer must not leave dead tuning behind."""
    known = {spec.name for spec in optimhub.list_optimizers()}
    assert set(SETTINGS) <= known
    assert set(KNOWN_FAILURES) <= known


def test_no_catalog_name_is_lost_to_a_plugin_failure() -> None:
    """A plugin that fails to load takes its names out of list_optimizers(), and so out
    of the conformance run above: that must be a failure here, not a silent gap."""
    registry = get_registry()
    assert [str(f) for f in registry.failures] == []
    assert set(registry.catalog) <= set(registry.entries)


def test_importing_the_suite_does_not_import_pytest() -> None:
    code = "import sys, optimhub.testing; assert 'pytest' not in sys.modules, 'pytest'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_catalog_name_is_parametrized() -> None:
    ids = {param.id for param in ot.parametrize_catalog()}
    assert ids == {spec.name for spec in optimhub.list_optimizers()}


# ---------------------------------------------------------------------------- third party
def test_example_plugin_passes() -> None:
    try:
        distribution("optimhub-example-plugin")
    except PackageNotFoundError:
        pytest.skip("optimhub-example-plugin is not installed "
                    "(pip install -e examples/optimhub-example-plugin)")
    report = ot.check_optimizer("sign_sgd")
    assert report.outcome("missing_backend").passed  # its import name is hideable
    assert report.state_bytes_per_param == pytest.approx(4.0)  # one momentum buffer


BACKEND_SOURCE = '''
import torch


def decay(p, lr, weight_decay):
    p.mul_(1 - lr * weight_decay)


class Momentum(torch.optim.Optimizer):
    """Heavy-ball SGD whose state is one buffer per parameter."""

    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None:
                    continue
                decay(p, group["lr"], self.decay_of(index, group))
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.add_(buf, alpha=-group["lr"])

    def decay_of(self, index, group):
        return group["weight_decay"]


class FixedDecay(Momentum):
    """Reads its weight decay once, at construction, and says nothing."""

    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.fixed = [group["weight_decay"] for group in self.param_groups]

    def decay_of(self, index, group):
        return self.fixed[index]


class Lazy(Momentum):
    """Does nothing at all: the loss cannot go down."""

    def step(self, closure=None):
        return None


class Forgetful(Momentum):
    """Keeps its buffers outside optimizer.state: they are lost by state_dict()."""

    @torch.no_grad()
    def step(self, closure=None):
        hidden = self.__dict__.setdefault("hidden", {})
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    decay(p, group["lr"], group["weight_decay"])
                    buf = hidden.setdefault(id(p), torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    p.add_(buf, alpha=-group["lr"])


class SilentFused(Momentum):
    """Claims a fused backward, but its step() silently does nothing."""

    def fused_backward(self, loss, lr):
        loss.backward()
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        decay(p, lr, group["weight_decay"])
                        p.add_(p.grad, alpha=-lr)
                        p.grad = None

    def step(self, closure=None):
        return None
'''

BACKEND = "optimhub_conformance_inline_backend"


def _spec(name: str, **fields: Any) -> optimhub.OptimizerSpec:
    return optimhub.OptimizerSpec(
        name=name, summary=f"in-test optimizer {name}", plugin="inline",
        distribution="optimhub-inline-backend", import_name=BACKEND,
        install_hint="pip install optimhub-inline-backend",
        hyperparameters={"lr", "weight_decay"}, **fields,
    )


def _builder(class_name: str) -> optimhub.Builder:
    def build(request: optimhub.BuildRequest) -> torch.optim.Optimizer:
        cls = getattr(importlib.import_module(BACKEND), class_name)
        return cls(request.param_groups, **request.kwargs)

    return build


def _refuse(request: optimhub.BuildRequest) -> torch.optim.Optimizer:
    raise optimhub.BackendUnavailableError("needs a newer inline backend")


class InlinePlugin:
    """A third-party plugin defined in the test: specs and builders, registered the way an
    entry-point plugin registers them."""

    def __init__(self, entries: list[tuple[optimhub.OptimizerSpec, optimhub.Builder]]) -> None:
        self.entries = entries

    @optimhub.hookimpl
    def optimhub_register_optimizers(self, register: optimhub.Register) -> None:
        for spec, builder in self.entries:
            register.optimizer(spec, builder)


INLINE_ENTRIES = [
    (_spec("inline_momentum", state_bytes_per_param=4.0), _builder("Momentum")),
    (_spec("inline_lazy"), _builder("Lazy")),
    (_spec("inline_forgetful"), _builder("Forgetful")),
    (_spec("inline_fake_low_bit", capabilities={"low_bit_state"}), _builder("Momentum")),
    (_spec("inline_understated", state_bytes_per_param=1.0), _builder("Momentum")),
    (_spec("inline_silent_fused", capabilities={"fused_backward"}), _builder("SilentFused")),
    (_spec("inline_cuda", capabilities={"cuda_only"}), _builder("Momentum")),
    (_spec("inline_fixed_decay"), _builder("FixedDecay")),
    (_spec("inline_falsely_static", capabilities={"static_weight_decay"}), _builder("Momentum")),
    (_spec("inline_refuses"), _refuse),
    (optimhub.OptimizerSpec(
        name="inline_not_installed", summary="a backend that is not installed",
        plugin="inline", distribution="optimhub-absent", import_name="optimhub_absent_xyz",
        extra="absent", hyperparameters={"lr"}), _builder("Momentum")),
]


@pytest.fixture
def inline_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  use_host: Callable[[PluginHost], PluginHost]) -> Iterator[None]:
    """The in-test plugin as the only plugin of the process-wide host, with its backend
    module importable from a temporary folder."""
    (tmp_path / f"{BACKEND}.py").write_text(textwrap.dedent(BACKEND_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    use_host(PluginHost(catalog={}, entry_points=lambda: [],
                        extra_plugins=[("inline", InlinePlugin(INLINE_ENTRIES))]))
    yield
    sys.modules.pop(BACKEND, None)


@pytest.mark.usefixtures("inline_plugin")
def test_in_test_plugin_passes() -> None:
    report = ot.check_optimizer("inline_momentum")
    assert [c.name for c in report.checks] == [
        "builds", "loss_decreases", "resume", "low_bit_state", "layerwise",
        "weight_decay_changes", "declared_memory", "missing_backend",
    ]
    assert report.optimizer_type == "Momentum"
    assert report.state_bytes_per_param == pytest.approx(4.0)
    assert report.resume_max_abs_diff == 0.0
    assert report.losses[0] > report.final_loss
    assert BACKEND in sys.modules  # hidden during the check, put back after


@pytest.mark.usefixtures("inline_plugin")
@pytest.mark.parametrize(("name", "check", "message"), [
    ("inline_lazy", "loss_decreases", "did not decrease"),
    ("inline_forgetful", "resume", "does not continue the run"),
    ("inline_fake_low_bit", "low_bit_state", "claims low_bit_state"),
    ("inline_silent_fused", "fused_backward", "silently doing nothing"),
    ("inline_understated", "declared_memory", "declares state_bytes_per_param=1"),
    ("inline_fixed_decay", "weight_decay_changes", "declare 'static_weight_decay'"),
    ("inline_falsely_static", "weight_decay_changes", "drop the capability"),
])
def test_the_suite_catches_a_dishonest_optimizer(name: str, check: str, message: str) -> None:
    with pytest.raises(ot.ConformanceError, match=message) as info:
        ot.check_optimizer(name)
    assert isinstance(info.value, AssertionError)
    assert f"optimizer {name!r} failed conformance check {check!r}" in str(info.value)
    report = info.value.report
    assert report is not None and [c.name for c in report.failures] == [check]


@pytest.mark.usefixtures("inline_plugin")
def test_report_without_raising_lists_the_failure() -> None:
    report = ot.check_optimizer("inline_lazy", raise_on_failure=False)
    assert not report.ok
    assert report.outcome("loss_decreases").failed
    assert report.outcome("resume").passed  # a no-op resumes exactly, too
    assert report.outcome("weight_decay_changes").status == "skipped"  # nothing to observe
    assert "FAILED" in report.summary()


@pytest.mark.usefixtures("inline_plugin")
def test_readiness_and_marks() -> None:
    assert ot.readiness("inline_momentum") == ot.Readiness("run")
    assert ot.readiness("inline_not_installed").action == "missing"
    assert 'pip install "optimhub[absent]"' in ot.readiness("inline_not_installed").reason
    params = {p.id: p for p in ot.parametrize_catalog("inline_*")}
    assert set(params) == {spec.name for spec, _ in INLINE_ENTRIES}
    cuda_marks = {m.name for m in params["inline_cuda"].marks}
    if torch.cuda.is_available():
        assert cuda_marks == {"cuda"}
    else:
        assert cuda_marks == {"cuda", "skip"}
        assert "CUDA" in ot.readiness("inline_cuda").reason
    assert not params["inline_not_installed"].marks


@pytest.mark.usefixtures("inline_plugin")
def test_missing_backend_is_what_assert_conformance_checks() -> None:
    assert ot.assert_conformance("inline_not_installed") is None
    with pytest.raises(optimhub.MissingBackendError, match=r'optimhub\[absent\]'):
        optimhub.create_optimizer("inline_not_installed", ot.conformance_model())


@pytest.mark.usefixtures("inline_plugin")
def test_a_backend_that_cannot_run_here_is_skipped_not_failed() -> None:
    with pytest.raises(optimhub.BackendUnavailableError, match="newer inline backend"):
        ot.check_optimizer("inline_refuses")
    with pytest.raises(pytest.skip.Exception, match="cannot run here: needs a newer"):
        ot.assert_conformance("inline_refuses")


def test_hidden_backend_puts_everything_back() -> None:
    import json
    import json.decoder

    with ot.hidden_backend("json"):
        assert sys.modules["json"] is None and sys.modules["json.decoder"] is None
        with pytest.raises(ImportError):
            importlib.import_module("json")
    assert sys.modules["json"] is json and sys.modules["json.decoder"] is json.decoder
    with pytest.raises(ValueError, match="torch"):
        ot.hidden_backend("torch").__enter__()


def test_check_optimizer_leaves_the_callers_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ot.check_optimizer("adamw_torch", steps=2)
    assert torch.equal(torch.rand(3), expected)


def test_suite_model_is_reproducible_and_large_enough_for_8bit_state() -> None:
    a, b = ot.conformance_model(), ot.conformance_model()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    sizes = {name: p.numel() for name, p in a.named_parameters()}
    assert max(sizes.values()) >= 4096  # bitsandbytes/torchao quantize from 4096 elements
    names = set(sizes)
    assert {"layers.0.attn.q_proj.weight", "layers.0.mlp.up_proj.weight",
            "embed_tokens.weight", "lm_head.weight", "norm.weight"} <= names


# ---------------------------------------------------------------------------- state_bytes
def _trained(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    ot.conformance_loss(model, ot.conformance_batch()).backward()
    optimizer.step()
    return optimizer


def test_adamw_fp32_is_exactly_8_bytes_per_param() -> None:
    model = ot.conformance_model()
    optimizer = _trained(torch.optim.AdamW(model.parameters()), model)
    assert ot.state_bytes_per_param(optimizer) == 8.0
    # The 0-d step counters are bookkeeping: counted only when asked for.
    n_tensors = len(list(model.parameters()))
    assert ot.state_bytes(optimizer, include_scalars=True) == (
        ot.state_bytes(optimizer) + 4 * n_tensors)


def test_sgd_without_momentum_holds_nothing() -> None:
    model = ot.conformance_model()
    optimizer = _trained(torch.optim.SGD(model.parameters(), lr=0.1), model)
    assert any(p.grad is not None for p in model.parameters())  # grads are not state
    assert ot.state_bytes(optimizer) == 0
    assert ot.state_bytes_per_param(optimizer) == 0.0


class _Holder(torch.optim.Optimizer):
    """A bare optimizer whose state the tests fill by hand."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__(params, {"lr": 0.1})

    def step(self, closure: Any = None) -> None:
        return None


class _Projector:
    """Like GaLore's projector: a plain object keeping a small view of a big matrix."""

    def __init__(self, matrix: torch.Tensor, rank: int) -> None:
        self.ortho_matrix = matrix[:rank]


def test_a_view_counts_its_whole_storage_once() -> None:
    param = nn.Parameter(torch.zeros(10))
    optimizer = _Holder([param])
    big = torch.zeros(256, 256)
    projector = _Projector(big, rank=2)
    optimizer.state[param] = {"projector": projector, "again": big[5:7], "same": big}
    assert ot.state_bytes(optimizer) == 256 * 256 * 4


def test_parameters_and_their_grads_are_not_state() -> None:
    param = nn.Parameter(torch.ones(100))
    param.grad = torch.ones(100)
    optimizer = _Holder([param])
    optimizer.state[param] = {"alias": param, "view": param[:10], "grad": param.grad,
                              "own": torch.zeros(25)}
    assert ot.state_bytes(optimizer) == 25 * 4
    assert ot.state_bytes_per_param(optimizer) == 1.0


def test_state_in_param_groups_is_counted() -> None:
    """GrokAdamW keeps per-parameter state in ``param_groups[i]['state']``, keyed by the
    parameter, and nothing in ``optimizer.state``."""
    param = nn.Parameter(torch.ones(64))
    optimizer = _Holder([param])
    optimizer.param_groups[0]["state"] = {param: {"exp_avg": torch.zeros(64),
                                                  "exp_avg_sq": torch.zeros(64),
                                                  "grok_ema": torch.zeros(64)}}
    assert not optimizer.state
    assert ot.state_bytes_per_param(optimizer) == 12.0


def test_attributes_of_the_optimizer_are_counted_but_not_the_model() -> None:
    """AdaLomo keeps its factored state in dicts on the object, and the model beside it."""
    model = ot.conformance_model()
    optimizer = _Holder(list(model.parameters()))
    optimizer.model = model  # type: ignore[attr-defined]
    optimizer.exp_avg_sq_row = {"w": torch.zeros(32)}  # type: ignore[attr-defined]
    optimizer.exp_avg_sq_col = {"w": torch.zeros(16)}  # type: ignore[attr-defined]
    model.register_buffer("not_state", torch.zeros(1000))
    assert ot.state_bytes(optimizer) == (32 + 16) * 4


def test_layerwise_adamw_is_8_bytes_per_param() -> None:
    model = ot.conformance_model()
    optimizer = optimhub.create_optimizer("adamw_torch", model, lr=1e-2, layerwise=True)
    with optimizer:
        ot.conformance_loss(model, ot.conformance_batch()).backward()  # steps in backward
        assert ot.state_bytes_per_param(optimizer) == 8.0


def test_tensor_subclasses_are_unwrapped() -> None:
    """torchao's low-bit state is a tensor subclass: its uint8 codes and fp32 scales are
    what the memory is, and what the low-bit check must see."""
    subclass_8bit = pytest.importorskip("torchao.optim.subclass_8bit")
    param = nn.Parameter(torch.zeros(4096))
    optimizer = _Holder([param])
    state = subclass_8bit.OptimState8bit.zeros(param.shape, signed=True, block_size=256)
    optimizer.state[param] = {"exp_avg": state}
    tensors = ot.state_tensors(optimizer)
    assert torch.uint8 in {t.dtype for t in tensors}
    assert not any(type(t) is subclass_8bit.OptimState8bit for t in tensors)
    expected = sum(t.untyped_storage().nbytes() for t in tensors)
    assert ot.state_bytes(optimizer) == expected >= 4096 + 16 * 4
