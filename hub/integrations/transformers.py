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
- both in-backward modes refuse ``max_grad_norm > 0`` (HF's default is 1.0), gradient
  accumulation, fp16 loss scaling and multi-process training before anything is built.

Importing this module imports transformers; ``import optimhub`` does not import it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from transformers import Trainer

from ..errors import CapabilityError, OptimArgsError
from ..factory import create_optimizer
from ..layerwise import LayerwiseOptimizer
from ..listing import get_spec
from ..schedules import check_schedule_forms, create_scheduler
from ..spec import Capability, OptimizerSpec
from ..training import TrainingDriver, check_loop_contract, drive

__all__ = ["OptimHubTrainer"]


class OptimHubTrainer(Trainer):
    """A ``transformers.Trainer`` whose optimizer and scheduler come from optimhub.

    Keyword arguments on top of ``Trainer``'s:

    - ``optim``: any optimhub name or alias, a third-party plugin's included (default:
      ``args.optim``);
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

    The optimizer is built from its name, so ``optimizers=`` and ``optimizer_cls_and_kwargs=``
    are refused: use ``transformers.Trainer`` for an optimizer built elsewhere.
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
        if self.optimizer is not None or self.lr_scheduler is not None or (
            self.optimizer_cls_and_kwargs is not None
        ):
            raise OptimArgsError(
                "OptimHubTrainer builds the optimizer and scheduler from optim= (an optimhub "
                "name); do not pass optimizers= or optimizer_cls_and_kwargs= to it. To train "
                "with an optimizer built elsewhere, use transformers.Trainer."
            )
        self.optim = optim if optim is not None else _name(self.args.optim)
        self.optimizer_spec: OptimizerSpec = get_spec(self.optim)  # an unknown name fails here
        self.optim_args = optim_args if optim_args is not None else self.args.optim_args
        self.optim_target_modules = (
            optim_target_modules if optim_target_modules is not None
            else self.args.optim_target_modules
        )
        self.layerwise = layerwise
        self.param_group_rules = param_group_rules
        self.group_lr_schedules = group_lr_schedules
        self.weight_decay_schedule = weight_decay_schedule
        self._driver: TrainingDriver | None = None
        self._num_training_steps: int | None = None
        self._eval_depth = 0

    # ---- what the spec says ----------------------------------------------------------
    @property
    def _in_backward(self) -> str | None:
        """How the parameters are updated inside backward, if they are (None: by step())."""
        spec = self.optimizer_spec
        if not spec.updates_in_backward(self.layerwise):
            return None
        return "fused backward" if spec.has(Capability.FUSED_BACKWARD) else "layerwise"

    def _check_loop_contract(self) -> None:
        """Refuse, before anything is built, what the Trainer cannot do for this optimizer.

        These are hub/training.py's contract rules (TrainingDriver._check_contracts), checked
        from the spec rather than from a built optimizer, and worded in TrainingArguments'
        terms: building LOMO first would hook the model for good.
        """
        name, args, spec = self.optim, self.args, self.optimizer_spec
        check_loop_contract(
            spec, layerwise=self.layerwise, max_grad_norm=args.max_grad_norm or None,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            # The Trainer calls step() without a closure.
            has_closure=False,
        )
        mode = self._in_backward
        if mode is not None:
            where = f"optimizer {name!r} updates the parameters inside backward ({mode}), so"
            if args.fp16:
                raise CapabilityError(
                    f"{where} fp16 loss scaling cannot be undone before the update (the "
                    "GradScaler unscales at step(), which comes too late): use bf16=True or "
                    "float32"
                )
            if args.world_size > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise CapabilityError(
                    f"{where} it cannot run under DDP, FSDP or DeepSpeed (they reduce gradients "
                    "after backward, but these updates consume them inside it): train in one "
                    "process"
                )
        if spec.has(Capability.NO_DDP) and args.world_size > 1:
            raise CapabilityError(
                f"optimizer {name!r} cannot run under DistributedDataParallel "
                f"(world_size={args.world_size}): train in one process"
            )
        schedule = _name(args.lr_scheduler_type)
        if spec.has(Capability.SCHEDULE_FREE) and schedule != "constant":
            raise CapabilityError(
                f"optimizer {name!r} is schedule-free: it needs a constant learning rate (its "
                f"iterate averaging replaces the decay), but lr_scheduler_type={schedule!r} "
                "(HF's default is 'linear'): set TrainingArguments(lr_scheduler_type="
                "'constant'); a warmup goes to the optimizer itself through warmup_steps"
            )

    # ---- building ----------------------------------------------------------------------
    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self._check_loop_contract()
        self._num_training_steps = num_training_steps
        super().create_optimizer_and_scheduler(num_training_steps)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Build ``self.optim`` through optimhub (once; HF's rule), with the real step count."""
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
        # Clipping and accumulation are the HF loop's; _check_loop_contract refused them
        # for the in-backward modes, so the driver is given neither.
        self._driver = drive(optimizer, model=model)
        if self._driver.fused:
            optimizer = _SteppedInBackward.prepared(optimizer, self.accelerator)
        self.optimizer = optimizer
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
            warmup = (0 if self.optimizer_spec.has(Capability.SCHEDULE_FREE)
                      else self.args.get_warmup_steps(num_training_steps))
            self.lr_scheduler = create_scheduler(
                self.args.lr_scheduler_type, target, num_warmup_steps=warmup,
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
            if isinstance(optimizer, LayerwiseOptimizer):
                optimizer.close()  # a later backward must not update the model

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        """HF's step; for fused backward its ``accelerator.backward`` becomes the driver's."""
        if self._driver is None or not self._driver.fused:
            return super().training_step(model, inputs, num_items_in_batch)
        with _backward_through(self.accelerator, self._driver.backward):
            return super().training_step(model, inputs, num_items_in_batch)

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        """No gradient is left after an in-backward update: report none (HF logs 0.0)."""
        if self._driver is not None and (self._driver.fused or self._driver.layerwise):
            return None
        return super()._get_grad_norm(model, grad_norm)

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
