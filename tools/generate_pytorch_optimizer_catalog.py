"""Generate the pytorch-optimizer section of registry.toml from the installed library.

    .venv/bin/python tools/generate_pytorch_optimizer_catalog.py          # rewrite the section
    .venv/bin/python tools/generate_pytorch_optimizer_catalog.py --check  # exit 1 if stale

pytorch-optimizer exports about 130 optimizers; stating each one's options by hand would be
a second copy of its constructors that drifts. So the section is *derived*: every optimizer
class the library registers (``pytorch_optimizer.optimizer.OPTIMIZERS``) plus its SAM
family, each constructor parameter typed from its annotation and default, documented from
the class docstring's ``Args:`` section, and checked (the default must round-trip through
``format_optim_args`` and the spec must validate). Everything else is the hand-written,
reviewed tables below, and only those:

- ``EXCLUDED``: names that are not a training optimizer here, with the reason;
- ``CAPABILITIES``: what was *measured* on the suite's model (tests assert each claim: the
  conformance suite, and tests/test_backend_pytorch_optimizer.py for the closure and
  create_graph claims both ways);
- ``STATE``: the optimizer state, measured: fp32 bytes per parameter for the dense ones (k
  full-size buffers), or the name of the plugin's estimator for the size-dependent ones;
- ``HAND_ARGS`` / ``DROPPED_ARGS``: options whose type cannot be inferred, declared by hand,
  or left out with the reason.

The typing rules and the Hugging Face mapping are tools/catalog_generator.py's.

The test ``test_generated_section_is_current`` runs this with ``--check``.
"""

from __future__ import annotations

import sys
from typing import Any

from catalog_generator import Tables, main, merged_limits

#: key -> why it is not an optimhub name.
EXCLUDED: dict[str, str] = {
    # torch.optim's own classes, re-exported: the torch plugin is the reference.
    "lbfgs": "torch.optim.LBFGS re-exported (not pytorch-optimizer code); full-batch",
    "sgd": "torch.optim.SGD re-exported; use the built-in sgd",
    "adam": "torch.optim.Adam re-exported; use adamw_torch (weight_decay=0 is Adam)",
    "adamw": "torch.optim.AdamW re-exported; use the built-in adamw_torch",
    "nadam": "torch.optim.NAdam re-exported (not pytorch-optimizer code)",
    "rmsprop": "torch.optim.RMSprop re-exported; use the built-in rmsprop",
    # Not an optimizer over parameters.
    "magma": "a wrapper that masks another optimizer's updates (wrappers are out of scope)",
    "demo": "DeMo: a distributed-communication optimizer (needs a process group and einops)",
    "distributedmuon": "Muon for torch.distributed FSDP shards only; use pto_muon",
    "lorarite": "LoRA-RITE: only for LoRA A/B adapter pairs (fails on plain weights)",
    "gsam": "takes a built optimizer instance and a rho scheduler object, not options",
    "bsam": "pytorch-optimizer 4.1's update is momentum.lerp_(grad * weight_decay): it never "
            "descends (measured: the loss rises at every lr tried on the suite's problem)",
    "scalableshampoo": "keeps PreConditioner/BlockPartitioner objects in its state, which no "
                       "checkpoint can hold as plain data (weights_only=True); use pto_shampoo "
                       "or pto_soap",
}

#: key -> capabilities, as measured (see the module docstring).
CAPABILITIES: dict[str, list[str]] = {
    "adahessian": ["create_graph"],
    "sophiah": ["create_graph"],
    "alig": ["closure_required"],
    "sam": ["closure_required"],
    # WSAM takes the model, but under DDP it equals one process bit for bit
    # (tools/distributed_matrix.py): no no_ddp.
    "wsam": ["closure_required", "needs_model"],
    "friendlysam": ["closure_required"],
    "looksam": ["closure_required"],
    "lomo": ["needs_model", "fused_backward", "no_ddp", "single_group"],
    # AdaLOMO reads its weight decay once (the conformance suite's weight_decay_changes
    # check: a raised group decay changes nothing), so weight-decay schedules are refused.
    "adalomo": ["needs_model", "fused_backward", "no_ddp", "single_group",
                "static_weight_decay"],
    "adammini": ["needs_model", "single_group"],
    "schedulefreeadamw": ["schedule_free"],
    "schedulefreeradam": ["schedule_free"],
    "schedulefreesgd": ["schedule_free"],
    "muon": ["matrix_only"],
    "muonclip": ["matrix_only"],
    "normuon": ["matrix_only"],
    "adamuon": ["matrix_only"],
    "adago": ["matrix_only"],
    "spectralsphere": ["matrix_only"],
    "galore": ["target_modules", "low_rank"],
    "apollo": ["target_modules", "low_rank"],
    "fira": ["target_modules", "low_rank"],
    "flashadamw": ["low_bit_state"],
}

