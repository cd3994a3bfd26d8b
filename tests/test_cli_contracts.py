"""The command's contracts, whatever the subcommand: one JSON object on stdout for every
failure under ``--json``, documented exit codes, quiet end in a closed pipe, tables that
fit the terminal, help that does not split an example, and ``estimate --model`` for any
transformers config.

Exit codes (hub/cli.py): 0 done; 1 a problem was found (doctor, plugins) or an
unexpected error (a bug, with its traceback on stderr); 2 bad input; 141 the reader of
stdout went away.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import sign_sgd_plugin

import optimhub
from optimhub import listing
from optimhub.cli import main
from optimhub.testing import hidden_backend

TINY_GPT2 = "gpt2:n_embd=32,n_layer=2,n_head=4,vocab_size=64,n_positions=32"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_json_object(out: str) -> dict:
    data = json.loads(out)  # the whole of stdout is one JSON document
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------------------ --json errors
@pytest.mark.parametrize(
    ("argv", "error_type", "message"),
    [
        (["info", "adamw_torh"], "UnknownOptimizerError", "'adamw_torch'"),
        (["list", "--capability", "schedulefree"], "OptimArgsError", "'schedule_free'"),
        (["estimate", "galore_adamw", "--params", "7B"], "CapabilityError",
         "bare parameter count"),
        (["estimate", "adamw_torch", "--model", "gtp2:n_layer=2"], "OptimArgsError",
         "'gpt2'"),
        (["compare", "adamw_torh", "--no-progress"], "UnknownOptimizerError",
         "'adamw_torch'"),
    ],
    ids=["info", "list-capability", "estimate", "estimate-model", "compare"],
)
def test_json_failures_write_one_error_object_and_exit_2(capsys, tmp_path, argv, error_type,
                                                         message):
    if argv[0] == "compare":
        argv = [*argv, "--out", str(tmp_path / "out")]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 2
    data = one_json_object(out)
    assert set(data) == {"error", "type"}
    assert data["type"] == error_type and message in data["error"], data


def test_json_usage_error_is_an_object_too(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["estimate", "adamw_torch", "--json"])  # neither --model nor --params
    assert caught.value.code == 2
    captured = capsys.readouterr()
    data = one_json_object(captured.out)
    assert data["type"] == "UsageError" and "--params" in data["error"]


def test_an_unexpected_error_is_exit_1_with_the_traceback_on_stderr(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(listing, "list_optimizers", broken)
    code, out, err = run(capsys, "list", "--json")
    assert code == 1
    assert one_json_object(out) == {"error": "a bug", "type": "RuntimeError"}
    assert "Traceback" in err and "RuntimeError: a bug" in err
    code, out, err = run(capsys, "list")
    assert code == 1 and out == "" and "RuntimeError: a bug" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"optimhub {optimhub.__version__}"


# --------------------------------------------------------------------------- exit codes
def test_plugins_exit_1_when_a_plugin_failed_unless_told_not_to(capsys, plugin_factory,
                                                               use_host):
    plugin_factory.add("broken", "raise ImportError('no such thing')")
    plugin_factory.add("fine", sign_sgd_plugin("fine_opt"))
    use_host(plugin_factory.host())
    with pytest.warns(Warning, match="broken"):
        code, out, _ = run(capsys, "plugins", "--json")
    assert code == 1 and one_json_object(out)["failures"][0]["plugin"] == "broken"
    code, out, _ = run(capsys, "plugins", "--exit-zero")
    assert code == 0 and "ImportError: no such thing" in out
    code, out, _ = run(capsys, "doctor", "fine_opt", "--json")
    assert code == 1 and one_json_object(out)["plugin_failures"]


def test_plugins_and_doctor_exit_0_when_all_is_well(capsys, plugin_factory, use_host):
    plugin_factory.add("fine", sign_sgd_plugin("fine_opt"))
    use_host(plugin_factory.host())
    assert run(capsys, "plugins")[0] == 0
    code, out, _ = run(capsys, "doctor", "adamw_torch", "fine_opt", "--json")
    assert code == 0
    assert one_json_object(out)["selected"] == ["adamw_torch", "fine_opt"]


def test_doctor_exit_1_when_a_selected_name_is_unusable_here(capsys):
    if optimhub.listing.backend_status(optimhub.get_spec("adalomo")).usable:
        pytest.skip("adalomo is usable on this machine")
    code, out, _ = run(capsys, "doctor", "adalomo", "adamw_torch")
    assert code == 1 and "adalomo" in out
    assert run(capsys, "doctor", "adalomo", "--exit-zero")[0] == 0
    code, out, _ = run(capsys, "doctor", "adamw_torh", "--json")
    assert code == 2 and one_json_object(out)["type"] == "UnknownOptimizerError"


def test_a_backend_that_fails_to_import_fails_doctor(capsys, plugin_factory, use_host):
    plugin_factory.add("ghost", '''
import optimhub

@optimhub.hookimpl
def optimhub_register_optimizers(register):
    register.optimizer(
        {"name": "ghost_opt", "summary": "its backend breaks on import",
         "distribution": "optimhub-test-ghost", "import_name": "optimhub_test_ghost_backend",
         "hyperparameters": ["lr"]},
        lambda request: None,
    )
''')
    (plugin_factory.root / "optimhub_test_ghost_backend.py").write_text(
        "raise ImportError('libghost.so: cannot open shared object file')\n")
    use_host(plugin_factory.host())
    sys.modules.pop("optimhub_test_ghost_backend", None)
    code, out, _ = run(capsys, "doctor", "--json")  # nothing selected: every installed one
    assert code == 1
    ghost = next(r for r in one_json_object(out)["backends"]
                 if r["import_name"] == "optimhub_test_ghost_backend")
    assert not ghost["importable"] and "libghost" in ghost["unusable"]["ghost_opt"]


# ------------------------------------------------------------------------- closed pipe
def test_a_closed_pipe_ends_quietly_with_141(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "optimhub", "list"], stdout=write_end,
            stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            env={**os.environ, "OPTIMHUB_DISABLE_PLUGIN_AUTOLOAD": "1"},
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


# ------------------------------------------------------------------------------ tables
def _widest(text: str, skip: set[str] = frozenset()) -> int:
    return max(len(line) for line in text.splitlines() if line.strip() not in skip)


@pytest.mark.parametrize(
    "argv",
    [["list"], ["info", "galore_adamw"], ["plugins"], ["doctor", "adamw_torch"],
     ["estimate", "adafactor", "--params", "7B"]],
    ids=lambda argv: argv[0],
)
@pytest.mark.parametrize("width", [60, 100])
def test_tables_fit_the_terminal_width(capsys, monkeypatch, argv, width):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, _ = run(capsys, *argv)
    assert code == 0
    skip: set[str] = set()
    if argv[0] == "info":  # code is shown whole, to be copied
        monkeypatch.delenv("COLUMNS")
        data = one_json_object(run(capsys, "info", argv[1], "--json")[1])
        for key in ("example_python", "example_trainer", "example_stock_trainer"):
            skip |= {line.strip() for line in (data[key] or "").splitlines()}
    assert _widest(out, skip) <= width, out


def test_compare_report_fits_the_terminal_width(monkeypatch):
    from optimhub.compare.report import format_table
    from optimhub.compare.results import Comparison, Problem, RunResult

    def ran(name: str, optimizer: str, relative: float) -> RunResult:
        return RunResult(name, optimizer, "ok", lr=1e-3, final_loss=2.345, eval_loss=2.301,
                         state_bytes_per_param=12.0, relative_step_time=relative)

    comparison = Comparison(
        Problem(steps=24), [ran("adamw_torch", "adamw_torch", 1.0),
                            ran("sfadamw", "schedule_free_adamw", 1.23),
                            RunResult("adalomo", "adalomo", "unavailable",
                                      reason="optimizer 'adalomo' runs only on a CUDA device "
                                      "and none is available; use a machine with a GPU")],
        baseline="adamw_torch", baseline_added=True, entropy_floor=1.5, parameters=123_456,
        threads=1)
    monkeypatch.setenv("COLUMNS", "72")
    text = format_table(comparison)
    assert _widest(text) <= 72, text
    for word in ("sfadamw", "(schedule_free_adamw)", "1.23x", "unavailable", "GPU"):
        assert word in " ".join(text.split()), word
    monkeypatch.delenv("COLUMNS")
    assert "  adalomo: optimizer 'adalomo' runs only on a CUDA device and none" in (
        format_table(comparison))  # into a pipe: one line per reason


def test_estimate_help_never_splits_an_example(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    with pytest.raises(SystemExit):
        main(["estimate", "--help"])
    out = capsys.readouterr().out
    for example in ("llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32",
                    "gpt2:n_embd=768,n_layer=12,n_head=12", "rank=128,proj=svd",
                    "  optimhub estimate adamw_bnb_8bit --params 7B --dtype bf16\n"):
        assert example in out, out
    description = out[out.index("Optimizer state"):out.index("positional arguments")]
    assert max(len(line) for line in description.splitlines()) <= 50  # prose still wraps


# ------------------------------------------------------------- estimate --model configs
def _reference_bytes(model) -> int:
    return optimhub.estimate("adamw_torch", model).state_bytes


def test_estimate_model_from_an_architecture_with_sizes(capsys):
    transformers = pytest.importorskip("transformers")
    code, out, _ = run(capsys, "estimate", "adamw_torch", "--model", TINY_GPT2, "--json")
    assert code == 0
    data = one_json_object(out)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32))
    assert data["trainable_params"] == sum(p.numel() for p in reference.parameters())
    assert data["state_bytes"] == _reference_bytes(reference) == 8 * data["trainable_params"]


def test_estimate_model_from_a_config_json_low_rank_and_bf16(capsys, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=128,
                                      architectures=["LlamaForCausalLM"])
    path = tmp_path / "config.json"
    path.write_text(config.to_json_string())
    argv = ["estimate", "galore_adamw", "--model", str(path), "--optim-args", "rank=8",
            "--optim-target-modules", ".*attn.*", ".*mlp.*", "--dtype", "bf16", "--json"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    data = one_json_object(out)
    model = transformers.LlamaForCausalLM(config).to("meta")
    expected = optimhub.estimate("galore_adamw", model.to(dtype=__import__("torch").bfloat16),
                                 optim_args="rank=8", optim_target_modules=[".*attn.*",
                                                                            ".*mlp.*"])
    assert data["state_bytes"] == expected.state_bytes
    assert data["param_bytes"] == 2 * data["total_params"]
    assert run(capsys, *argv[:3], str(tmp_path), *argv[4:])[0] == 0  # the folder works too
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "estimate", "adamw_torch", "--model", str(tmp_path / "empty"))
    assert code == 2 and "cannot read" in err and "config.json" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpt2:n_embed=32", "did you mean 'n_embd'"),
        ("gpt2:n_layer=1.5", "'1.5' is not an integer"),
        ("gpt2:tie_word_embeddings=maybe", "'maybe' is not true/false"),
        ("lama:hidden_size=32", "did you mean 'llama'"),
        ("missing.json", "cannot read"),
    ],
)
def test_estimate_model_errors_name_the_value(capsys, text, message):
    pytest.importorskip("transformers")
    code, out, err = run(capsys, "estimate", "adamw_torch", "--model", text)
    assert code == 2 and out == ""
    assert message.lower() in err.lower(), err


def test_estimate_model_without_transformers_names_the_extra(capsys):
    with hidden_backend("transformers"):
        code, out, _ = run(capsys, "estimate", "adamw_torch", "--model", TINY_GPT2, "--json")
    assert code == 2
    data = one_json_object(out)
    assert data["type"] == "MissingBackendError"
    assert 'pip install "optimhub[transformers]"' in data["error"]


def test_the_llama_shorthand_still_needs_no_transformers(capsys):
    with hidden_backend("transformers"):
        code, out, _ = run(capsys, "estimate", "adamw_torch", "--model",
                           "llama:hidden=64,layers=2,vocab=128,intermediate=128", "--json")
    assert code == 0 and one_json_object(out)["trainable_params"] > 0
