"""LazyAdamW: AdamW that, for large embedding tables, updates only the rows touched since the last step.

mDeBERTa's word embedding has 250K rows x 768 = 192M of its 278M parameters, but a batch of 8 x 128 tokens
touches at most ~1000 rows. Dense AdamW reads and writes the parameter, the gradient and both moments of all
250K rows every step (~3 GB of memory traffic in fp32), which on a CPU costs about as much as the model's forward
pass. LazyAdamW (TensorFlow's ``LazyAdam`` idea, with decoupled weight decay) updates only the touched rows and
keeps per-row step counts, so the bias correction of a row counts the steps in which that row was updated.

The trade-off: for rows whose gradient is zero in a step, dense AdamW still applies weight decay and keeps
moving the row with its decaying momentum (m / (sqrt(v) + eps) of past gradients); LazyAdamW leaves such rows
(parameter and moments) untouched. It is therefore *not* identical to AdamW for sparse rows: rare tokens are not
decayed toward zero between their occurrences and get no momentum drift. For every row that is touched in every
step, and for all other parameters, the update is exactly AdamW's (other parameters go through
``torch.optim.AdamW`` itself).

Which parameters are lazy: a param group may say ``{"params": [...], "lazy": True/False}``; by default a
parameter is lazy if its gradient is sparse (``nn.Embedding(sparse=True)``) or it is 2-D with at least
``LazyAdamW.LAZY_MIN_ROWS`` rows (vocabulary-sized tables). "Touched" rows are the rows whose gradient is
non-zero (or the indices of a sparse gradient); the padding row, whose gradient is always zero, is never updated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mdeberta.errors import UsageError


class LazyAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with row-wise lazy updates for embedding tables (same constructor arguments)."""

    #: 2-D parameters with at least this many rows are treated as embedding tables (unless the group says).
    LAZY_MIN_ROWS = 16384

    def _is_lazy(self, p: torch.Tensor, group: dict) -> bool:
        flag = group.get("lazy")
        if flag is not None:
            if flag and p.dim() != 2:
                raise UsageError(f"lazy=True needs 2-D (rows x features) parameters, got shape {tuple(p.shape)}")
            return bool(flag)
        return p.grad.is_sparse or (p.dim() == 2 and p.shape[0] >= self.LAZY_MIN_ROWS)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lazy: list[tuple[torch.Tensor, torch.Tensor, dict]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and self._is_lazy(p, group):
                    lazy.append((p, p.grad, group))
        # Hide the lazy gradients so that AdamW proper updates exactly the other parameters.
        for p, _, _ in lazy:
            p.grad = None
        try:
            super().step()
        finally:
            for p, grad, _ in lazy:
                p.grad = grad
        for p, grad, group in lazy:
            self._lazy_update(p, grad, group)
        return loss

    def _lazy_update(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        if group.get("capturable") or group.get("differentiable"):
            raise UsageError("LazyAdamW does not support capturable/differentiable for its lazy parameters")
        if grad.is_sparse:
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
        else:
            rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
            values = grad.index_select(0, rows)
        state = self.state[p]
        if "row_step" not in state:
            state["row_step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if rows.numel() == 0:
            return
        if group["maximize"]:
            values = -values
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]

        step = state["row_step"].index_select(0, rows) + 1
        state["row_step"].index_copy_(0, rows, step)
        param = p.index_select(0, rows)
        exp_avg = state["exp_avg"].index_select(0, rows)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
        values = values.to(param.dtype)

        # The same arithmetic as torch.optim.AdamW (single-tensor path), row by row.
        param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(values, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        bias_correction1 = (1 - beta1 ** step).unsqueeze(1)
        bias_correction2_sqrt = (1 - beta2 ** step).sqrt().unsqueeze(1)
        if group["amsgrad"]:
            max_sq = torch.maximum(state["max_exp_avg_sq"].index_select(0, rows), exp_avg_sq)
            state["max_exp_avg_sq"].index_copy_(0, rows, max_sq)
            denom = (max_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom * (bias_correction1 / lr), value=-1.0)

        p.index_copy_(0, rows, param)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
