"""Generate the heavyball section of registry.toml from the installed library.

    .venv/bin/python tools/generate_heavyball_catalog.py          # rewrite the section
    .venv/bin/python tools/generate_heavyball_catalog.py --check  # exit 1 if stale

Every optimizer class heavyball exports (``heavyball.__all__``) becomes ``heavyball_<class
name in lower case>``, typed by tools/catalog_generator.py (heavyball annotates few
parameters: the rest are typed from their defaults; its ``use_default`` sentinel leaves an
option unset, so heavyball's own default applies). The reviewed tables below are the only
hand-written part; the measurements behind them were taken on the conformance suite's
model with compilation off (see plugins/heavyball.py: on the CPU the hub runs heavyball
eagerly).
"""

from __future__ import annotations

import sys
from typing import Any

from catalog_generator import Tables, main, merged_limits

#: class -> why it is not an optimhub name.
EXCLUDED: dict[str, str] = {
    "SplitOpt": "delegates parameter groups to other optimizers given as specs (a router)",
    "SAMWrapper": "wraps another optimizer instance (wrappers are out of scope)",
}

#: class -> capabilities, as measured (train()/eval() that switch the weights).
CAPABILITIES: dict[str, list[str]] = {
    "SFAdamW": ["schedule_free"],
    "MSAMLaProp": ["schedule_free"],
}

#: class -> fp32 state bytes per parameter for the dense ones (k buffers, in heavyball's
#: storage_dtype, float32 by default), or "probe" (preconditioners: measured per shape).
STATE: dict[str, float | str] = {
    "SGD": 4.0, "AdamW": 8.0, "NAdam": 8.0, "AdEMAMix": 12.0, "UnscaledAdamW": 8.0,
    "SUDSAdamW": 12.0, "Scion": 4.0, "AdamC": 8.0, "RMSprop": 4.0, "HyperBallAdamW": 4.0,
    "MuonAdamW": "probe", "SFAdamW": 8.0, "MSAMLaProp": 12.0, "ADOPT": 8.0, "Muon": 4.0,
    "LaProp": 8.0, "MuonLaProp": 8.0, "SOAP": "probe", "KLSOAP": "probe",
    "KLShampoo": "probe", "SOAPNAdam": "probe", "SOAPAdEMAMix": "probe", "SignLaProp": 8.0,
    "SOLP": "probe", "HeavySOAP": "probe", "HeavyKLSOAP": "probe", "HeavyKLShampoo": "probe",
    "HeavySOAPNAdam": "probe", "HeavySOAPAdEMAMix": "probe", "HeavySOLP": "probe",
    "OrthoLaProp": 8.0, "LaPropOrtho": 8.0, "PSGDKron": "probe", "LATHER": "probe",
    "PSGDPRO": "probe", "QSGD": "probe", "PSGDLRA": "probe",
}

_PSGD_INIT = {"precond_init_scale": {
    "type": "float", "default": "none", "nullable": True, "exclusive_minimum": 0.0,
    "doc": "Initial scale of the preconditioner (none: heavyball derives it from the first "
           "gradient, which fails when that gradient is all zeros).",
}}
HAND_ARGS: dict[str, dict[str, dict[str, Any]]] = {
    name: _PSGD_INIT for name in ("PSGDKron", "PSGDPRO", "QSGD", "LATHER")
}
HAND_ARGS["PSGDLRA"] = {**_PSGD_INIT, "rank": {
    "type": "int", "default": "none", "nullable": True, "minimum": 1,
    "doc": "Rank of the low-rank preconditioner (none: log2 of the parameter count, "
           "heavyball's default, computed by the plugin).",
}}

DROPPED_ARGS: dict[str, dict[str, str]] = {
    "*": {
        "gradient_clipping": "a name or a callable (heavyball's default clipping applies)",
        "update_clipping": "a name or a callable (heavyball's default clipping applies)",
        "orig_shapes": "a shape map for parameters flattened by the caller",
        "compile_step": "compilation is the plugin's decision (off on the CPU)",
        "preconditioner_update_probability": "a float or a schedule callable",
        "memory_save_mode": "None or a mode name that heavyball checks itself",
        "precond_init_scale": "declared by hand",
        "multi_tensor": "an implementation switch heavyball chooses itself",
    },
    **{name: {"beta": "a deprecated spelling of betas[0] (adam_beta1)"}
       for name in ("PSGDKron", "PSGDPRO", "QSGD", "LATHER")},
}


