"""The one training loop of the project, shared by pretraining and fine-tuning.

A recipe supplies a model (an ``nn.Module`` holding every trained parameter), a ``step_fn(model, batch) ->
(loss, metrics)`` that runs the forward pass of one micro-batch, an iterable of batches, an optimizer and a
scheduler. The loop owns everything else: device placement, autocast / loss scaling, gradient accumulation
(with DDP's ``no_sync`` on all but the last micro-batch), clipping, NaN/inf handling, logging, evaluation
and checkpoint hooks, and exact resumption.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mdeberta.errors import MdebertaError, UsageError
from mdeberta.train.checkpointing import (
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from mdeberta.train.distributed import DistributedEnv, full_parameters, unwrap_model
from mdeberta.train.metrics import MetricsLogger, plot_metrics

logger = logging.getLogger("mdeberta.train")

PRECISIONS = ("fp32", "bf16", "fp16")
StepFn = Callable[[nn.Module, dict[str, Any]], tuple[torch.Tensor, dict[str, Any]]]


def _as_floats(values: dict[str, Any]) -> dict[str, float]:
    """Device tensors and numbers -> floats, with one transfer for all the tensors."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if keys:
        out.update(zip(keys, torch.stack([values[k].float().reshape(()) for k in keys]).cpu().tolist()))
    return out


class TrainingError(MdebertaError, RuntimeError):
    """Training cannot continue (e.g. the loss kept being NaN/inf); the message says why and what to try."""


@dataclass
class TrainingArguments:
    """Loop settings common to every recipe (recipes add their own on top)."""

    output_dir: str
    max_steps: int
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0  # None or <= 0: no clipping (the norm is still logged)
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU and GPU) | fp16 (autocast + GradScaler, GPU only)
    log_every: int = 10
    save_every: int = 0  # 0: save only at the end
    eval_every: int = 0  # 0: evaluate only at the end (when an eval_fn is given)
    keep_last: int = 3
    seed: int = 42
    max_bad_steps: int = 5  # consecutive NaN/inf losses before giving up
    progress: bool | None = None  # tqdm bar; None = when stderr is a terminal
    plot: bool = True  # write metrics.png at the end
    stop_after: int | None = None  # end this invocation after this step (with a checkpoint); the schedule still
    # runs to max_steps, so a later resume continues the same run (time-limited jobs, preemption, tests)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe settings stored in checkpoints for reference

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision={self.precision!r}; allowed: {list(PRECISIONS)}")
        for name in ("max_steps", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_every", "eval_every", "keep_last"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class SecondPhase:
    """A second update inside each step, after the first optimizer's (decoupled RTD: the discriminator after the
    generator). ``step_fn(model, carry) -> (loss, metrics)`` runs once per micro-batch on the ``"carry"`` entry of
    the first phase's metrics; its own optimizer, scheduler and clipping; metrics are logged with the first's
    (``grad_norm`` as ``grad_norm_2``)."""

    step_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, Any]]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    max_grad_norm: float | None = 1.0


