"""optimhub.estimate: memory before training, checked against what the backends really hold.

Every catalog name that runs here is built through the hub on a reference model, stepped
twice (``optimhub.drive``), measured with ``optimhub.testing.state_bytes`` (every tensor
the optimizer object holds) and compared with its estimate: within 5%, or 512 bytes for
tiny states. The reference shapes are chosen so each rule of each estimator shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import make_tiny_lm
from torch import nn

import optimhub
from optimhub import cli
from optimhub.errors import (
    CapabilityError,
    EstimateUnavailableError,
    OptimArgsError,
    OptimHubError,
    TargetModulesError,
    UnknownOptimizerError,
)
from optimhub.estimator import ParamShape
from optimhub.memory import describe_model
from optimhub.model_shapes import (
    FlatModel,
    LlamaShaped,
    flat_model,
    parse_model_spec,
    parse_param_count,
)
from optimhub.plugin_host import get_registry
from optimhub.routing import matrix_only_routes
from optimhub.testing import readiness, state_bytes

#: q/o_proj 64x64 = 4096 elements (the smallest 8-bit tensor); k/v_proj 32x64 = 2048 (kept
#: in 32 bits / full precision); MLP 128x64; embed_tokens and lm_head 99x64 = 6336 (>= 4096
#: but not a multiple of 256: bnb's last block is partial); RMSNorm weights 64.
REFERENCE = "llama:hidden=64,layers=2,vocab=99,intermediate=128,heads=4,kv_heads=2"
TARGETS = [r".*attn.*", r".*mlp.*"]
RANK = 8
#: Llama-2-7B and Llama-2-70B, whose parameter counts are published.
LLAMA_7B = "llama:hidden=4096,layers=32,vocab=32000,intermediate=11008,heads=32"
LLAMA_70B = ("llama:hidden=8192,layers=80,vocab=32000,intermediate=28672,heads=64,"
             "kv_heads=8")

pytestmark = [
    pytest.mark.filterwarnings("ignore::optimhub.OptimHubWarning"),
    # bnb's process-wide override table (see conftest.isolated_bnb_overrides).
    pytest.mark.usefixtures("isolated_bnb_overrides"),
]


def assert_close(estimated: int, measured: int, what: str) -> None:
    tolerance = max(0.05 * measured, 512)
    assert abs(estimated - measured) <= tolerance, (
        f"{what}: estimated {estimated:,} bytes, measured {measured:,} "
        f"({(estimated - measured) / max(measured, 1):+.1%})"
    )


def reference_model(dtype: str = "fp32") -> LlamaShaped:
    torch.manual_seed(0)
    return parse_model_spec(REFERENCE, dtype=dtype).build("cpu")


def torchao_model() -> nn.Module:
    """torch.compile runs per tensor shape, so torchao gets three shapes that still show
    its three rules: 64x64 (quantized), 99x64 (>= 4096 but not a multiple of the block:
    full precision), and the biases (small)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 99))


def loss_of(model: nn.Module, step: int) -> torch.Tensor:
    if isinstance(model, LlamaShaped):
        tokens = torch.randint(0, 99, (2, 9), generator=torch.Generator().manual_seed(step))
        logits = model(tokens[:, :-1]).float()
        return nn.functional.cross_entropy(logits.reshape(-1, 99), tokens[:, 1:].reshape(-1))
    inputs = torch.randn(4, 64, generator=torch.Generator().manual_seed(step))
    return model(inputs).square().mean()


def measured_bytes(name: str, model: nn.Module, steps: int = 2, **kwargs) -> int:
    """Build through the hub, take two steps the way the spec says, measure."""
    optimizer = optimhub.create_optimizer(name, model, **kwargs)
    current = [0]

    def closure() -> torch.Tensor:
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            value = loss_of(model, current[0])
            value.backward()
        return value

    needs_closure = isinstance(name, str) and optimhub.get_spec(name).has("closure_required")
    driver = optimhub.drive(optimizer, model=model, closure=closure if needs_closure else None)
    for step in range(steps):
        current[0] = step
        driver.backward(loss_of(model, step))
        driver.step()
    measured = state_bytes(optimizer)
    if hasattr(optimizer, "close"):
        optimizer.close()
    return measured


