"""Task heads on top of ``DebertaModel``, with transformers' parameter names.

MLM (both layouts, optional Enhanced Mask Decoder), replaced token detection (the V3 discriminator head that
released checkpoints carry as ``mask_predictions.*``), sequence / token classification, QA, multiple choice.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mdeberta.config import DebertaConfig
from mdeberta.errors import UsageError
from mdeberta.model.deberta import DebertaModel, DebertaPreTrainedModel, check_keywords
from mdeberta.model.layers import ACTIVATIONS, backend_mask, padding_mask_2d
from mdeberta.model.outputs import (
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    ReplacedTokenDetectionOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)


# --------------------------------------------------------------------------- masked language modelling
class LMPredictionHead(nn.Module):
    """dense -> act -> LayerNorm -> logits against the (tied) word embeddings + bias."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.LayerNorm(self.act(self.dense(hidden_states)))
        return F.linear(h, word_embeddings, self.bias)


class _LegacyTransform(nn.Module):
    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)


class _LegacyPredictions(nn.Module):
    """``cls.predictions.{transform.dense, transform.LayerNorm, bias}``; the decoder is the word embedding."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.transform = _LegacyTransform(config)
        self.act = ACTIVATIONS[config.hidden_act]
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.transform.LayerNorm(self.act(self.transform.dense(hidden_states)))
        return F.linear(h, word_embeddings, self.bias)


class _LegacyMLMHead(nn.Module):
    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.predictions = _LegacyPredictions(config)


class _MLMHead(nn.Module):
    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.lm_head = LMPredictionHead(config)


class DebertaForMaskedLM(DebertaPreTrainedModel):
    """Masked language model; with ``config.enhanced_mask_decoder`` it is DeBERTa's EMD generator.

    Enhanced Mask Decoder: absolute positions z are re-injected just before the output. The last encoder layer
    runs twice more with query = z + h_{N-1} (then its own output) over keys/values h_{N-1}, the second-to-last
    layer's output; the result replaces h_N as input to the prediction head.
    """

    hf_architecture = "DebertaV2ForMaskedLM"
    # Keys transformers may write for the tied legacy decoder; they duplicate word embeddings / bias.
    tied_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.deberta = DebertaModel(config)
        if config.legacy:
            self.cls = _LegacyMLMHead(config)
        else:
            self.lm_predictions = _MLMHead(config)
        self.post_init()

    def prediction_head(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.deberta.embeddings.word_embeddings.weight
        if self.config.legacy:
            return self.cls.predictions(hidden_states, weight)
        return self.lm_predictions.lm_head(hidden_states, weight)

    def enhanced_mask_decoder(
        self, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        encoder = self.deberta.encoder
        kv = hidden_states[-2]
        query = self.deberta.embeddings.absolute_positions(position_ids) + kv
        mask = backend_mask(attention_mask)
        slots = encoder.relative_slots(kv.shape[1], kv.device)
        rel_embeddings = encoder.get_rel_embedding()
        for _ in range(2):
            query, _ = encoder.layer[-1](kv, mask, slots, rel_embeddings, query_states=query)
        return query

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        only_masked_logits: bool = False,
        **kwargs: Any,
    ) -> MaskedLMOutput:
        """``labels``: (B, L) token ids, -100 where no prediction is scored.

        ``only_masked_logits=True`` computes logits only where labels != -100, as a (N_masked, V) tensor: with a
        250K vocabulary this saves most of the head's time and memory in pretraining.
        """
        reject_packed(kwargs, type(self).__name__)
        emd = self.config.enhanced_mask_decoder
        out = self.deberta(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states or emd,
        )
        sequence_output = out.last_hidden_state
        if emd:
            length = sequence_output.shape[1]
            if attention_mask is None:
                attention_mask = torch.ones(sequence_output.shape[:2], device=sequence_output.device)
            if position_ids is None:
                position_ids = torch.arange(length, device=sequence_output.device).unsqueeze(0)
            sequence_output = self.enhanced_mask_decoder(out.hidden_states, attention_mask, position_ids)
        if only_masked_logits:
            if labels is None:
                raise UsageError("only_masked_logits=True needs labels (-100 marks unscored positions)")
            selected = labels != -100
            logits = self.prediction_head(sequence_output[selected])
            target = labels[selected]
        else:
            logits = self.prediction_head(sequence_output)
            target = labels
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)
        return MaskedLMOutput(
            loss=loss, logits=logits,
            hidden_states=out.hidden_states if output_hidden_states else None, attentions=out.attentions,
        )


# --------------------------------------------------------------------------- replaced token detection
class MaskPredictionHead(nn.Module):
    """RTD head of released V3 checkpoints: LayerNorm(h_CLS + h_t) -> dense -> act -> one logit per token."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.LayerNorm(hidden_states[:, :1] + hidden_states)
        return self.classifier(self.act(self.dense(h))).squeeze(-1)


class DebertaForReplacedTokenDetection(DebertaPreTrainedModel):
    """The ELECTRA-style discriminator of DeBERTa-V3: which tokens did the generator replace?"""

    hf_architecture = None  # transformers has no such class; it loads the backbone and ignores the head.

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.deberta = DebertaModel(config)
        self.mask_predictions = MaskPredictionHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs: Any,
    ) -> ReplacedTokenDetectionOutput:
        """``labels``: (B, L) 1 where the token was replaced, 0 where original; the loss is the mean binary
        cross-entropy over every non-pad token."""
        reject_packed(kwargs, type(self).__name__)
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.mask_predictions(out.last_hidden_state)
        loss = None
        if labels is not None:
            real = (padding_mask_2d(attention_mask) > 0) if attention_mask is not None else torch.ones_like(
                logits, dtype=torch.bool)
            loss = F.binary_cross_entropy_with_logits(logits[real].float(), labels[real].float())
        return ReplacedTokenDetectionOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                            attentions=out.attentions)


