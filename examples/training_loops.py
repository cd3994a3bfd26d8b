"""One training loop, written once, for every kind of optimizer (docs/training-loops.md).

The loop below never asks which optimizer it drives: ``optimhub.drive`` reads the
optimizer's capabilities and does what each needs. It trains a tiny language model with

- ``adamw_torch``: a plain optimizer (clipping, gradient accumulation, cosine schedule);
- ``schedule_free_adamw``: train()/eval() switching, its own warmup, a constant schedule;
- ``lomo``: the fused backward (the update happens inside backward; it clips itself);
- ``adamw_torch`` with ``layerwise=True``: one optimizer per parameter, inside backward;
- ``sgd`` with ``reduce_lr_on_plateau``: a schedule stepped by the evaluation loss;

saves a checkpoint of each through ``torch.save`` and loads it back with
``torch.load(weights_only=True)``, and prints one line per run. Run it with
``.venv/bin/python examples/training_loops.py`` (about ten seconds on a laptop CPU).
"""

from __future__ import annotations

import io
import math
from typing import Any

import torch
from torch import nn

import optimhub

VOCAB, WIDTH, LENGTH = 32, 32, 16
STEPS = 24  # optimizer steps per run
EVAL_EVERY = 8


class TinyLM(nn.Module):
    """A one-block causal language model with Hugging Face module names."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.attn = nn.ModuleDict({k: nn.Linear(WIDTH, WIDTH) for k in ("q_proj", "v_proj")})
        self.mlp = nn.ModuleDict(
            {"up_proj": nn.Linear(WIDTH, 4 * WIDTH), "down_proj": nn.Linear(4 * WIDTH, WIDTH)}
        )
        self.lm_head = nn.Linear(WIDTH, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        h = self.norm(x)
        q, v = self.attn["q_proj"](h), self.attn["v_proj"](h)
        causal = torch.ones(tokens.shape[-1], tokens.shape[-1], dtype=torch.bool).tril()
        scores = (q @ h.transpose(-1, -2) / math.sqrt(WIDTH)).masked_fill(~causal, -math.inf)
        x = x + torch.softmax(scores, dim=-1) @ v
        x = x + self.mlp["down_proj"](torch.relu(self.mlp["up_proj"](self.norm(x))))
        return self.lm_head(x)


def batch(seed: int, size: int = 8) -> torch.Tensor:
    """Sequences that follow a fixed rule (next = 5 * token + 3 mod VOCAB): learnable."""
    generator = torch.Generator().manual_seed(seed)
    tokens = [torch.randint(0, VOCAB, (size,), generator=generator)]
    for _ in range(LENGTH - 1):
        tokens.append((5 * tokens[-1] + 3) % VOCAB)
    return torch.stack(tokens, dim=1)


def loss_fn(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model: nn.Module) -> float:
    return loss_fn(model, batch(seed=10_000, size=32)).item()


def train(name: str, *, schedule: str = "constant", warmup: int = 0,
          max_grad_norm: float | None = None, accumulation: int = 1,
          **optimizer_args: Any) -> dict[str, Any]:
    """The loop: the same code for every optimizer; only the settings differ."""
    torch.manual_seed(0)
    model = TinyLM()
    optimizer = optimhub.create_optimizer(name, model, **optimizer_args)
    scheduler = optimhub.create_scheduler(schedule, optimizer, num_warmup_steps=warmup,
                                          num_training_steps=STEPS)
    driver = optimhub.drive(optimizer, scheduler, max_grad_norm=max_grad_norm,
                            gradient_accumulation_steps=accumulation, model=model)
    train_losses, eval_losses = [], []
    micro_batch = 0
    for step in range(STEPS):
        for _ in range(accumulation):
            loss = loss_fn(model, batch(seed=micro_batch % 16))
            driver.backward(loss)    # loss.backward(), or the backend's fused backward
            driver.step()            # clip, step, schedule, zero_grad: when each applies
            micro_batch += 1
        train_losses.append(loss.item())
        if (step + 1) % EVAL_EVERY == 0:
            with driver.evaluating():     # schedule-free: the averaged weights inside
                eval_losses.append(evaluate(model))
            driver.evaluated(eval_losses[-1])  # metric-driven schedules step here
    driver.finish()                  # schedule-free: keep the averaged weights for good

    with driver.saving():            # what you save is what you evaluated
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain tensors and numbers only
    if driver.layerwise:
        optimizer.close()            # layerwise: remove the backward hooks when done
    return {"train": train_losses, "eval": eval_losses, "lr": driver.lr,
            "checkpoint_keys": sorted(checkpoint)}


RUNS = {
    "adamw_torch": dict(lr=3e-3, weight_decay=0.01, schedule="cosine", warmup=4,
                        max_grad_norm=1.0, accumulation=2),
    "schedule_free_adamw": dict(lr=3e-3, warmup_steps=4, max_grad_norm=1.0, accumulation=2),
    "lomo": dict(lr=0.3, schedule="linear", optim_args="clip_grad_norm=1.0"),
    "adamw_torch layerwise": dict(lr=3e-3, layerwise=True, schedule="cosine", warmup=4),
    "sgd plateau": dict(lr=0.3, optim_args="momentum=0.9", schedule="reduce_lr_on_plateau"),
}


def main() -> None:
    print(f"{'run':<22} {'first loss':>10} {'last loss':>10} {'eval losses':>22} {'final lr':>9}")
    for run, settings in RUNS.items():
        result = train(run.split()[0], **settings)
        evals = " ".join(f"{x:.3f}" for x in result["eval"])
        print(f"{run:<22} {result['train'][0]:>10.4f} {result['train'][-1]:>10.4f} "
              f"{evals:>22} {result['lr']:>9.2e}")


if __name__ == "__main__":
    main()
