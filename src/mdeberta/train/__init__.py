"""Training machinery shared by every recipe (pretraining, fine-tuning): one loop, plain PyTorch.

API
---
``TrainingArguments(output_dir, max_steps, grad_accum=1, max_grad_norm=1.0, precision="fp32"|"bf16"|"fp16",
log_every=10, save_every=0, eval_every=0, keep_last=3, seed=42, max_bad_steps=5, progress=None, plot=True,
stop_after=None,
extra={})``
    Loop settings. ``save_every``/``eval_every`` = 0 means "only at the end".

``Trainer(model, step_fn, optimizer, scheduler, train_data, args, env=None, eval_fn=None, on_save=None)``
    * ``model``: the module to train (already on ``env.device``; wrapped by :func:`wrap_model` when distributed).
    * ``step_fn(model, batch) -> (loss, metrics)``: forward of ONE micro-batch (a dict, already moved to the
      device, run under autocast). ``metrics``: floats / 0-d tensors, averaged over micro-batches, log windows
      and ranks; key ``"num_tokens"`` is summed and yields ``tokens_per_s``. The loop adds ``loss``, ``lr``
      (and ``lr/<group>`` when groups differ), ``grad_norm``, ``skipped``.
    * ``train_data``: any iterable of dict batches (a DataLoader). Epochs restart automatically until
      ``max_steps``; ``set_epoch(epoch)`` is called when present. If it has ``state_dict()/load_state_dict()``
      the data position goes into checkpoints; otherwise resume replays the epoch up to the saved batch.
    * ``eval_fn(trainer) -> dict[str, float]``: called every ``eval_every`` steps and at the end, under
      ``torch.no_grad()`` + autocast with the model in eval mode, on every rank; logged as ``eval/<key>``.
      Use ``trainer.unwrapped`` (the bare model), ``trainer.device``, ``trainer.env``, ``trainer.step``.
    * ``on_save(trainer, checkpoint_path)``: after every checkpoint, on every rank (gate writes on
      ``trainer.env.is_main``) - e.g. export an HF folder.
    * ``trainer.fit(resume=False|True|path) -> list[dict]``: trains; returns every logged record
      (``{"step": ..., "loss": ..., "eval/accuracy": ...}``). Writes ``<output_dir>/metrics.jsonl``,
      ``<output_dir>/checkpoints/step-XXXXXXXX.pt`` (atomic, last ``keep_last`` kept; holding model,
      optimizer, scheduler, scaler, per-rank RNG + data states) and ``metrics.png`` at the end.
    * ``trainer.train_step()``, ``trainer.save()``, ``trainer.resume(path=None)``, ``trainer.evaluate()``,
      ``trainer.autocast()``, ``trainer.history``, ``trainer.step``.
    * NaN/inf loss: the update is skipped and logged; ``max_bad_steps`` in a row raise :class:`TrainingError`.
      fp16 uses ``torch.amp.GradScaler`` (GPU only; on CPU use bf16).

``build_optimizer(model, lr, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-6, lr_by_prefix=None,
embedding_update="dense"|"lazy")``
    AdamW; no weight decay on biases / LayerNorms / 1-D params; ``lr_by_prefix={"generator.": 1e-4}`` gives
    parameter-name prefixes their own lr. "lazy" uses ``mdeberta.kernels.lazy_adamw.LazyAdamW``.
``param_groups(model, lr, weight_decay, lr_by_prefix)``: the groups alone.
``linear_schedule(optimizer, warmup_steps, total_steps)``: linear warmup, then linear decay to 0 (LambdaLR).

``init_distributed(device=None, backend=None) -> DistributedEnv``: joins the torchrun process group (NCCL on GPU,
gloo on CPU) or returns a single-process env. ``DistributedEnv``: ``rank``, ``world_size``, ``local_rank``,
``device``, ``is_main``, ``distributed``, ``barrier()``, ``all_reduce_mean(dict)``, ``any_true(flag)``,
``broadcast_object(obj)``. ``wrap_model(model, env, strategy="ddp"|"fsdp")`` (no-op for one process),
``unwrap_model(model)``, ``cleanup_distributed()``.

Checkpoint helpers (``mdeberta.train.checkpointing``): ``list_checkpoints(output_dir)``,
``load_latest_checkpoint(output_dir, path=None)`` (skips corrupt files, falls back to earlier ones),
``save_checkpoint``, ``seed_everything(seed)``, ``rng_state()`` / ``set_rng_state()``.

Metrics (``mdeberta.train.metrics``): ``MetricsLogger``, ``read_metrics(run_dir)``,
``plot_metrics(run_dir, output=None, keys=None) -> png path``.

Minimal use::

    env = init_distributed()
    model = wrap_model(MyModel().to(env.device), env)
    opt = build_optimizer(model, lr=2e-5)
    trainer = Trainer(model, lambda m, b: (m(**b).loss, {}), opt, linear_schedule(opt, 100, 1000),
                      loader, TrainingArguments("runs/x", max_steps=1000), env=env)
    trainer.fit(resume=False)
"""

from mdeberta.train.checkpointing import list_checkpoints, load_latest_checkpoint, seed_everything
from mdeberta.train.distributed import (
    DistributedEnv,
    cleanup_distributed,
    init_distributed,
    unwrap_model,
    wrap_model,
)
from mdeberta.train.loop import PRECISIONS, Trainer, TrainingArguments, TrainingError
from mdeberta.train.metrics import MetricsLogger, plot_metrics, read_metrics
from mdeberta.train.optim import build_optimizer, linear_schedule, param_groups

__all__ = [
    "PRECISIONS",
    "DistributedEnv",
    "MetricsLogger",
    "Trainer",
    "TrainingArguments",
    "TrainingError",
    "build_optimizer",
    "cleanup_distributed",
    "init_distributed",
    "linear_schedule",
    "list_checkpoints",
    "load_latest_checkpoint",
    "param_groups",
    "plot_metrics",
    "read_metrics",
    "seed_everything",
    "unwrap_model",
    "wrap_model",
]
