"""Zero-shot classification through NLI and pair classification (mdeberta.inference)."""

from __future__ import annotations

import random

import pytest
import torch

from mdeberta.config import preset
from mdeberta.data.nli import LABELS, NLIExample
from mdeberta.inference import ZeroShotClassifier, classify_pairs, predict_logits, zero_shot_classify
from mdeberta.model import DebertaForSequenceClassification


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run faster on one thread, especially on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def nli_model(tmp_path_factory):
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("zs")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrs") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    lines = [" ".join(rng.sample(words, 8)) for _ in range(400)]
    lines += ["This example is about sports, politics, cooking and music.", "Der Hund spielt im Garten."] * 20
    (root / "t.txt").write_text("\n".join(lines))
    tok = DebertaTokenizer.from_pretrained(train_tokenizer(root / "t.txt", root / "tok", vocab_size=300,
                                                           num_threads=1))
    torch.manual_seed(0)
    model = DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=len(tok), num_labels=3,
                                                    id2label=dict(enumerate(LABELS))))
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)
    model.eval()
    folder = root / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok, folder


TEXTS = ["The team won the match yesterday.", "Der Hund spielt im Garten.", "Add salt and stir the soup."]
LABEL_SET = ["sports", "politics", "cooking", "music"]


def pair_logits(model, tok, texts, labels, template="This example is {}."):
    examples = [NLIExample(t, template.format(label), None) for t in texts for label in labels]
    return predict_logits(model, tok, examples).view(len(texts), len(labels), 3)


def test_single_label_is_a_softmax_over_entailment_logits(nli_model):
    model, tok, _ = nli_model
    clf = ZeroShotClassifier(model, tok)
    scores = clf.scores(TEXTS, LABEL_SET)
    assert scores.shape == (3, 4)
    torch.testing.assert_close(scores.sum(-1), torch.ones(3))
    expected = pair_logits(model, tok, TEXTS, LABEL_SET)[..., 0].softmax(-1)  # entailment = output 0
    torch.testing.assert_close(scores, expected)


def test_multi_label_is_entailment_vs_contradiction_per_label(nli_model):
    model, tok, _ = nli_model
    scores = ZeroShotClassifier(model, tok).scores(TEXTS, LABEL_SET, multi_label=True)
    logits = pair_logits(model, tok, TEXTS, LABEL_SET)
    expected = logits[..., [2, 0]].softmax(-1)[..., 1]  # contradiction = 2, entailment = 0
    torch.testing.assert_close(scores, expected)
    assert ((scores > 0) & (scores < 1)).all()
    assert not torch.allclose(scores.sum(-1), torch.ones(3))  # independent, not normalised across labels


def test_pipeline_style_output_sorted_best_first(nli_model):
    model, tok, _ = nli_model
    out = zero_shot_classify(model, tok, TEXTS[0], LABEL_SET, hypothesis_template="Das Thema ist {}.")
    assert out["sequence"] == TEXTS[0] and sorted(out["labels"]) == sorted(LABEL_SET)
    assert out["scores"] == sorted(out["scores"], reverse=True) and sum(out["scores"]) == pytest.approx(1)
    raw = ZeroShotClassifier(model, tok).scores([TEXTS[0]], LABEL_SET, "Das Thema ist {}.")[0].tolist()
    assert out["labels"][0] == LABEL_SET[max(range(4), key=raw.__getitem__)]
    batch = ZeroShotClassifier(model, tok)(TEXTS, "sports, cooking")
    assert [len(r["labels"]) for r in batch] == [2, 2, 2]
    one = ZeroShotClassifier(model, tok)(TEXTS[0], ["sports"])  # one label: entailment vs contradiction
    assert 0 < one["scores"][0] < 1


def test_label_order_is_read_from_the_config(nli_model):
    """A head that lists contradiction first must give the same scores once its rows are permuted alike."""
    model, tok, folder = nli_model
    perm = [2, 1, 0]
    other = DebertaForSequenceClassification.from_pretrained(
        folder, id2label={i: LABELS[p] for i, p in enumerate(perm)},
        label2id={LABELS[p]: i for i, p in enumerate(perm)}).eval()
    with torch.no_grad():
        other.classifier.weight.copy_(model.classifier.weight[perm])
        other.classifier.bias.copy_(model.classifier.bias[perm])
    for multi in (False, True):
        torch.testing.assert_close(ZeroShotClassifier(other, tok).scores(TEXTS, LABEL_SET, multi_label=multi),
                                   ZeroShotClassifier(model, tok).scores(TEXTS, LABEL_SET, multi_label=multi))
    assert [p.label for p in classify_pairs(other, tok, [(TEXTS[0], "x"), (TEXTS[1], "y")])] == [
        p.label for p in classify_pairs(model, tok, [(TEXTS[0], "x"), (TEXTS[1], "y")])]


def test_classify_pairs(nli_model):
    model, tok, _ = nli_model
    preds = classify_pairs(model, tok, [(TEXTS[0], "A game was played."), (TEXTS[2], "Nothing happened.")])
    for p in preds:
        assert set(p.probabilities) == set(LABELS) and sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert p.label == max(p.probabilities, key=p.probabilities.get)


def test_bad_arguments(nli_model):
    model, tok, _ = nli_model
    clf = ZeroShotClassifier(model, tok)
    with pytest.raises(ValueError, match="must contain"):
        clf(TEXTS[0], LABEL_SET, hypothesis_template="no slot")
    with pytest.raises(ValueError, match="duplicates"):
        clf(TEXTS[0], ["a", "a"])
    with pytest.raises(ValueError, match="non-empty"):
        clf(TEXTS[0], [])
    binary = DebertaForSequenceClassification(model.config.replace(num_labels=2, id2label={0: "neg", 1: "pos"}))
    with pytest.raises(ValueError, match="'entailment' label"):
        ZeroShotClassifier(binary, tok)


def test_from_pretrained_matches_in_memory_model(nli_model):
    model, tok, folder = nli_model
    loaded = ZeroShotClassifier.from_pretrained(folder, device="cpu")
    torch.testing.assert_close(loaded.scores(TEXTS, LABEL_SET), ZeroShotClassifier(model, tok).scores(TEXTS, LABEL_SET))


def test_same_scores_as_the_transformers_pipeline(nli_model):
    """The saved folder run through transformers' zero-shot pipeline gives the same labels and scores."""
    transformers = pytest.importorskip("transformers")
    model, tok, folder = nli_model
    pipe = transformers.pipeline("zero-shot-classification", model=str(folder), device="cpu")
    texts, labels = [TEXTS[0], TEXTS[2]], ["sports", "politics", "cooking"]
    for multi in (False, True):
        ref = pipe(texts, candidate_labels=labels, multi_label=multi)
        ours = ZeroShotClassifier(model, tok)(texts, labels, multi_label=multi)
        for r, o in zip(ref, ours):
            assert o["labels"] == r["labels"]
            assert o["scores"] == pytest.approx(r["scores"], abs=1e-5)