#: key -> fp32 state bytes per parameter (dense: k buffers of the parameter's size), or the
#: name of a size-dependent estimator in plugins/pytorch_optimizer.py. Measured after 8
#: steps on the suite's model (the conformance suite re-checks the constants).
STATE: dict[str, float | str] = {
    "a2grad": "a2grad", "adopt": 8.0, "apollo": "low_rank", "asgd": "scalars", "accsgd": 4.0,
    "ademamix": 12.0, "adabelief": 8.0, "adabound": 8.0, "adadelta": 8.0,
    "adafactor": "probe", "adagc": 8.0, "adago": "probe", "adahessian": 12.0,
    "adalomo": "probe", "adamax": 8.0, "adamod": 12.0, "adamuon": "probe", "adanorm": 8.0,
    "adapnm": 16.0, "adashift": "adashift", "adasmooth": 16.0, "adatam": 12.0, "adai": 12.0,
    "adalite": "probe", "adamc": 8.0, "adamg": 12.0, "adammini": "probe", "adamp": 8.0,
    "adams": 8.0, "adamwsn": 8.0, "adan": 16.0, "aggmo": 12.0, "aida": 8.0, "alig": 0.0,
    "alice": "probe", "bcos": 4.0, "amos": 0.0, "ano": 8.0, "apollodqn": 12.0,
    "avagrad": 8.0, "came": "probe", "conda": "probe", "dash": "probe",
    "dadaptadagrad": 12.0, "dadaptadam": 12.0, "dadaptadan": 20.0, "dadaptlion": 8.0,
    "dadaptsgd": 12.0, "diffgrad": 12.0, "dualadam": 8.0, "exadam": 8.0,
    "emofact": "probe", "emolynx": 4.0, "emonavi": 8.0, "fadam": 8.0, "focus": 8.0,
    "ftrl": 8.0, "fira": "low_rank", "flashadamw": "probe", "fromage": 0.0,
    "galore": "low_rank", "grams": 8.0, "gravity": 4.0, "grokfastadamw": 12.0, "kate": 8.0,
    "kron": "probe", "lars": 4.0, "lomo": 0.0, "laprop": 8.0, "lamb": 8.0, "lion": 4.0,
    "madgrad": 12.0, "mars": 12.0, "msvag": 8.0, "muon": "probe", "muonclip": "probe",
    "nero": "probe", "normuon": "probe", "novograd": "probe", "padam": 8.0, "pid": 0.0,
    "pnm": 8.0, "prodigy": 16.0, "qhadam": 8.0, "qhm": 4.0, "racs": "probe", "radam": 8.0,
    "ranger": 12.0, "ranger21": 20.0, "rose": 0.0, "scion": 4.0, "scionlight": 0.0,
    "sgdp": 4.0, "sgdsai": 4.0, "sgdw": 0.0, "sm3": "probe", "soap": "probe",
    "spam": "probe", "splus": "probe", "srmm": 8.0, "swats": 8.0, "sara": "probe",
    "schedulefreeadamw": 8.0, "schedulefreeradam": 8.0,
    "schedulefreesgd": 4.0, "shampoo": "probe", "signsgd": 4.0, "simplifiedademamix": 8.0,
    "sophiah": 12.0, "stableadamw": 8.0, "stablespam": 8.0, "tam": 8.0, "tiger": 4.0,
    "vsgd": 12.0, "yogi": 8.0, "spectralsphere": 4.0, "sam": 0.0, "wsam": 4.0,
    "friendlysam": 4.0, "looksam": 4.0,
}

