"""Model behaviour beyond parity: input errors, relative-position buckets, EMD, backends, padding invariance."""

from __future__ import annotations

import pytest
import torch

import mdeberta
from mdeberta.model.attention import make_log_bucket_position, reference_attention, relative_position_slots

CFG = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
           relative_attention=True, position_buckets=16, pos_att_type="p2c|c2p", share_att_key=True,
           norm_rel_ebd="layer_norm", position_biased_input=False, max_position_embeddings=64,
           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_log_buckets_match_the_definition():
    rel = torch.arange(-600, 601)
    buckets = make_log_bucket_position(rel, 256, 512)
    assert torch.equal(buckets[600 - 127: 600 + 128], rel[600 - 127: 600 + 128].float())  # near: own slot
    assert torch.equal(buckets, -buckets.flip(0))  # odd: p2c and c2p share one slot table
    assert buckets[600 - 511: 600 + 512].abs().max() <= 255  # within max_position the 2x256 slots suffice
    assert (buckets[601:].diff() >= 0).all()  # monotone


def test_slot_table_is_symmetric_and_cached():
    config = mdeberta.DebertaConfig(**CFG)
    slots = relative_position_slots(40, 40, config)
    assert slots.shape == (40, 40) and slots.min() >= 0 and slots.max() < 2 * config.position_buckets
    assert torch.equal(slots + slots.T, torch.full_like(slots, 2 * config.position_buckets))
    assert relative_position_slots(40, 40, config) is slots or torch.equal(relative_position_slots(40, 40, config),
                                                                           slots)


def test_out_of_vocabulary_ids_are_named():
    model = mdeberta.DebertaModel(mdeberta.DebertaConfig(**CFG))
    with pytest.raises(ValueError, match=r"token id 100 is outside the vocabulary \(vocab_size=100\)"):
        model(torch.tensor([[1, 100]]))
    with pytest.raises(ValueError, match=r"token id -1 is outside"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match=r"must be \(batch, length\), got shape \(3,\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()


def test_absolute_position_limit_and_token_types_are_checked():
    model = mdeberta.DebertaModel(mdeberta.DebertaConfig(**{**CFG, "position_biased_input": True,
                                                            "type_vocab_size": 2}))
    with pytest.raises(ValueError, match="sequence length 65 exceeds max_position_embeddings=64"):
        model(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids contain 2, outside type_vocab_size=2"):
        model(torch.ones(1, 5, dtype=torch.long), token_type_ids=torch.full((1, 5), 2))


def test_padding_does_not_change_real_tokens():
    model = mdeberta.DebertaForSequenceClassification(mdeberta.DebertaConfig(**CFG, num_labels=3)).eval()
    ids = torch.randint(4, 100, (1, 12))
    padded = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 8)], 1).long()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, model(padded, attention_mask=mask).logits, atol=1e-6)


def test_enhanced_mask_decoder_uses_absolute_positions_and_trains():
    config = mdeberta.DebertaConfig(**CFG, enhanced_mask_decoder=True)
    model = mdeberta.DebertaForMaskedLM(config)
    ids = torch.randint(4, 100, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    out = model(ids, labels=labels)
    out.loss.backward()
    assert model.deberta.embeddings.position_embeddings.weight.grad.abs().sum() > 0
    plain = mdeberta.DebertaForMaskedLM(config.replace(enhanced_mask_decoder=False))
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, model(ids).logits)
    with torch.no_grad():
        masked_only = model(ids, labels=labels, only_masked_logits=True)
        full = model(ids, labels=labels)
    assert masked_only.logits.shape == (2, 100)
    assert torch.allclose(masked_only.logits, full.logits[:, 3], atol=1e-6)
    assert torch.allclose(masked_only.loss, full.loss, atol=1e-6)


def test_rtd_loss_ignores_padding():
    model = mdeberta.DebertaForReplacedTokenDetection(mdeberta.DebertaConfig(**CFG)).eval()
    ids = torch.randint(4, 100, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    labels = torch.randint(0, 2, (2, 6))
    out = model(ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[real], labels[real].float())
    assert torch.allclose(out.loss, expected) and out.logits.shape == (2, 6)


def test_backend_registry_and_reference_contract():
    model = mdeberta.DebertaModel(mdeberta.DebertaConfig(**CFG))
    with pytest.raises(ValueError, match="unknown attention backend 'nope'; available: .*reference"):
        model.set_attention_backend("nope")
    q, k, v = (torch.randn(2, 4, 5, 8) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    context, probs = reference_attention(q, k, v, None, None, None, mask, 8 ** -0.5, output_attentions=True)
    expected = torch.softmax(q @ k.transpose(-1, -2) * 8 ** -0.5, -1)
    assert torch.allclose(probs, expected, atol=1e-6) and torch.allclose(context, expected @ v, atol=1e-6)


def test_parameter_counts_of_mdeberta_base():
    with torch.device("meta"):
        model = mdeberta.DebertaModel(mdeberta.preset("mdeberta-v3-base"))
    assert round(model.num_parameters() / 1e6) == 278
    assert round((model.num_parameters() - model.num_parameters(exclude_embeddings=True)) / 1e6) == 193


def test_an_unknown_keyword_is_a_type_error_naming_it():
    """A typo (``attention_maks=``) used to be swallowed and silently change the logits."""
    import mdeberta

    cfg = mdeberta.preset("deberta-v3-micro", vocab_size=40)
    ids = torch.randint(4, 40, (1, 6))
    for cls in (mdeberta.DebertaModel, mdeberta.DebertaForSequenceClassification, mdeberta.DebertaForMaskedLM,
                mdeberta.DebertaForTokenClassification, mdeberta.DebertaForQuestionAnswering,
                mdeberta.DebertaForReplacedTokenDetection):
        model = cls(cfg).eval()
        with pytest.raises(TypeError, match=rf"{cls.__name__}.forward\(\) got an unexpected keyword argument "
                                            r"'attention_maks'"):
            model(input_ids=ids, attention_maks=torch.ones_like(ids))
        model(input_ids=ids, return_dict=True)  # what transformers' callers pass is still accepted