def optimizer_classes() -> dict[str, type]:
    """Every optimizer class in ``heavyball.__all__``."""
    import heavyball
    import torch

    return dict(sorted(
        (name, getattr(heavyball, name)) for name in heavyball.__all__
        if isinstance(getattr(heavyball, name), type)
        and issubclass(getattr(heavyball, name), torch.optim.Optimizer)
    ))


def _sentinels() -> tuple[Any, ...]:
    import heavyball.chainable

    return (heavyball.chainable.use_default,)


#: class -> engines it is refused on, as tools/distributed_matrix.py measured (DDP and
#: FSDP2, two gloo processes, against one process; 2026-12-02): under FSDP2 these three
#: fail on DTensor shards or train differently (schedule-free averaging and norm-based
#: steps computed on a shard's part only).
ENGINE_LIMITS: dict[str, list[str]] = {
    "MSAMLaProp": ["no_fsdp2"],
    "Scion": ["no_fsdp2"],
    "SUDSAdamW": ["no_fsdp2"],
}


#: class -> the DeepSpeed ZeRO stages it steps like one process under, as
#: tools/deepspeed_matrix.py measured (two gloo processes, bit for bit; 2026-12-02):
#: ``deepspeed_zero`` for stages 1 and 2, ``deepspeed_zero3`` for stage 3. An allow-list:
#: OptimHubTrainer refuses a name without it under DeepSpeed. The names below update
#: elementwise, which ZeRO's flat partitions cannot change; those with only
#: ``deepspeed_zero`` count steps per param group, which ZeRO-3's one step() call per
#: sub-group advances more than once per step.
DEEPSPEED: dict[str, list[str]] = {
    "ADOPT": ["deepspeed_zero"],
    "AdEMAMix": ["deepspeed_zero"],
    "AdamC": ["deepspeed_zero"],
    "AdamW": ["deepspeed_zero"],
    "LaProp": ["deepspeed_zero"],
    "NAdam": ["deepspeed_zero"],
    "RMSprop": ["deepspeed_zero"],
    "SFAdamW": ["deepspeed_zero"],
    "SGD": ["deepspeed_zero", "deepspeed_zero3"],
    "UnscaledAdamW": ["deepspeed_zero"],
}

#: class -> ``no_dcp`` where its state does not resume through torch.distributed.checkpoint
#: (save at one world size, load at the other). None: tools/distributed_checkpoint.py
#: measured every class bit for bit both ways (2026-12-03; the three ``no_fsdp2`` ones,
#: MSAMLaProp, Scion and SUDSAdamW, in one process), once the plugin carried what DCP
#: dropped or could not load: the nested int keys (plugins/_text_state_keys.py), the
#: ``"heavyball"`` entry with the preconditioner schedule's step count
#: (plugins/_entry_in_groups.py: SOAP, Shampoo, SOLP resumed 1e-4 to 3e-2 off without it),
#: PSGD's zero-gradient priming step, the scalar states bucketing reshapes (SOAP-NAdam's
#: planner error) and PSGD's float64 state under DCP's names (plugins/_heavyball_dcp.py,
#: plugins/_saved_dtypes.py). The Muon family, Scion and KL-Shampoo draw from torch's
#: global RNG in each step: they resume bit for bit when the training loop restores it.
DCP: dict[str, list[str]] = {}

TABLES = Tables(
    documentation="https://github.com/HomebrewML/HeavyBall",
    backend="heavyball",
    distribution="heavyball",
    namespace="heavyball",
    min_version="3.2.0",
    label="heavyball",
    classes=optimizer_classes,
    excluded=EXCLUDED,
    capabilities=CAPABILITIES,
    engine_limits=merged_limits(ENGINE_LIMITS, DEEPSPEED, DCP),
    state=STATE,
    hand_args=HAND_ARGS,
    dropped_args=DROPPED_ARGS,
    infer_from_default=True,
    sentinels=(),
)

if __name__ == "__main__":
    TABLES.sentinels = _sentinels()
    sys.exit(main(TABLES, doc=__doc__ or ""))
