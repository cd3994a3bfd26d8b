"""The example third-party plugin (examples/optimhub-example-plugin), installed as a user would.

``make test`` installs it (editable) beside optimhub, so these tests exercise the real
path of a third-party plugin: an entry point in the ``optimhub`` group, loaded by the hub,
registering a spec and a builder. Skipped where the distribution is not installed.
"""

from __future__ import annotations

import io
from importlib.metadata import PackageNotFoundError, distribution

import pytest
import torch
from torch import nn

import optimhub

try:
    _DIST = distribution("optimhub-example-plugin")
except PackageNotFoundError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "optimhub-example-plugin is not installed (make test installs it: "
        "pip install -e examples/optimhub-example-plugin)",
        allow_module_level=True,
    )

from optimhub_example_plugin import SignSGD  # imported after the skip above


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=generator)
    return x, torch.tanh(x @ torch.randn(8, 1, generator=generator))


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int) -> list[float]:
    x, y = _data()
    losses = []
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_entry_point_is_declared() -> None:
    entry_points = [ep for ep in _DIST.entry_points if ep.group == "optimhub"]
    assert [(ep.name, ep.value) for ep in entry_points] == [("example", "optimhub_example_plugin")]


def test_the_hub_loads_the_plugin() -> None:
    spec = optimhub.get_spec("sign_sgd")
    assert spec.plugin == "example"
    assert spec.distribution == "optimhub-example-plugin"
    assert spec.import_name == "optimhub_example_plugin"
    assert set(spec.args) == {"momentum"}
    assert "sign_sgd" in {s.name for s in optimhub.list_optimizers()}


def test_builds_and_trains() -> None:
    model = _model()
    optimizer = optimhub.create_optimizer(
        "sign_sgd", model, {"learning_rate": 1e-2, "weight_decay": 0.01}, optim_args="momentum=0.5"
    )
    assert type(optimizer) is SignSGD
    assert optimhub.spec_of(optimizer).name == "sign_sgd"
    assert {g["momentum"] for g in optimizer.param_groups} == {0.5}
    assert {g["lr"] for g in optimizer.param_groups} == {1e-2}
    # The HF split: biases and norm weights get no weight decay.
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.01]
    losses = _steps(model, optimizer, 40)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("optim_args", ["momentum=1.0", "momentum=-0.1", "momentun=0.9"])
def test_options_are_checked_against_the_spec(optim_args: str) -> None:
    with pytest.raises(optimhub.OptimArgsError, match="momentum"):
        optimhub.create_optimizer("sign_sgd", _model(), optim_args=optim_args)


def test_state_dict_round_trip() -> None:
    model = _model()
    optimizer = optimhub.create_optimizer("sign_sgd", model, {"learning_rate": 1e-2})
    _steps(model, optimizer, 3)
    assert all("momentum_buffer" in s for s in optimizer.state_dict()["state"].values())
    # Through bytes, as a checkpoint goes: state_dict() hands out the live buffers.
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    clone = _model()
    clone.load_state_dict(model.state_dict())
    restored = optimhub.create_optimizer("sign_sgd", clone, {"learning_rate": 1e-2})
    restored.load_state_dict(state)
    _steps(model, optimizer, 2)
    _steps(clone, restored, 2)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_passes_the_conformance_suite() -> None:
    import optimhub.testing

    report = optimhub.testing.assert_conformance("sign_sgd")
    assert report is not None and report.ok
    assert report.state_bytes_per_param == optimhub.get_spec("sign_sgd").state_bytes_per_param


def test_momentum_zero_is_plain_sign_sgd() -> None:
    param = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    optimizer = SignSGD([param], lr=0.1, momentum=0.0)
    param.grad = torch.tensor([3.0, -0.01, 0.0])
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([0.9, -1.9, 0.5]))
    assert not optimizer.state  # no momentum buffer kept
