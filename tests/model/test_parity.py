"""Exact parity with transformers' DebertaV2 on random (perturbed) weights, fp32, every head and config variant.

transformers saves each checkpoint, we load it with ``from_pretrained`` and compare outputs at non-pad positions.
The worst |diff| per (variant, head) is printed (``pytest -s``) for the closing note.
"""

from __future__ import annotations

import pytest
import torch

import mdeberta

transformers = pytest.importorskip("transformers")

TOL = 1e-5
BASE = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=512, layer_norm_eps=1e-7)
V3 = dict(BASE, relative_attention=True, position_buckets=256, max_relative_positions=-1, pos_att_type="p2c|c2p",
          share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0)
VARIANTS = {
    "v3": V3,
    "mdeberta-vocab": dict(V3, vocab_size=251000),
    "v2-xlarge-conv": dict(V3, conv_kernel_size=3, conv_act="gelu", hidden_act="gelu"),
    "v1-like": dict(BASE, relative_attention=True, position_buckets=-1, max_relative_positions=-1,
                    pos_att_type="c2p|p2c", share_att_key=False, position_biased_input=True, type_vocab_size=2),
    "embedding-size": dict(V3, embedding_size=16),
    "few-buckets": dict(V3, position_buckets=8, max_relative_positions=32),
    "c2p-only-separate-proj": dict(V3, pos_att_type="c2p", share_att_key=False, norm_rel_ebd="none"),
}
HEADS = {
    "base": ("DebertaV2Model", mdeberta.DebertaModel),
    "mlm-legacy": ("DebertaV2ForMaskedLM", mdeberta.DebertaForMaskedLM),
    "mlm": ("DebertaV2ForMaskedLM", mdeberta.DebertaForMaskedLM),
    "sequence-classification": ("DebertaV2ForSequenceClassification", mdeberta.DebertaForSequenceClassification),
    "token-classification": ("DebertaV2ForTokenClassification", mdeberta.DebertaForTokenClassification),
    "question-answering": ("DebertaV2ForQuestionAnswering", mdeberta.DebertaForQuestionAnswering),
    "multiple-choice": ("DebertaV2ForMultipleChoice", mdeberta.DebertaForMultipleChoice),
}
WORST: dict[tuple[str, str], float] = {}


