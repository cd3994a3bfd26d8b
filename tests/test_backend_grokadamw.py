"""GrokAdamW: real steps, and the three habits the plugin absorbs — the root-logger change at
import, the state kept outside ``optimizer.state`` (checkpoints), the per-step warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from conftest import make_tiny_lm
from parity import train_on_batches

import optimhub
from optimhub.errors import OptimArgsError, OptimHubWarning

pytest.importorskip("grokadamw")

STATE_KEYS = {"step", "exp_avg", "exp_avg_sq", "grok_ema"}


def _steps(model, optimizer, seeds) -> list[float]:
    return train_on_batches(model, optimizer, seeds)


def _build(model, **overrides):
    return optimhub.create_optimizer("grokadamw", model, lr=1e-2, weight_decay=0.01, **overrides)


def test_trains_with_its_state_in_the_param_groups_linked_to_optimizer_state():
    """GrokAdamW looks its state up in the group's "state"; each group's is the optimizer's
    own ``state`` mapping, which therefore holds the state, as torch's optimizers do."""
    model = make_tiny_lm()
    optimizer = _build(model)
    losses = _steps(model, optimizer, [1] * 5)
    assert losses[-1] < losses[0]
    assert len(optimizer.state) == sum(1 for _ in model.parameters())
    for group in optimizer.param_groups:
        assert group["state"] is optimizer.state
        for param in group["params"]:
            state = group["state"][param]
            assert set(state) == STATE_KEYS and state["step"] == 5
            assert state["exp_avg"].shape == param.shape and state["exp_avg"].device.type == "cpu"


def test_state_dict_holds_the_state_and_loads_with_weights_only(tmp_path):
    model = make_tiny_lm()
    optimizer = _build(model)
    _steps(model, optimizer, [0, 1])
    saved = optimizer.state_dict()
    count = sum(1 for _ in model.parameters())
    assert sorted(saved["state"]) == list(range(count))  # ...moved into the standard section
    assert all(set(s) == STATE_KEYS for s in saved["state"].values())
    assert all("state" not in g for g in saved["param_groups"])
    assert all("state" in g for g in optimizer.param_groups)  # the live groups are untouched
    _steps(model, optimizer, [2])
    assert saved["state"][0]["step"] == 2  # a snapshot of the count, not a live view
    torch.save(saved, tmp_path / "optim.pt")
    loaded = torch.load(tmp_path / "optim.pt", weights_only=True)
    assert loaded["state"][0]["step"] == 2


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = make_tiny_lm()
    _steps(straight, _build(straight), range(5))

    first = make_tiny_lm()
    optimizer = _build(first)
    _steps(first, optimizer, range(3))
    torch.save({"model": first.state_dict(), "optim": optimizer.state_dict()}, tmp_path / "c.pt")
    checkpoint = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = make_tiny_lm(seed=99)
    resumed.load_state_dict(checkpoint["model"])
    restored = _build(resumed)
    restored.load_state_dict(checkpoint["optim"])
    assert all(group["state"] is restored.state for group in restored.param_groups)
    assert restored.state[resumed.lm_head.weight]["step"] == 3
    _steps(resumed, restored, range(3, 5))

    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_written_without_the_hooks_is_said_to_lose_its_state(tmp_path):
    from grokadamw import GrokAdamW

    model = make_tiny_lm()
    plain = GrokAdamW(model.parameters(), lr=1e-2)  # no optimhub hooks: state in the group
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _steps(model, plain, [0])
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    legacy = torch.load(tmp_path / "plain.pt", weights_only=False)
    ours = optimhub.create_optimizer("grokadamw", [{"params": list(make_tiny_lm().parameters())}])
    with pytest.warns(OptimHubWarning, match="cannot be restored"):
        ours.load_state_dict(legacy)
    assert ours.param_groups[0]["state"] == {}


def test_the_per_step_autocast_warnings_are_filtered_but_not_the_users():
    model = make_tiny_lm()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = _build(model)
        _steps(model, optimizer, [0, 1])
        # the same texts, issued from the user's own code, still show
        warnings.warn("CUDA is not available or torch_xla is imported. Disabling autocast.",
                      UserWarning, stacklevel=1)
        warnings.warn("`torch.cuda.amp.autocast(args...)` is deprecated.", FutureWarning,
                      stacklevel=1)
    assert [w.filename for w in caught] == [__file__, __file__], [str(w.message) for w in caught]


