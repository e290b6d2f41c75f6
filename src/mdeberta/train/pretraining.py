"""DeBERTa-V3 pretraining models: replaced token detection (RTD) with embedding sharing, and plain MLM.

RTD (ELECTRA's objective as DeBERTa-V3 uses it): a small generator (``DebertaForMaskedLM`` with the Enhanced
Mask Decoder) fills the [MASK] positions with tokens sampled from its softmax; the discriminator
(``DebertaForReplacedTokenDetection``) labels every token original / replaced. Loss = MLM + lambda * RTD.

Embedding sharing between the two:

* ``gdes`` (gradient-disentangled, DeBERTa-V3's): the discriminator embeds with
  ``stop_gradient(E_generator) + delta``; delta starts at zero and is the discriminator's own word-embedding
  table here. The RTD loss therefore never reaches E_generator (no "tug-of-war"), only delta. Export
  writes ``E_generator + delta`` as the discriminator's embedding.
* ``es`` (ELECTRA's): one table, updated by both losses.
* ``none``: separate tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mdeberta.config import DebertaConfig
from mdeberta.errors import UsageError
from mdeberta.model import DebertaForMaskedLM, DebertaForReplacedTokenDetection

logger = logging.getLogger("mdeberta.train")

EMBEDDING_SHARING = ("gdes", "es", "none")


def generator_config(config: DebertaConfig, num_layers: int | None = None) -> DebertaConfig:
    """The generator: the discriminator's width, half its depth by default, with the Enhanced Mask Decoder."""
    layers = num_layers if num_layers is not None else max(1, config.num_hidden_layers // 2)
    if layers < 1:
        raise UsageError(f"generator layers must be >= 1, got {layers}")
    return config.replace(num_hidden_layers=layers, enhanced_mask_decoder=config.relative_attention)


@dataclass
class RTDOutput:
    loss: torch.Tensor  # mlm_loss + rtd_lambda * rtd_loss
    mlm_loss: torch.Tensor
    rtd_loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # detached values for logging


class RTDPretrainingModel(nn.Module):
    """Generator + discriminator in one module (one DDP wrapper, one optimizer, one state dict)."""

    def __init__(self, generator: DebertaForMaskedLM, discriminator: DebertaForReplacedTokenDetection,
                 embedding_sharing: str = "gdes", rtd_lambda: float = 50.0) -> None:
        super().__init__()
        if embedding_sharing not in EMBEDDING_SHARING:
            raise UsageError(f"embedding_sharing={embedding_sharing!r}; allowed: {list(EMBEDDING_SHARING)}")
        g_emb = generator.deberta.embeddings.word_embeddings
        d_emb = discriminator.deberta.embeddings.word_embeddings
        if embedding_sharing != "none" and g_emb.weight.shape != d_emb.weight.shape:
            raise UsageError(
                f"embedding sharing {embedding_sharing!r} needs equal word-embedding shapes, generator has "
                f"{tuple(g_emb.weight.shape)} and discriminator {tuple(d_emb.weight.shape)}"
            )
        self.generator = generator
        self.discriminator = discriminator
        self.embedding_sharing = embedding_sharing
        self.rtd_lambda = float(rtd_lambda)
        if embedding_sharing == "es":
            discriminator.deberta.embeddings.word_embeddings = g_emb
        elif embedding_sharing == "gdes":
            with torch.no_grad():  # delta = E_d - E_g: zero for a fresh model, exact for a loaded discriminator
                d_emb.weight.sub_(g_emb.weight)

    @property
    def delta(self) -> nn.Parameter:
        """GDES: the discriminator's residual embedding (only meaningful with ``embedding_sharing="gdes"``)."""
        return self.discriminator.deberta.embeddings.word_embeddings.weight

    def discriminator_embedding(self) -> torch.Tensor:
        """The discriminator's effective word-embedding table (what export writes)."""
        g = self.generator.deberta.embeddings.word_embeddings.weight
        if self.embedding_sharing == "gdes":
            return g.detach() + self.delta.detach()
        return self.discriminator.deberta.embeddings.word_embeddings.weight.detach()

    def generator_phase(self, input_ids: torch.Tensor, labels: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, sample_noise: torch.Tensor | None = None,
                        ) -> tuple[Any, dict[str, torch.Tensor]]:
        """The generator's MLM output and what the discriminator needs: its input ids (the sampled replacements at
        the masked positions) and which tokens were replaced."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        selected = labels != -100
        original = torch.where(selected, labels, input_ids)
        gen = self.generator(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                             only_masked_logits=True)
        with torch.no_grad():
            logits = gen.logits.detach().float()
            probs = torch.softmax(logits, dim=-1)  # temperature 1
            cdf = probs.cumsum(-1)
            noise = sample_noise[selected] if sample_noise is not None else torch.rand(
                logits.shape[0], device=logits.device)
            u = noise.to(cdf.dtype) * cdf[:, -1]
            sampled = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
            disc_ids = original.clone()
            disc_ids[selected] = sampled
            replaced = (disc_ids != original).long()  # sampling the original counts as not replaced
            mlm_accuracy = ((logits.argmax(-1) == labels[selected]).float().mean() if logits.shape[0]
                            else torch.tensor(0.0))
        return gen, {"disc_ids": disc_ids, "replaced": replaced, "attention_mask": attention_mask,
                     "mlm_accuracy": mlm_accuracy}

    def discriminator_phase(self, disc_ids: torch.Tensor, replaced: torch.Tensor, attention_mask: torch.Tensor,
                            **_: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        """The discriminator on the generator's samples (GDES: stop_gradient(E_generator) + delta, with the
        generator's table as it is now) and its detection metrics."""
        if self.embedding_sharing == "gdes":
            e_g = F.embedding(disc_ids, self.generator.deberta.embeddings.word_embeddings.weight).detach()
            embeds = e_g + self.discriminator.deberta.embeddings.word_embeddings(disc_ids)
            disc = self.discriminator(inputs_embeds=embeds, attention_mask=attention_mask, labels=replaced)
        else:
            disc = self.discriminator(input_ids=disc_ids, attention_mask=attention_mask, labels=replaced)
        with torch.no_grad():
            real = attention_mask > 0
            pred = (disc.logits > 0) & real
            truth = (replaced > 0) & real
            tp = (pred & truth).sum().float()
            n_real = real.sum().float()
            metrics = {
                "rtd_loss": disc.loss.detach(),
                "rtd_accuracy": ((pred == truth) & real).sum().float() / n_real,
                "rtd_precision": tp / pred.sum().clamp(min=1),
                "rtd_recall": tp / truth.sum().clamp(min=1),
                "replaced_rate": truth.sum().float() / n_real,
            }
        return disc, metrics

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                sample_noise: torch.Tensor | None = None, **_: Any) -> RTDOutput:
        """``input_ids``: the generator input ([MASK] at the selected positions); ``labels``: original ids there,
        -100 elsewhere; ``sample_noise``: uniform [0, 1) per position, used to sample replacements
        (inverse-CDF), so sampling is reproducible and independent of the process layout."""
        gen, carry = self.generator_phase(input_ids, labels, attention_mask, sample_noise)
        disc, disc_metrics = self.discriminator_phase(**carry)
        loss = gen.loss + self.rtd_lambda * disc.loss
        metrics = {"mlm_loss": gen.loss.detach(), "mlm_accuracy": carry["mlm_accuracy"], **disc_metrics,
                   "num_tokens": (carry["attention_mask"] > 0).sum().float()}
        return RTDOutput(loss=loss, mlm_loss=gen.loss, rtd_loss=disc.loss, metrics=metrics)

    # ------------------------------------------------------------------ export
    def export_discriminator(self) -> DebertaForReplacedTokenDetection:
        """A standalone discriminator with the merged embedding (GDES: E_g + delta)."""
        disc = DebertaForReplacedTokenDetection(self.discriminator.config)
        state = {k: v.detach().clone() for k, v in self.discriminator.state_dict().items()}
        state["deberta.embeddings.word_embeddings.weight"] = self.discriminator_embedding().clone()
        disc.load_state_dict(state)
        return disc.eval()

    def save_pretrained(self, folder: str | Path, tokenizer: Any = None) -> Path:
        """``folder/discriminator`` (+ RTD head), ``folder/generator`` (MLM), ``folder/tokenizer``; HF layout."""
        folder = Path(folder)
        self.export_discriminator().save_pretrained(folder / "discriminator")
        self.generator.save_pretrained(folder / "generator")
        if tokenizer is not None:
            for sub in ("discriminator", "generator", "tokenizer"):
                tokenizer.save_pretrained(folder / sub)
        return folder


