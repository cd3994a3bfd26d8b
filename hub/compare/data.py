"""The data every ``optimhub compare`` run sees: a synthetic language, made here.

Nothing is downloaded. The language is a mixture of ``topics`` sparse first-order Markov
chains over a small vocabulary: each sequence picks one topic and follows its chain, in
which every token has only ``successors`` possible next tokens. A model learns it in
two stages, which is what makes the curves of different optimizers differ:

- the bigram statistics, pooled over topics (the embedding and ``lm_head`` learn these
  within a few dozen steps);
- which topic the sequence is in, inferred from the tokens so far: only attention over
  the context can do that, so the attention and MLP weights (what low-rank optimizers
  target) must learn for the loss to approach the floor.

:attr:`SyntheticLanguage.entropy_floor` is the entropy rate with the topic known, a
lower bound no model can beat. Everything is fixed by the seeds: the same language, the
same batches in the same order, for every optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LanguageConfig", "SyntheticLanguage"]


@dataclass(frozen=True)
class LanguageConfig:
    """The language's shape; ``seed`` fixes its transition tables."""

    vocab_size: int = 64
    topics: int = 4
    successors: int = 4
    length: int = 65  # tokens per sequence: 64 predictions per sequence
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.successors <= self.vocab_size:
            raise ValueError(f"successors must be in [1, vocab_size], got {self.successors}")
        if self.topics < 1 or self.length < 2:
            raise ValueError("a language needs at least one topic and sequences of 2 tokens")


class SyntheticLanguage:
    """A deterministic mixture of sparse Markov chains (see the module docstring)."""

    def __init__(self, config: LanguageConfig | None = None) -> None:
        self.config = config = config or LanguageConfig()
        generator = torch.Generator().manual_seed(config.seed)
        self.transitions = torch.stack(
            [_sparse_chain(config.vocab_size, config.successors, generator)
             for _ in range(config.topics)]
        )
        self._cumulative = self.transitions.cumsum(dim=-1)

    @property
    def entropy_floor(self) -> float:
        """Mean entropy rate (nats/token) of the topics' chains: the cross-entropy a model
        that knew each sequence's topic would reach; a lower bound for any model."""
        rates = [_entropy_rate(chain) for chain in self.transitions]
        return sum(rates) / len(rates)

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` sequences of token ids, shape (count, length)."""
        config = self.config
        tokens = torch.empty(count, config.length, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, config.vocab_size, (count,), generator=generator)
        topic = torch.randint(0, config.topics, (count,), generator=generator)
        for position in range(1, config.length):
            rows = self._cumulative[topic, tokens[:, position - 1]]
            draw = torch.rand(count, 1, generator=generator)
            nxt = torch.searchsorted(rows, draw).squeeze(1)
            tokens[:, position] = nxt.clamp_max(config.vocab_size - 1)  # float round-off
        return tokens

    def batches(self, steps: int, batch_size: int, seed: int) -> torch.Tensor:
        """The training stream: ``steps`` batches, shape (steps, batch_size, length),
        identical for a given seed (every optimizer sees the same data in the same
        order)."""
        generator = torch.Generator().manual_seed(seed)
        return self.sample(steps * batch_size, generator).view(steps, batch_size, -1)

    def held_out(self, count: int, seed: int) -> torch.Tensor:
        """An evaluation batch drawn with its own seed (never trained on)."""
        return self.sample(count, torch.Generator().manual_seed(seed))


def _sparse_chain(vocab: int, successors: int, generator: torch.Generator) -> torch.Tensor:
    """A row-stochastic (vocab, vocab) matrix with ``successors`` nonzeros per row."""
    chain = torch.zeros(vocab, vocab)
    for row in range(vocab):
        columns = torch.randperm(vocab, generator=generator)[:successors]
        weights = torch.rand(successors, generator=generator) + 0.1
        chain[row, columns] = weights / weights.sum()
    return chain


def _entropy_rate(chain: torch.Tensor, iterations: int = 500) -> float:
    """Entropy rate of a Markov chain started uniformly: sum_i pi_i H(P_i), with pi the
    long-run distribution of states (the average of the iterates, which converges even
    for a periodic chain)."""
    chain = chain.double()
    state = torch.full((chain.shape[0],), 1.0 / chain.shape[0], dtype=torch.float64)
    stationary = torch.zeros_like(state)
    for _ in range(iterations):
        state = state @ chain
        stationary += state / iterations
    logs = torch.where(chain > 0, chain.log(), torch.zeros_like(chain))
    return float(-(stationary * (chain * logs).sum(dim=-1)).sum())
