"""What building an optimizer costs, asserted as counts that cannot be noise (timings are
in benchmarks/overhead.py): the model is walked once, in torch's own order; the decay
classes that walk yields are HF's; and the Python calls a build makes grow linearly with
the number of parameter tensors, with a small constant per tensor.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import re

import pytest
import torch
from test_param_groups import MODELS, OddLM, hf_decay_names
from test_state_memory import direct
from torch import nn

import optimhub
from optimhub.assemble import _decay_names
from optimhub.param_groups import NO_DECAY_MODULE_TYPES, decay_parameter_names
from optimhub.parameter_source import ParameterSource, walk_model
from optimhub.roles import parameter_roles

transformers = pytest.importorskip("transformers")


class SharedAndEmpty(nn.Module):
    """One block reachable under two names, a bias-less Linear (a ``None`` parameter
    entry), a frozen weight, and a LayerNorm nested below an ordinary module."""

    def __init__(self) -> None:
        super().__init__()
        block = nn.Sequential(nn.Linear(4, 4, bias=False), nn.LayerNorm(4))
        self.first = block
        self.again = block  # the same module: listed once, under "first"
        self.wrapper = nn.ModuleDict({"inner": nn.Sequential(nn.LayerNorm(4))})
        self.head = nn.Linear(4, 2)
        self.head.weight.requires_grad_(False)


class ListsItsOwnWay(nn.Module):
    """A root whose named_parameters() renames (as FSDP's wrappers strip prefixes)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))

    def named_parameters(self, *args, **kwargs):  # type: ignore[override]
        for name, param in super().named_parameters(*args, **kwargs):
            yield name.replace("inner.", ""), param


class SkipsAModule(nn.Sequential):
    """A submodule whose named_modules() hides its second child."""

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # type: ignore[override]
        yield prefix, self
        yield from self[0].named_modules(memo, f"{prefix}.0" if prefix else "0",
                                         remove_duplicate)


WALKED = {**MODELS, "shared": SharedAndEmpty, "own-names": ListsItsOwnWay,
          "skips": lambda: nn.Sequential(SkipsAModule(nn.LayerNorm(4), nn.Linear(4, 4)),
                                         nn.Linear(4, 4))}


@pytest.mark.parametrize("model_name", list(WALKED))
def test_the_walk_lists_exactly_what_named_parameters_and_named_modules_list(model_name):
    model = WALKED[model_name]()
    walk = walk_model(model, NO_DECAY_MODULE_TYPES)
    for found, expected in ((walk.parameters, list(model.named_parameters())),
                            (walk.modules, list(model.named_modules()))):
        assert [n for n, _ in found] == [n for n, _ in expected]
        assert all(a is b for (_, a), (_, b) in zip(found, expected, strict=True))


@pytest.mark.parametrize("model_name", list(WALKED))
def test_the_walk_finds_the_parameters_inside_layer_norms(model_name):
    model = WALKED[model_name]()
    inside = walk_model(model, NO_DECAY_MODULE_TYPES).inside
    expected = {f"{module_name}.{key}" for module_name, module in model.named_modules()
                if module_name and isinstance(module, nn.LayerNorm)
                for key, _ in module.named_parameters()}
    listed = {n for n, _ in model.named_parameters()}
    assert inside == expected & listed


@pytest.mark.parametrize("model_name", [*WALKED, "tied"])
def test_roles_from_the_walk_are_the_roles_from_torchs_walks(model_name):
    """``parameter_roles`` with the walk (the factory's and the router's call) gives what
    it gives walking the model itself, tied names included; a model with a module reached
    twice makes it walk again, since the walk lists that module's names once."""
    model = OddLM() if model_name == "tied" else WALKED[model_name]()
    source = ParameterSource.from_user(model)
    assert source.walk is not None
    with_walk = parameter_roles(model, source.named, source.walk)
    assert with_walk == parameter_roles(model, source.named)
    if model_name == "tied":
        assert source.walk.repeated and any(role.tied for role in with_walk.values())
    if model_name == "shared":
        assert not source.walk.modules_unique


@pytest.mark.parametrize("model_name", [*MODELS, "shared"])
def test_the_decay_classes_of_a_build_are_hfs(model_name):
    """The decay split the factory makes from the walk is HF's, name by name."""
    model = WALKED[model_name]()
    source = ParameterSource.from_user(model)
    built = _decay_names(source)
    listed = {n for n, _ in source.named}
    assert built == listed & decay_parameter_names(model)
    assert built == listed & hf_decay_names(model)


def test_decay_names_keep_hfs_odd_cases():
    """The public function stays HF's set, tied aliases included (the walk lists a tied
    weight once, as named_parameters does)."""
    model = OddLM()
    assert decay_parameter_names(model) == hf_decay_names(model)
    assert "lm_head.weight" in decay_parameter_names(model)
    assert "lm_head.weight" not in {n for n, _ in ParameterSource.from_user(model).named}


# -- linear growth, counted -----------------------------------------------------------


def llama(layers: int) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def calls(build, model: nn.Module) -> int:
    """Python and builtin function calls ``build(model)`` makes (cProfile's count: the
    same on every run, unlike a time), after one untimed call (the first loads plugins).
    The garbage collector is paused, so that no finalizer of an earlier object runs, and
    counts, inside the build; the calls of ``isinstance``'s ABC caches (filled on a type's
    first check in the process, whenever that happens) are not counted. The fewest of two
    profiled builds: once in the whole suite (not reproduced alone, with the same files
    before it, or with every file collected), one build of a routed name counted a few
    hundred calls more than its twin would have; a pass per parameter per parameter
    would show in both."""
    build(model)
    return min(_profiled_calls(build, model) for _ in range(2))


def _profiled_calls(build, model: nn.Module) -> int:
    gc.collect()
    gc.disable()
    try:
        profiler = cProfile.Profile()
        profiler.enable()
        built = build(model)
        profiler.disable()
    finally:
        gc.enable()
    del built
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return sum(row[1] for (filename, _, function), row in stats.items()
               if filename != "<frozen abc>" and "_abc_" not in function)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["adamw_torch", "galore_adamw"])
