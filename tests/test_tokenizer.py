"""Tests for mdeberta.tokenizer: ids must be exactly spm.encode's, in DeBERTa-V3's layout.

Most tests run on a small unigram spm trained once per module with `train_tokenizer` (on shared corpus
text when ../shared is present, else on generated multilingual text), so they need no downloads.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import sys
import types
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from mdeberta.tokenizer import (
    DebertaTokenizer,
    add_tokenizer_cli,
    split_on_punctuation,
    train_tokenizer,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
XNLI_LANGS = "ar bg de el en es fr hi ru sw th tr ur vi zh".split()
TRAIN_LANGS = "zh th ar hi en ru el de fr es".split()
KERAS_VOCAB = DATA / "spm" / "keras_hub_deberta_v3_test_vocab.spm"
EN_TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps near the warm fire."


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (the ../shared folder beside the repo is absent)")
    return path


def xnli_pairs(lang: str, split: str = "dev", n: int = 50) -> list[tuple[str, str]]:
    path = need_shared(DATA / "xnli" / f"xnli.{split}.{lang}.tsv.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)  # header
        return [tuple(line.rstrip("\r\n").split("\t")[:2]) for line in itertools.islice(f, n)]


def generated_lines(n: int, seed: int = 0, multilingual: bool = True) -> list[str]:
    """Multilingual filler text for training when ../shared is absent: English words plus pseudo-words
    built from Latin, Cyrillic, Greek, CJK, Thai, Arabic and Devanagari letters."""
    rng = random.Random(seed)
    english = (
        "the quick brown fox jumps over lazy dog cat sleeps near warm fire paris is capital of france".split()
    )
    alphabets = ["abcdefghijklmnoprstuvwxyz", "абвгдежзиклмнопрстуф", "αβγδεζηθικλμνξοπρστ",
                 "".join(map(chr, range(0x4E00, 0x4E00 + 150))), "กขคงจฉชซญดตถทนบปผพฟมยรลวสหอะาิีุู",
                 "ابتثجحخدذرزسشصضطظعغفقكلمنهوي", "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह"]  # fmt: skip

    def word() -> str:
        if rng.random() < 0.4:
            return rng.choice(english).capitalize() if rng.random() < 0.2 else rng.choice(english)
        alphabet = rng.choice(alphabets) if multilingual else alphabets[0]
        return "".join(rng.choices(alphabet, k=rng.randint(2, 6)))

    return [" ".join(word() for _ in range(rng.randint(4, 14))) + rng.choice(".!?,") for _ in range(n)]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train once: ~600 lines of each of 10 corpus languages (incl. zh, th, ar, hi) in a .gz + a .txt."""
    src = tmp_path_factory.mktemp("text")
    corpus = DATA / "corpus"
    if corpus.is_dir():
        lines = []
        for lang in TRAIN_LANGS:
            with gzip.open(corpus / f"{lang}.txt.gz", "rt", encoding="utf-8") as f:
                lines += list(itertools.islice(f, 600))
        vocab_size = 3000
    else:
        lines, vocab_size = [line + "\n" for line in generated_lines(3000)], 1000
    with gzip.open(src / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.writelines(lines[: len(lines) // 2])
    (src / "b.txt").write_text("".join(lines[len(lines) // 2 :]) + EN_TEXT + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("tok")
    folder = train_tokenizer(
        [src / "a.txt.gz", src / "b.txt"], out, vocab_size, input_sentence_size=20000, num_threads=2
    )
    return Path(folder)


@pytest.fixture(scope="module")
def tok(trained_dir: Path) -> DebertaTokenizer:
    return DebertaTokenizer.from_pretrained(trained_dir)


@pytest.fixture(scope="module")
def sp(trained_dir: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(trained_dir / "spm.model"))


def wrap(sp: spm.SentencePieceProcessor, a: str, b: str | None = None) -> list[int]:
    ids = [1, *sp.encode(a), 2]
    return ids if b is None else [*ids, *sp.encode(b), 2]


# ------------------------------------------------------------------ layout and spm equivalence
def test_trained_layout(trained_dir: Path, tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    assert [sp.id_to_piece(i) for i in range(4)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    assert sp.piece_to_id("[MASK]") == sp.unk_id()  # not in the spm, as in the released models
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == sp.get_piece_size() == tok.vocab_size
    assert len(tok) == tok.vocab_size + 1
    assert tok.convert_ids_to_tokens(tok.mask_token_id) == "[MASK]"
    config = json.loads((trained_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "DebertaV2Tokenizer"
    assert (trained_dir / "special_tokens_map.json").is_file()


def test_keras_hub_vocab_mask_inside_spm() -> None:
    """A vocab that already has [MASK] (id 4) uses it; nothing is appended."""
    t = DebertaTokenizer(need_shared(KERAS_VOCAB))
    assert len(t) == t.vocab_size == 12 and t.mask_token_id == 4
    assert t("the quick brown fox [MASK] round earth")["input_ids"] == [1, 5, 10, 6, 8, 4, 11, 7, 2]
    assert t.tokenize("the fox[MASK]is round") == ["▁the", "▁fox", "[MASK]", "▁is", "▁round"]


@pytest.mark.parametrize("lang", XNLI_LANGS)
def test_xnli_ids_equal_spm(lang: str, tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    for premise, hypothesis in xnli_pairs(lang):
        assert tok(premise)["input_ids"] == wrap(sp, premise)
        assert tok.tokenize(hypothesis) == sp.encode(hypothesis, out_type=str)
        enc = tok(premise, hypothesis)
        assert enc["input_ids"] == wrap(sp, premise, hypothesis)
        n_first = len(sp.encode(premise)) + 2
        assert enc["token_type_ids"] == [0] * n_first + [1] * (len(enc["input_ids"]) - n_first)
        assert enc["attention_mask"] == [1] * len(enc["input_ids"])


def test_mask_inside_text(tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    ids = tok.encode("Paris is the [MASK] of France.")
    assert ids == [1, *sp.encode("Paris is the"), tok.mask_token_id, *sp.encode("of France."), 2]
    # Whitespace around special tokens is stripped, so spacing does not matter.
    assert tok.encode("Paris is the[MASK]of France.") == ids
    assert tok.encode("[MASK][MASK]") == [1, tok.mask_token_id, tok.mask_token_id, 2]
    assert tok.tokenize("a [SEP] b") == [
        *sp.encode("a", out_type=str),
        "[SEP]",
        *sp.encode("b", out_type=str),
    ]


def test_configurable_special_tokens() -> None:
    path = need_shared(DATA / "spm" / "sentencepiece_test_model.model")
    t = DebertaTokenizer(
        path,
        cls_token="<s>",
        sep_token="</s>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert (t.cls_token_id, t.sep_token_id, t.unk_token_id) == (1, 2, 0)
    assert (t.pad_token_id, t.mask_token_id, len(t)) == (1000, 1001, 1002)  # appended in key order
    assert t.encode("Hello <mask>") == [1, *sp.encode("Hello"), 1001, 2]


def test_do_lower_case(trained_dir: Path, tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    lower = DebertaTokenizer(trained_dir / "spm.model", do_lower_case=True)
    text = "The QUICK Brown FOX"
    assert lower.encode(text + " [MASK]") == [1, *sp.encode(text.lower()), lower.mask_token_id, 2]
    assert tok.encode(text) == wrap(sp, text) != lower.encode(text)


def test_split_by_punct(trained_dir: Path, sp: spm.SentencePieceProcessor) -> None:
    assert split_on_punctuation("Hi, you (a-b)!") == ["Hi", ",", " you ", "(", "a", "-", "b", ")", "!"]
    assert split_on_punctuation("你好，世界。") == ["你好", "，", "世界", "。"]  # Unicode P* categories
    t = DebertaTokenizer(trained_dir / "spm.model", split_by_punct=True)
    text = "Hello, world! It's 5:30 [MASK] (really)."
    expected = [i for chunk in split_on_punctuation("Hello, world! It's 5:30") for i in sp.encode(chunk)]
    expected += [t.mask_token_id] + [
        i for chunk in split_on_punctuation("(really).") for i in sp.encode(chunk)
    ]
    assert t.encode(text) == [1, *expected, 2]
    assert t.encode(text) != DebertaTokenizer(trained_dir / "spm.model").encode(text)


# ------------------------------------------------------------------ padding, truncation, tensors, batches
def test_padding_batched(tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    texts = ["short", EN_TEXT]
    for padding in (True, "longest"):
        enc = tok(texts, padding=padding)
        n = len(wrap(sp, "short"))
        assert enc.input_ids[0] == wrap(sp, "short") + [0] * (len(enc.input_ids[1]) - n)
        assert enc.input_ids[1] == wrap(sp, EN_TEXT)
        assert enc.attention_mask[0] == [1] * n + [0] * (len(enc.input_ids[1]) - n)
        assert enc.token_type_ids[0] == [0] * len(enc.input_ids[1])
    enc = tok("short", padding="max_length", max_length=10)
    assert enc["input_ids"] == wrap(sp, "short") + [0] * (10 - n) and sum(enc["attention_mask"]) == n
    assert tok(texts)["input_ids"] == [wrap(sp, t) for t in texts]  # no padding by default
    pairs = tok(texts, ["a b", "c"], padding=True, return_token_type_ids=False, return_attention_mask=False)
    assert set(pairs) == {"input_ids"} and pairs.input_ids[1] == wrap(sp, EN_TEXT, "c")


def reference_longest_first(la: int, lb: int, n: int) -> tuple[int, int]:
    """transformers' closed form for longest_first (ties shorten the second sequence)."""
    first = min(abs(la - lb), n)
    second = n - first
    if la > lb:
        return la - first - second // 2, lb - (second - second // 2)
    return la - second // 2, lb - (first + second - second // 2)


def test_truncation(tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    long_text, short_text = EN_TEXT, "the lazy dog sleeps"
    a, b = sp.encode(long_text), sp.encode(short_text)
    for max_length in (len(a) + len(b) + 3, len(a) + 5, len(b) + 6, 2 * len(b) + 2, 5, 3):
        for x, y in ((long_text, short_text), (short_text, long_text), (short_text, short_text)):
            ids = tok(x, y, truncation=True, max_length=max_length)["input_ids"]
            lx, ly = len(sp.encode(x)), len(sp.encode(y))
            la, lb = reference_longest_first(lx, ly, max(0, lx + ly + 3 - max_length))
            assert ids == [1, *sp.encode(x)[:la], 2, *sp.encode(y)[:lb], 2]
            assert len(ids) <= max_length
    assert tok(long_text, truncation=True, max_length=6)["input_ids"] == [1, *a[:4], 2]
    assert tok(long_text, short_text, truncation="only_first", max_length=len(b) + 5)["input_ids"] == [
        1,
        *a[:2],
        2,
        *b,
        2,
    ]
    assert tok(short_text, long_text, truncation="only_second", max_length=len(b) + 5)["input_ids"] == [
        1,
        *b,
        2,
        *a[:2],
        2,
    ]
    assert tok(short_text, truncation=True, max_length=100)["input_ids"] == wrap(sp, short_text)
    assert tok(long_text, short_text, truncation=True, max_length=9, add_special_tokens=False)[
        "input_ids"
    ] == (a[:5] + b[:4])
    # Too short: the chosen sequence cannot give up enough tokens, or not even the special tokens fit.
    with pytest.raises(ValueError, match="first sequence has"):
        tok(short_text, long_text, truncation="only_first", max_length=len(a) + 3)
    with pytest.raises(ValueError, match="second sequence has"):
        tok(long_text, short_text, truncation="only_second", max_length=len(a) + 3)
    with pytest.raises(ValueError, match="needs a text_pair"):
        tok(long_text, truncation="only_second", max_length=4)
    with pytest.raises(ValueError, match="max_length=2 is shorter than the 3 special tokens"):
        tok(long_text, short_text, truncation=True, max_length=2)
    with pytest.raises(ValueError, match="need max_length"):
        tok(long_text, truncation=True)


def test_model_max_length_default(trained_dir: Path, sp: spm.SentencePieceProcessor) -> None:
    t = DebertaTokenizer(trained_dir / "spm.model", model_max_length=8)
    assert t(EN_TEXT, truncation=True)["input_ids"] == [1, *sp.encode(EN_TEXT)[:6], 2]
    assert len(t("a", padding="max_length")["input_ids"]) == 8


def test_return_tensors_pt(tok: DebertaTokenizer) -> None:
    enc = tok(["short", EN_TEXT], ["x", "y z"], padding=True, return_tensors="pt")
    assert set(enc) == {"input_ids", "token_type_ids", "attention_mask"}
    for v in enc.values():
        assert v.dtype == torch.long and v.shape == enc.input_ids.shape and v.shape[0] == 2
    single = tok("short", return_tensors="pt")
    assert single["input_ids"].shape == (1, len(tok.encode("short")))
    assert (
        tok(["the fox", "the fox"], return_tensors="pt")["input_ids"].shape[0] == 2
    )  # equal lengths need no padding
    with pytest.raises(ValueError, match="padding=True"):
        tok(["short", EN_TEXT], return_tensors="pt")


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("lang", ["en", "zh", "th", "ar", "hi", "ru"])
def test_decode_round_trip(lang: str, tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    for premise, _ in xnli_pairs(lang, n=30):
        ids = sp.encode(premise)
        known = [i for i in ids if i != sp.unk_id()]  # [UNK] is a special token, so it is skipped
        assert tok.decode(tok.encode(premise), skip_special_tokens=True) == sp.decode(known)
        if known == ids:  # with [UNK]s inside, special-token spacing rules apply (see the next test)
            assert tok.decode(tok.encode(premise)) == f"[CLS] {sp.decode(ids)}[SEP]"
    batch = tok([p for p, _ in xnli_pairs(lang, n=4)], padding=True, return_tensors="pt")
    assert tok.batch_decode(batch.input_ids, skip_special_tokens=True) == [
        sp.decode([i for i in sp.encode(p) if i != sp.unk_id()]) for p, _ in xnli_pairs(lang, n=4)
    ]


def test_decode_special_tokens_and_convert(tok: DebertaTokenizer, sp: spm.SentencePieceProcessor) -> None:
    ids = tok.encode("Paris is the [MASK] of France", "yes")
    assert tok.decode(ids) == "[CLS] Paris is the[MASK] of France[SEP] yes[SEP]"  # slow-tokenizer spacing
    assert tok.decode(torch.tensor(ids), skip_special_tokens=True) == "Paris is the of France yes"
    assert tok.decode(tok.encode("[MASK][MASK] paris")) == "[CLS][MASK][MASK] paris[SEP]"
    assert tok.convert_ids_to_tokens(ids[:2]) == ["[CLS]", sp.id_to_piece(ids[1])]
    assert tok.convert_ids_to_tokens(torch.tensor(tok.mask_token_id)) == "[MASK]"
    assert tok.convert_ids_to_tokens(list(torch.tensor([1, 2]))) == ["[CLS]", "[SEP]"]  # 0-d tensors
    assert tok.convert_tokens_to_ids(["[MASK]", "[PAD]", sp.id_to_piece(10)]) == [tok.mask_token_id, 0, 10]
    assert tok.convert_tokens_to_ids("no-such-piece-xyz") == tok.unk_token_id
    assert tok.build_inputs_with_special_tokens([7, 8], [9]) == [1, 7, 8, 2, 9, 2]
    assert tok.get_vocab()["[MASK]"] == tok.mask_token_id and len(tok.get_vocab()) == len(tok)


# ------------------------------------------------------------------ save / load
def test_save_load_round_trip(trained_dir: Path, tmp_path: Path) -> None:
    t = DebertaTokenizer(
        trained_dir / "spm.model", do_lower_case=True, split_by_punct=True, model_max_length=64
    )
    folder = Path(t.save_pretrained(tmp_path / "saved"))
    assert {p.name for p in folder.iterdir()} == {
        "spm.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    loaded = DebertaTokenizer.from_pretrained(folder)
    assert (loaded.do_lower_case, loaded.split_by_punct, loaded.model_max_length) == (True, True, 64)
    assert loaded.special_tokens == t.special_tokens and len(loaded) == len(t)
    texts = [EN_TEXT, "Hello, WORLD [MASK]!", "北京是中国的首都。"]
    assert loaded(texts, texts[::-1])["input_ids"] == t(texts, texts[::-1])["input_ids"]
    # transformers-style configs: AddedToken dicts, huge "no limit" model_max_length, overrides win.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(mask_token={"content": "[MASK]", "lstrip": True}, model_max_length=int(1e30))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = DebertaTokenizer.from_pretrained(folder, do_lower_case=False)
    assert loaded.model_max_length is None and not loaded.do_lower_case and loaded.mask_token_id == len(t) - 1


def test_from_pretrained_hub_id_uses_resolve_model_dir(trained_dir: Path, monkeypatch) -> None:
    calls = []

    def resolve_model_dir(name_or_path: str, allow_patterns: list[str] | None = None) -> str:
        calls.append((name_or_path, allow_patterns))
        return str(trained_dir)

    monkeypatch.setitem(
        sys.modules, "mdeberta.checkpoint", types.SimpleNamespace(resolve_model_dir=resolve_model_dir)
    )
    t = DebertaTokenizer.from_pretrained("microsoft/mdeberta-v3-base")
    assert calls and calls[0][0] == "microsoft/mdeberta-v3-base" and "spm.model" in calls[0][1]
    assert t.mask_token_id == t.vocab_size


def test_transformers_loads_saved_folder(trained_dir: Path, tok: DebertaTokenizer) -> None:
    """transformers 5's DebertaV2Tokenizer (a `tokenizers` Unigram port) agrees on plain ASCII English.

    It normalises with NFC instead of the spm's nmt_nfkc charsmap, so it differs elsewhere, e.g. on
    "ＡＢＣ １２３" (full-width forms: [UNK]s there, ABC 123 here) or "know…" ([UNK] vs "...").
    """
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(trained_dir))
    assert (hf.mask_token_id, hf.pad_token_id, hf.cls_token_id, hf.sep_token_id) == (
        tok.mask_token_id,
        0,
        1,
        2,
    )
    texts = [EN_TEXT, "Paris is the [MASK] of France.", "I don't know, maybe 42 dogs?"]
    if (DATA / "xnli").is_dir():
        texts += [p for p, _ in xnli_pairs("en", n=100) if p.isascii()]
    for text in texts:
        assert hf(text)["input_ids"] == tok(text)["input_ids"], text
    assert hf(texts[0], texts[1])["token_type_ids"] == tok(texts[0], texts[1])["token_type_ids"]
    for text in ("[MASK][MASK] paris", "Paris is the [MASK] of France", "a [UNK] b"):
        ids = tok.encode(text, "yes")
        assert hf.decode(ids) == tok.decode(ids)
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------ errors
def test_bad_inputs(tok: DebertaTokenizer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.model"):
        DebertaTokenizer(tmp_path / "nope.model")
    (tmp_path / "junk.model").write_bytes(b"definitely not a protobuf")
    with pytest.raises(ValueError, match="junk.model is not a valid SentencePiece model"):
        DebertaTokenizer(tmp_path / "junk.model")
    with pytest.raises(FileNotFoundError, match="spm.model"):
        DebertaTokenizer.from_pretrained(tmp_path)  # a folder without spm.model
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        DebertaTokenizer.from_pretrained(str(tmp_path / "missing-folder"))
    size = len(tok)
    with pytest.raises(ValueError, match=rf"token id {size} is out of range .* size {size}"):
        tok.decode([1, size])
    with pytest.raises(ValueError, match=rf"token id -1 is out of range .* size {size}"):
        tok.convert_ids_to_tokens([-1])
    with pytest.raises(TypeError, match="got int"):
        tok(123)
    with pytest.raises(TypeError, match="got NoneType"):
        tok(["ok", None])
    with pytest.raises(TypeError, match="got bytes"):
        tok.tokenize(b"bytes")
    with pytest.raises(TypeError, match="got list"):
        tok.encode(["a"])
    with pytest.raises(ValueError, match="text_pair must match text"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="unknown padding strategy"):
        tok("a", padding="sideways")
    with pytest.raises(ValueError, match="unknown truncation strategy"):
        tok("a", truncation="middle", max_length=4)
    with pytest.raises(ValueError, match="return_tensors must be None or 'pt'"):
        tok("a", return_tensors="np")
    with pytest.raises(ValueError, match="batch_decode"):
        tok.decode([[1, 2]])
    with pytest.raises(TypeError, match="token ids must be ints, got float"):
        tok.decode([1, 2.5])


def test_train_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_tokenizer([tmp_path / "missing.txt"], tmp_path / "out", 100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.txt / \*.txt.gz files in folder"):
        train_tokenizer(tmp_path / "empty", tmp_path / "out", 100)
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(ValueError, match="no non-empty lines of text in .*blank.txt"):
        train_tokenizer([tmp_path / "blank.txt"], tmp_path / "out", 100)
    (tmp_path / "tiny.txt").write_text("hello world\n" * 20)
    with pytest.raises(ValueError, match="vocab_size=5000 is too large for the text in .*tiny.txt"):
        train_tokenizer([tmp_path / "tiny.txt"], tmp_path / "out", 5000, num_threads=2)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ CLI
def test_cli_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="mdeberta")
    add_tokenizer_cli(parser.add_subparsers(dest="command"))
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "text.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(generated_lines(800, seed=1, multilingual=False)) + "\n")
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--input", str(data), "--output", str(out), "--vocab-size", "300"]
    args = parser.parse_args([*argv, "--lowercase", "--input-sentence-size", "500", "--seed", "3"])
    assert args.func(args) == 0
    t = DebertaTokenizer.from_pretrained(out)
    assert t.do_lower_case and t.vocab_size == 300 and t.mask_token_id == 300
    assert t.encode("THE FOX") == t.encode("the fox")
    assert "[MASK]=300" in capsys.readouterr().out
    from mdeberta.cli import main

    assert main(["tokenizer", "train", "--input", str(tmp_path / "nope.txt"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: training text not found" in err and "nope.txt" in err and "Traceback" not in err


# ------------------------------------------------------------------ offsets, words, windows
HARD_CASES = [
    "  Ｈｅｌｌｏ，  ｗｏｒｌｄ！ full-width  ",  # NFKC: full-width forms, runs of spaces
    "zero\u200bwidth\u200b space and no\u00a0break",  # characters spm drops or folds
    "№ 5 … ² ³ ½ ﬁ ligature",  # compatibility characters that expand or change
    "Café déjà vu — naïve coöperation",  # precomposed accents
    "e\u0301 combining accent, 🙂 emoji 👍🏽 and 中文，标点。",
    "tabs\tand\nnewlines\r\nin text",
    "special [MASK] tokens [SEP] inside [CLS]",
    "",
    "   ",
]


def check_spans(tok: DebertaTokenizer, sp: spm.SentencePieceProcessor, text: str) -> None:
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    assert enc["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]  # ids never change
    # Pieces made from one character (№ -> "N" "o") share its span: compare span by span.
    groups: list[tuple[tuple[int, int], list[str]]] = []
    for token, span in zip(tok.convert_ids_to_tokens(enc["input_ids"]), enc["offset_mapping"]):
        if groups and groups[-1][0] == tuple(span) and span[1] > span[0]:
            groups[-1][1].append(token)
        else:
            groups.append((tuple(span), [token]))
    previous = 0
    for (start, end), tokens in groups:
        assert 0 <= start <= end <= len(text) and start >= previous, (text, tokens, start, end)
        # Between two pieces only whitespace or characters spm drops (zero-width, controls).
        assert sp.normalize(text[previous:start]).strip("\u2581") == "", (text, tokens, text[previous:start])
        surface = text[start:end]
        if "[UNK]" in tokens:  # a character outside the vocabulary: its own text
            assert surface.strip(), (text, tokens)
        elif tokens[0] in tok.special_tokens.values():  # a special token written in the text
            assert surface == tokens[0]
        else:
            pieces = "".join(tokens).replace("\u2581", "")
            assert sp.normalize(surface).replace("\u2581", "") == pieces, (text, tokens, surface)
        previous = end
    assert sp.normalize(text[previous:]).strip("\u2581") == ""  # nothing after the last piece


@pytest.mark.parametrize("text", HARD_CASES)
def test_offsets_cover_exactly_the_text_of_each_piece(tok, sp, text):
    check_spans(tok, sp, text)


def test_offsets_on_xnli_sentences_of_every_language(tok, sp):
    for lang in XNLI_LANGS:
        for premise, hypothesis in xnli_pairs(lang, n=100):
            check_spans(tok, sp, premise)
            check_spans(tok, sp, hypothesis)


def test_offsets_through_lowercasing_and_punctuation_splitting(trained_dir):
    for options in ({"do_lower_case": True}, {"split_by_punct": True}):
        other = DebertaTokenizer.from_pretrained(trained_dir, **options)
        text = "İstanbul ÉCOLE, Straße! Hello-world."
        enc = other(text, return_offsets_mapping=True, add_special_tokens=False)
        assert enc["input_ids"] == other(text, add_special_tokens=False)["input_ids"]
        spans = enc["offset_mapping"]
        assert all(0 <= s <= e <= len(text) for s, e in spans)
        assert [s for s, _ in spans] == sorted(s for s, _ in spans)
        unique = [span for k, span in enumerate(spans) if k == 0 or span != spans[k - 1]]  # İ -> i̇: 2 pieces
        joined = "".join(text[s:e] for s, e in unique)
        assert joined.replace(" ", "") == text.replace(" ", "")  # every character of the text, in order, once


def test_pairs_special_tokens_and_sequence_ids(tok):
    enc = tok("A cat sleeps.", "Ｔｈｅ dog barks.", return_offsets_mapping=True)
    seqs = enc.sequence_ids()
    assert seqs[0] is None and seqs[-1] is None and set(seqs) == {None, 0, 1}
    texts = {0: "A cat sleeps.", 1: "Ｔｈｅ dog barks."}
    for (start, end), seq in zip(enc["offset_mapping"], seqs):
        if seq is None:
            assert (start, end) == (0, 0)
        else:
            assert texts[seq][start:end] or start == end  # a span in its own sequence's text
            assert end <= len(texts[seq])
    assert enc["input_ids"] == tok("A cat sleeps.", "Ｔｈｅ dog barks.")["input_ids"]
    batch = tok(["one", "two words here"], padding=True, return_offsets_mapping=True, return_tensors="pt")
    assert batch["offset_mapping"].shape == (*batch["input_ids"].shape, 2)
    assert batch["offset_mapping"][0][batch["attention_mask"][0] == 0].eq(0).all()


def test_split_into_words_and_word_ids(tok):
    words = ["Angela", "Merkel", "visited", "Ｐａｒｉｓ", "."]
    enc = tok(words, is_split_into_words=True, return_offsets_mapping=True)
    word_ids = enc.word_ids()
    assert word_ids[0] is None and word_ids[-1] is None
    expected = [None] + [k for k, w in enumerate(words) for _ in tok(w, add_special_tokens=False)["input_ids"]] + [
        None]
    assert word_ids == expected
    assert enc["input_ids"][1:-1] == [i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]]
    for k, (start, end) in zip(word_ids, enc["offset_mapping"]):
        if k is not None:
            assert 0 <= start <= end <= len(words[k])  # spans inside each word (a lone "▁": empty)
    batch = tok([["a", "b"], ["c"]], is_split_into_words=True, padding=True)
    pieces = len(tok("c", add_special_tokens=False)["input_ids"])  # 1 with the shared tokenizer, 2 without it
    assert batch.word_ids(1)[:pieces + 2] == [None] + [0] * pieces + [None] and len(batch["input_ids"]) == 2
    with pytest.raises(TypeError, match="list of words"):
        tok([["a", 3]], is_split_into_words=True)


def test_overflowing_windows_with_stride(tok):
    question = "Who wrote it?"
    context = " ".join(f"word{i}" for i in range(120))
    full = tok(question, context, add_special_tokens=False, return_offsets_mapping=True)
    context_ids = full["input_ids"][full.sequence_ids().index(1):]
    enc = tok([question, "Short?"], [context, "tiny context"], truncation="only_second", max_length=48,
              stride=10, return_overflowing_tokens=True, return_offsets_mapping=True)
    mapping = enc["overflow_to_sample_mapping"]
    assert mapping.count(0) > 2 and mapping.count(1) == 1 and mapping == sorted(mapping)
    windows = [i for i, m in enumerate(mapping) if m == 0]
    parts = []
    for i in windows:
        ids, seqs = enc["input_ids"][i], enc.sequence_ids(i)
        assert len(ids) <= 48
        body = [t for t, s in zip(ids, seqs) if s == 1]
        spans = [sp for sp, s in zip(enc["offset_mapping"][i], seqs) if s == 1]
        assert all(context[a:b] for a, b in spans if b > a)  # spans index into the context
        parts.append(body)
    for left, right in zip(parts, parts[1:]):
        assert left[-10:] == right[:10]  # consecutive windows overlap by the stride
    stitched = parts[0] + [t for p in parts[1:] for t in p[10:]]
    assert stitched == context_ids  # and together cover the whole context, in order
    with pytest.raises(ValueError, match="needs truncation"):
        tok(question, context, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="not more than stride"):
        tok(question, context, truncation="only_second", max_length=20, stride=12, return_overflowing_tokens=True)
