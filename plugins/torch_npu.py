"""Built-in plugin: ``adamw_torch_npu_fused``, torch_npu's NpuFusedAdamW (Huawei Ascend).

torch_npu needs an Ascend NPU host with the CANN toolkit, so on most machines the core
answers with ``MissingBackendError`` and the install line of registry.toml's
``[backends.torch_npu]``; HF answers with a ValueError that gives none. Like HF, the
builder passes lr, the Adam betas and epsilon; weight decay comes per group.
"""

from __future__ import annotations

from optimhub.plugin import Register, class_builder, dense_estimator, hookimpl

estimate_adamw = dense_estimator(2, "exp_avg and exp_avg_sq in the parameter's dtype.")


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adamw_torch_npu_fused", class_builder("torch_npu.optim", "NpuFusedAdamW"),
                     estimator=estimate_adamw)