_BASE_OPTIMIZER = {
    "type": "str", "default": "sgd", "choices": ["sgd", "adamw"],
    "doc": "The optimizer that takes the sharpness-aware step: torch.optim.SGD (lr, "
           "weight_decay, momentum) or torch.optim.AdamW (also betas and eps).",
}
_MOMENTUM = {"type": "float", "default": 0.0, "minimum": 0.0, "exclusive_maximum": 1.0,
             "doc": "Momentum of the SGD base optimizer (base_optimizer='sgd' only)."}

#: key -> {option: ArgSpec fields}, for options the signature cannot type.
HAND_ARGS: dict[str, dict[str, dict[str, Any]]] = {
    **{key: {"base_optimizer": _BASE_OPTIMIZER, "momentum": _MOMENTUM}
       for key in ("sam", "wsam", "friendlysam", "looksam")},
    "adammini": {
        "hidden_size": {"type": "int", "minimum": 1, "backend_key": "num_embeds",
                        "doc": "Hidden size of the model (default: model.config.hidden_size)."},
        "num_attention_heads": {"type": "int", "minimum": 1, "backend_key": "num_heads",
                                "doc": "Attention heads (default: "
                                       "model.config.num_attention_heads)."},
        "num_key_value_heads": {"type": "int", "minimum": 1, "backend_key": "num_query_groups",
                                "doc": "Key/value heads, for grouped-query attention "
                                       "(default: model.config.num_key_value_heads)."},
    },
    "ranger21": {
        "num_iterations": {"type": "int", "minimum": 1, "example": 1000,
                           "doc": "Total optimizer steps, for Ranger21's built-in warmup and "
                                  "warm-down (default: max_steps)."},
    },
    **{key: {"ns_coeffs": {"type": "str", "default": "original",
                           "choices": ["original", "polar_express"],
                           "doc": "Newton-Schulz coefficients: a named set (tuples are not "
                                  "exposed)."}}
       for key in ("muon", "muonclip", "normuon", "adamuon", "adago")},
}

#: The Muon family's settings of its own AdamW groups (use_muon=False): a matrix_only name
#: never builds one (the router's fallback optimizer takes that place).
_MUON_ADAMW = {key: "applies to use_muon=False groups, which a matrix_only name never has"
               for key in ("adamw_lr", "adamw_betas", "adamw_wd", "adamw_eps")}

#: key -> {option: why it is not exposed}; "*" applies to every name.
DROPPED_ARGS: dict[str, dict[str, str]] = {
    "*": {"foreach": "an implementation switch the library chooses itself",
          "maximize": "the hub minimizes the loss"},
    "a2grad": {"lr": "A2Grad never reads it (its docs: 'Learning rate. No needed.'): the "
                     "name takes no learning rate, so an explicit one is refused, not ignored"},
    "adago": {"use_muon": "set per group by the hub"},
    "adammini": {"model_sharding": "FSDP/ZeRO only; not supported by the hub",
                 "num_embeds": "see hidden_size", "num_heads": "see num_attention_heads",
                 "num_query_groups": "see num_key_value_heads"},
    "adashift": {"reduce_func": "a Python callable (max by default)"},
    "adopt": {"clip_lambda": "a Python callable (step -> clip value)"},
    "adafactor": {"momentum_dtype": "a torch.dtype (bfloat16 by default)"},
    "fadam": {"momentum_dtype": "a torch.dtype", "fim_dtype": "a torch.dtype"},
    "kron": {"pre_conditioner_update_probability": "a float or a callable",
             "memory_save_mode": "an enum-like None/str the library checks itself",
             "mu_dtype": "a torch.dtype", "precondition_dtype": "a torch.dtype"},
    "rose": {"compute_dtype": "a torch.dtype (float64 by default)",
             "wd_schedule": "false or a float: a union the option grammar cannot type"},
    "alig": {"projection_fn": "a Python callable"},
    "scion": {"norm_type": "an enum member", "norm_kwargs": "a dict"},
    "scionlight": {"norm_type": "an enum member", "norm_kwargs": "a dict"},
    "ranger21": {"num_iterations": "declared by hand"},
    **{key: {"ns_reset_steps": "a tuple of steps for the Newton-Schulz reset schedule",
             **_MUON_ADAMW} for key in ("muon", "muonclip")},
    **{key: dict(_MUON_ADAMW) for key in ("normuon", "adamuon", "adago")},
    "sam": {"base_optimizer": "declared by hand"},
    "wsam": {"base_optimizer": "declared by hand"},
    "friendlysam": {"base_optimizer": "declared by hand"},
    "looksam": {"base_optimizer": "declared by hand"},
    "flashadamw": {"master_weight_bits": "needs bf16/fp16 parameters; not exposed"},
}

