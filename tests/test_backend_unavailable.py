"""The three HF names whose backends cannot be installed here (torch_xla: TPU; torch_npu:
Ascend NPU; torchdistx: archived, torch 1.12 only). They are in the catalog so that asking
for one gives the exact install line, and their optim_args are typed like the others.

HF parity cannot be shown without the backends; what can be shown is that HF and optimhub
both refuse, HF with a ValueError and no install line, optimhub with MissingBackendError
(an ImportError) that names it."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import make_tiny_lm

import optimhub
from optimhub.backends import backend_status
from optimhub.errors import MissingBackendError, OptimArgsError
from optimhub.optim_args import resolve_optim_args
from optimhub.plugins.torchdistx import anyprecision_kwargs, torch_dtype

#: name -> (import name, distribution, what HF's handler says)
UNAVAILABLE = {
    "adamw_torch_xla": ("torch_xla", "torch-xla", "failed to import syncfree AdamW"),
    "adamw_torch_npu_fused": ("torch_npu", "torch-npu", "failed to import FusedAdamW"),
    "adamw_anyprecision": ("torchdistx", "torchdistx", "install https://github.com/pytorch"),
}
HINT_PARTS = {
    "adamw_torch_xla": ("pip install 'torch_xla[tpu]'", "TPU"),
    "adamw_torch_npu_fused": ("pip install torch-npu", "Ascend NPU", "CANN"),
    "adamw_anyprecision": ("pip install torchdistx", "torch 1.12", "stable_adamw"),
}


def _absent(import_name: str):
    return pytest.mark.skipif(importlib.util.find_spec(import_name) is not None,
                              reason=f"{import_name} is installed here")


CASES = [pytest.param(name, marks=_absent(module)) for name, (module, _, _) in UNAVAILABLE.items()]


@pytest.mark.parametrize("name", CASES)
def test_asking_for_it_gives_the_install_line(name):
    spec = optimhub.get_spec(name)
    assert spec.extra is None and spec.install_hint == spec.install_command
    assert spec.distribution == UNAVAILABLE[name][1]
    assert all(part in spec.install_hint for part in HINT_PARTS[name])
    model = make_tiny_lm()
    with pytest.raises(MissingBackendError) as caught:
        optimhub.create_optimizer(name, model, lr=1e-3)
    assert isinstance(caught.value, ImportError)
    assert spec.install_hint in str(caught.value) and repr(spec.distribution) in str(caught.value)
    status = backend_status(spec)
    assert not status.installed and spec.install_hint in status.problem


@pytest.mark.parametrize("name", CASES)
def test_hf_refuses_too_but_without_the_install_line(tmp_path, name):
    pytest.importorskip("transformers")
    from parity import hf_optimizer, training_args

    with pytest.raises(ValueError, match=UNAVAILABLE[name][2]) as caught:
        hf_optimizer(make_tiny_lm(), training_args(tmp_path, name))
    assert "pip install" not in str(caught.value)
    with pytest.raises(MissingBackendError, match="pip install"):
        optimhub.create_optimizer(name, make_tiny_lm(), training_args(tmp_path, name))


def test_listed_with_their_hf_optim_args_schema():
    names = {spec.name for spec in optimhub.list_optimizers()}
    assert set(UNAVAILABLE) <= names
    for name in ("adamw_torch_xla", "adamw_torch_npu_fused"):
        assert dict(optimhub.get_spec(name).args) == {}  # HF reads no optim_args for them


def test_anyprecision_options_are_typed_with_hf_defaults():
    spec = optimhub.get_spec("adamw_anyprecision")
    assert resolve_optim_args(spec, None) == {
        "use_kahan_summation": False, "momentum_dtype": "float32",
        "variance_dtype": "float32", "compensation_buffer_dtype": "bfloat16",
    }
    typed = resolve_optim_args(spec, "use_kahan_summation=False,variance_dtype=bfloat16")
    assert typed["use_kahan_summation"] is False and typed["variance_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("optim_args", "text"),
    [
        ("momentum_dtype=float8", "not one of the choices"),
        ("variance_dtype=bfloat", "Did you mean 'bfloat16'"),
        ("use_kahan_summation=maybe", "not true/false"),
        ("kahan=true", "kahan"),
    ],
)
def test_anyprecision_bad_options(optim_args, text):
    with pytest.raises(OptimArgsError, match=text):
        resolve_optim_args(optimhub.get_spec("adamw_anyprecision"), optim_args)


def test_anyprecision_dtype_names_become_torch_dtypes():
    """The builder's conversion (HF: getattr(torch, name)), for every allowed name."""
    spec = optimhub.get_spec("adamw_anyprecision")
    for option in ("momentum_dtype", "variance_dtype", "compensation_buffer_dtype"):
        for choice in spec.args[option].choices:
            assert isinstance(torch_dtype(choice), torch.dtype)
    kwargs = anyprecision_kwargs({"lr": 1e-3, "use_kahan_summation": True,
                                  "momentum_dtype": "bfloat16", "variance_dtype": "float32",
                                  "compensation_buffer_dtype": "float16"})
    assert kwargs == {"lr": 1e-3, "use_kahan_summation": True, "momentum_dtype": torch.bfloat16,
                      "variance_dtype": torch.float32, "compensation_buffer_dtype": torch.float16}
    with pytest.raises(TypeError):
        torch_dtype("nn")
