"""Packed sequences (``cu_seqlens``): N sequences in one row give each sequence what it gets alone, padded."""

from __future__ import annotations

import pytest
import torch

from mdeberta.config import preset
from mdeberta.model import (
    DebertaForMaskedLM,
    DebertaForQuestionAnswering,
    DebertaForSequenceClassification,
    DebertaForTokenClassification,
    DebertaModel,
)
from mdeberta.model.attention import PackedSequences

LENGTHS = (5, 11, 3, 8)


def padded_and_packed(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(5, vocab, (n,), generator=g) for n in LENGTHS]
    longest = max(LENGTHS)
    ids = torch.zeros(len(seqs), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    types = (torch.arange(longest) >= 2).long().expand_as(ids) * mask  # a second segment, as in NLI pairs
    packed_types = torch.cat([types[i, :n] for i, n in enumerate(LENGTHS)])[None]
    cu = PackedSequences.from_lengths(LENGTHS).cu_seqlens
    return (ids, mask, types), (torch.cat(seqs)[None], packed_types, cu)


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("overrides", [
    {},                                                        # V3: relative positions only, log buckets
    {"position_biased_input": True, "type_vocab_size": 2},     # absolute positions restart in every sequence
    {"pos_att_type": ["c2p"], "share_att_key": False},
])
def test_packed_classification_equals_padded(backend, overrides):
    torch.manual_seed(0)
    cfg = preset("deberta-v3-micro", num_labels=3, **overrides)
    model = DebertaForSequenceClassification(cfg).eval()
    model.set_attention_backend(backend)
    (ids, mask, types), (pids, ptypes, cu) = padded_and_packed(cfg.vocab_size)
    labels = torch.tensor([0, 2, 1, 1])
    padded = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    packed = model(input_ids=pids, token_type_ids=ptypes, cu_seqlens=cu, labels=labels)
    assert packed.logits.shape == (len(LENGTHS), 3)
    torch.testing.assert_close(packed.logits, padded.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-4, atol=1e-6)


def test_packed_token_classification_and_gradients_equal_padded():
    torch.manual_seed(1)
    # no dropout anywhere: the two runs must compute the same thing
    cfg = preset("deberta-v3-micro", num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (ids, mask, types), (pids, ptypes, cu) = padded_and_packed(cfg.vocab_size)
    g = torch.Generator().manual_seed(3)
    tags = torch.randint(0, 4, ids.shape, generator=g).masked_fill(mask == 0, -100)
    packed_tags = torch.cat([tags[i, :n] for i, n in enumerate(LENGTHS)])[None]
    state = DebertaForTokenClassification(cfg).state_dict()
    grads = []
    for kind in ("padded", "packed"):
        model = DebertaForTokenClassification(cfg).train()
        model.load_state_dict(state)
        model.set_attention_backend("reference")
        out = (model(input_ids=ids, attention_mask=mask, labels=tags) if kind == "padded"
               else model(input_ids=pids, cu_seqlens=cu, labels=packed_tags))
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None}))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    assert grads[0][1].keys() == grads[1][1].keys()
    for name in grads[0][1]:
        torch.testing.assert_close(grads[1][1][name], grads[0][1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_sequences_helpers():
    packed = PackedSequences.from_lengths([2, 3])
    assert packed.cu_seqlens.tolist() == [0, 2, 5] and packed.max_seqlen == 3 and packed.num_sequences == 2
    assert packed.position_ids().tolist() == [[0, 1, 0, 1, 2]]
    assert packed.sequence_ids().tolist() == [0, 0, 1, 1, 1]
    block = packed.pair_mask()[0, 0]
    assert block[1, 0] and not block[1, 2] and block[4, 2]
    assert packed.pair_mask() is packed.pair_mask()  # built once per batch, not once per layer


@pytest.mark.parametrize("cu,message", [
    (torch.tensor([0, 3, 3, 8]), "increase strictly"),
    (torch.tensor([1, 8]), "start at 0"),
    (torch.tensor([0, 4]), "end at the packed length 8"),
    (torch.tensor([[0, 8]]), "1-D integer"),
])
def test_bad_cu_seqlens_are_named(cu, message):
    model = DebertaModel(preset("deberta-v3-micro"))
    with pytest.raises(ValueError, match=message):
        model(input_ids=torch.ones(1, 8, dtype=torch.long), cu_seqlens=cu)


def test_packing_refuses_what_it_cannot_do():
    cfg = preset("deberta-v3-micro")
    ids, cu = torch.ones(1, 8, dtype=torch.long), torch.tensor([0, 3, 8])
    with pytest.raises(ValueError, match="one row"):
        DebertaModel(cfg)(input_ids=torch.ones(2, 8, dtype=torch.long), cu_seqlens=cu)
    with pytest.raises(ValueError, match="without an attention_mask"):
        DebertaModel(cfg)(input_ids=ids, attention_mask=torch.tensor([[1] * 7 + [0]]), cu_seqlens=cu)
    with pytest.raises(ValueError, match="convolution"):
        DebertaModel(preset("deberta-v3-micro", conv_kernel_size=3))(input_ids=ids, cu_seqlens=cu)
    for head in (DebertaForQuestionAnswering, DebertaForMaskedLM):  # per-sequence outputs packing would garble
        with pytest.raises(ValueError, match="does not take packed input"):
            head(cfg)(input_ids=ids, cu_seqlens=cu)
