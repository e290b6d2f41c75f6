"""The training loop against an independent implementation: transformers' DebertaV2ForMaskedLM in a plain loop.

Same initial weights, same batches (padding included), same AdamW parameter groups, schedule, clipping and
gradient accumulation: our ``DebertaForMaskedLM`` trained through :class:`mdeberta.train.Trainer` (with the
pretraining recipe's ``mlm_step`` and ``build_optimizer``) must give the reference's loss at every step. Dropout is
off on both sides: the two models draw their dropout masks in different orders, so equal masks cannot be asked for.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdeberta.config import preset
from mdeberta.model import DebertaForMaskedLM
from mdeberta.train import Trainer, TrainingArguments, build_optimizer, linear_schedule
from mdeberta.train.pretraining import mlm_step

transformers = pytest.importorskip("transformers")

VOCAB, STEPS, ACCUM, WARMUP, LR = 97, 24, 2, 5, 2e-3


def _config():
    return preset("deberta-v3-micro", vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _micro_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """MLM micro-batches of 4 x 24 (runs of consecutive ids: learnable) with 15% of the real tokens scored; two rows
    of four are padded."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        ids = 4 + (rng.integers(0, 40, size=(4, 1)) + np.arange(24)) % 40
        mask = np.ones_like(ids)
        for row, length in ((1, 17), (3, 9)):
            ids[row, length:] = 0
            mask[row, length:] = 0
        ids[:, 0] = 1
        scored = (rng.random(ids.shape) < 0.15) & (mask > 0)
        scored[:, 0] = False
        scored[0, 5] = True  # never an empty micro-batch
        labels = np.where(scored, ids, -100)
        inputs = np.where(scored, VOCAB - 1, ids)
        batches.append({"input_ids": torch.from_numpy(inputs), "attention_mask": torch.from_numpy(mask),
                        "labels": torch.from_numpy(labels)})
    return batches


def _reference_losses(state: dict, batches: list[dict], precision: str) -> list[float]:
    """transformers' model in a plain PyTorch loop: AdamW, linear warmup/decay, clipping, accumulation."""
    config = transformers.DebertaV2Config(**_config().to_dict())
    model = transformers.DebertaV2ForMaskedLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert model.cls.predictions.decoder.weight is model.deberta.embeddings.word_embeddings.weight  # tied
    model.train()
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-6)

    def factor(step: int) -> float:  # linear warmup from lr/(W+1), then linear decay to 0 at STEPS
        return (step + 1) / (WARMUP + 1) if step < WARMUP else (STEPS - step) / (STEPS - WARMUP)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses = []
    for step in range(STEPS):
        total = 0.0
        for micro in batches[step * ACCUM:(step + 1) * ACCUM]:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**micro).loss
            (loss / ACCUM).backward()
            total += float(loss.detach()) / ACCUM
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
    return losses


def _our_losses(model: DebertaForMaskedLM, batches: list[dict], precision: str, tmp_path) -> list[float]:
    opt = build_optimizer(model, lr=LR, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-6)
    args = TrainingArguments(str(tmp_path), max_steps=STEPS, grad_accum=ACCUM, max_grad_norm=1.0,
                             precision=precision, log_every=1, plot=False, progress=False)
    history = Trainer(model, mlm_step, opt, linear_schedule(opt, WARMUP, STEPS), batches, args).fit()
    return [h["loss"] for h in history if "loss" in h]


@pytest.mark.parametrize("precision, rtol", [("fp32", 1e-4), ("bf16", 2e-3)])
def test_trainer_matches_transformers_in_a_plain_loop(tmp_path, precision, rtol):
    torch.manual_seed(0)
    ours = DebertaForMaskedLM(_config())
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    batches = _micro_batches(STEPS * ACCUM)
    reference = _reference_losses(state, batches, precision)
    mine = _our_losses(ours, batches, precision, tmp_path)
    assert len(mine) == len(reference) == STEPS
    assert reference[-1] < 0.9 * reference[0]  # both actually train
    for step, (a, b) in enumerate(zip(mine, reference)):
        assert a == pytest.approx(b, rel=rtol), f"step {step + 1}: ours {a:.6f}, transformers {b:.6f}"
