"""optimhub inside ``transformers.Trainer``: any optimhub name, each loop contract kept.

    from optimhub.integrations.transformers import OptimHubTrainer

    trainer = OptimHubTrainer(model=model, args=training_args, train_dataset=data,
                              optim=NAME,  # any name `optimhub list` shows
                              optim_target_modules=[r".*attn.*", r".*mlp.*"])  # low-rank
    trainer.train()

``TrainingArguments(optim=...)`` accepts only the names in HF's enum, so the name is given to
the Trainer (it falls back to ``args.optim``). The optimizer and the LR scheduler are built by
``optimhub.create_optimizer`` / ``optimhub.schedules.create_scheduler`` from the same
arguments HF reads, and what the optimizer's capabilities ask of the loop is done inside
``trainer.train()``:

- schedule-free: ``optimizer.eval()`` around every save (checkpoints, ``save_model``, the best
  model loaded at the end) and at the end of training, so the averaged weights are what is
  saved and kept; a non-constant ``lr_scheduler_type`` is refused before training;
- fused backward (LOMO): the loss goes through the optimizer's ``grad_norm`` /
  ``fused_backward(loss, lr)`` (``optimhub.drive``) with the scheduler's lr; the loop's
  ``optimizer.step()`` does nothing;
- layerwise: parameters are stepped inside backward by the hub's ``LayerwiseOptimizer``,
  scheduled and logged with its real lr; its hooks are removed when ``train()`` returns;
- both in-backward modes refuse ``max_grad_norm > 0``, gradient accumulation and fp16 loss
  scaling before anything is built, and multi-process training unless every trainable
  parameter is an FSDP2 shard (below);
- FSDP2: a model sharded by transformers when it is loaded
  (``from_pretrained(..., distributed_config=DistributedConfig(fsdp_size=N))``) is trained
  as it is (the Trainer neither wraps it in DDP nor shards it again), on CPU processes too.
  FSDP2 reduce-scatters each gradient inside backward before the parameter's
  post-accumulate-grad hooks run, so the in-backward modes see the averaged gradient there;
- a multi-process run that asks for FSDP in a way that gets DDP (``fsdp``/``fsdp_config``,
  ``ACCELERATE_USE_FSDP`` or a model sharded with ``fully_shard`` by hand, as accelerate
  does on CPU processes) is refused when the Trainer is constructed, whatever the optimizer.

HF's untouched defaults are not choices: ``max_grad_norm=1.0`` with an in-backward optimizer
and ``lr_scheduler_type="linear"`` with a schedule-free one run as ``0`` and ``"constant"``,
with one ``OptimHubWarning`` (:mod:`optimhub.trainer_settings`); any other value the optimizer
cannot honour is refused.

It is a drop-in: ``optimizers=(optimizer, scheduler)`` and ``optimizer_cls_and_kwargs=``
are used as the stock Trainer uses them, and when the optimizer was built by optimhub (its
spec is known) its loop contract is kept as above. For a Trainer class that cannot change,
:func:`hub_optimizer` gives the stock ``transformers.Trainer`` (5.x) an optimizer factory:

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      optimizer_cls_and_kwargs=hub_optimizer("apollo_adamw", args))

Importing this module imports transformers and accelerate (without them:
``MissingBackendError`` naming ``pip install "optimhub[transformers]"``); ``import optimhub``
does not import them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..errors import CapabilityError, MissingBackendError, OptimArgsError, OptimHubWarning

try:
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers import Trainer
except ImportError as exc:  # the optional extra is missing
    raise MissingBackendError(
        "optimhub.integrations.transformers (OptimHubTrainer, hub_optimizer) needs the "
        f"packages 'transformers' and 'accelerate' ({type(exc).__name__}: {exc}). Install "
        'them with: pip install "optimhub[transformers]"'
    ) from exc

from ..checkpoint import spec_or_none
from ..factory import create_optimizer
from ..layerwise import LayerwiseOptimizer
from ..prepare import check_layerwise_allowed
from ..route_plan import spec_for
from ..routed import RoutedOptimizer
from ..schedules import check_schedule_forms, create_scheduler
from ..spec import Capability, OptimizerSpec
from ..trainer_settings import (
    hf_default,
    required_settings,
    setting_name,
    stock_trainer_problem,
)
from ..training import TrainingDriver, check_loop_contract, drive

__all__ = ["HubOptimizerFactory", "OptimHubTrainer", "check_deepspeed", "hub_optimizer",
           "zero_stage"]


def zero_stage(deepspeed_config: Mapping[str, Any] | None) -> int:
    """The ZeRO stage a DeepSpeed config asks for; 3, the strictest rule, where it says
    none that can be read (no config, or a stage such as "auto")."""
    stage = (deepspeed_config or {}).get("zero_optimization", {}).get("stage")
    return stage if isinstance(stage, int) and not isinstance(stage, bool) else 3


def check_deepspeed(spec: OptimizerSpec, stage: int) -> None:
    """Refuse, before anything is built, an optimizer that DeepSpeed ZeRO ``stage`` does
    not step like one process.

    ZeRO hands the client optimizer its own flat fp32 partitions of each param group (every
    weight of the group, concatenated and cut at rank boundaries), and at stage 3 calls
    ``step()`` once per parameter sub-group with the other groups emptied. Only an
    elementwise update is unchanged by that, so this is an allow-list: the names that
    tools/deepspeed_matrix.py measured bit for bit equal to one process carry
    ``deepspeed_zero`` (stages 1 and 2; stage 0 was not measured and gets their rule)
    and ``deepspeed_zero3`` (stage 3); every other name, new or not measurable here, is
    refused.
    """
    name = spec.name
    fix = "use DDP, or FSDP2 where docs/distributed.md shows it works"
    if spec.has(Capability.LOW_RANK) or spec.has(Capability.MATRIX_ONLY) or spec.routed:
        raise CapabilityError(
            f"optimizer {name!r} needs each weight as its 2-D matrix (a low-rank "
            "projection, Newton-Schulz or per-route param groups), but DeepSpeed ZeRO "
            "steps the optimizer on flat 1-D partitions and replaces its param groups "
            "(measured with DeepSpeed 0.19.8: low-rank optimizers fail with IndexError, a "
            f"routed one at its first step, Muon under ZeRO-3 on a 1-D gradient); {fix}"
        )
    needed = Capability.DEEPSPEED_ZERO3 if stage >= 3 else Capability.DEEPSPEED_ZERO
    if spec.has(needed):
        return
    if needed is Capability.DEEPSPEED_ZERO3 and spec.has(Capability.DEEPSPEED_ZERO):
        raise CapabilityError(
            f"optimizer {name!r} steps like one process under DeepSpeed ZeRO stages 1 and 2 "
            "but not 3, which calls step() once per parameter sub-group (the other groups "
            "emptied): a step count kept per param group runs ahead of the real steps; use "
            "ZeRO stage 1 or 2, DDP, or FSDP2 where docs/distributed.md shows it works"
        )
    raise CapabilityError(
        f"optimizer {name!r} is not among the optimizers measured to step like one "
        f"process under DeepSpeed ZeRO stage {stage} (capability {needed.value!r}): ZeRO "
        "steps it on flat 1-D partitions that concatenate a param group's weights, which "
        "changes any update that is not elementwise (per-tensor norms, factored, blockwise "
        f"8-bit or preconditioned state); {fix}"
    )


class OptimHubTrainer(Trainer):
    """A ``transformers.Trainer`` whose optimizer and scheduler come from optimhub.

    Keyword arguments on top of ``Trainer``'s:

    - ``optim``: any optimhub name or alias, a third-party plugin's included, or a route set
      (``"matrix, conv -> muon_torch; * -> adamw_torch"``, see docs/user-guide.md, Routing)
      (default: ``args.optim``);
    - ``optim_args``: a ``"k=v,k2=(a,b)"`` string or a dict, typed against the optimizer's
      schema (default: ``args.optim_args``);
    - ``optim_target_modules``: for low-rank optimizers (default: ``args.optim_target_modules``);
    - ``layerwise``: step every parameter inside backward (for specs that allow it);
    - ``param_group_rules``: per-parameter lr / weight decay (:class:`optimhub.ParamGroupRule`),
      which ``group_lr_schedules`` can key by their patterns;
    - ``group_lr_schedules``: param groups with a learning-rate schedule of their own
      (``create_scheduler``'s ``group_schedules``);
    - ``weight_decay_schedule``: a weight-decay schedule stepped and checkpointed with the
      lr scheduler (``create_scheduler``'s ``weight_decay_schedule``).

    ``optimizers=(optimizer, scheduler)`` and ``optimizer_cls_and_kwargs=`` work as in the
    stock Trainer (and exclude ``optim=``): the objects given are used as they are, and
    when optimhub built the optimizer (``optimhub.spec_of`` knows it; ``hub_optimizer``'s
    factory included) its loop contract is kept too. A foreign optimizer is driven exactly
    as the stock Trainer drives it; only a missing scheduler is built by optimhub (HF's
    learning rates, with optimhub's checks).
    """

    def __init__(
        self,
        *args: Any,
        optim: str | None = None,
        optim_args: str | Mapping[str, Any] | None = None,
        optim_target_modules: str | Sequence[str] | None = None,
        layerwise: bool = False,
        param_group_rules: Sequence[Any] | None = None,
        group_lr_schedules: Mapping[Any, Any] | None = None,
        weight_decay_schedule: Any = None,
        **kwargs: Any,
    ) -> None:
        check_schedule_forms(group_lr_schedules, weight_decay_schedule)
        super().__init__(*args, **kwargs)
        _refuse_fsdp_fallback(self)
        factory = _factory_kwargs(self.optimizer_cls_and_kwargs)
        given = self.optimizer is not None or (
            self.optimizer_cls_and_kwargs is not None and factory is None)
        if (given or factory is not None) and (
            optim is not None or optim_args is not None or optim_target_modules is not None
            or layerwise
        ):
            raise OptimArgsError(
                "OptimHubTrainer got both an optimizer (optimizers= or "
                "optimizer_cls_and_kwargs=) and optim=/optim_args=/optim_target_modules=/"
                "layerwise=, which would build another one; give one of the two"
            )
        if factory is not None:  # hub_optimizer(...): the hub path, under its own name
            optim, optim_args = factory["name"], factory["optim_args"]
            optim_target_modules = factory["optim_target_modules"]
        #: The user's optimizer (or optimizer_cls_and_kwargs) is used as the stock Trainer
        #: uses it; only the hub's own optimizers are built (and rebuilt) here.
        self._user_optimizer = given
        self.optimizer_spec: OptimizerSpec | None = None
        self.optim: str | None = None
        if given:
            self._adopt_spec(self.optimizer)
        else:
            self.optim = optim if optim is not None else _name(self.args.optim)
        self.optim_args = optim_args if optim_args is not None else self.args.optim_args
        if self.optim is not None:
            # An unknown name or a bad route set fails here; a routed name's capabilities are
            # its routes' (and, for a preset, its optim_args': a schedule-free fallback...).
            self.optimizer_spec = spec_for(self.optim, optim_args=self.optim_args)
        self.optim_target_modules = (
            optim_target_modules if optim_target_modules is not None
            else self.args.optim_target_modules
        )
        self.layerwise = layerwise or isinstance(self.optimizer, LayerwiseOptimizer)
        self.param_group_rules = param_group_rules
        self.group_lr_schedules = group_lr_schedules
        self.weight_decay_schedule = weight_decay_schedule
        self._driver: TrainingDriver | None = None
        self._num_training_steps: int | None = None
        self._eval_depth = 0
        self._replaced_defaults: dict[str, Any] = {}
        self._defaults_warned = False

    def _adopt_spec(self, optimizer: Any) -> None:
        """The spec of a user's optimizer, when optimhub built it (None: a foreign one)."""
        spec = spec_or_none(_unwrap(optimizer)) if optimizer is not None else None
        self.optimizer_spec = spec
        self.optim = spec.name if spec is not None else None

    # ---- what the spec says ----------------------------------------------------------
    @property
    def _in_backward(self) -> str | None:
        """How the parameters are updated inside backward, if they are (None: by step())."""
        spec = self.optimizer_spec
        if spec is None or not spec.updates_in_backward(self.layerwise):
            return None
        return "fused backward" if spec.has(Capability.FUSED_BACKWARD) else "layerwise"

    def _zero_stage(self) -> int:
        """The ZeRO stage of the DeepSpeed config accelerate runs this Trainer with."""
        plugin = self.accelerator.state.deepspeed_plugin
        return zero_stage(getattr(plugin, "deepspeed_config", None))

    def _setting(self, field: str) -> Any:
        """A TrainingArguments value as this Trainer runs it: HF's untouched default
        replaced where the optimizer cannot honour it (see _replace_untouched_defaults)."""
        if field in self._replaced_defaults:
            return self._replaced_defaults[field]
        return getattr(self.args, field)

    def _replace_untouched_defaults(self) -> None:
        """HF's defaults (max_grad_norm=1.0, lr_scheduler_type="linear") are not choices:
        where the optimizer cannot honour one, run with the value it needs and say so once.
        Any other value it cannot honour is left for _check_loop_contract to refuse."""
        spec = self.optimizer_spec
        replaced: dict[str, Any] = {}
        reasons = []
        for setting in required_settings(spec, layerwise=self.layerwise):
            value = getattr(self.args, setting.field)
            default = hf_default(self.args, setting.field)
            if setting.satisfied_by(value) or default is dataclasses.MISSING or (
                setting_name(value) != setting_name(default)
            ):
                continue
            replaced[setting.field] = setting.value
            reasons.append(
                f"{setting.field}={setting_name(value)!r} (HF's default) runs as "
                f"{setting.field}={setting.value!r}: {setting.reason}"
            )
        self._replaced_defaults = replaced
        if reasons and not self._defaults_warned:
            self._defaults_warned = True
            fields = ", ".join(f"{k}={v!r}" for k, v in replaced.items())
            warnings.warn(
                f"optimhub: optimizer {self.optim!r}: " + "; ".join(reasons) + ". Set "
                f"TrainingArguments({fields}) to say so and silence this warning; any other "
                "value it cannot honour is refused.",
                OptimHubWarning,
                stacklevel=4,
            )

    def _check_loop_contract(self) -> None:
        """Refuse, before anything is built, what the Trainer cannot do for this optimizer.

        These are hub/training.py's contract rules (TrainingDriver._check_contracts), checked
        from the spec rather than from a built optimizer, and worded in TrainingArguments'
        terms: building LOMO first would hook the model for good. A foreign optimizer (no
        spec) is the stock Trainer's business: nothing is checked.
        """
        name, args, spec = self.optim, self.args, self.optimizer_spec
        if spec is None:
            return
        check_layerwise_allowed(spec, self.layerwise)  # before saying anything about it
        self._replace_untouched_defaults()
        check_loop_contract(
            spec, layerwise=self.layerwise, max_grad_norm=self._setting("max_grad_norm") or None,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            # The Trainer calls step() without a closure.
            has_closure=False,
        )
        # Every trainable parameter an FSDP2 shard: no DDP, and gradients reduced inside
        # backward (the docstring above); a partly sharded model is not that.
        replicated = _replicated_trainable(self.model)
        sharded = replicated == [] and not self.is_deepspeed_enabled
        mode = self._in_backward
        if mode is not None:
            where = f"optimizer {name!r} updates the parameters inside backward ({mode}), so"
            if args.fp16:
                raise CapabilityError(
                    f"{where} fp16 loss scaling cannot be undone before the update (the "
                    "GradScaler unscales at step(), which comes too late): use bf16=True or "
                    "float32"
                )
            engine = (args.world_size > 1 or self.is_deepspeed_enabled
                      or self.is_fsdp_enabled)
            if engine and not sharded:
                also = (f" (FSDP2 shards the model's parameters but not {replicated[0]!r}, "
                        "whose gradient the Trainer reduces after backward)"
                        if replicated else "")
                raise CapabilityError(
                    f"{where} it cannot run under DDP, accelerate's FSDP or DeepSpeed (they "
                    "reduce gradients after backward, but these updates consume them inside "
                    f"it){also}: train in one process, or on FSDP2 with the model sharded "
                    "when it is loaded (from_pretrained(..., distributed_config="
                    "DistributedConfig(fsdp_size=N)), every trainable parameter a shard; "
                    "docs/distributed.md)"
                )
        if self.is_deepspeed_enabled:
            check_deepspeed(spec, self._zero_stage())
        if spec.has(Capability.NO_DDP) and args.world_size > 1 and not sharded:
            raise CapabilityError(
                f"optimizer {name!r} cannot run under DistributedDataParallel "
                f"(world_size={args.world_size}): train in one process"
            )
        schedule = _name(self._setting("lr_scheduler_type"))
        if spec.has(Capability.SCHEDULE_FREE) and schedule != "constant":
            raise CapabilityError(
                f"optimizer {name!r} is schedule-free: it needs a constant learning rate (its "
                f"iterate averaging replaces the decay), but lr_scheduler_type={schedule!r}: "
                "set TrainingArguments(lr_scheduler_type='constant'); a warmup goes to the "
                "optimizer itself through warmup_steps"
            )

    # ---- building ----------------------------------------------------------------------
    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self._check_loop_contract()
        self._num_training_steps = num_training_steps
        super().create_optimizer_and_scheduler(num_training_steps)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Build ``self.optim`` through optimhub (once; HF's rule), with the real step count;
        or take the user's optimizer (or ``optimizer_cls_and_kwargs``) as the stock Trainer
        does, and drive it by its contract when optimhub built it."""
        if self._user_optimizer:
            return self._adopt_user_optimizer(model)
        carried = None
        previous = self._backend_optimizer()
        if self.optimizer is not None and isinstance(previous, LayerwiseOptimizer) and (
            previous.closed
        ):
            # The last train() removed its hooks: build it again, with its state.
            carried, self.optimizer = previous.state_dict(), None
        if self.optimizer is not None:
            return self.optimizer
        self._check_loop_contract()
        model = self.model if model is None else model
        overrides: dict[str, Any] = {
            "optim_args": self.optim_args,
            "optim_target_modules": self.optim_target_modules,
        }
        if self.layerwise:
            overrides["layerwise"] = True
        if self.param_group_rules is not None:
            overrides["param_group_rules"] = self.param_group_rules
        steps = self._training_steps()
        if steps is not None:
            overrides["max_steps"] = steps  # a warmup ratio (warmup_steps < 1) needs it
        optimizer = create_optimizer(self.optim, model, self.args, **overrides)
        if carried is not None:
            optimizer.load_state_dict(carried)
        self.optimizer = self._driven(optimizer, model)
        return self.optimizer

    def _adopt_user_optimizer(self, model: torch.nn.Module | None) -> torch.optim.Optimizer:
        if self.optimizer is None:  # optimizer_cls_and_kwargs: HF builds it, as it would
            super().create_optimizer(model)
            self._adopt_spec(self.optimizer)
            self.layerwise = isinstance(self.optimizer, LayerwiseOptimizer)
        if self._driver is None and self.optimizer_spec is not None:
            self._check_loop_contract()
            self.optimizer = self._driven(_unwrap(self.optimizer),
                                          self.model if model is None else model)
        return self.optimizer

    def _driven(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Any:
        """The driver of a hub optimizer, and what the Trainer loop should hold."""
        # Clipping and accumulation are the HF loop's; _check_loop_contract refused them
        # for the in-backward modes, so the driver is given neither.
        self._driver = drive(optimizer, model=model)
        if self._driver.fused:
            return _SteppedInBackward.prepared(optimizer, self.accelerator)
        return optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Any:
        """``args.lr_scheduler_type`` through optimhub, with HF's warmup count and kwargs.

        A schedule-free optimizer got ``warmup_steps`` itself (HF passes it too), so its
        schedule gets none: two warmups would multiply.
        """
        if self.lr_scheduler is None:
            target = _unwrap(optimizer if optimizer is not None else self.optimizer)
            spec = self.optimizer_spec
            warmup = (0 if spec is not None and spec.has(Capability.SCHEDULE_FREE)
                      else self.args.get_warmup_steps(num_training_steps))
            self.lr_scheduler = create_scheduler(
                self._setting("lr_scheduler_type"), target, num_warmup_steps=warmup,
                num_training_steps=num_training_steps, **(self.args.lr_scheduler_kwargs or {}),
                group_schedules=self.group_lr_schedules,
                weight_decay_schedule=self.weight_decay_schedule,
            )
            self._created_lr_scheduler = True  # HF's flag: rebuilt on the next train()
        return self.lr_scheduler

    def _training_steps(self) -> int | None:
        if self.is_in_train and self.state.max_steps > 0:
            return self.state.max_steps  # set by the loop before it builds the optimizer
        if self._num_training_steps is not None:
            return self._num_training_steps
        return self.args.max_steps if self.args.max_steps > 0 else None

    def _backend_optimizer(self) -> torch.optim.Optimizer | None:
        return self._driver.optimizer if self._driver is not None else None

    # ---- the loop --------------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any) -> Any:
        self._check_loop_contract()
        try:
            return super().train(*args, **kwargs)
        finally:
            optimizer = self._backend_optimizer()
            if self._driver is not None and self._driver.schedule_free:
                self._driver.finish()  # the model keeps the averaged weights, as it is saved
            if isinstance(optimizer, (LayerwiseOptimizer, RoutedOptimizer)) and (
                not self._user_optimizer
            ):
                optimizer.close()  # a later backward must not update the model (a user's
                # own layerwise optimizer stays as given: they close it)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        """HF's step; for fused backward its ``accelerator.backward`` becomes the driver's."""
        if self._driver is None or not self._driver.fused:
            return super().training_step(model, inputs, num_items_in_batch)
        with _backward_through(self.accelerator, self._driver.backward):
            return super().training_step(model, inputs, num_items_in_batch)

    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        """No gradient is left to clip after an in-backward update (HF's default
        max_grad_norm=1.0 gets here; _check_loop_contract refused any other value)."""
        if self._updates_in_backward():
            return None
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        """No gradient is left after an in-backward update: report none (HF logs 0.0)."""
        if self._updates_in_backward():
            return None
        return super()._get_grad_norm(model, grad_norm)

    def _updates_in_backward(self) -> bool:
        return self._driver is not None and (self._driver.fused or self._driver.layerwise)

    # ---- saving: schedule-free keeps the averaged weights ------------------------------
    @contextlib.contextmanager
    def _evaluation_weights(self) -> Iterator[None]:
        """Schedule-free: inside, the model holds the averaged (eval) weights and the
        optimizer is in eval mode, so weights and optimizer state are saved consistently;
        during training the training weights come back on the way out."""
        driver = self._driver
        if driver is None or not driver.schedule_free:
            yield
            return
        driver.optimizer.eval()
        self._eval_depth += 1
        try:
            yield
        finally:
            self._eval_depth -= 1
            if self._eval_depth == 0 and self.is_in_train:
                driver.optimizer.train()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        with self._evaluation_weights():
            super().save_model(output_dir, _internal_call=_internal_call)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        with self._evaluation_weights():
            super()._save_checkpoint(model, trial)

    def _load_best_model(self) -> None:
        # The best checkpoint holds eval weights: load them in eval mode.
        with self._evaluation_weights():
            super()._load_best_model()


# ---- the stock Trainer ------------------------------------------------------------------
class HubOptimizerFactory:
    """The optimizer "class" :func:`hub_optimizer` gives ``transformers.Trainer``: a
    transformers 5.x optimizer factory (``is_optimizer_factory``), which the Trainer
    instantiates without arguments and then calls with ``(model, **kwargs)``."""

    def __init__(self, *params: Any, **kwargs: Any) -> None:
        if params or kwargs:  # a transformers without factories calls cls(params, **kwargs)
            raise MissingBackendError(
                "this transformers Trainer treats optimizer_cls_and_kwargs as an optimizer "
                "class, not a factory (factories came with transformers 5.x): upgrade with "
                "pip install -U transformers, or use OptimHubTrainer"
            )

    def __call__(self, model: torch.nn.Module, *, name: str, args: Any,
                 optim_args: Any = None, optim_target_modules: Any = None
                 ) -> torch.optim.Optimizer:
        return create_optimizer(name, model, args, optim_args=optim_args,
                                optim_target_modules=optim_target_modules)


def hub_optimizer(
    name: str,
    args: Any,
    *,
    optim_args: str | Mapping[str, Any] | None = None,
    optim_target_modules: str | Sequence[str] | None = None,
) -> tuple[type[HubOptimizerFactory], dict[str, Any]]:
    """``optimizer_cls_and_kwargs`` for the stock ``transformers.Trainer`` (5.x): any optimhub
    name, built by ``optimhub.create_optimizer(name, model, args, ...)`` when the Trainer
    creates its optimizer.

        trainer = Trainer(model=model, args=args, train_dataset=data,
                          optimizer_cls_and_kwargs=hub_optimizer("galore_adamw", args))

    ``args`` are the Trainer's ``TrainingArguments`` (learning rate, betas, weight decay,
    ``optim_args`` and ``optim_target_modules`` are read from them; the keywords here win).
    The stock loop knows no loop contract, so what it cannot do is refused here, before
    anything is built: an optimizer that updates inside backward (use
    :class:`OptimHubTrainer`), and for a schedule-free one any ``lr_scheduler_type`` but
    ``"constant"`` (the stock Trainer would build that schedule itself; HF's untouched
    default included, since only OptimHubTrainer can replace it).
    """
    given = {} if optim_args is None else {"optim_args": optim_args}
    spec = spec_for(name, args, **given)  # an unknown name or a bad route set fails here
    problem = stock_trainer_problem(spec)
    if problem is not None:
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot be trained by the stock transformers.Trainer: "
            f"{problem}"
        )
    for setting in required_settings(spec):
        value = getattr(args, setting.field, None)
        if not setting.satisfied_by(value):
            raise CapabilityError(
                f"optimizer {spec.name!r} needs TrainingArguments({setting.field}="
                f"{setting.value!r}), got {setting.field}={setting_name(value)!r}: "
                f"{setting.reason}. The stock Trainer builds its schedule itself; set it, or "
                "use OptimHubTrainer (which runs HF's untouched default as needed, with a "
                "warning)"
            )
    world_size = getattr(args, "world_size", 1)
    if spec.has(Capability.NO_DDP) and world_size > 1:
        raise CapabilityError(
            f"optimizer {spec.name!r} cannot run under DistributedDataParallel "
            f"(world_size={world_size}): train in one process"
        )
    return HubOptimizerFactory, {
        "name": spec.name, "args": args,
        "optim_args": optim_args if optim_args is not None else getattr(args, "optim_args",
                                                                         None),
        "optim_target_modules": (optim_target_modules if optim_target_modules is not None
                                 else getattr(args, "optim_target_modules", None)),
    }


def _factory_kwargs(cls_and_kwargs: Any) -> dict[str, Any] | None:
    """The keywords of :func:`hub_optimizer`'s pair (None: not ours)."""
    if isinstance(cls_and_kwargs, tuple) and len(cls_and_kwargs) == 2 and (
        cls_and_kwargs[0] is HubOptimizerFactory
    ):
        return dict(cls_and_kwargs[1])
    return None


class _SteppedInBackward(AcceleratedOptimizer):
    """accelerate's optimizer wrapper, for an optimizer that updates inside backward (fused
    backward): the Trainer's ``optimizer.step()`` has nothing left to do, and the backend's
    own ``step()`` refuses to run by contract (accelerate skips it by class for lomo-optim
    only; this does it by capability)."""

    @classmethod
    def prepared(cls, optimizer: torch.optim.Optimizer, accelerator: Any) -> _SteppedInBackward:
        wrapped = cls(optimizer, device_placement=accelerator.device_placement, scaler=None)
        # accelerate's marker for "already prepared": Trainer's accelerator.prepare() keeps
        # this wrapper (and registers it) instead of wrapping it again.
        wrapped._is_accelerate_prepared = True
        return wrapped

    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise CapabilityError(
                "this optimizer updates inside backward (fused backward); step(closure) cannot "
                "re-run the loss"
            )


@contextlib.contextmanager
def _backward_through(accelerator: Any, backward: Any) -> Iterator[None]:
    """For one training step, ``accelerator.backward(loss, **kwargs)`` calls ``backward(loss)``.

    HF's training_step ends in ``accelerator.backward``, which reaches LOMO's fused backward
    only for the names ``lomo``/``adalomo``; this routes every fused-backward optimizer (by
    capability) and keeps the rest of HF's step (inputs, loss, its scaling) unchanged.
    """
    accelerator.backward = lambda loss, **kwargs: backward(loss)
    try:
        yield
    finally:
        del accelerator.backward  # the class's method again


def _unwrap(optimizer: Any) -> Any:
    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


def _name(value: Any) -> str:
    """HF keeps names as str enums (OptimizerNames, SchedulerType)."""
    return str(getattr(value, "value", value))


def _refuse_fsdp_fallback(trainer: Trainer) -> None:
    """Refuse a multi-process run that asked for FSDP and would get DDP.

    accelerate (1.16) turns FSDP on only for GPU-type distributed types: on CPU processes
    (``MULTI_CPU``) it ignores ``TrainingArguments(fsdp=..., fsdp_config=...)``, its
    ``FullyShardedDataParallelPlugin`` and ``ACCELERATE_USE_FSDP``, and the Trainer wraps the
    model in ``DistributedDataParallel`` instead, silently (tools/trainer_fsdp2_probe.py). A
    model sharded with ``fully_shard`` by hand (DTensor parameters) gets the same DDP
    wrapper, which fails inside accelerate on the mixed tensors. Either way the user would
    not get FSDP2: say so before anything is built. A model transformers sharded when it
    loaded it (``DistributedConfig``) is what works: the Trainer skips DDP for it
    (tools/trainer_fsdp2.py).
    """
    args = trainer.args
    if trainer.is_fsdp_enabled or args.world_size <= 1 or getattr(
            trainer, "is_distributed_loading_by_transformers", False):
        return  # FSDP on, one process, or sharded by transformers (the Trainer skips DDP)
    asked = []
    if args.fsdp:
        version = (args.fsdp_config or {}).get("version", 2)
        asked.append(f"TrainingArguments(fsdp=..., fsdp_config version {version})")
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        asked.append("ACCELERATE_USE_FSDP=true")
    model = trainer.model
    if model is not None and any(_is_dtensor(p) for p in model.parameters()):
        asked.append("a model already sharded with fully_shard (DTensor parameters)")
    if not asked:
        return
    engine = getattr(trainer.accelerator.state.distributed_type, "value", "?")
    why = (": accelerate turns FSDP on only for GPU-type distributed types, not for CPU "
           "processes" if engine == "MULTI_CPU" else "")
    raise CapabilityError(
        f"OptimHubTrainer: {' and '.join(asked)} asked for FSDP, but accelerate did not "
        f"enable it (distributed type {engine}, world_size={args.world_size}{why}), so the "
        "Trainer would wrap the model in DistributedDataParallel instead"
        + (" (which fails on DTensor parameters)" if "DTensor" in asked[-1] else "")
        + ". For FSDP2 with the Trainer, let transformers shard the model when it loads it: "
        "from_pretrained(..., distributed_config=DistributedConfig(fsdp_size=N)) (the "
        "Trainer then trains it as it is, on CPU processes too); or remove the FSDP "
        "settings to train with DDP knowingly, or train on FSDP2 in your own loop "
        "(fully_shard, then optimhub.create_optimizer; docs/distributed.md)."
    )


def _is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a DTensor; imports nothing (no DTensor exists before
    torch.distributed.tensor is imported)."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and isinstance(tensor, dtensor)


def _replicated_trainable(model: torch.nn.Module | None) -> list[str] | None:
    """The trainable parameters of an FSDP2-sharded ``model`` that are not shards (plain
    tensors the Trainer all-reduces itself, such as adapters added after sharding); None
    when no parameter is a shard (the model is not sharded at all)."""
    if model is None:
        return None
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not any(_is_dtensor(p) for _, p in trainable):
        return None
    return [name for name, p in trainable if not _is_dtensor(p)]
