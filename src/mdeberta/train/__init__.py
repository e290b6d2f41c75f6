"""Training machinery shared by every recipe (pretraining, fine-tuning): one loop, plain PyTorch.

What each part does and takes is documented where it is defined (no second list to keep in step):
:mod:`.loop` (``Trainer``, ``TrainingArguments``: accumulation, precision, checkpoints, exact resume, NaN skips),
:mod:`.optim` (``build_optimizer``, ``linear_schedule``, layer-wise decay; :mod:`.lazy_adamw` for large
embeddings), :mod:`.distributed` (torchrun, DDP / FSDP2), :mod:`.checkpointing`, :mod:`.metrics` (JSONL + PNG),
:mod:`.pretraining` (the RTD / MLM model), :mod:`.run_folder` (output folders and ``--resume``). Minimal use::

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