def test_build_calls_grow_linearly_and_close_to_the_by_hand_build(name):
    """Llama models of 4, 8 and 16 layers (9 parameter tensors per layer): each added
    layer adds the same number of calls (no pass over the parameters per parameter, per
    module or per tree level), and per added tensor the hub makes at most 1.5 times the
    calls of the same optimizer built by hand (``benchmarks/direct.py``: HF's groups and
    the constructor). Before the build was made linear and lean: 144 calls per tensor for
    adamw_torch (by hand: 33), 223 for galore_adamw (by hand: 46)."""
    kwargs = direct.hub_kwargs(name, 4)

    def hub(model: nn.Module):
        return optimhub.create_optimizer(name, model, **kwargs)

    def by_hand(model: nn.Module):
        return direct.build_direct(name, model, 4)

    hub_calls = [calls(hub, llama(layers)) for layers in (4, 8, 16)]
    hand_calls = [calls(by_hand, llama(layers)) for layers in (4, 8, 16)]
    for counts in (hub_calls, hand_calls):
        assert counts[2] - counts[1] == 2 * (counts[1] - counts[0]), counts  # linear
    per_tensor = (hub_calls[1] - hub_calls[0]) / (4 * 9)
    by_hand_per_tensor = (hand_calls[1] - hand_calls[0]) / (4 * 9)
    assert per_tensor <= 1.5 * by_hand_per_tensor, (per_tensor, by_hand_per_tensor)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["muon", "galore_plus_adamw_8bit"])
def test_a_routed_build_grows_linearly(name):
    """Routing adds no pass per parameter per parameter: each added layer adds the same
    number of calls. (galore_plus_adamw_8bit's GaLore route once got one exact module name
    per Linear as its target patterns, and selection tried every module against every
    name: 394 ms at 597 tensors, 55x by hand.)"""
    kwargs = direct.hub_kwargs(name, 4)

    def hub(model: nn.Module):
        return optimhub.create_optimizer(name, model, **kwargs)

    counts = [calls(hub, llama(layers)) for layers in (4, 8, 16)]
    assert counts[2] - counts[1] == 2 * (counts[1] - counts[0]), counts


def test_every_no_decay_pattern_needs_one_of_the_prefilter_literals():
    """``no_decay_by_name`` runs the regex only on names holding ``bias`` or ``norm``. That
    is exact while every pattern is a plain run of letters holding one of them, between
    optional non-capturing groups (no top-level alternation, nothing optional outside the
    groups): then every match contains the run. If HF's list gains a pattern of another
    shape, this fails and the prefilter must change with it."""
    from optimhub import param_groups

    shape = re.compile(r"(?:\(\?:[^()]*\))*(?P<run>[a-z_]+)(?:\(\?:[^()]*\))*")
    for pattern in param_groups.NO_DECAY_NAME_PATTERNS:
        found = shape.fullmatch(pattern)
        assert found is not None, pattern
        assert any(lit in found["run"] for lit in param_groups._NO_DECAY_LITERALS), pattern


@pytest.mark.parametrize("name", [
    "model.layers.0.input_layernorm.weight", "norm.weight", "x.norm", "a.normalizer.weight",
    "blocks.0.attn.q_proj.bias", "Final_RMSNorm.weight", "layer_norm_scale", "ln_f.weight",
    "group_norm.weight", "enorm", "transformer.h.0.ln_1.weight", "lm_head.weight",
])
def test_the_prefiltered_name_test_is_the_regex(name):
    from optimhub import param_groups

    plain = any(re.search(p, name.lower()) for p in param_groups.NO_DECAY_NAME_PATTERNS)
    assert param_groups.no_decay_by_name(name) is plain
