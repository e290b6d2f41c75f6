"""Optimizer and learning-rate schedule shared by every recipe.

AdamW with the usual BERT exception: biases and LayerNorm weights get no weight decay (decaying a
normalisation gain towards zero only fights the optimiser). Parameter groups can carry their own learning
rate, which pretraining uses to give the generator and the discriminator separate rates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

EMBEDDING_UPDATES = ("dense", "lazy")


def _no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, LayerNorm / norm gains and other 1-D parameters are not decayed."""
    lowered = name.lower()
    return param.ndim < 2 or name.endswith(".bias") or "layernorm" in lowered or "layer_norm" in lowered


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    lr_by_prefix: Mapping[str, float] | None = None,
) -> list[dict]:
    """AdamW parameter groups: (prefix-specific lr) x (decay / no decay).

    ``lr_by_prefix`` maps a parameter-name prefix (e.g. ``"generator."``) to its learning rate; the longest
    matching prefix wins, other parameters use ``lr``. Each group records ``name`` for logging, and
    ``initial_lr``-style scaling by the scheduler keeps the ratio between groups.
    """
    lr_by_prefix = dict(lr_by_prefix or {})
    prefixes = sorted(lr_by_prefix, key=len, reverse=True)
    groups: dict[tuple[str, bool], dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # shared (tied) parameters appear once
            continue
        seen.add(id(param))
        prefix = next((p for p in prefixes if name.startswith(p)), "")
        decay = not _no_decay(name, param)
        key = (prefix, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": lr_by_prefix.get(prefix, lr) if prefix else lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{prefix or 'default'}{'' if decay else ' (no decay)'}",
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    lr_by_prefix: Mapping[str, float] | None = None,
    embedding_update: str = "dense",
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`.

    ``embedding_update="lazy"`` uses ``mdeberta.kernels.lazy_adamw.LazyAdamW`` (same constructor as
    ``torch.optim.AdamW``), which updates only the embedding rows a batch touched: with a 250K vocabulary
    this is most of the optimizer's time.
    """
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"learning rate must be a positive number, got {lr}")
    if embedding_update not in EMBEDDING_UPDATES:
        raise ValueError(f"embedding_update={embedding_update!r}; allowed: {list(EMBEDDING_UPDATES)}")
    groups = param_groups(model, lr, weight_decay, lr_by_prefix)
    if embedding_update == "lazy":
        try:
            from mdeberta.kernels.lazy_adamw import LazyAdamW
        except ImportError as e:
            raise ImportError(
                "embedding_update='lazy' needs mdeberta.kernels.lazy_adamw.LazyAdamW, which could not be imported "
                f"({e}); use embedding_update='dense'"
            ) from e
        return LazyAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    kwargs = {}
    if fused is not None:
        kwargs["fused"] = fused
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    last_epoch: int = -1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to each group's lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_epoch)


def group_names(optimizer: torch.optim.Optimizer) -> Iterable[str]:
    return [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
