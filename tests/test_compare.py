"""`optimhub compare`: the table, the files it writes, unavailable names, bad input.

One short comparison (adamw_torch added as the baseline, lomo through its fused
backward, two names that cannot run here) is shared by the module; the checks on bad
input fail before any training, so they cost nothing.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from conftest import sign_sgd_plugin

from optimhub import OptimArgsError, OptimHubWarning, UnknownOptimizerError
from optimhub.cli import main
from optimhub.compare.data import LanguageConfig, SyntheticLanguage
from optimhub.compare.model import build_model
from optimhub.compare.progress import make_progress
from optimhub.compare.report import COLUMNS
from optimhub.compare.settings import (
    DEFAULT_RANK,
    DEFAULT_TARGET_MODULES,
    parse_lr_overrides,
    plan_runs,
)
from optimhub.testing import hidden_backend

STEPS = 24
NAMES = ("lomo", "adalomo", "adamw_torch_xla")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """The text-mode command, run once for the module (capsys is function-scoped, so
    stdout is captured by hand)."""
    import contextlib

    out = tmp_path_factory.mktemp("compare")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["compare", *NAMES, "--steps", str(STEPS), "--out", str(out),
                     "--no-progress"])
    return code, buffer.getvalue(), out


@pytest.fixture(scope="module")
def results(text_run: tuple[int, str, Path]) -> dict:
    return json.loads((text_run[2] / "results.json").read_text())


def _rows(results: dict) -> dict[str, dict]:
    return {row["name"]: row for row in results["rows"]}


def test_table_has_a_row_per_name_and_the_columns(text_run):
    code, out, _ = text_run
    assert code == 0  # unavailable names are reported, not failures
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("name "))
    assert header.split() == " ".join(COLUMNS).split()
    table = lines[lines.index(header) + 2:]
    first_cells = [line.split()[0] for line in table[:4]]
    assert first_cells == ["adamw_torch", "lomo", "adalomo", "adamw_torch_xla"]
    assert "adamw_torch [added]" in table[0]
    assert "adamw_torch was added as the baseline" in out
    assert table[0].split()[-1] == "ok" and "1.00x" in table[0]
    assert table[1].split()[-1] == "ok"


def test_unavailable_names_are_listed_with_the_hub_reason(text_run, results):
    _, out, _ = text_run
    rows = _rows(results)
    assert rows["adalomo"]["status"] == "unavailable"
    assert "runs only on a CUDA device" in rows["adalomo"]["reason"]
    assert rows["adamw_torch_xla"]["status"] == "unavailable"
    assert "pip install 'torch_xla[tpu]'" in rows["adamw_torch_xla"]["reason"]
    for name in ("adalomo", "adamw_torch_xla"):
        assert rows[name]["final_loss"] is None and rows[name]["losses"] == []
        assert f"  {name}: {rows[name]['reason']}" in out


def test_losses_decrease_and_the_baseline_is_the_time_unit(results):
    rows = _rows(results)
    adamw = rows["adamw_torch"]
    assert adamw["baseline"] is True and results["baseline_added"] is True
    losses = adamw["losses"]
    assert len(losses) == STEPS and adamw["steps_run"] == STEPS
    assert adamw["final_loss"] < losses[0] - 0.5  # from ln(64) = 4.16 towards the floor
    assert adamw["final_loss"] > results["language"]["entropy_floor"]
    assert adamw["relative_step_time"] == 1.0
    window = results["final_loss_window"]
    assert adamw["final_loss"] == pytest.approx(sum(losses[-window:]) / window)
    lomo = rows["lomo"]
    assert lomo["final_loss"] < lomo["losses"][0] - 0.5  # fused backward really trains
    assert lomo["relative_step_time"] > 0


def test_state_memory_is_measured(results):
    rows = _rows(results)
    # fp32 AdamW: exp_avg + exp_avg_sq, 8 bytes per parameter (step counters left out).
    assert rows["adamw_torch"]["state_bytes_per_param"] == 8.0
    assert rows["adamw_torch"]["state_bytes"] == 8 * results["model"]["parameters"]
    assert rows["lomo"]["state_bytes_per_param"] == 0.0
    assert rows["lomo"]["lr_source"] == "stateless"


def test_png_and_results_json_are_valid_files(text_run, results):
    _, out, folder = text_run
    png = folder / "compare.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 800 and height > 400
    assert f"plot:    {png}" in out and f"results: {folder / 'results.json'}" in out
    assert results["steps"] == STEPS and results["columns"] == list(COLUMNS)
    assert [r["name"] for r in results["rows"]] == ["adamw_torch", *NAMES]


def test_json_output_parses(capsys, tmp_path):
    code, out, _ = _run(capsys, "compare", "adamw_torch", "adamw_torch_xla", "--steps", "3",
                        "--out", str(tmp_path), "--json", "--no-progress")
    assert code == 0
    document = json.loads(out)
    assert document["baseline_added"] is False
    assert [r["name"] for r in document["rows"]] == ["adamw_torch", "adamw_torch_xla"]
    assert [r["status"] for r in document["rows"]] == ["ok", "unavailable"]
    assert "losses" not in document["rows"][0]  # the curves are in results.json only
    assert document["png"] == str(tmp_path / "compare.png")
    assert Path(document["results"]).is_file()


def test_without_matplotlib_the_table_and_json_still_come(capsys, tmp_path):
    with hidden_backend("matplotlib"):
        code, out, _ = _run(capsys, "compare", "adamw_torch", "--steps", "2",
                            "--out", str(tmp_path), "--no-progress")
    assert code == 0
    assert 'no plot: the compare plot needs matplotlib, which is not installed: pip install ' \
        '"optimhub[compare]"' in out
    assert not (tmp_path / "compare.png").exists()
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["status"] == "ok"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["adamw_torh"], "'adamw_torch'"),
        (["lomo", "--optim-args", "lomo:clip_grad_nrom=1.0"], "clip_grad_norm"),
        (["lomo", "--optim-args", "sgd:momentum=0.9"], "--optim-args names 'sgd'"),
        (["lomo", "--lr", "lomo=fast"], "is not a number"),
        (["lomo", "--lr", "-1"], "finite number > 0"),
        (["lomo", "--steps", "0"], "steps must be a whole number >= 1"),
    ],
)
def test_bad_input_fails_before_training(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "compare", *argv, "--out", str(out), "--no-progress")
    assert code == 2 and message in err
    assert not (out / "results.json").exists()  # nothing trained, nothing written


def test_plans_use_spec_defaults_and_user_overrides():
    plans = {p.name: p for p in plan_runs(
        ["apollo_adamw", "apollo_mini", "adamw_8bit"],
        lr_by_name={"apollo_mini": 0.02},
        optim_args_by_name={"apollo_adamw": "scale=2"},
    )}
    assert list(plans) == ["adamw_torch", "apollo_adamw", "apollo_mini", "adamw_8bit"]
    assert plans["adamw_torch"].added and plans["adamw_torch"].baseline
    apollo = plans["apollo_adamw"]
    assert dict(apollo.optim_args) == {"rank": DEFAULT_RANK, "scale": 2.0}
    assert apollo.target_modules == DEFAULT_TARGET_MODULES and apollo.lr_source == "low_rank"
    assert dict(plans["apollo_mini"].optim_args) == {}  # its own rank 1 is already small
    assert plans["apollo_mini"].lr == 0.02
    assert plans["adamw_8bit"].spec.name == "adamw_bnb_8bit"  # an alias
    assert plans["adamw_8bit"].target_modules is None


def test_the_added_baseline_takes_overrides_too():
    plans = plan_runs(["lomo", "lomo"], lr_by_name={"adamw_torch": 1e-3})
    assert [(p.name, p.lr, p.lr_source) for p in plans] == [
        ("adamw_torch", 1e-3, "--lr NAME="), ("lomo", 1.0, "stateless")]


def test_override_parsing():
    assert parse_lr_overrides(["1e-3", "lomo=0.5"]) == (1e-3, {"lomo": 0.5})
    with pytest.raises(OptimArgsError, match="--lr 'lomo=0'"):
        parse_lr_overrides(["lomo=0"])
    with pytest.raises(UnknownOptimizerError):
        plan_runs(["no_such_optimizer"])


def test_a_name_whose_plugin_failed_is_unavailable(plugin_factory, use_host):
    plugin_factory.add("alpha", sign_sgd_plugin("contested"), distribution="optimhub-alpha")
    plugin_factory.add("beta", sign_sgd_plugin("contested"), distribution="optimhub-beta")
    use_host(plugin_factory.host())
    with pytest.warns(OptimHubWarning, match="claimed by both"):
        plans = plan_runs(["contested"])
    assert [p.name for p in plans] == ["adamw_torch", "contested"]
    assert plans[1].spec is None and "contested" in plans[1].unavailable


def test_the_problem_is_deterministic():
    language = SyntheticLanguage(LanguageConfig())
    first = language.batches(2, 3, seed=5)
    assert first.shape == (2, 3, 65) and first.max() < 64
    assert (first == SyntheticLanguage().batches(2, 3, seed=5)).all()
    assert not (first == language.batches(2, 3, seed=6)).all()
    assert 0.5 < language.entropy_floor < 2.0  # 4 successors per token: at most ln 4 = 1.39
    a, b = build_model(0), build_model(0)
    assert all((x == y).all() for x, y in zip(a.parameters(), b.parameters(), strict=True))
    names = {n for n, _ in a.named_parameters()}
    assert {"layers.0.self_attn.q_proj.weight", "layers.1.mlp.gate_proj.weight",
            "embed_tokens.weight", "lm_head.weight"} <= names


def test_text_progress_bar_without_tqdm():
    stream = io.StringIO()  # not a terminal: one line at the start, one at the end
    with make_progress(stream, use_tqdm=False)("2 optimizers", 3) as bar:
        for text in ("a", "b", "lowest loss: lomo 1.500"):
            bar.update(text)
    assert stream.getvalue().splitlines() == [
        "2 optimizers: training 3 steps...", "2 optimizers: 3/3 steps; lowest loss: lomo 1.500"]


def test_every_catalog_name_can_be_planned():
    """Planning reads every spec's options (a rank without a numeric default included:
    heavyball's PSGD-LRA derives it) without training anything."""
    from optimhub import list_optimizers
    from optimhub.compare.settings import plan_runs

    names = [spec.name for spec in list_optimizers()]
    plans = plan_runs(names)
    assert {plan.name for plan in plans} == set(names)
    lra = next(plan for plan in plans if plan.name == "heavyball_psgdlra")
    assert "rank" not in lra.optim_args
    # a name that takes no lr is not given one (an explicit lr would be refused)
    assert "lr" not in next(p for p in plans if p.name == "pto_a2grad").create_kwargs()
    assert next(p for p in plans if p.name == "adamw_torch").create_kwargs()["lr"] > 0