#: The projection options of pytorch-optimizer's GaLore / APOLLO / Fira: param-group keys.
PROJECTION_ARGS: dict[str, dict[str, Any]] = {
    "rank": {"type": "int", "default": 128, "minimum": 1, "target_group": True,
             "doc": "Rank of the gradient projection; capped at each target weight's smaller "
                    "side."},
    "update_proj_gap": {"type": "int", "default": 200, "minimum": 1, "target_group": True,
                        "doc": "Steps between refreshes of the projection."},
    "scale": {"type": "float", "default": 0.25, "exclusive_minimum": 0.0, "target_group": True,
              "doc": "Factor applied to the projected-back update."},
    "projection_type": {"type": "str", "default": "std",
                        "choices": ["std", "reverse_std", "right", "left", "full", "random"],
                        "target_group": True,
                        "doc": "Side projected: 'std' (the smaller one), 'reverse_std', "
                               "'right', 'left', 'full' (both) or 'random'."},
}

#: Built-in names that are the reference for a pytorch-optimizer duplicate.
REFERENCE: dict[str, str] = {
    "galore": "galore_adamw", "apollo": "apollo_adamw", "lomo": "lomo", "adalomo": "adalomo",
    "schedulefreeadamw": "schedule_free_adamw", "schedulefreeradam": "schedule_free_radam",
    "schedulefreesgd": "schedule_free_sgd", "stableadamw": "stable_adamw",
    "adafactor": "adafactor", "ademamix": "ademamix", "grokfastadamw": "grokadamw",
    "adammini": "adam_mini", "came": "came", "prodigy": "prodigy",
}


def optimizer_classes() -> dict[str, type]:
    """Every optimizer pytorch-optimizer registers, plus its SAM family (not registered)."""
    import pytorch_optimizer
    from pytorch_optimizer.optimizer import OPTIMIZERS

    sam = {name.lower(): getattr(pytorch_optimizer, name)
           for name in ("SAM", "GSAM", "WSAM", "FriendlySAM", "LookSAM")}
    return dict(sorted({**OPTIMIZERS, **sam}.items()))