#: What a name needs beyond lr on the reference model (its attention shape, a run length,
#: ranks that fit 64-wide weights, a preconditioner scale).
EXTRA: dict[str, dict] = {
    "adam_mini": {"optim_args": "hidden_size=64,num_attention_heads=4"},
    "pto_adammini": {"optim_args": "hidden_size=64,num_attention_heads=4"},
    "pto_ranger21": {"max_steps": 10},
    "pto_alice": {"optim_args": "rank=8,leading_basis=4"},
    "pto_adashift": {"optim_args": "keep_num=2"},  # measured once its queue is full
    "heavyball_psgdlra": {"optim_args": "precond_init_scale=0.1"},
}


def hub_kwargs(name: str) -> dict:
    spec = optimhub.get_spec(name)
    lr = {"lr": 1e-3} if spec.has_hyperparameter("lr") else {}  # AliG takes none
    kwargs: dict = {**lr, **EXTRA.get(name, {})}
    if spec.has("target_modules"):
        kwargs.update(optim_target_modules=TARGETS, optim_args=f"rank={RANK}")
    return kwargs



#: Names whose state an estimate cannot know from shapes, refused with the reason (and the
#: bound): SaRA keeps moments only for the weights below its threshold at the start.
ESTIMATE_REFUSED = {"pto_sara": r"depends on the weight\s+values.*at most [\d,]+ bytes"}


def _runnable() -> list:
    params = []
    for spec in optimhub.list_optimizers():
        state = readiness(spec)
        marks = [] if state.action == "run" else [pytest.mark.skip(reason=state.reason)]
        params.append(pytest.param(spec.name, id=spec.name, marks=marks))
    return params


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("name", _runnable())
def test_estimate_matches_the_state_the_backend_holds(name):
    kwargs = hub_kwargs(name)
    spec = optimhub.get_spec(name)
    model = torchao_model() if spec.plugin == "torchao" else reference_model()
    if spec.has("create_graph"):  # the reference model's CPU attention has no double backward
        model = torchao_model()
    # a matrix-only name (the Muon family) runs on a whole model in its routed form
    built = matrix_only_routes(name) if spec.has("matrix_only") else name
    if name in ESTIMATE_REFUSED:
        with pytest.raises(optimhub.OptimArgsError, match=ESTIMATE_REFUSED[name]):
            optimhub.estimate(built, model, **kwargs)
        return
    estimated = optimhub.estimate(built, model, **kwargs)
    assert_close(estimated.state_bytes, measured_bytes(built, model, **kwargs), name)


VARIANTS = [
    ("adamw_torch", "fp32", {"optim_args": "amsgrad=true"}),
    ("adamw_torch", "bf16", {}),
    ("adamw_torch", "fp32", {"layerwise": True}),
    ("sgd", "fp32", {"optim_args": "momentum=0.9"}),
    ("rmsprop", "fp32", {"optim_args": "momentum=0.9,centered=true"}),
    ("adafactor", "fp32", {"optim_args": "beta1=0.9"}),
    ("adafactor", "bf16", {}),
    ("adafactor_torch", "bf16", {}),
    ("stable_adamw", "bf16", {}),
    ("stable_adamw", "bf16", {"optim_args": "kahan_sum=false"}),
    ("grokadamw", "bf16", {}),
    ("adamw_bnb_8bit", "bf16", {}),
    ("galore_adamw", "bf16", {"optim_args": "rank=8"}),
    ("galore_adamw", "fp32", {"optim_args": "rank=8,proj_type=reverse_std"}),
    ("galore_adamw", "fp32", {"optim_args": "rank=8,proj_type=left"}),
    ("galore_adamw", "fp32", {"optim_args": "rank=8,proj_type=full"}),
    ("galore_adamw", "bf16", {"optim_args": "rank=8,proj_type=full"}),
    ("galore_adamw", "fp32", {"optim_args": "rank=128"}),
    ("galore_adafactor", "bf16", {"optim_args": "rank=8"}),
    ("apollo_adamw", "fp32", {"optim_args": "rank=8,proj=svd"}),
    ("apollo_adamw", "bf16", {"optim_args": "rank=8,proj=svd"}),
    ("apollo_adamw", "bf16", {"optim_args": "rank=8"}),
    ("apollo_adamw", "fp32", {"optim_args": "rank=8,proj_type=reverse_std,scale_type=tensor"}),
    ("apollo_mini", "fp32", {"optim_target_modules": "all-linear"}),
]


