"""Shared fixtures: small models, and plugin hosts with controlled third-party plugins."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from torch import nn

from optimhub import plugin_host as plugin_module

SEED = 0


class Block(nn.Module):
    """One transformer-ish block with HF-style module names (attn.q_proj, mlp.up_proj...)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(width)
        self.attn = nn.ModuleDict(
            {k: nn.Linear(width, width) for k in ("q_proj", "k_proj", "v_proj", "o_proj")}
        )
        self.post_attention_layernorm = nn.LayerNorm(width)
        self.mlp = nn.ModuleDict(
            {"up_proj": nn.Linear(width, 2 * width), "down_proj": nn.Linear(2 * width, width)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layernorm(x)
        q, k, v = (self.attn[n](h) for n in ("q_proj", "k_proj", "v_proj"))
        scores = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.attn["o_proj"](scores @ v)
        h = self.post_attention_layernorm(x)
        return x + self.mlp["down_proj"](torch.relu(self.mlp["up_proj"](h)))


class TinyLM(nn.Module):
    """A tiny causal-LM-shaped model: embedding, two blocks, final norm, lm_head."""

    def __init__(self, vocab: int = 32, width: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def make_tiny_lm(seed: int = SEED, **kwargs: int) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(**kwargs)


@pytest.fixture
def tiny_lm() -> TinyLM:
    return make_tiny_lm()


def lm_batch(seed: int = 1, vocab: int = 32, batch: int = 4, length: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:].reshape(-1)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)


@pytest.fixture
def isolated_bnb_overrides() -> Iterator[None]:
    """Clear bitsandbytes' process-wide override table for one test, then restore it:
    HF-style index overrides left by other tests would change which tensors get 32-bit
    state."""
    if "bitsandbytes" not in sys.modules:
        yield
        return
    manager = sys.modules["bitsandbytes"].optim.GlobalOptimManager.get_instance()
    saved = (dict(manager.index2config), list(manager.module_weight_config_triple))
    manager.index2config.clear()
    manager.module_weight_config_triple.clear()
    yield
    manager.index2config.update(saved[0])
    manager.module_weight_config_triple.extend(saved[1])


# ----------------------------------------------------------------------------- plugins
class PluginFactory:
    """Writes real third-party plugin distributions (a module plus a .dist-info with an
    ``optimhub`` entry point) into a temporary folder on sys.path, so that
    ``importlib.metadata.entry_points`` finds them exactly as it finds installed ones."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.names: list[str] = []
        monkeypatch.syspath_prepend(str(root))
        self._monkeypatch = monkeypatch

    def add(self, entry_point: str, source: str, *, distribution: str | None = None,
            version: str = "1.0") -> str:
        module = f"optimhub_test_plugin_{entry_point}"
        distribution = distribution or f"optimhub-test-{entry_point}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(f"[optimhub]\n{entry_point} = {module}\n")
        importlib.invalidate_caches()
        self.names.append(entry_point)
        self._monkeypatch.delitem(sys.modules, module, raising=False)
        return module

    def entry_points(self) -> Callable[[], list]:
        """Only the entry points this factory made (installed plugins stay out)."""
        return lambda: [ep for ep in entry_points(group="optimhub") if ep.name in self.names]

    def host(self, **environ: str) -> plugin_module.PluginHost:
        return plugin_module.PluginHost(entry_points=self.entry_points(), environ=environ)


@pytest.fixture
def plugin_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PluginFactory:
    site = tmp_path / "site"
    site.mkdir()
    return PluginFactory(site, monkeypatch)


@pytest.fixture
def use_host() -> Iterator[Callable[[plugin_module.PluginHost], plugin_module.PluginHost]]:
    """Make a host the process-wide one for one test, then restore the previous host."""
    previous: list[plugin_module.PluginHost] = []

    def install(host: plugin_module.PluginHost) -> plugin_module.PluginHost:
        previous.append(plugin_module.reset_plugins(host))
        return host

    yield install
    if previous:
        plugin_module.reset_plugins(previous[0])


SIGN_SGD_PLUGIN = '''
import torch
import optimhub

class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(p.grad.sign(), alpha=-group["lr"])

@optimhub.hookimpl
def optimhub_register_optimizers(register):
    register.optimizer(
        {"name": "{NAME}", "summary": "sign descent", "distribution": "optimhub-test-x",
         "import_name": "torch", "hyperparameters": ["lr", "weight_decay"]},
        lambda request: SignSGD(request.param_groups, **request.kwargs),
    )
'''


def sign_sgd_plugin(name: str = "sign_descent") -> str:
    """Source of a working third-party plugin that provides ``name``."""
    return SIGN_SGD_PLUGIN.replace("{NAME}", name)