#: key -> engines it is refused on, as tools/distributed_matrix.py measured (DDP and FSDP2,
#: two gloo processes, against one process; 2026-12-02): each name below failed there or
#: trained differently. Under FSDP2 most step DTensor shards with ops DTensor lacks
#: (in-place pow_/abs_/sqrt_, _foreach_copy_) or mix a plain tensor into a DTensor, or
#: compute per-tensor statistics (norms, factored moments, preconditioners) that a shard
#: would compute on its part only; under DDP the create_graph names (DDP has no double
#: backward) and AliG (its step size reads the local loss).
ENGINE_LIMITS: dict[str, list[str]] = {
    "a2grad": ["no_fsdp2"],
    "adafactor": ["no_fsdp2"],
    "adagc": ["no_fsdp2"],
    "adago": ["no_fsdp2"],
    "adahessian": ["no_ddp", "no_fsdp2"],
    "adalite": ["no_fsdp2"],
    "adalomo": ["no_fsdp2"],
    "adammini": ["no_fsdp2"],
    "adamp": ["no_fsdp2"],
    "adan": ["no_fsdp2"],
    "adanorm": ["no_fsdp2"],
    "adasmooth": ["no_fsdp2"],
    "adatam": ["no_fsdp2"],
    "adopt": ["no_fsdp2"],
    "aida": ["no_fsdp2"],
    "alice": ["no_fsdp2"],
    "alig": ["no_ddp", "no_fsdp2"],
    "amos": ["no_fsdp2"],
    "apollo": ["no_fsdp2"],
    "apollodqn": ["no_fsdp2"],
    "asgd": ["no_fsdp2"],
    "avagrad": ["no_fsdp2"],
    "came": ["no_fsdp2"],
    "conda": ["no_fsdp2"],
    "dadaptadagrad": ["no_fsdp2"],
    "dadaptadam": ["no_fsdp2"],
    "dadaptadan": ["no_fsdp2"],
    "dadaptlion": ["no_fsdp2"],
    "dadaptsgd": ["no_fsdp2"],
    "dash": ["no_fsdp2"],
    "diffgrad": ["no_fsdp2"],
    "emofact": ["no_fsdp2"],
    "fadam": ["no_fsdp2"],
    "fira": ["no_fsdp2"],
    "friendlysam": ["no_fsdp2"],
    "fromage": ["no_fsdp2"],
    "ftrl": ["no_fsdp2"],
    "galore": ["no_fsdp2"],
    "gravity": ["no_fsdp2"],
    "kron": ["no_fsdp2"],
    "lamb": ["no_fsdp2"],
    "lars": ["no_fsdp2"],
    "looksam": ["no_fsdp2"],
    "madgrad": ["no_fsdp2"],
    "mars": ["no_fsdp2"],
    "nero": ["no_fsdp2"],
    "normuon": ["no_fsdp2"],
    "novograd": ["no_fsdp2"],
    "prodigy": ["no_fsdp2"],
    "racs": ["no_fsdp2"],
    "ranger21": ["no_fsdp2"],
    "rose": ["no_fsdp2"],
    "sam": ["no_fsdp2"],
    "sara": ["no_fsdp2"],
    "scion": ["no_fsdp2"],
    "scionlight": ["no_fsdp2"],
    "sgdp": ["no_fsdp2"],
    "sgdsai": ["no_fsdp2"],
    "shampoo": ["no_fsdp2"],
    "sm3": ["no_fsdp2"],
    "soap": ["no_fsdp2"],
    "sophiah": ["no_ddp", "no_fsdp2"],
    "spam": ["no_fsdp2"],
    "spectralsphere": ["no_fsdp2"],
    "splus": ["no_fsdp2"],
    "srmm": ["no_fsdp2"],
    "stableadamw": ["no_fsdp2"],
    "stablespam": ["no_fsdp2"],
    "swats": ["no_fsdp2"],
    "tam": ["no_fsdp2"],
    "wsam": ["no_fsdp2"],
}