@pytest.mark.parametrize(("name", "dtype", "settings"), VARIANTS,
                         ids=[f"{n}-{d}-{s}" for n, d, s in VARIANTS])
def test_estimate_follows_options_dtypes_and_modes(name, dtype, settings):
    kwargs = {**hub_kwargs(name), **settings}
    model = reference_model(dtype)
    estimated = optimhub.estimate(name, model, **kwargs)
    assert_close(estimated.state_bytes, measured_bytes(name, model, **kwargs),
                 f"{name} {dtype} {settings}")


def test_galore_keeps_the_rank_rows_of_the_svd_factor_for_fp32_as_for_bf16():
    """galore-torch's projector keeps the whole SVD factor of a float32 gradient alive (a
    view: about +4 bytes per target parameter); the plugin's keeps the rank rows /
    columns in every dtype, so fp32 state is exactly twice bf16's."""
    fp32 = optimhub.estimate("galore_adamw", reference_model("fp32"), **hub_kwargs("galore_adamw"))
    bf16 = optimhub.estimate("galore_adamw", reference_model("bf16"), **hub_kwargs("galore_adamw"))
    assert fp32.state_bytes == 2 * bf16.state_bytes
    assert not fp32.notes and not bf16.notes


@pytest.mark.parametrize(("name", "dtype", "optim_args"), [
    ("galore_adamw", "fp32", "rank=8"),
    ("galore_adamw", "fp32", "rank=8,proj_type=reverse_std"),
    ("galore_adamw", "fp32", "rank=8,proj_type=full"),
    ("galore_adamw", "bf16", "rank=8,proj_type=left"),
    ("galore_adafactor", "fp32", "rank=8"),
    ("galore_adamw_layerwise", "fp32", "rank=8"),
    ("apollo_adamw", "fp32", "rank=8,proj=svd"),
    ("apollo_adamw", "bf16", "rank=8,proj=svd,proj_type=right,scale_type=tensor"),
])
def test_svd_projector_estimate_is_the_measured_state_to_the_byte(name, dtype, optim_args):
    """The SVD projectors keep exactly what svd_projector_bytes says: no tolerance."""
    kwargs = {**hub_kwargs(name), "optim_args": optim_args}
    model = reference_model(dtype)
    estimated = optimhub.estimate(name, model, **kwargs).state_bytes
    assert estimated == measured_bytes(name, model, **kwargs)


def test_every_catalog_name_has_an_estimator_in_its_plugin():
    registry = get_registry()
    missing = [n for n in registry.catalog if registry.get(n).estimator is None]
    assert missing == []
    assert optimhub.estimate("adamw_torch", reference_model()).source == "plugin"


