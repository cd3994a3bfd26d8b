"""Every snippet ``optimhub info NAME`` prints runs (issue 15, item 11).

For each catalog name, the three snippets (``create_optimizer``, ``OptimHubTrainer``, the
stock ``Trainer`` with ``hub_optimizer``) are executed as printed on a tiny Llama: each
builds the named optimizer, without the warning HF's untouched defaults get; a name that
cannot run here fails with the hub's own refusal (missing backend, no CUDA). A few names,
one per loop contract, also train a few steps through their Trainer snippet.

Cost: about 0.2 s per name on a 2-core CPU (a 1-layer, 16-wide model, nothing trained)
plus about 1 s per trained name.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import optimhub
from optimhub.catalog import load_catalog
from optimhub.cli import main
from optimhub.errors import BackendUnavailableError, MissingBackendError, OptimHubWarning
from optimhub.listing import get_spec
from optimhub.snippets import python_snippet, stock_trainer_snippet, trainer_snippet
from optimhub.testing import readiness
from optimhub.trainer_settings import stock_trainer_problem, trainer_problem

VOCAB = 32


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, vocab_size=VOCAB,
                                        max_position_embeddings=16))


def data(count: int = 32, length: int = 8) -> list[dict[str, list[int]]]:
    rows = []
    for i in range(count):
        tokens = [(i + 3 * k) % VOCAB for k in range(length)]
        rows.append({"input_ids": tokens, "labels": tokens})
    return rows


def run_snippet(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"model": tiny_llama(), "data": data(),
                                 "TrainingArguments": TrainingArguments, "Trainer": Trainer}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


def built(kind: str, namespace: dict[str, Any]) -> torch.optim.Optimizer:
    """Build the snippet's optimizer (the Trainers build it when asked, as train() does)."""
    if kind == "python":
        return namespace["optimizer"]
    trainer = namespace["trainer"]
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    optimizer = trainer.optimizer
    return getattr(optimizer, "optimizer", optimizer)


SNIPPETS = {"python": python_snippet, "trainer": trainer_snippet,
            "stock trainer": stock_trainer_snippet}


@pytest.mark.parametrize("name", sorted(load_catalog()))
def test_every_snippet_builds_the_name_or_is_refused_with_the_reason(name, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippets write output_dir="out"
    spec = get_spec(name)
    state = readiness(spec)
    ran = written = 0
    for kind, make in SNIPPETS.items():
        code = make(spec)
        if code is None:  # refused, with the reason `optimhub info` prints instead
            problem = trainer_problem if kind == "trainer" else stock_trainer_problem
            assert kind != "python" and problem(spec), (name, kind)
            continue
        written += 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if state.action == "run":
                optimizer = built(kind, run_snippet(code))
                if spec.has("matrix_only"):  # written in its routed form
                    assert name in optimizer.routes, (kind, code)
                else:
                    assert optimhub.spec_of(optimizer).name == name, (kind, code)
                ran += 1
            else:
                expected = MissingBackendError if state.action == "missing" else (
                    BackendUnavailableError)
                with pytest.raises(expected):
                    built(kind, run_snippet(code))
        defaults = [str(w.message) for w in caught if issubclass(w.category, OptimHubWarning)
                    and "HF's default" in str(w.message)]
        assert defaults == [], (kind, defaults)
    assert ran in (0, written)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("adamw_torch", "stock trainer"), ("schedule_free_adamw", "trainer"),
     ("lomo", "trainer"), ("galore_adamw_layerwise", "trainer"),
     ("schedule_free_adamw", "stock trainer")],
)
def test_a_few_snippets_train(name, kind, tmp_path, monkeypatch):
    spec = get_spec(name)
    if readiness(spec).action != "run":
        pytest.skip(readiness(spec).reason)
    monkeypatch.chdir(tmp_path)
    namespace = run_snippet(SNIPPETS[kind](spec))
    trainer = namespace["trainer"]
    trainer.args.max_steps = 6
    trainer.args.per_device_train_batch_size = 4
    trainer.args.logging_steps = 1
    trainer.args.disable_tqdm = True
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_info_prints_these_snippets(capsys):
    import json

    assert main(["info", "lomo", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    spec = get_spec("lomo")
    assert data["example_python"] == python_snippet(spec)
    assert data["example_trainer"] == trainer_snippet(spec)
    assert data["example_stock_trainer"] is None
    assert "inside backward" in data["stock_trainer_problem"]
    assert "max_grad_norm=0" in data["example_trainer"]
    assert main(["info", "schedule_free_sgd"]) == 0
    out = capsys.readouterr().out
    assert out.count('lr_scheduler_type="constant"') == 2  # both Trainer snippets