#: key -> the DeepSpeed ZeRO stages it steps like one process under, as
#: tools/deepspeed_matrix.py measured (two gloo processes, bit for bit; 2026-12-02):
#: ``deepspeed_zero`` for stages 1 and 2, ``deepspeed_zero3`` for stage 3. An allow-list:
#: OptimHubTrainer refuses a name without it under DeepSpeed. The names below update
#: elementwise, which ZeRO's flat partitions cannot change; those with only
#: ``deepspeed_zero`` count steps per param group, which ZeRO-3's one step() call per
#: sub-group advances more than once per step. asgd is the other way round (differs by
#: 4.1e-4 under ZeRO 1 and 2, not traced). adagc is left out although equal at the tool's
#: width 48: it clips each tensor by its own norm, and differed by 5.9e-3 at width 64.
DEEPSPEED: dict[str, list[str]] = {
    "accsgd": ["deepspeed_zero", "deepspeed_zero3"],
    "adabelief": ["deepspeed_zero"],
    "adabound": ["deepspeed_zero"],
    "adadelta": ["deepspeed_zero", "deepspeed_zero3"],
    "adai": ["deepspeed_zero"],
    "adamax": ["deepspeed_zero"],
    "adamc": ["deepspeed_zero"],
    "adamod": ["deepspeed_zero"],
    "adams": ["deepspeed_zero"],
    "adamwsn": ["deepspeed_zero"],
    "adan": ["deepspeed_zero"],
    "adanorm": ["deepspeed_zero"],
    "adapnm": ["deepspeed_zero"],
    "adasmooth": ["deepspeed_zero", "deepspeed_zero3"],
    "ademamix": ["deepspeed_zero"],
    "adopt": ["deepspeed_zero"],
    "aggmo": ["deepspeed_zero", "deepspeed_zero3"],
    "ano": ["deepspeed_zero"],
    "asgd": ["deepspeed_zero3"],
    "bcos": ["deepspeed_zero", "deepspeed_zero3"],
    "dadaptadagrad": ["deepspeed_zero", "deepspeed_zero3"],
    "dadaptadam": ["deepspeed_zero", "deepspeed_zero3"],
    "dadaptadan": ["deepspeed_zero", "deepspeed_zero3"],
    "dadaptlion": ["deepspeed_zero", "deepspeed_zero3"],
    "diffgrad": ["deepspeed_zero"],
    "dualadam": ["deepspeed_zero"],
    "emolynx": ["deepspeed_zero", "deepspeed_zero3"],
    "emonavi": ["deepspeed_zero", "deepspeed_zero3"],
    "exadam": ["deepspeed_zero"],
    "focus": ["deepspeed_zero"],
    "ftrl": ["deepspeed_zero", "deepspeed_zero3"],
    "grams": ["deepspeed_zero"],
    "grokfastadamw": ["deepspeed_zero"],
    "kate": ["deepspeed_zero", "deepspeed_zero3"],
    "laprop": ["deepspeed_zero"],
    "lion": ["deepspeed_zero", "deepspeed_zero3"],
    "msvag": ["deepspeed_zero"],
    "padam": ["deepspeed_zero"],
    "pid": ["deepspeed_zero", "deepspeed_zero3"],
    "pnm": ["deepspeed_zero"],
    "qhadam": ["deepspeed_zero", "deepspeed_zero3"],
    "qhm": ["deepspeed_zero", "deepspeed_zero3"],
    "radam": ["deepspeed_zero"],
    "schedulefreeadamw": ["deepspeed_zero"],
    "schedulefreeradam": ["deepspeed_zero"],
    "schedulefreesgd": ["deepspeed_zero"],
    "sgdw": ["deepspeed_zero", "deepspeed_zero3"],
    "signsgd": ["deepspeed_zero", "deepspeed_zero3"],
    "simplifiedademamix": ["deepspeed_zero", "deepspeed_zero3"],
    "srmm": ["deepspeed_zero"],
    "swats": ["deepspeed_zero"],
    "tiger": ["deepspeed_zero", "deepspeed_zero3"],
    "vsgd": ["deepspeed_zero"],
    "yogi": ["deepspeed_zero"],
}

#: key -> ``no_dcp``: its state does not resume through torch.distributed.checkpoint, as
#: tools/distributed_checkpoint.py measured. None since 2026-12-03: AdaShift (its gradient
#: queue is saved as ``keep_num`` slots, so DCP loads all of it: 5.4e-3 off before),
#: EmoLynx and EmoNavi (their ``state["ema"]`` travels in the param groups: DCP's
#: ``get_state_dict`` failed with ``KeyError: 'ema'``) are fixed in the plugin, and LOMO (no
#: ``step()`` for DCP's priming) in optimhub.distributed_checkpoint, which saves an
#: optimizer without state or step() as its model and param-group values; all bit for bit
#: both ways.
DCP: dict[str, list[str]] = {}

TABLES = Tables(
    documentation="https://pytorch-optimizers.readthedocs.io/en/latest/optimizer/",
    backend="pytorch_optimizer",
    distribution="pytorch-optimizer",
    namespace="pto",
    min_version="4.1.0",
    label="pytorch-optimizer",
    classes=optimizer_classes,
    excluded=EXCLUDED,
    capabilities=CAPABILITIES,
    engine_limits=merged_limits(ENGINE_LIMITS, DEEPSPEED, DCP),
    state=STATE,
    hand_args=HAND_ARGS,
    dropped_args=DROPPED_ARGS,
    option_sets={"pto_projection": PROJECTION_ARGS},
    entry_option_sets={k: ["pto_projection"] for k, caps in CAPABILITIES.items()
                       if "target_modules" in caps},
    reference=REFERENCE,
    all_hyperparameters=("sam", "wsam", "friendlysam", "looksam"),
)

if __name__ == "__main__":
    sys.exit(main(TABLES, doc=__doc__ or ""))