# ----------------------------------------------------------------------------- without a backend
def test_estimates_of_names_that_cannot_run_here():
    """Estimation needs no backend: the CUDA-only and uninstalled names, by hand."""
    model = reference_model()
    model.model.norm.weight.requires_grad_(False)
    params = describe_model(model)
    trainable = sum(p.numel for p in params if p.trainable)
    assert optimhub.estimate("adamw_torch_xla", model).state_bytes == 8 * trainable
    assert optimhub.estimate("adamw_torch_npu_fused", model).state_bytes == 8 * trainable
    mixed = optimhub.estimate(
        "adamw_anyprecision", model,
        optim_args="use_kahan_summation=true,momentum_dtype=bfloat16,"
                   "compensation_buffer_dtype=float64")
    assert mixed.state_bytes == (2 + 4 + 8) * trainable
    # AdaLomo: fp32 rows + columns for every named parameter, frozen ones included.
    factored = sum(p.shape[0] if p.ndim == 1 else p.shape[0] + p.shape[1] for p in params)
    adalomo = optimhub.estimate("adalomo", model)
    assert adalomo.state_bytes == 4 * factored
    assert adalomo.grad_bytes == 128 * 64 * 4  # fused backward: about one (the largest) matrix


def test_galore_8bit_estimate_by_hand():
    """bnb's rules on the low-rank gradient shapes: at rank 8 every projected gradient is
    under 4096 elements (fp32 state); the untargeted embedding and lm_head are quantized."""
    model = reference_model()
    est = optimhub.estimate("galore_adamw_8bit", model, **hub_kwargs("galore_adamw_8bit"))
    per_layer = (
        2 * 4 * (64 * 8) + 4 * 8 * 64       # q_proj: (64, 8) moments, Vh[:8] 8x64
        + 2 * (2 * 4 * (8 * 64) + 4 * 32 * 8)  # k/v_proj 32x64: (8, 64), U[:, :8] 32x8
        + 2 * 4 * (64 * 8) + 4 * 8 * 64     # o_proj
        + 2 * (2 * 4 * (128 * 8) + 4 * 8 * 64)  # gate/up 128x64: (128, 8), Vh[:8] 8x64
        + 2 * 4 * (8 * 128) + 4 * 64 * 8    # down 64x128: (8, 128), U[:, :8] 64x8
        + 2 * 2 * 4 * 64                    # two RMSNorms, fp32
    )
    blocks = -(-99 * 64 // 256)
    quantized = 2 * (99 * 64 + 4 * blocks)  # uint8 moments + fp32 absmax per block
    expected = 2 * per_layer + 2 * quantized + 2 * 4 * 64 + 2 * 1024
    assert est.state_bytes == expected


# ----------------------------------------------------------------------------- gradients
def test_gradients_at_peak_follow_the_loop_contract():
    model = reference_model("bf16")
    all_grads = sum(p.numel() * 2 for p in model.parameters())
    largest = max(p.numel() * 2 for p in model.parameters())
    assert optimhub.estimate("adamw_torch", model).grad_bytes == all_grads
    assert optimhub.estimate("adamw_torch", model, layerwise=True).grad_bytes == largest
    assert optimhub.estimate("lomo", model).grad_bytes == largest
    layerwise = optimhub.estimate("galore_adamw_layerwise", model, **hub_kwargs("galore_adamw"))
    assert layerwise.layerwise and layerwise.grad_bytes == largest


def test_baseline_is_adamw_with_fp32_state_and_all_gradients():
    est = optimhub.estimate("lomo", reference_model("bf16"))
    assert est.baseline_state_bytes == 8 * est.trainable_params
    assert est.baseline_grad_bytes == 2 * est.trainable_params
    assert est.state_bytes == 0 and est.bytes_per_param == 0.0


# ----------------------------------------------------------------------------- models
def test_llama_spec_has_the_published_parameter_counts():
    assert optimhub.estimate("adamw_torch", LLAMA_7B).trainable_params == 6_738_415_616
    assert optimhub.estimate("sgd", LLAMA_70B).trainable_params == 68_976_648_192


def test_llama_spec_names_and_shapes_are_hugging_face_s():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, vocab_size=99, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(config)
    ours = parse_model_spec(REFERENCE + ",tied=true").build()
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in hf.named_parameters()]