def rtd_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``step_fn`` for :class:`mdeberta.train.Trainer`."""
    out = model(**batch)
    return out.loss, out.metrics


def rtd_generator_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decoupled training, first phase: the generator's MLM loss alone; the samples go on to the discriminator's
    phase as ``carry`` (DeBERTa's ``--decoupled_training``, the default of its rtd.sh)."""
    gen, carry = model.generator_phase(**{k: batch[k] for k in ("input_ids", "labels", "attention_mask",
                                                                 "sample_noise") if k in batch})
    tokens = (carry["attention_mask"] > 0).sum().float()
    return gen.loss, {"mlm_loss": gen.loss.detach(), "mlm_accuracy": carry["mlm_accuracy"], "num_tokens": tokens,
                      "carry": carry}


def rtd_discriminator_step(model: nn.Module, carry: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decoupled training, second phase: lambda x RTD loss on the first phase's samples, run after the generator's
    update (so GDES embeds with the updated generator table)."""
    disc, metrics = model.discriminator_phase(**carry)
    return model.rtd_lambda * disc.loss, metrics


def mlm_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``step_fn`` for a single ``DebertaForMaskedLM`` trained with MLM alone."""
    labels = batch["labels"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels,
                only_masked_logits=True)
    with torch.no_grad():
        target = labels[labels != -100]
        acc = (out.logits.argmax(-1) == target).float().mean() if target.numel() else torch.tensor(0.0)
        mask = batch.get("attention_mask")
        tokens = mask.sum().float() if mask is not None else torch.tensor(float(labels.numel()))
    return out.loss, {"mlm_loss": out.loss.detach(), "mlm_accuracy": acc, "num_tokens": tokens}


# --------------------------------------------------------------------------- health of a run
def embedding_common_share(table: torch.Tensor, skip: int = 0) -> float:
    """Share of the table's energy in its mean row: ``|mean row|^2 / mean |row|^2`` over rows ``skip:``.

    About 1/V at init. A degenerate MLM/RTD table (every rare row pushed the same way by the tied softmax) puts
    most of its energy there (RESULTS.md: 0.63-0.66 for the runs that did not fine-tune); the rows then differ
    in a small part only, and a fresh encoder on top of them barely trains.
    """
    rows = table.detach().float()[skip:]
    mean = rows.mean(0)
    return float(mean.pow(2).sum() / rows.pow(2).sum(-1).mean().clamp(min=1e-30))


def mean_token_cosine(hidden: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean cosine similarity between the final-layer vectors of all real tokens of a batch (pairs i != j).

    About 0 at random init; close to 1 when every token gets the same representation (collapse).
    """
    vectors = torch.nn.functional.normalize(hidden.detach().float()[mask.bool()], dim=-1)
    n = vectors.shape[0]
    if n < 2:
        return 0.0
    total = vectors.sum(0)
    return float((total @ total - n) / (n * (n - 1)))


@torch.no_grad()
def representation_health(model: nn.Module, probe: dict[str, torch.Tensor]) -> dict[str, float]:
    """Metrics that catch a degenerate pretraining run early (logged every ``--health-every`` steps):
    ``embedding_common_share`` of the (effective discriminator) word-embedding table and ``token_cosine`` of the
    final layer on a fixed probe batch of unmasked text."""
    if isinstance(model, RTDPretrainingModel):
        table, backbone = model.discriminator_embedding(), model.discriminator.deberta
        embeds = F.embedding(probe["input_ids"], table)
        out = backbone(inputs_embeds=embeds, attention_mask=probe["attention_mask"])
    else:
        backbone = model.deberta
        table = backbone.embeddings.word_embeddings.weight
        out = backbone(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"])
    return {"embedding_common_share": embedding_common_share(table, skip=1),
            "token_cosine": mean_token_cosine(out.last_hidden_state, probe["attention_mask"])}


@torch.no_grad()
def minimal_pairs_health(model: nn.Module, tokenizer: Any, pairs: Sequence[Any], max_length: int = 128,
                         ) -> dict[str, float]:
    """Accuracy (percent) on a fixed sample of minimal pairs (BLiMP), logged with the health metrics so that a run
    shows it is learning grammar long before fine-tuning can: the generator / MLM model by pseudo-log-likelihood,
    the discriminator by the sum of log P(original) with its effective (GDES-merged) embedding."""
    from mdeberta.minimal_pairs import score_pairs, sentence_scores, summarize

    def accuracy(scorer: nn.Module, table: torch.Tensor | None = None) -> float:
        records = score_pairs(pairs, lambda texts: sentence_scores(scorer, tokenizer, texts, max_length=max_length,
                                                                   embedding_table=table))
        return summarize(records)["overall"]

    if isinstance(model, RTDPretrainingModel):
        return {"minimal_pairs_generator": accuracy(model.generator),
                "minimal_pairs_discriminator": accuracy(model.discriminator, model.discriminator_embedding())}
    return {"minimal_pairs_mlm": accuracy(model)}


def build_rtd_model(config: DebertaConfig, generator_layers: int | None = None, embedding_sharing: str = "gdes",
                    rtd_lambda: float = 50.0, init_discriminator: str | None = None,
                    init_generator: str | None = None) -> RTDPretrainingModel:
    """Fresh models from ``config`` (the discriminator's), or continued pretraining from HF folders / hub ids.

    With ``init_discriminator`` and no ``init_generator`` the generator is fresh except for its word embedding,
    copied from the discriminator so sharing starts from the released table.
    """
    if init_discriminator:
        disc = DebertaForReplacedTokenDetection.from_pretrained(init_discriminator).train()
        config = disc.config
    else:
        disc = DebertaForReplacedTokenDetection(config)
    if init_generator:
        # Released generators were trained with the Enhanced Mask Decoder, which config.json does not record.
        gen_config = DebertaConfig.from_pretrained(init_generator)
        gen = DebertaForMaskedLM.from_pretrained(
            init_generator, enhanced_mask_decoder=gen_config.relative_attention).train()
    else:
        gen = DebertaForMaskedLM(generator_config(config, generator_layers))
        if init_discriminator:
            with torch.no_grad():
                gen.deberta.embeddings.word_embeddings.weight.copy_(disc.deberta.embeddings.word_embeddings.weight)
    if embedding_sharing == "gdes" and not init_discriminator:
        with torch.no_grad():  # delta starts at zero: the discriminator starts from the generator's table
            disc.deberta.embeddings.word_embeddings.weight.copy_(gen.deberta.embeddings.word_embeddings.weight)
    return RTDPretrainingModel(gen, disc, embedding_sharing=embedding_sharing, rtd_lambda=rtd_lambda)