def test_adam_mini_reads_the_compare_models_heads_from_its_config():
    """compare's model speaks HF's config vocabulary (num_attention_heads), so Adam-mini
    partitions its attention weights without options."""
    pytest.importorskip("adam_mini")
    import optimhub
    from optimhub.compare.model import TinyCausalLM

    model = TinyCausalLM()
    assert model.config.num_attention_heads == model.config.num_heads == 4
    optimizer = optimhub.create_optimizer("adam_mini", model, lr=1e-3)
    assert optimizer.n_heads == 4 and optimizer.dim == model.config.hidden_size


def test_a_name_that_takes_no_lr_is_compared_without_a_schedule():
    """A2Grad computes its own step size: compare gives it no lr and no lr scheduler (its
    groups have no lr to scale), and it trains beside AdamW."""
    pytest.importorskip("pytorch_optimizer")
    from optimhub.compare.runner import compare

    comparison = compare(["pto_a2grad", "pto_ranger21"], steps=2, batch_size=4)
    statuses = {r.name: (r.status, r.reason) for r in comparison.results}
    # Ranger21 needs the run length (num_iterations): compare gives max_steps
    assert statuses == {"adamw_torch": ("ok", ""), "pto_a2grad": ("ok", ""),
                        "pto_ranger21": ("ok", "")}


def test_a_backend_that_refuses_its_build_is_one_row_not_the_whole_comparison():
    """Alice's default leading basis (40) exceeds compare's small rank: the backend raises
    at build; that row says so and the others still train."""
    pytest.importorskip("pytorch_optimizer")
    from optimhub.compare.runner import compare

    comparison = compare(["pto_alice"], steps=2, batch_size=4)
    rows = {r.name: r for r in comparison.results}
    assert rows["adamw_torch"].status == "ok"
    assert rows["pto_alice"].status == "error"
    assert "leading_basis" in rows["pto_alice"].reason
