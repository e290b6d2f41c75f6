"""Optimizer and learning-rate schedule shared by every recipe.

AdamW with the usual BERT exception: biases and LayerNorm weights get no weight decay (decaying a
normalisation gain towards zero only fights the optimiser). Parameter groups can carry their own learning
rate, which pretraining uses to give the generator and the discriminator separate rates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from mdeberta.errors import UsageError

EMBEDDING_UPDATES = ("dense", "lazy")


def _no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, LayerNorm / norm gains and other 1-D parameters are not decayed."""
    lowered = name.lower()
    return param.ndim < 2 or name.endswith(".bias") or "layernorm" in lowered or "layer_norm" in lowered


_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a DeBERTa parameter for layer-wise lr decay: 0 for the embeddings and what every layer shares
    (relative-position table and its LayerNorm), i + 1 for ``encoder.layer.i``, ``num_layers + 1`` for the task
    head (pooler, classifier) and anything else on top."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    if ".embeddings." in f".{name}" or ".encoder.rel_embeddings." in f".{name}" or ".encoder.LayerNorm." in f".{name}":
        return 0
    if ".encoder.conv." in f".{name}":
        return 1
    return num_layers + 1


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    lr_by_prefix: Mapping[str, float] | None = None,
    layerwise_lr_decay: float | None = None,
    num_layers: int | None = None,
) -> list[dict]:
    """AdamW parameter groups: (prefix-specific lr) x (decay / no decay) [x layer depth].

    ``lr_by_prefix`` maps a parameter-name prefix (e.g. ``"generator."``) to its learning rate; the longest
    matching prefix wins, other parameters use ``lr``. ``layerwise_lr_decay`` (ELECTRA's fine-tuning rule, 0.8 for
    small models): a parameter at :func:`layer_depth` k gets ``lr * decay ** (num_layers + 1 - k)``, so the head
    keeps ``lr``, the top layer ``decay * lr`` and the embeddings the smallest rate. Each group records ``name``
    for logging, and the scheduler scales every group by the same factor, keeping the ratios.
    """
    if layerwise_lr_decay is not None:
        if not 0 < layerwise_lr_decay <= 1:
            raise UsageError(f"layer-wise lr decay must be in (0, 1], got {layerwise_lr_decay}")
        if not num_layers or num_layers < 1:
            raise UsageError("layer-wise lr decay needs the model's number of layers (num_layers)")
    lr_by_prefix = dict(lr_by_prefix or {})
    prefixes = sorted(lr_by_prefix, key=len, reverse=True)
    groups: dict[tuple[str, bool, int], dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # shared (tied) parameters appear once
            continue
        seen.add(id(param))
        prefix = next((p for p in prefixes if name.startswith(p)), "")
        decay = not _no_decay(name, param)
        depth = layer_depth(name, num_layers) if layerwise_lr_decay is not None else -1
        key = (prefix, decay, depth)
        if key not in groups:
            group_lr = lr_by_prefix.get(prefix, lr) if prefix else lr
            label = f"{prefix or 'default'}{'' if decay else ' (no decay)'}"
            if depth >= 0:
                group_lr *= layerwise_lr_decay ** (num_layers + 1 - depth)
                label += f" depth {depth}"
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": group_lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": label,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise UsageError(f"{type(model).__name__} has no trainable parameters")
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
    layerwise_lr_decay: float | None = None,
    num_layers: int | None = None,
) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`.

    ``embedding_update="lazy"`` uses ``mdeberta.train.lazy_adamw.LazyAdamW`` (same constructor as
    ``torch.optim.AdamW``), which updates only the embedding rows a batch touched: with a 250K vocabulary
    this is most of the optimizer's time. ``layerwise_lr_decay`` / ``num_layers``: see :func:`param_groups`.
    """
    if lr <= 0 or not math.isfinite(lr):
        raise UsageError(f"learning rate must be a positive number, got {lr}")
    if embedding_update not in EMBEDDING_UPDATES:
        raise UsageError(f"embedding_update={embedding_update!r}; allowed: {list(EMBEDDING_UPDATES)}")
    groups = param_groups(model, lr, weight_decay, lr_by_prefix, layerwise_lr_decay, num_layers)
    if embedding_update == "lazy":
        try:
            from mdeberta.train.lazy_adamw import LazyAdamW
        except ImportError as e:
            raise ImportError(
                "embedding_update='lazy' needs mdeberta.train.lazy_adamw.LazyAdamW, which could not be imported "
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
        raise UsageError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise UsageError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_epoch)


def group_names(optimizer: torch.optim.Optimizer) -> Iterable[str]:
    return [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
