"""Minimal-pair scoring: PLL against transformers, discriminator scores, the tie rule, files and the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from mdeberta.cli import main
from mdeberta.minimal_pairs import (
    MinimalPair,
    MinimalPairsError,
    evaluate_minimal_pairs,
    read_minimal_pairs,
    score_pairs,
    sentence_scores,
    summarize,
)
from nli_helpers import SHARED

SENTENCES = ["the cat sat on the mat.", "the cats sits on a mat.", "a dog and a cat.", "there is a bird.",
             "the the the.", "tree."]
BLIMP = SHARED / "data" / "blimp" / "blimp.jsonl.gz"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer
    from nli_helpers import synthetic_pairs

    root = tmp_path_factory.mktemp("mp_tok")
    text = root / "text.txt"
    text.write_text("\n".join(" ".join(r[:2]) for r in synthetic_pairs(300)) + "\n" + "\n".join(SENTENCES) + "\n")
    return DebertaTokenizer.from_pretrained(train_tokenizer(text, root / "tok", vocab_size=60, num_threads=1))


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_pll_equals_a_direct_computation_with_transformers(tokenizer, tmp_path):
    """Salazar et al.'s PLL computed by hand with transformers' DebertaV2ForMaskedLM, one masked copy at a time,
    equals ours on the same weights (batched, several lengths in one call)."""
    transformers = pytest.importorskip("transformers")
    from mdeberta import DebertaForMaskedLM

    config = transformers.DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=512, relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"],
        share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0)
    torch.manual_seed(0)
    theirs = _perturbed(transformers.DebertaV2ForMaskedLM(config))
    theirs.save_pretrained(tmp_path)
    ours = DebertaForMaskedLM.from_pretrained(tmp_path).eval()
    expected = []
    with torch.no_grad():
        for text in SENTENCES:
            ids = torch.tensor([tokenizer.encode(text)])
            total = 0.0
            for j in range(1, ids.shape[1] - 1):
                masked = ids.clone()
                masked[0, j] = tokenizer.mask_token_id
                logp = theirs(input_ids=masked).logits[0, j].log_softmax(-1)
                total += float(logp[ids[0, j]])
            expected.append(total)
    for budget in (16384, 40):  # one batch per length, and batches cut by the token budget
        got = sentence_scores(ours, tokenizer, SENTENCES, batch_tokens=budget)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_discriminator_score_is_the_sum_of_log_p_original(tokenizer):
    from mdeberta import DebertaForReplacedTokenDetection, preset

    torch.manual_seed(0)
    model = _perturbed(DebertaForReplacedTokenDetection(preset("deberta-v3-micro", vocab_size=len(tokenizer))))
    got = sentence_scores(model, tokenizer, SENTENCES + SENTENCES[:2])  # duplicates are scored once, kept in order
    with torch.no_grad():
        for text, score in zip(SENTENCES + SENTENCES[:2], got):
            logits = model(input_ids=torch.tensor([tokenizer.encode(text)])).logits[0, 1:-1]
            assert score == pytest.approx(float(torch.log1p(-torch.sigmoid(logits)).sum()), rel=1e-5)


def test_a_tie_is_wrong_and_the_summary_averages_paradigms():
    pairs = [MinimalPair("a b", "b a", "p1", "agreement"), MinimalPair("c d", "d c", "p1", "agreement"),
             MinimalPair("e f", "f e", "p2", "binding")]
    constant = score_pairs(pairs, lambda texts: [0.0] * len(texts))
    summary = summarize(constant)
    assert summary["overall"] == 0.0 and summary["ties"] == 3
    by_length = score_pairs(pairs, lambda texts: [float(texts.index(t) % 2 == 0) for t in texts])  # good wins
    assert summarize(by_length)["overall"] == 100.0
    mixed = [dict(r, correct=c) for r, c in zip(by_length, (True, False, True))]
    s = summarize(mixed)
    assert s["per_paradigm"] == {"p1": 50.0, "p2": 100.0} and s["overall"] == 75.0
    assert s["per_phenomenon"] == {"agreement": 50.0, "binding": 100.0}


def test_model_without_mlm_or_rtd_head_names_its_head(tokenizer):
    from mdeberta import DebertaForSequenceClassification, preset

    model = DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=len(tokenizer)))
    with pytest.raises(MinimalPairsError, match="DebertaForSequenceClassification has no masked-LM or replaced"):
        evaluate_minimal_pairs(model, tokenizer, [MinimalPair("a", "b")])


def _write(path: Path, lines: list[bytes]) -> Path:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def test_readers_and_their_errors(tmp_path):
    rec = lambda g, b, uid="p": json.dumps({"sentence_good": g, "sentence_bad": b, "UID": uid,  # noqa: E731
                                            "linguistics_term": "t", "field": "syntax"}).encode()
    good = _write(tmp_path / "pairs.jsonl.gz", [rec("a cat.", "a cats."), rec("b.", "c.", "q"), rec("d.", "e.")])
    pairs = read_minimal_pairs(good)
    assert [p.paradigm for p in pairs] == ["p", "q", "p"] and pairs[0].where.endswith("pairs.jsonl.gz:1")
    assert [p.good for p in read_minimal_pairs(good, max_per_paradigm=1)] == ["a cat.", "b."]
    tsv = _write(tmp_path / "pairs.tsv", [b"good\tbad", b"the cat is.\tthe cat are.", b"x y.\ty x.\tword_order"])
    assert [(p.good, p.paradigm) for p in read_minimal_pairs(tsv)] == [("the cat is.", "all"), ("x y.", "word_order")]
    cases = {
        "missing": ([rec("a.", "b."), json.dumps({"sentence_good": "a."}).encode()],
                    r"missing.jsonl:2: missing field\(s\) \['sentence_bad'\]"),
        "empty": ([rec("a.", "  ")], r"empty.jsonl:1: 'sentence_bad' is empty"),
        "number": ([json.dumps({"sentence_good": 5, "sentence_bad": "b"}).encode()], r"number.jsonl:1: 'sentence_good'"
                   " must be a string"),
        "utf8": ([rec("a.", "b."), b'{"sentence_good": "caf\xe9", "sentence_bad": "x"}'], r"utf8.jsonl:2: not UTF-8"),
        "json": ([b"{not json"], r"json.jsonl:1: not a JSON object"),
    }
    for name, (lines, message) in cases.items():
        with pytest.raises(MinimalPairsError, match=message):
            read_minimal_pairs(_write(tmp_path / f"{name}.jsonl", lines))
    with pytest.raises(MinimalPairsError, match=r"bad.tsv:1: expected 'good<TAB>bad'"):
        read_minimal_pairs(_write(tmp_path / "bad.tsv", [b"only one column"]))
    with pytest.raises(MinimalPairsError, match="no such file"):
        read_minimal_pairs(tmp_path / "nothing.jsonl")


def test_cli_writes_the_report_for_a_model_and_an_ngram(tokenizer, tmp_path, capsys):
    from mdeberta import DebertaForMaskedLM, DebertaForSequenceClassification, preset

    pairs = _write(tmp_path / "pairs.jsonl", [json.dumps({
        "sentence_good": g, "sentence_bad": b, "UID": uid, "linguistics_term": term}).encode()
        for g, b, uid, term in [("the cat sat.", "the cat sit.", "agr", "agreement"),
                                ("there is a bird.", "there is a birds.", "agr", "agreement"),
                                ("a dog and a cat.", "a dog and cat a.", "order", "word_order")]])
    torch.manual_seed(0)
    folder = tmp_path / "mlm"
    DebertaForMaskedLM(preset("deberta-v3-micro", vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["evaluate", "--task", "minimal-pairs", "--model", str(folder), "--eval-file", str(pairs),
                 "--output-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "minimal_pairs.json").read_text())
    assert report["method"] == "pll" and report["num_pairs"] == 3
    assert set(report["per_paradigm"]) == {"agr", "order"}
    scores = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 3 and all(r["correct"] == (r["score_good"] > r["score_bad"]) for r in scores)
    assert (tmp_path / "out" / "minimal_pairs.png").stat().st_size > 0
    assert "| model | overall |" in (tmp_path / "out" / "minimal_pairs.md").read_text()
    # The n-gram baseline through the same command.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat.\nthere is a bird.\na dog and a cat.\nthe dog sat.\n")
    assert main(["ngram", "train", "--input", str(corpus), "--order", "3", "--output", str(tmp_path / "lm.npz")]) == 0
    assert main(["evaluate", "--task", "minimal-pairs", "--model", str(tmp_path / "lm.npz"), "--eval-file",
                 str(pairs), "--output-dir", str(tmp_path / "ngram")]) == 0
    ngram = json.loads((tmp_path / "ngram" / "minimal_pairs.json").read_text())
    assert ngram["method"] == "3-gram" and ngram["overall"] == 100.0  # every good sentence is in its corpus
    # A classifier cannot be scored: exit 2, the message names its head.
    clf = tmp_path / "clf"
    DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=len(tokenizer))).save_pretrained(clf)
    tokenizer.save_pretrained(clf)
    capsys.readouterr()
    assert main(["evaluate", "--task", "minimal-pairs", "--model", str(clf), "--eval-file", str(pairs)]) == 2


@pytest.mark.skipif(not BLIMP.is_file(), reason=f"BLiMP not found at {BLIMP} (../shared absent)")
def test_reads_all_of_blimp():
    pairs = read_minimal_pairs(BLIMP)
    assert len(pairs) == 67000 and len({p.paradigm for p in pairs}) == 67
    assert len(read_minimal_pairs(BLIMP, max_per_paradigm=20)) == 1340


def test_published_blimp_rows_only_beside_blimp_paradigms(tmp_path):
    """BLiMP's published rows stand beside BLiMP's paradigms, never beside other pairs (a word-order TSV)."""
    from mdeberta.minimal_pairs import write_report

    reference = tmp_path / "blimp_published.json"
    reference.write_text(json.dumps({"per_paradigm": {"anaphor_gender_agreement": {
        "ngram": 0.5, "lstm": 0.9, "txl": 0.9, "gpt2": 0.99, "linguistics_term": "anaphor_agreement"}},
        "per_phenomenon": {"anaphor_agreement": {"ngram": 0.5, "lstm": 0.9, "txl": 0.9, "gpt2": 0.99}},
        "human_agreement_per_paradigm": {"anaphor_gender_agreement": 0.96}}))
    for paradigm, expected in (("anaphor_gender_agreement", True), ("de", False)):
        records = [{"paradigm": paradigm, "phenomenon": "", "score_good": -1.0, "score_bad": -2.0, "correct": True}]
        paths = write_report({"method": "rtd", **summarize(records)}, records, tmp_path / paradigm, "m", reference)
        report = json.loads(paths["json"].read_text())
        assert bool(report["published"]) == expected
        assert ("GPT-2" in paths["markdown"].read_text()) == expected