def test_llama_7b_galore_by_hand():
    """Targets matched by name on the meta model; fp32 at rank 128: two (m, 128) or
    (128, n) moments per target plus the projector's 128 rows (or columns) of the SVD
    factor, 128 x 4096; the rest dense."""
    est = optimhub.estimate("galore_adamw", LLAMA_7B, optim_target_modules=TARGETS)
    h, i, r = 4096, 11008, 128
    per_layer = 4 * (2 * h * r * 4 + r * h * 4) + 3 * (2 * i * r * 4 + r * h * 4)
    dense = 2 * 4 * (2 * 32000 * h + 65 * h)  # embed_tokens, lm_head, 65 RMSNorms
    assert est.state_bytes == 32 * per_layer + dense
    assert est.trainable_params == 6_738_415_616


def test_estimate_reads_no_tensor_data_and_imports_no_backend():
    code = (
        "import sys, optimhub\n"
        f"e = optimhub.estimate('adamw_bnb_8bit', {LLAMA_70B!r})\n"
        f"g = optimhub.estimate('galore_adamw', {LLAMA_70B!r}, optim_target_modules={TARGETS!r})\n"
        "heavy = ('bitsandbytes', 'galore_torch', 'apollo_torch', 'torchao', 'transformers')\n"
        "print(e.state_bytes, [m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    state, imported = out.stdout.split(" ", 1)
    assert imported.strip() == "[]"
    assert 2 * 68_976_648_192 < int(state) < 2.1 * 68_976_648_192


def test_describe_model_dedups_tied_weights_and_marks_frozen_and_module_types():
    model = parse_model_spec(REFERENCE + ",tied=true").build()
    model.model.norm.weight.requires_grad_(False)
    params = {p.name: p for p in describe_model(model, targets=["lm_head.weight"])}
    assert "lm_head.weight" not in params  # tied: listed once, as named_parameters() does
    assert params["model.embed_tokens.weight"].module_type == "Embedding"
    assert params["model.layers.0.self_attn.k_proj.weight"] == ParamShape(
        "model.layers.0.self_attn.k_proj.weight", (32, 64), 4, True, False, "Linear")
    assert params["model.norm.weight"].trainable is False


@pytest.mark.parametrize(("text", "message"), [
    ("gpt:hidden=64", "only the 'llama:' family"),
    ("llama:hidden=64,layers=2,vocab=99", "intermediate missing"),
    ("llama:hiden=64,layers=2,vocab=99,intermediate=128", "Did you mean 'hidden'"),
    ("llama:hidden=sixty,layers=2,vocab=99,intermediate=128", "hidden='sixty' is not valid"),
    ("llama:hidden=64,layers=0,vocab=99,intermediate=128", "layers=0"),
    ("llama:hidden=64,layers=2,vocab=99,intermediate=128,heads=5", "not a multiple of heads=5"),
    ("llama:hidden=64,layers=2,vocab=99,intermediate=128,heads=4,kv_heads=3",
     "not a multiple of kv_heads=3"),
    ("llama:hidden=64,layers=2,vocab=99,intermediate=128,dtype=fp8", "dtype='fp8'"),
    ("llama:hidden=64,,layers=2", "model spec"),
])
def test_model_spec_errors_name_the_value_and_the_fix(text, message):
    with pytest.raises(OptimArgsError, match="model spec") as caught:
        parse_model_spec(text)
    assert message in str(caught.value)
    assert "optim_args" not in str(caught.value).split(":", 2)[0]


def test_model_spec_is_typed_like_optim_args():
    shape = parse_model_spec(REFERENCE + ",tied=false,dtype=bf16")
    assert shape.tied is False and shape.dtype == "bf16" and shape.kv == 2
    assert parse_model_spec(REFERENCE, dtype="bf16").dtype == "bf16"
    with pytest.raises(OptimArgsError, match="dtype=bf16, but dtype 'fp32'"):
        parse_model_spec(REFERENCE + ",dtype=bf16", dtype="fp32")


@pytest.mark.parametrize(("text", "count"), [
    ("7B", 7_000_000_000), ("125M", 125_000_000), ("6.7e9", 6_700_000_000),
    ("6_738_415_616", 6_738_415_616), ("1.5k", 1500), ("1", 1),
])
def test_param_counts(text, count):
    assert parse_param_count(text) == count


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "7X", "", "seven", "0.5B1"])
def test_bad_param_counts_are_refused(text):
    with pytest.raises(OptimArgsError, match="not a whole number"):
        parse_param_count(text)