def perturb_(model: torch.nn.Module, seed: int = 0) -> None:
    """Make every parameter non-trivial (LayerNorm scales != 1, biases != 0) so no term can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def hf_checkpoint(tmp_path, variant: str, head: str, **extra):
    cfg = dict(VARIANTS[variant], **extra)
    if head == "mlm":
        cfg["legacy"] = False
    if head == "sequence-classification":
        cfg.setdefault("num_labels", 3)
    hf_cls = getattr(transformers, HEADS[head][0])
    torch.manual_seed(0)
    model = hf_cls(transformers.DebertaV2Config(**cfg)).eval()
    perturb_(model)
    folder = tmp_path / f"{variant}-{head}"
    model.save_pretrained(folder)
    return model, folder


def batch(vocab: int, b: int, length: int, seed: int = 1, type_vocab: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (b, length), generator=g)
    mask = torch.ones_like(ids)
    for i in range(1, b):  # right padding of different amounts
        keep = max(1, length - (length * i) // (b + 1))
        mask[i, keep:] = 0
        ids[i, keep:] = 0
    types = torch.randint(0, type_vocab, (b, length), generator=g) if type_vocab else None
    return ids, mask, types


def outputs(model, head: str, ids, mask, types):
    kwargs = dict(input_ids=ids, attention_mask=mask)
    if types is not None:
        kwargs["token_type_ids"] = types
    if head == "multiple-choice":
        kwargs = {k: v.view(1, *v.shape) for k, v in kwargs.items()}
    with torch.no_grad():
        out = model(**kwargs)
    if head == "base":
        return {"last_hidden_state": out.last_hidden_state}
    if head == "question-answering":
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    return {"logits": out.logits}


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.dim() >= 2 and a.shape[:2] == mask.shape:  # per-token outputs: compare real tokens only
        return (a - b)[mask.bool()].abs().max().item()
    return (a - b).abs().max().item()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", list(HEADS))
def test_outputs_match_transformers(tmp_path, variant, head):
    if variant == "embedding-size" and head == "mlm":
        pytest.skip("transformers' non-legacy MLM head cannot run with embedding_size != hidden_size (its dense "
                    "layer outputs hidden_size, then multiplies by the embedding_size-wide word embeddings); we "
                    "follow the original DeBERTa head (dense to embedding_size), tested in the legacy layout")
    hf_model, folder = hf_checkpoint(tmp_path, variant, head)
    ours = HEADS[head][1].from_pretrained(folder)
    assert ours.loading_info["missing"] == [] and ours.loading_info["unused"] == []
    cfg = VARIANTS[variant]
    ids, mask, types = batch(cfg["vocab_size"], 3, 40, type_vocab=cfg.get("type_vocab_size", 0))
    theirs, mine = outputs(hf_model, head, ids, mask, types), outputs(ours, head, ids, mask, types)
    worst = max(max_diff(theirs[k], mine[k], mask) for k in theirs)
    WORST[(variant, head)] = worst
    print(f"\nparity {variant:>24} {head:>24}: max|diff| = {worst:.2e}")
    assert worst <= TOL


@pytest.mark.parametrize("length", [1, 2, 7, 128, 257, 513, 700])
def test_lengths_beyond_512(tmp_path, length):
    hf_model, folder = hf_checkpoint(tmp_path, "v3", "base")
    ours = mdeberta.DebertaModel.from_pretrained(folder)
    ids, mask, _ = batch(300, 2, length)
    worst = max_diff(outputs(hf_model, "base", ids, mask, None)["last_hidden_state"],
                     outputs(ours, "base", ids, mask, None)["last_hidden_state"], mask)
    print(f"\nparity v3 length {length}: max|diff| = {worst:.2e}")
    assert worst <= TOL


def test_hidden_states_and_attentions_match(tmp_path):
    hf_model, folder = hf_checkpoint(tmp_path, "v3", "base")
    ours = mdeberta.DebertaModel.from_pretrained(folder)
    ids, mask, _ = batch(300, 2, 20)
    with torch.no_grad():
        a = hf_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        b = ours(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(a.hidden_states) == len(b.hidden_states) == 3
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert max_diff(x, y, mask) <= TOL
    for x, y in zip(a.attentions, b.attentions):
        real = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]
        assert (x - y)[real.expand_as(x)].abs().max() <= TOL


@pytest.mark.parametrize(
    "head,labels",
    [
        ("sequence-classification", torch.tensor([0, 2, 1])),
        ("sequence-classification", torch.tensor([0, -1, 1])),  # negative labels are ignored
        ("sequence-classification", torch.softmax(torch.randn(3, 3), -1)),  # soft labels
        ("regression", torch.tensor([0.5, -1.0, 2.0])),
        ("mlm", None),
        ("token-classification", None),
    ],
)
def test_losses_match_transformers(tmp_path, head, labels):
    extra = {"num_labels": 1} if head == "regression" else {}
    real_head = "sequence-classification" if head == "regression" else head
    hf_model, folder = hf_checkpoint(tmp_path, "v3", real_head, **extra)
    ours = HEADS[real_head][1].from_pretrained(folder)
    ids, mask, _ = batch(300, 3, 16)
    if labels is None:
        n = 300 if head == "mlm" else 2
        labels = torch.randint(0, n, ids.shape)
        labels[mask == 0] = -100
    with torch.no_grad():
        a = hf_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        b = ours(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(b) and abs(a.item() - b.item()) <= TOL


def test_question_answering_loss_matches(tmp_path):
    hf_model, folder = hf_checkpoint(tmp_path, "v3", "question-answering")
    ours = mdeberta.DebertaForQuestionAnswering.from_pretrained(folder)
    ids, mask, _ = batch(300, 3, 16)
    start, end = torch.tensor([1, 3, 50]), torch.tensor([2, 5, 7])  # 50 is outside: ignored
    with torch.no_grad():
        a = hf_model(input_ids=ids, attention_mask=mask, start_positions=start, end_positions=end).loss
        b = ours(input_ids=ids, attention_mask=mask, start_positions=start, end_positions=end).loss
    assert abs(a.item() - b.item()) <= TOL


def test_rtd_head_matches_its_definition_on_transformers_backbone(tmp_path):
    """transformers has no RTD class: check LayerNorm(h_CLS + h_t) -> dense -> gelu -> classifier on its backbone."""
    hf_model, folder = hf_checkpoint(tmp_path, "v3", "base")
    ours = mdeberta.DebertaForReplacedTokenDetection.from_pretrained(folder)
    assert all(k.startswith("mask_predictions.") for k in ours.loading_info["missing"])
    perturb_(ours.mask_predictions, seed=3)
    ids, mask, _ = batch(300, 3, 24)
    head = ours.mask_predictions
    with torch.no_grad():
        h = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state
        x = torch.nn.functional.layer_norm(h[:, :1] + h, (32,), head.LayerNorm.weight, head.LayerNorm.bias, 1e-7)
        expected = (torch.nn.functional.gelu(x @ head.dense.weight.T + head.dense.bias) @ head.classifier.weight.T
                    + head.classifier.bias).squeeze(-1)
        got = ours(input_ids=ids, attention_mask=mask).logits
    assert max_diff(expected, got, mask) <= TOL


def test_enhanced_mask_decoder_matches_transformers_layers(tmp_path):
    """EMD = the last layer applied twice with query = z + h_{N-1}, computed here with transformers' own layer."""
    hf_model, folder = hf_checkpoint(tmp_path, "v3", "mlm")
    ours = mdeberta.DebertaForMaskedLM.from_pretrained(folder, enhanced_mask_decoder=True)
    assert ours.loading_info["missing"] == ["deberta.embeddings.position_embeddings.weight"]
    perturb_(ours.deberta.embeddings.position_embeddings, seed=5)
    ids, mask, _ = batch(300, 2, 30)
    with torch.no_grad():
        states = hf_model.deberta(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        enc = hf_model.deberta.encoder
        kv = states[-2]
        query = ours.deberta.embeddings.position_embeddings.weight[:30].unsqueeze(0) + kv
        ext = enc.get_attention_mask(mask)
        rel_pos = enc.get_rel_pos(kv)
        for _ in range(2):
            query = enc.layer[-1](kv, ext, query_states=query, relative_pos=rel_pos,
                                  rel_embeddings=enc.get_rel_embedding())[0]
        expected = hf_model.lm_predictions(query, hf_model.deberta.embeddings.word_embeddings)
        got = ours(input_ids=ids, attention_mask=mask).logits
    assert max_diff(expected, got, mask) <= TOL


@pytest.mark.parametrize("head", [h for h in HEADS if h != "mlm"] + ["rtd", "mlm-non-legacy"])
def test_our_checkpoints_load_in_transformers(tmp_path, head):
    """ours -> save_pretrained -> transformers loads with no missing or unexpected keys, same outputs."""
    cfg = mdeberta.DebertaConfig(**V3, num_labels=2 if head == "question-answering" else 3,
                                 legacy=head != "mlm-non-legacy")
    name = {"rtd": "base", "mlm-non-legacy": "mlm"}.get(head, head)
    cls = mdeberta.DebertaForReplacedTokenDetection if head == "rtd" else HEADS[name][1]
    torch.manual_seed(0)
    ours = cls(cfg).eval()
    perturb_(ours)
    ours.save_pretrained(tmp_path)
    hf_cls = getattr(transformers, HEADS[name][0])
    theirs, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    theirs.eval()
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    unexpected = {k for k in info["unexpected_keys"] if not (head == "rtd" and "mask_predictions" in k)}
    assert not unexpected, info
    ids, mask, _ = batch(300, 3, 20)
    if head == "rtd":
        with torch.no_grad():
            a = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
            b = ours.deberta(input_ids=ids, attention_mask=mask).last_hidden_state
        assert max_diff(a, b, mask) <= TOL
        return
    a, b = outputs(theirs, name, ids, mask, None), outputs(ours, name, ids, mask, None)
    assert max(max_diff(a[k], b[k], mask) for k in a) <= TOL


def test_worst_diff_summary():
    """Printed at the end of a ``pytest -s`` run: the worst |diff| per variant and head."""
    if WORST:
        print("\nworst max|diff| per (variant, head):")
        for (variant, head), value in sorted(WORST.items()):
            print(f"  {variant:>24} {head:>24} {value:.2e}")
        assert max(WORST.values()) <= TOL