# --------------------------------------------------------------------------- classification heads
class ContextPooler(nn.Module):
    """The [CLS] vector -> dropout -> dense -> act."""

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.pooler_hidden_size, config.pooler_hidden_size)
        self.dropout = nn.Dropout(config.pooler_dropout)
        self.act = ACTIVATIONS[config.pooler_hidden_act]

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, H) -> (B, H) from each [CLS]; packed (1, T, H) with ``cu_seqlens`` -> (N, H), from each
        sequence's first token."""
        first = hidden_states[:, 0] if cu_seqlens is None else hidden_states[0, cu_seqlens[:-1].long()]
        return self.act(self.dense(self.dropout(first)))


def reject_packed(kwargs: dict[str, Any], head: str) -> None:
    """Heads whose outputs or labels are per sequence in a way packing would break say so (not silently wrong);
    any other unknown keyword is a TypeError (a typo such as ``attention_maks=`` must not change the logits)."""
    check_keywords(kwargs, head, allowed=("cu_seqlens",))
    if kwargs.get("cu_seqlens") is not None:
        raise UsageError(f"{head} does not take packed input (cu_seqlens); packing works with sequence and token "
                         "classification")


def _cls_dropout(config: DebertaConfig) -> nn.Dropout:
    return nn.Dropout(config.hidden_dropout_prob if config.cls_dropout is None else config.cls_dropout)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: DebertaConfig) -> torch.Tensor:
    """transformers' rules: one label -> MSE; class ids -> cross-entropy (negative ids ignored);
    (B, num_labels) floats -> soft-label cross-entropy; or an explicit ``problem_type``."""
    num_labels = logits.shape[-1]
    problem = config.problem_type
    if problem == "regression" or (problem is None and num_labels == 1):
        return F.mse_loss(logits.view(-1).float(), labels.view(-1).float()) if num_labels == 1 else F.mse_loss(
            logits.float(), labels.float())
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    if labels.dim() == 1 or labels.shape[-1] == 1:
        labels = labels.view(-1).long()
        if labels.numel() and int(labels.max()) >= num_labels:
            raise UsageError(f"label {int(labels.max())} is out of range for a head with {num_labels} labels")
        keep = labels >= 0
        if not keep.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[keep].float(), labels[keep])
    return -(F.log_softmax(logits.float(), dim=-1) * labels.float()).sum(-1).mean()


class DebertaForSequenceClassification(DebertaPreTrainedModel):
    hf_architecture = "DebertaV2ForSequenceClassification"

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.deberta = DebertaModel(config)
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(config.pooler_hidden_size, config.num_labels)
        self.dropout = _cls_dropout(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=False, output_hidden_states=False,
                cu_seqlens=None, **kwargs: Any) -> SequenceClassifierOutput:
        """``cu_seqlens``: a packed row of N sequences (see :meth:`DebertaModel.forward`); logits (N, labels)."""
        check_keywords(kwargs, type(self).__name__)
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           cu_seqlens=cu_seqlens)
        logits = self.classifier(self.dropout(self.pooler(out.last_hidden_state, cu_seqlens)))
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


class DebertaForTokenClassification(DebertaPreTrainedModel):
    hf_architecture = "DebertaV2ForTokenClassification"

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.deberta = DebertaModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=False, output_hidden_states=False,
                cu_seqlens=None, **kwargs: Any) -> TokenClassifierOutput:
        """``labels``: (B, L) class ids, -100 for positions not scored (padding, sub-word continuations).
        Packed input (``cu_seqlens``, see :meth:`DebertaModel.forward`): inputs and labels (1, T)."""
        check_keywords(kwargs, type(self).__name__)
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           cu_seqlens=cu_seqlens)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


class DebertaForQuestionAnswering(DebertaPreTrainedModel):
    hf_architecture = "DebertaV2ForQuestionAnswering"

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.deberta = DebertaModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=False,
                output_hidden_states=False, **kwargs: Any) -> QuestionAnsweringModelOutput:
        """Span extraction: start/end logits per token; positions outside the sequence are ignored in the loss."""
        reject_packed(kwargs, type(self).__name__)
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1)[:2])
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.shape[1]
            start = start_positions.view(-1).clamp(0, ignored)
            end = end_positions.view(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
                    + F.cross_entropy(end_logits.float(), end, ignore_index=ignored)) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                            hidden_states=out.hidden_states, attentions=out.attentions)


class DebertaForMultipleChoice(DebertaPreTrainedModel):
    hf_architecture = "DebertaV2ForMultipleChoice"

    def __init__(self, config: DebertaConfig) -> None:
        super().__init__(config)
        self.deberta = DebertaModel(config)
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(config.pooler_hidden_size, 1)
        self.dropout = _cls_dropout(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=False, output_hidden_states=False,
                **kwargs: Any) -> MultipleChoiceModelOutput:
        """Inputs are (B, num_choices, L); logits (B, num_choices)."""
        reject_packed(kwargs, type(self).__name__)
        ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if ref.dim() != 3:
            raise UsageError(f"multiple choice inputs must be (batch, choices, length), got {tuple(ref.shape)}")
        num_choices = ref.shape[1]

        def flat(t: torch.Tensor | None, trailing: int = 1) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[-trailing:])

        out = self.deberta(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                           flat(inputs_embeds, 2), output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(self.pooler(out.last_hidden_state))).view(-1, num_choices)
        loss = F.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                         attentions=out.attentions)