def test_a_flat_count_is_square_matrices_then_the_rest():
    model = flat_model(2 * 4096 * 4096 + 3 * 4096 + 5)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(4096, 4096), (4096, 4096), (3, 4096), (5,)]
    assert sum(p.numel() for p in model.parameters()) == model.count
    assert all(p.device.type == "meta" for p in model.parameters())
    assert optimhub.estimate("adamw_torch", model).state_bytes == 8 * model.count


def test_low_rank_names_refuse_a_bare_count():
    with pytest.raises(CapabilityError, match="--model llama:"):
        optimhub.estimate("galore_adamw", flat_model(1000), optim_target_modules=TARGETS)


# ----------------------------------------------------------------------------- the factory's rules
@pytest.mark.parametrize(("name", "kwargs", "error", "message"), [
    ("adamw_torch", {"optim_args": "amsgrd=true"}, OptimArgsError, "Did you mean 'amsgrad'"),
    ("galore_adamw", {}, TargetModulesError, "optim_target_modules is required"),
    ("galore_adamw", {"optim_target_modules": ["nothing_like_this"]}, TargetModulesError,
     "selected no weight"),
    ("adamw_torch", {"optim_target_modules": TARGETS}, TargetModulesError, "does not use"),
    ("adamw_bnb_8bit", {"layerwise": True}, CapabilityError, "cannot run layerwise"),
    ("adamw_tourch", {}, UnknownOptimizerError, "Did you mean"),
])
def test_estimate_refuses_what_create_optimizer_refuses(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        optimhub.estimate(name, reference_model(), **kwargs)
    with pytest.raises(error, match=message):
        optimhub.create_optimizer(name, reference_model(), **kwargs)


def test_estimate_needs_a_model_not_a_parameter_list():
    with pytest.raises(OptimArgsError, match="flat_model"):
        optimhub.estimate("adamw_torch", list(make_tiny_lm().parameters()))


# ----------------------------------------------------------------------------- third parties
ESTIMATING_PLUGIN = '''
import torch
import optimhub
from optimhub.estimator import StateEstimate, dense_bytes

def build(request):
    return torch.optim.SGD(request.param_groups, lr=request.kwargs["lr"], momentum=0.9)

def spec(name, **extra):
    return {"name": name, "summary": "sgd", "distribution": "optimhub-test-x",
            "import_name": "torch", "hyperparameters": ["lr"], **extra}

@optimhub.hookimpl
def optimhub_register_optimizers(register):
    register.optimizer(spec("tp_estimated"), build,
                       estimator=lambda r: StateEstimate(dense_bytes(r.trainable, 1),
                                                         notes=("momentum buffer",)))
    register.optimizer(spec("tp_registry", state_bytes_per_param=4.0), build)
    register.optimizer(spec("tp_unknown"), build)
    register.optimizer(spec("tp_junk"), build, estimator=lambda r: {"bytes": 1})
    register.optimizer(spec("tp_raises"), build, estimator=lambda r: 1 / 0)
'''


def test_third_party_estimators_fallback_and_no_estimate(plugin_factory, use_host):
    plugin_factory.add("estimating", ESTIMATING_PLUGIN)
    use_host(plugin_factory.host())
    model = make_tiny_lm()
    numel = sum(p.numel() for p in model.parameters())
    estimated = optimhub.estimate("tp_estimated", model)
    assert (estimated.source, estimated.state_bytes) == ("plugin", 4 * numel)
    assert estimated.notes == ("momentum buffer",)
    from_registry = optimhub.estimate("tp_registry", model)
    assert (from_registry.source, from_registry.state_bytes) == ("registry", 4 * numel)
    with pytest.raises(EstimateUnavailableError, match="no estimate available for 'tp_unknown'"):
        optimhub.estimate("tp_unknown", model)
    with pytest.raises(EstimateUnavailableError, match="StateEstimate"):
        optimhub.estimate("tp_junk", model)
    with pytest.raises(EstimateUnavailableError, match="ZeroDivisionError"):
        optimhub.estimate("tp_raises", model)
    assert issubclass(EstimateUnavailableError, OptimHubError)


def test_a_non_callable_estimator_is_a_recorded_plugin_fault(plugin_factory, use_host):
    plugin_factory.add("badestimator", '''
import torch, optimhub
@optimhub.hookimpl
def optimhub_register_optimizers(register):
    register.optimizer({"name": "tp_bad", "summary": "x", "distribution": "d",
                        "import_name": "torch"}, lambda r: None, estimator="8 bytes")
''')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = use_host(plugin_factory.host()).registry
    assert any("estimator for 'tp_bad' is not callable" in str(f) for f in registry.failures)


# ----------------------------------------------------------------------------- the command
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_state_bytes_per_param_and_gradients_next_to_adamw(capsys):
    code, out, _ = run_cli(capsys, "adamw_bnb_8bit", "--params", "1M", "--dtype", "bf16")
    assert code == 0
    expected = optimhub.estimate("adamw_bnb_8bit", flat_model(1_000_000, "bf16"))
    assert f"({expected.state_bytes:,} B)" in out
    assert f"{expected.bytes_per_param:.3f}" in out
    assert "(8,000,000 B)" in out  # AdamW fp32 state
    assert "(2,000,000 B)" in out  # bf16 gradients
    assert "GiB" in out


def test_cli_json_for_a_low_rank_name_on_a_model_spec(capsys):
    code, out, _ = run_cli(capsys, "galore_adamw", "--model", REFERENCE, "--optim-args", "rank=8",
                           "--optim-target-modules", ".*attn.*", ".*mlp.*", "--layerwise",
                           "--json")
    assert code == 0
    data = json.loads(out)
    expected = optimhub.estimate("galore_adamw", REFERENCE, optim_args="rank=8",
                                 optim_target_modules=TARGETS, layerwise=True)
    assert data["state_bytes"] == expected.state_bytes
    assert data["layerwise"] is True and data["grad_bytes"] == 128 * 64 * 4
    assert data["adamw_fp32"]["state_bytes"] == 8 * data["trainable_params"]


def test_cli_lone_all_linear_selects_every_linear(capsys):
    code, out, _ = run_cli(capsys, "apollo_mini", "--model", REFERENCE,
                           "--optim-target-modules", "all-linear", "--json")
    assert code == 0
    assert json.loads(out)["state_bytes"] == optimhub.estimate(
        "apollo_mini", REFERENCE, optim_target_modules="all-linear").state_bytes


@pytest.mark.parametrize(("argv", "message"), [
    (["galore_adamw", "--params", "7B"], "bare parameter count has no layers"),
    (["adamw_torch", "--params", "7 billion"], "not a whole number"),
    (["adamw_torch", "--model", REFERENCE + ",dtype=bf16", "--dtype", "fp32"], "give one"),
    (["adamw_torch", "--params", "1M", "--optim-args", "amsgrad=maybe"], "amsgrad"),
])
def test_cli_errors_exit_2_with_the_reason(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("optimhub: error:") and message in err


def test_cli_requires_a_model_or_a_count(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["estimate", "adamw_torch"])
    assert caught.value.code == 2
    assert "--params" in capsys.readouterr().err


def test_flat_model_rejects_a_bad_count():
    with pytest.raises(OptimArgsError, match="whole number"):
        FlatModel(0)
