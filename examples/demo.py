"""optimhub in one screen: build several optimizers by name and train a tiny model with each.

Run with ``.venv/bin/python examples/demo.py`` (``make demo`` runs ``optimhub compare``, the
command-line comparison, instead). For each name the demo asks optimhub for the optimizer,
trains a small attention-shaped model on generated data for a few steps on the CPU, and
prints a table. Names whose backend is missing or cannot
run here are listed with the reason optimhub gives; the demo itself never fails on them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import optimhub

STEPS = 30
SEED = 0


class Block(nn.Module):
    """A tiny pre-norm transformer-ish block with HF-style Linear names (attn.q_proj...)."""

    def __init__(self, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.ModuleDict(
            {name: nn.Linear(dim, dim) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
        )
        self.mlp = nn.ModuleDict(
            {"up_proj": nn.Linear(dim, hidden), "down_proj": nn.Linear(hidden, dim)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.attn["q_proj"](h), self.attn["k_proj"](h), self.attn["v_proj"](h)
        weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.attn["o_proj"](weights @ v)
        return x + self.mlp["down_proj"](torch.relu(self.mlp["up_proj"](x)))


class TinyModel(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.block = Block(dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x)).squeeze(-1)


@dataclass
class Case:
    name: str
    lr: float
    overrides: dict[str, Any]


CASES = [
    Case("adamw_torch", 3e-3, {"weight_decay": 0.01}),
    Case("sgd", 1e-2, {"optim_args": "momentum=0.9,nesterov=true"}),
    Case("adafactor_torch", 1e-2, {}),
    # From the example third-party plugin (examples/optimhub-example-plugin).
    Case("sign_sgd", 1e-3, {"optim_args": "momentum=0.9"}),
    Case("schedule_free_adamw", 3e-3, {}),
    Case(
        "apollo_adamw",
        3e-3,
        {"optim_args": "rank=4,scale=1", "optim_target_modules": [r".*attn.*", r".*mlp.*"]},
    ),
]


def make_data(dim: int = 32, batch: int = 16, seq: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, seq, dim, generator=generator)
    teacher = torch.randn(dim, generator=generator)
    y = torch.tanh(x @ teacher / dim**0.5)
    return x, y


def train(case: Case, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    torch.manual_seed(SEED)
    model = TinyModel(x.shape[-1])
    started = time.perf_counter()
    optimizer = optimhub.create_optimizer(
        case.name, model, {"learning_rate": case.lr}, **case.overrides
    )
    spec = optimhub.get_spec(case.name)
    schedule_free = spec.has("schedule_free")
    if schedule_free:
        optimizer.train()  # schedule-free optimizers must be told train / eval mode
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if schedule_free:
        optimizer.eval()
    return {
        "backend": f"{type(optimizer).__module__.split('.')[0]}.{type(optimizer).__name__}",
        "groups": len(optimizer.param_groups),
        "first": losses[0],
        "last": losses[-1],
        "seconds": time.perf_counter() - started,
    }


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def main() -> int:
    print(f"optimhub demo: torch {torch.__version__}, {STEPS} steps of a tiny model on the CPU\n")
    x, y = make_data()
    rows: list[tuple[str, ...]] = []
    skipped: list[tuple[str, str]] = []
    failed = 0
    for case in CASES:
        try:
            result = train(case, x, y)
        except optimhub.OptimHubError as error:  # missing backend, unknown name, ...
            skipped.append((case.name, f"{type(error).__name__}: {first_line(error)}"))
            continue
        except Exception as error:  # a bug, not an unavailable backend: report, go on
            skipped.append((case.name, f"FAILED {type(error).__name__}: {first_line(error)}"))
            failed += 1
            continue
        rows.append(
            (
                case.name,
                result["backend"],
                str(result["groups"]),
                f"{result['first']:.4f}",
                f"{result['last']:.4f}",
                f"{result['seconds']:.2f}",
            )
        )

    header = ("name", "backend class", "groups", "first loss", "last loss", "build+train s")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if skipped:
        print("\nnot run here:")
        for name, reason in skipped:
            print(f"  {name}: {reason}")
    print("\nmore: `optimhub list`, `optimhub info <name>`, docs/ in the repository")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
