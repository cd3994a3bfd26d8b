"""Built-in plugin: ``adamw_torch_xla``, torch_xla's syncfree AdamW for XLA devices (TPU).

torch_xla installs only next to a matching torch on a TPU VM (or with an XLA GPU plugin),
so on most machines the core answers with ``MissingBackendError`` and the install line of
registry.toml's ``[backends.torch_xla]``; HF answers with a ValueError that gives none.
Like HF, the builder passes lr, the Adam betas and epsilon; weight decay comes per group.
"""

from __future__ import annotations

from optimhub.plugin import Register, class_builder, dense_estimator, hookimpl

estimate_adamw = dense_estimator(2, "exp_avg and exp_avg_sq in the parameter's dtype.")


@hookimpl
def optimhub_register_optimizers(register: Register) -> None:
    register.builder("adamw_torch_xla", class_builder("torch_xla.amp.syncfree", "AdamW"),
                     estimator=estimate_adamw)