class Trainer:
    """Runs ``args.max_steps`` optimizer steps of ``step_fn`` over ``train_data``.

    Parameters
    ----------
    model: the wrapped (DDP / FSDP) or plain module that ``step_fn`` calls; checkpoints store the unwrapped one.
    step_fn: ``step_fn(model, batch) -> (loss, metrics)`` for one micro-batch already on the device, run under
        autocast. ``metrics`` values (floats or 0-d tensors) are averaged over micro-batches, log steps and ranks;
        the key ``"num_tokens"`` is summed instead and gives ``tokens_per_s``.
    train_data: an iterable of dict batches. If it has ``state_dict()`` / ``load_state_dict()`` the data position
        is saved with them (exact stream resumption); otherwise the loop counts batches and, on resume, replays
        the epoch up to the same batch (calling ``set_epoch(epoch)`` first when the iterable has it).
        When an epoch ends a new one starts, so ``max_steps`` alone sets the length.
    eval_fn: ``eval_fn(trainer) -> dict`` run every ``eval_every`` steps and at the end (on every rank; it may
        use collectives); its results are logged with an ``eval/`` prefix.
    on_save: ``on_save(trainer, checkpoint_path)`` called on every rank after each checkpoint (e.g. HF export;
        gate file writes on ``trainer.env.is_main``).
    on_resume: ``on_resume(trainer, checkpoint_path)`` called on every rank once a checkpoint has loaded (the
        recipes write their run config only then).
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        train_data: Iterable[dict[str, Any]],
        args: TrainingArguments,
        env: DistributedEnv | None = None,
        eval_fn: Callable[[Trainer], dict[str, float]] | None = None,
        on_save: Callable[[Trainer, Path], None] | None = None,
        on_resume: Callable[[Trainer, Path], None] | None = None,
        second_phase: SecondPhase | None = None,
    ) -> None:
        self.model = model
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_data = train_data
        self.args = args
        self.env = env or DistributedEnv()
        self.eval_fn = eval_fn
        self.on_save = on_save
        self.on_resume = on_resume
        self.second_phase = second_phase
        if second_phase is not None and args.precision == "fp16":
            raise UsageError("a second phase (decoupled training) supports fp32 and bf16, not fp16 loss scaling")
        self.device = self.env.device
        if args.precision == "fp16" and self.device.type != "cuda":
            raise UsageError("precision 'fp16' needs a GPU (loss scaling); on CPU use 'bf16' or 'fp32'")
        self.scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "fp16")
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.bad_steps = 0  # consecutive non-finite losses
        self.history: list[dict[str, Any]] = []  # everything logged (also on non-main ranks)
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._skip_batches = 0

    # ------------------------------------------------------------------ pieces
    @property
    def unwrapped(self) -> nn.Module:
        return unwrap_model(self.model)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.args.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.args.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _next_batch(self) -> dict[str, Any]:
        while True:
            if self._iterator is None:
                if hasattr(self.train_data, "set_epoch"):
                    self.train_data.set_epoch(self.epoch)
                self._iterator = iter(self.train_data)
                for done in range(self._skip_batches):  # generic resume: replay up to the saved position
                    if next(self._iterator, None) is None:
                        raise TrainingError(
                            f"the checkpoint is at batch {self._skip_batches} of epoch {self.epoch}, but the training "
                            f"data now has only {done} batches per epoch: resume with the data the run was started "
                            "with")
                self._skip_batches = 0
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.batches_in_epoch == 0:
                    raise TrainingError("the training data yielded no batches") from None
                self._iterator = None
                self.epoch += 1
                self.batches_in_epoch = 0
                continue
            self.batches_in_epoch += 1
            return batch

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def _sync_context(self, last_micro: bool) -> contextlib.AbstractContextManager:
        if not last_micro and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _grad_norm(self, params: list[torch.Tensor] | None = None, clip: float | None = -1.0) -> torch.Tensor:
        params = [p for p in (params if params is not None else self.model.parameters()) if p.grad is not None]
        if not params:
            return torch.tensor(0.0)
        clip = self.args.max_grad_norm if clip == -1.0 else clip
        max_norm = clip if clip is not None and clip > 0 else float("inf")
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self) -> dict[str, Any]:
        """Accumulate ``grad_accum`` micro-batches, clip, step; returns this step's metrics.

        The metrics stay device tensors (read at ``log_every``), so a step syncs with the host once: the
        skip-or-step decision, from the gradient norm and the loss folded into one finiteness flag (all-reduced
        across ranks), not one ``.item()`` per metric and micro-batch.
        """
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        tokens = torch.zeros((), device=self.device)
        accum = self.args.grad_accum
        carries = []
        for micro in range(accum):
            batch = self._to_device(self._next_batch())
            with self._sync_context(micro == accum - 1):
                with self.autocast():
                    loss, metrics = self.step_fn(self.model, batch)
                self.scaler.scale(loss / accum).backward()
            if "carry" in metrics:
                metrics = dict(metrics)
                carries.append(metrics.pop("carry"))
            for k, v in {**metrics, "loss": loss}.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                v = v.to(self.device, non_blocking=True)
                if k == "num_tokens":
                    tokens = tokens + v
                else:
                    sums[k] = sums.get(k, 0.0) + v / accum
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._grad_norm()
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        # One flag for both: a NaN/inf loss, or gradients that are (fp16 overflow is the scaler's own business).
        bad = (~torch.isfinite(sums["loss"]) | ~torch.isfinite(grad_norm.to(self.device))).float()
        finite = not self.env.any_true_tensor(bad)  # the step's one host sync
        skipped = False
        if not finite:
            # Keep every rank on the same path: nobody steps, everybody counts the bad step.
            skipped = True
            self.bad_steps += 1
            logger.warning("step %d: non-finite loss or gradient norm (loss %s), update skipped (%d in a row)",
                           self.step + 1, float(sums["loss"]), self.bad_steps)
            if self.bad_steps >= self.args.max_bad_steps:
                raise TrainingError(
                    f"the loss was NaN/inf in {self.bad_steps} consecutive steps (last at step {self.step + 1}); "
                    "training stopped. Lower the learning rate, use --precision bf16/fp32 instead of fp16, or check "
                    "the data."
                )
            self.scaler.update(1.0) if self.scaler.is_enabled() else None
        else:
            self.bad_steps = 0
            if self.scaler.is_enabled():
                scale = self.scaler.get_scale()
                self.scaler.step(self.optimizer)  # skips by itself when fp16 gradients overflowed
                self.scaler.update()
                skipped = self.scaler.get_scale() < scale
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.second_phase is not None:
            skipped = self._second_phase(carries, sums, skip=not finite) or skipped
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        out: dict[str, Any] = dict(sums)
        out["grad_norm"] = grad_norm.detach().float()
        out["lr"] = lrs[0]
        # Groups with their own rates (generator, layer-wise decay) are logged each, also once the schedule is at 0.
        if len({round(g.get("initial_lr", g["lr"]), 15) for g in self.optimizer.param_groups}) > 1:
            for g, lr in zip(self.optimizer.param_groups, lrs):  # e.g. lr/generator, lr/default_depth_3
                label = g.get("name", "").replace(" (no decay)", "").replace(".", "").replace(" ", "_")
                out[f"lr/{label}"] = lr
        out["skipped"] = 1.0 if skipped else 0.0
        out["num_tokens"] = tokens
        return out

    def _second_phase(self, carries: list[Any], sums: dict[str, Any], skip: bool) -> bool:
        """Run the second phase on the first one's carried data; its losses add to ``loss`` (the joint objective's
        value); returns whether its update was skipped."""
        phase = self.second_phase
        accum = len(carries)
        for carry in carries:
            with self.autocast():
                loss, metrics = phase.step_fn(self.model, carry)
            (loss / accum).backward()
            for k, v in {**metrics, "loss": loss}.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                sums[k] = sums.get(k, 0.0) + v.to(self.device) / accum
        params = [p for g in phase.optimizer.param_groups for p in g["params"]]
        norm = self._grad_norm(params, phase.max_grad_norm if phase.max_grad_norm and phase.max_grad_norm > 0
                               else None)
        sums["grad_norm_2"] = norm.detach().float()
        bad = (~torch.isfinite(norm)).float()
        skipped = skip or self.env.any_true_tensor(bad)
        if not skipped:
            phase.optimizer.step()
        elif not skip:
            logger.warning("step %d: non-finite gradient norm in the second phase, its update skipped", self.step + 1)
        phase.optimizer.zero_grad(set_to_none=True)
        if phase.scheduler is not None:
            phase.scheduler.step()
        return skipped

    # ------------------------------------------------------------------ state
    def data_state(self) -> Any:
        if hasattr(self.train_data, "state_dict"):
            return self.train_data.state_dict()
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scheduler, scaler and counters; per-rank RNG and data states gathered to all."""
        per_rank = {"rng": rng_state(), "data": self.data_state()}
        if self.env.distributed:
            import io

            import torch.distributed as dist

            # Gather serialized bytes: all_gather_object cannot unpickle tensors on every torch version.
            buffer = io.BytesIO()
            torch.save(per_rank, buffer)
            blobs: list[Any] = [None] * self.env.world_size
            dist.all_gather_object(blobs, buffer.getvalue())
            gathered = [torch.load(io.BytesIO(b), weights_only=True) for b in blobs]
        else:
            gathered = [per_rank]
        model_state, optim_state = self._model_and_optimizer_state()
        return {
            "format": "mdeberta-train-v1",
            "step": self.step,
            "epoch": self.epoch,
            "world_size": self.env.world_size,
            "model": model_state,
            "optimizer": optim_state,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            **({"second_optimizer": self.second_phase.optimizer.state_dict(),
                "second_scheduler": self.second_phase.scheduler.state_dict() if self.second_phase.scheduler else None}
               if self.second_phase is not None else {}),
            "ranks": gathered,
            "args": {k: v for k, v in asdict(self.args).items() if k != "extra"} | {"extra": self.args.extra},
        }

    def _model_and_optimizer_state(self) -> tuple[dict, dict]:
        model = self.unwrapped
        if any(type(p).__name__ == "DTensor" for p in model.parameters()):  # FSDP2: gather full states
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_state_dict(model, self.optimizer, options=opts)
        return model.state_dict(), self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self.unwrapped
        if any(type(p).__name__ == "DTensor" for p in model.parameters()):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(model, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        else:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.second_phase is not None:
            if "second_optimizer" not in state:
                raise TrainingError("the checkpoint has no second-phase optimizer: it was not written by a decoupled "
                                    "run")
            self.second_phase.optimizer.load_state_dict(state["second_optimizer"])
            if self.second_phase.scheduler is not None and state.get("second_scheduler") is not None:
                self.second_phase.scheduler.load_state_dict(state["second_scheduler"])
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        ranks = state.get("ranks") or []
        if len(ranks) != self.env.world_size:
            logger.warning("checkpoint was written by %d process(es), resuming with %d: RNG and data positions "
                           "cannot continue exactly; the data stream restarts", len(ranks), self.env.world_size)
            return
        mine = ranks[self.env.rank]
        set_rng_state(mine["rng"])
        data = mine["data"]
        if hasattr(self.train_data, "load_state_dict"):
            self.train_data.load_state_dict(data)
        else:
            self.epoch = int(data["epoch"])
            self.batches_in_epoch = self._skip_batches = int(data["batches_in_epoch"])
        self._iterator = None

    def save(self) -> Path | None:
        state = self.state_dict()  # collective: every rank takes part
        path = None
        if self.env.is_main:
            path = save_checkpoint(self.args.output_dir, self.step, state, self.args.keep_last)
            logger.info("saved checkpoint %s", path)
        path = self.env.broadcast_object(path)
        if self.on_save is not None:
            self.on_save(self, Path(path))
        return Path(path)

    def resume(self, path: str | Path | None = None) -> Path:
        """Load the newest readable checkpoint of ``args.output_dir`` (or ``path``)."""
        found, state = load_latest_checkpoint(self.args.output_dir, path)
        self.load_state_dict(state)
        logger.info("resumed from %s at step %d", found, self.step)
        if self.on_resume is not None:
            self.on_resume(self, found)
        return found

    # ------------------------------------------------------------------ the loop
    def evaluate(self) -> dict[str, float]:
        if self.eval_fn is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.autocast(), full_parameters(self.model):
            results = self.eval_fn(self)
        self.model.train(was_training)
        results = {f"eval/{k}" if not k.startswith("eval/") else k: float(v) for k, v in results.items()}
        self._record(results)
        return results

    def _record(self, metrics: dict[str, Any]) -> None:
        entry = {"step": self.step, **metrics}
        self.history.append(entry)
        self.metrics_logger.log(self.step, metrics)

    def fit(self, resume: bool | str | Path = False) -> list[dict[str, Any]]:
        """Train to ``max_steps``; ``resume=True`` continues from the newest checkpoint, a path from that one.

        Returns the logged records (every rank gets the same, rank-averaged values).
        """
        args = self.args
        if resume:
            self.resume(None if resume is True else resume)
        else:
            seed_everything(args.seed + self.env.rank)
        self.metrics_logger = MetricsLogger(args.output_dir, enabled=self.env.is_main, total_steps=args.max_steps,
                                            progress=args.progress, initial_step=self.step)
        window: dict[str, float] = {}
        window_steps = 0
        window_tokens = 0.0
        window_start = time.perf_counter()
        try:
            end = min(args.max_steps, args.stop_after) if args.stop_after else args.max_steps
            while self.step < end:
                metrics = self.train_step()
                self.metrics_logger.advance()
                window_tokens = window_tokens + metrics.pop("num_tokens")
                for k, v in metrics.items():
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
                last = self.step == end
                if self.step % args.log_every == 0 or last:
                    elapsed = time.perf_counter() - window_start
                    window, window_tokens = _as_floats(window), float(window_tokens)  # the window's one read
                    averaged = {k: v / window_steps for k, v in window.items()}
                    averaged["skipped"] = window.get("skipped", 0.0)
                    averaged = self.env.all_reduce_mean(averaged)
                    if window_tokens:
                        averaged["tokens_per_s"] = window_tokens * self.env.world_size / max(elapsed, 1e-9)
                    self._record(averaged)
                    window, window_steps, window_tokens = {}, 0, 0.0
                    window_start = time.perf_counter()
                if args.eval_every and self.step % args.eval_every == 0 and not last:
                    self.evaluate()
                if (args.save_every and self.step % args.save_every == 0) or last:
                    self.save()
            if self.eval_fn is not None and end == args.max_steps:
                self.evaluate()
        finally:
            self.metrics_logger.close()
        if self.env.is_main and args.plot:
            try:
                plot_metrics(args.output_dir)
            except Exception as e:  # a plot must never fail a finished run
                logger.warning("could not plot metrics: %s", e)
        return self.history