def test_options_betas_and_eps_reach_the_groups():
    optimizer = optimhub.create_optimizer(
        "grokadamw", make_tiny_lm(), lr=1e-3, betas=(0.8, 0.95), eps=1e-6,
        optim_args="alpha_init=0.5,lamb=1,gamma=0,grokking_signal_decay_rate=0.3,"
                   "gradient_clipping=0",
    )
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"]) == ((0.8, 0.95), 1e-6)
    assert (group["alpha_init"], group["lamb"], group["gamma"]) == (0.5, 1.0, 0.0)
    assert (group["grokking_signal_decay_rate"], group["gradient_clipping"]) == (0.3, 0.0)
    assert group["grokking_signal_fns"] is None


@pytest.mark.parametrize(
    ("optim_args", "text"),
    [
        ("alpha_init=1.5", "alpha_init=.* must be <= 1"),
        ("gradient_clipping=-1", "must be >= 0"),
        ("grokking_signal_fns=x", "grokking_signal_fns"),  # cannot be set, as in HF
    ],
)
def test_bad_options(optim_args, text):
    with pytest.raises(OptimArgsError, match=text):
        optimhub.create_optimizer("grokadamw", make_tiny_lm(), optim_args=optim_args)


_LOGGER_PROBE = textwrap.dedent("""
    import importlib, json, logging, sys
    sys.path.insert(0, {tests!r})
    root = logging.getLogger()
    root.setLevel(logging.ERROR)           # the user's choice; no handlers yet
    before = [root.level, list(root.handlers)]
    import optimhub
    from conftest import lm_batch, lm_loss, make_tiny_lm
    model = make_tiny_lm()
    optimizer = optimhub.create_optimizer("grokadamw", model)
    lm_loss(model, lm_batch()).backward()
    optimizer.step()
    after = [root.level, list(root.handlers)]
    importlib.reload(sys.modules["grokadamw.grokadamw"])  # the import's basicConfig, bare
    bare = [root.level, len(root.handlers)]
    print(json.dumps({{"same": before == after, "after": [after[0], len(after[1])],
                       "bare": bare}}))
""")


def test_the_users_root_logger_survives_the_backend_import():
    """``import grokadamw`` runs logging.basicConfig(level=INFO); the core undoes it."""
    tests = str(__import__("pathlib").Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", _LOGGER_PROBE.format(tests=tests)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same"] and report["after"] == [40, 0]  # ERROR, no handler added
    assert report["bare"] == [20, 1]  # what the import alone does: INFO plus a handler


def test_saving_through_dcp_leaves_a_trained_state_as_it_was(tmp_path):
    """DCP's ``get_state_dict`` primes (one zero-gradient step at lr 0) an optimizer whose
    ``optimizer.state`` is empty: with GrokAdamW's state only in its groups, every save
    counted a step and decayed its moments and EMA (the resumed run ended 4.7e-2 off).
    Now the save leaves it as it was, and a fresh optimizer resumes it bit for bit."""
    from optimhub import distributed_checkpoint

    model = make_tiny_lm()
    optimizer = _build(model)
    _steps(model, optimizer, range(2))
    before = {i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
              for i, s in optimizer.state_dict()["state"].items()}
    distributed_checkpoint.save(model, optimizer, tmp_path)
    after = optimizer.state_dict()["state"]
    assert all(after[i]["step"] == 2 for i in before)
    assert all(torch.equal(after[i][k], v) for i, s in before.items() for k, v in s.items()
               if isinstance(v, torch.Tensor))
    resumed_model = make_tiny_lm(seed=99)
    resumed = _build(resumed_model)
    distributed_checkpoint.load(resumed_model, resumed, tmp_path)
    _steps(model, optimizer, range(2, 4))
    _steps(resumed_model, resumed, range(2, 4))
    for (name, a), b in zip(model.named_parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b), name
