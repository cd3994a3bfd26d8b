"""``optimhub.explain`` / ``optimhub explain`` and the routed memory estimate: per parameter
what will step it, per route its totals; the estimate is the sum of the routes' and equals
the state the built optimizer holds."""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest
import torch
from conftest import lm_batch, lm_loss, make_tiny_lm

import optimhub
from optimhub.cli import main
from optimhub.testing import state_bytes

transformers = pytest.importorskip("transformers")

LLAMA_7B = "llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32"


def measured(name: str, **arguments: object) -> int:
    model = make_tiny_lm(width=64)
    optimizer = optimhub.create_optimizer(name, model, **arguments)
    lm_loss(model, lm_batch()).backward()
    optimizer.step()
    return state_bytes(optimizer)


def test_explain_muon_parameter_by_parameter(tiny_lm):
    result = optimhub.explain("muon", tiny_lm, learning_rate=1e-3, weight_decay=0.1,
                              optim_args="fallback_lr=3e-4")
    q = result.row("layers.0.attn.q_proj.weight")
    assert (q.role, q.route, q.optimizer, q.lr, q.weight_decay) == (
        "matrix", "muon", "muon_torch", 1e-3, 0.1)
    assert q.state_bytes == 16 * 16 * 4  # one fp32 momentum buffer
    head = result.row("lm_head.weight")
    assert (head.role, head.route, head.optimizer, head.lr, head.weight_decay) == (
        "head", "fallback", "adamw_torch", 3e-4, 0.1)
    bias = result.row("layers.0.attn.q_proj.bias")
    assert (bias.role, bias.weight_decay, bias.state_bytes) == ("bias", 0.0, 16 * 4 * 2)
    assert [(r.label, r.select, r.optimizer, r.tensors) for r in result.routes] == [
        ("muon", "matrix, conv", "muon_torch", 12), ("fallback", "*", "adamw_torch", 24)]
    assert [r.name for r in result.rows] == [n for n, _ in tiny_lm.named_parameters()]
    for route in result.routes:  # dense state: the per-parameter bytes add up
        assert route.state_bytes == sum(r.state_bytes for r in result.rows
                                        if r.route == route.label)
    text = str(result)
    assert "layers.0.attn.q_proj.weight" in text and "fallback  *             adamw_torch" in text


@pytest.mark.parametrize(("name", "arguments"), [
    ("muon", {}),
    ("matrix -> muon_torch; norm, bias -> sgd(momentum=0.9); * -> adamw_torch(amsgrad=true)",
     {}),
    ("galore_plus_adamw_8bit", {"optim_args": "rank=8"}),
])
def test_the_estimate_is_the_sum_of_the_routes_and_equals_the_measured_state(name, arguments):
    if "galore" in name:
        pytest.importorskip("galore_torch")
        pytest.importorskip("bitsandbytes")
    model = make_tiny_lm(width=64)
    estimate = optimhub.estimate(name, model, **arguments)
    explained = optimhub.explain(name, model, **arguments)
    assert estimate.source == "routes"
    assert estimate.state_bytes == explained.state_bytes == sum(
        r.state_bytes for r in explained.routes)
    assert estimate.state_bytes == measured(name, **arguments)


def test_a_plain_name_is_explained_as_one_route(tiny_lm):
    result = optimhub.explain("adamw_torch", tiny_lm, weight_decay=0.1, layer_decay=0.5)
    assert [(r.label, r.select) for r in result.routes] == [("adamw_torch", "*")]
    assert result.state_bytes == optimhub.estimate("adamw_torch", tiny_lm).state_bytes
    embed, head = result.row("embed_tokens.weight"), result.row("lm_head.weight")
    assert (embed.depth, embed.lr_scale, head.lr_scale) == (0, 0.125, 1.0)
    assert embed.lr == pytest.approx(5e-5 * 0.125)
    assert "scale" in str(result).splitlines()[2]


def test_a_7b_llama_config_on_the_meta_device_is_explained_in_seconds():
    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008,
                                      num_hidden_layers=32, num_attention_heads=32,
                                      num_key_value_heads=32, vocab_size=32000)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    started = time.perf_counter()
    result = optimhub.explain("muon", model, learning_rate=3e-4, weight_decay=0.1)
    seconds = time.perf_counter() - started
    assert len(result.rows) == 291
    muon, fallback = result.routes
    assert muon.parameters == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert fallback.parameters == 2 * 32000 * 4096 + 65 * 4096
    assert muon.state_bytes == muon.parameters * 4
    assert fallback.state_bytes == fallback.parameters * 8
    assert result.state_bytes == optimhub.estimate("muon", model).state_bytes
    assert seconds < 60, f"{seconds:.1f} s"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_the_command_line_explains_a_name_or_a_route_set():
    code, out, _ = run_cli("explain", "muon", "--model", LLAMA_7B, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] == LLAMA_7B and len(data["parameters"]) == 291
    assert [r["route"] for r in data["routes"]] == ["muon", "fallback"]
    assert data["state_bytes"] == sum(r["state_bytes"] for r in data["routes"])
    code, out, _ = run_cli("explain", "matrix -> muon_torch; * -> adamw_torch", "--model",
                           "llama:hidden=64,layers=1,vocab=128,intermediate=96",
                           "--weight-decay", "0.1", "--layer-decay", "0.5")
    assert code == 0 and "model.layers.0.mlp.up_proj.weight" in out and "scale" in out
    code, _, err = run_cli("explain", "matrix -> muon_torch", "--model",
                           "llama:hidden=64,layers=1,vocab=128,intermediate=96")
    assert code == 2 and "taken by no route" in err
