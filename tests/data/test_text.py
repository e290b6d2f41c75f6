"""Streaming pretraining data: corpus checks, alpha sampling, packing, masking, sharding and exact resumption."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from mdeberta.data.text import (
    DataError,
    Masker,
    MaskingConfig,
    PackedTextDataset,
    PretrainingLoader,
    ShuffleConfig,
    discover_corpus,
    language_probabilities,
)

ALPHABETS = {"aa": "abcdefgh", "bb": "ijklmnop", "cc": "qrstuvwx"}


def _write(folder: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for lang, n in sizes.items():
        letters = ALPHABETS.get(lang, "abcdefgh")
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 6))) for _ in range(50)]
        text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
                         for _ in range(n)) + "\n"
        if lang == "cc":
            with gzip.open(folder / f"{lang}.txt.gz", "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            (folder / f"{lang}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("corpus"), {"aa": 800, "bb": 200, "cc": 50})


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, corpus):
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer

    folder = train_tokenizer(corpus, tmp_path_factory.mktemp("tok"), vocab_size=100, num_threads=1)
    return DebertaTokenizer.from_pretrained(folder)


def _dataset(corpus, tokenizer, **kw):
    kw = {"max_seq_length": 32, "batch_size": 4, "masking": MaskingConfig(), "alpha": 0.3, "seed": 3} | kw
    return PackedTextDataset(discover_corpus(corpus), tokenizer, **kw)


def test_discover_and_alpha_probabilities(corpus):
    files = discover_corpus(corpus)
    assert [f.language for f in files] == ["aa", "bb", "cc"]  # .txt and .txt.gz
    sizes = {"big": 1000.0, "small": 10.0}
    p = language_probabilities(sizes, alpha=0.3)
    assert p["big"] / p["small"] == pytest.approx(100**0.3)
    assert language_probabilities(sizes, 1.0)["small"] == pytest.approx(10 / 1010)
    assert language_probabilities(sizes, 0.0)["small"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="no corpus file for language"):
        discover_corpus(corpus, ["aa", "zz"])


def test_sampled_language_proportions_follow_alpha(corpus, tokenizer):
    ds = _dataset(corpus, tokenizer, batch_size=1)
    # Count languages per sequence via the stream's RNG draws: replay the sampler directly.
    rng = ds.shard_rng(0)
    langs = [f.language for f in ds.files]
    probs = np.array([ds.probabilities[lang] for lang in langs])
    draws = Counter(langs[int(rng.choice(len(langs), p=probs))] for _ in range(20000))
    for lang in langs:
        assert draws[lang] / 20000 == pytest.approx(ds.probabilities[lang], abs=0.015)
    # Thin languages are upsampled relative to their size.
    sizes = {f.language: f.size for f in ds.files}
    assert ds.probabilities["cc"] > sizes["cc"] / sum(sizes.values())
    # And the real stream is monolingual per sequence with matching proportions.
    seen = Counter()
    for batch in islice(ds.iter_shard(0), 300):
        row = batch["labels"][0].where(batch["labels"][0] != -100, batch["input_ids"][0])
        text = tokenizer.decode(row[1:-1])
        found = {lang for lang, letters in ALPHABETS.items() if set(text) & set(letters)}
        assert len(found) <= 1
        seen.update(found)
    total = sum(seen.values())
    assert seen["cc"] / total == pytest.approx(ds.probabilities["cc"], abs=0.08)


def test_packing_layout_and_long_lines_are_split(tmp_path, tokenizer):
    long_line = " ".join(["abc", "def", "gh"] * 200)
    (tmp_path / "xx.txt").write_text(long_line + "\nshort line\n", encoding="utf-8")
    ds = PackedTextDataset(discover_corpus(tmp_path), tokenizer, max_seq_length=16, batch_size=2,
                           masking=MaskingConfig(), seed=0, shuffle=ShuffleConfig(buffer_lines=0))
    expected = tokenizer.encode(long_line, add_special_tokens=False) + tokenizer.encode(
        "short line", add_special_tokens=False)
    body = []
    for batch, _ in zip(ds.iter_shard(0), range((len(expected) // 14) // 2)):
        ids = batch["labels"].where(batch["labels"] != -100, batch["input_ids"])
        assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"].all()
        assert (ids[:, 0] == tokenizer.cls_token_id).all() and (ids[:, -1] == tokenizer.sep_token_id).all()
        body.extend(ids[:, 1:-1].reshape(-1).tolist())
    assert body == expected[: len(body)]  # the long line continues across sequences; nothing dropped


def test_rtd_masking_statistics(tokenizer):
    cfg = MaskingConfig("rtd", mask_prob=0.15)
    specials = [0, 1, 2, 3, tokenizer.mask_token_id]
    masker = Masker(cfg, len(tokenizer), tokenizer.mask_token_id, specials)
    rng = np.random.default_rng(0)
    ids = np.array([1] + list(rng.integers(4, len(tokenizer) - 1, 126)) + [2])
    ids[10] = 3
    rates = []
    for _ in range(300):
        out = masker(ids, rng)
        chosen = out["labels"] != -100
        assert not chosen[[0, 10, 127]].any()  # special tokens never masked
        assert (out["input_ids"][chosen] == tokenizer.mask_token_id).all()  # all [MASK] for RTD
        assert (out["input_ids"][~chosen] == ids[~chosen]).all()
        assert (out["labels"][chosen] == ids[chosen]).all()
        rates.append(chosen.sum() / 125)
        assert out["sample_noise"].shape == ids.shape
    assert np.mean(rates) == pytest.approx(0.15, abs=0.01)


def test_mlm_80_10_10(tokenizer):
    masker = Masker(MaskingConfig("mlm", 0.15), len(tokenizer), tokenizer.mask_token_id, [0, 1, 2, 3])
    rng = np.random.default_rng(1)
    ids = np.array([1] + [50] * 200 + [2])
    counts = Counter()
    for _ in range(400):
        out = masker(ids, rng)
        chosen = out["labels"] != -100
        new = out["input_ids"][chosen]
        counts["mask"] += int((new == tokenizer.mask_token_id).sum())
        counts["same"] += int((new == 50).sum())
        counts["random"] += int(((new != 50) & (new != tokenizer.mask_token_id)).sum())
        assert "sample_noise" not in out
    total = sum(counts.values())
    assert counts["mask"] / total == pytest.approx(0.8, abs=0.02)
    assert counts["random"] / total == pytest.approx(0.1, abs=0.015)  # (a random draw may equal 50: rare)
    assert counts["same"] / total == pytest.approx(0.1, abs=0.015)


def test_whole_word_and_ngram_masking(tokenizer):
    word_start = np.zeros(len(tokenizer), dtype=bool)
    word_start[10] = True  # words: "10 11 11"
    masker = Masker(MaskingConfig("rtd", 0.3, mode="whole_word"), len(tokenizer), tokenizer.mask_token_id,
                    [0, 1, 2, 3], word_start)
    ids = np.array([1] + [10, 11, 11] * 20 + [2])
    rng = np.random.default_rng(0)
    for _ in range(50):
        chosen = masker.select(ids, rng)
        words = chosen[1:-1].reshape(20, 3)
        assert ((words.all(1)) | (~words.any(1))).all()  # a word is masked entirely or not at all
        assert chosen.sum() == 18
    ngram = Masker(MaskingConfig("rtd", 0.2, mode="ngram", max_ngram=3), len(tokenizer), tokenizer.mask_token_id,
                   [0, 1, 2, 3])
    ids = np.array([1] + [20] * 100 + [2])
    spans = []
    for _ in range(50):
        chosen = ngram.select(ids, rng)
        assert chosen.sum() == 20 and not chosen[[0, 101]].any()
        edges = np.diff(np.concatenate([[0], chosen.astype(int), [0]]))
        spans.extend(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    assert np.mean(spans) > 1.3  # spans, not single tokens


def test_original_masking_is_one_token_per_window_of_six(tokenizer):
    """DeBERTa's NGramMaskGenerator (max_gram 1): one token in each window of int(1 / 0.15) = 6, windows in order
    until round(0.15 x tokens incl. [CLS]/[SEP]) are chosen, at most ceil(0.15 x length / 10) x 10."""
    masker = Masker(MaskingConfig("rtd", 0.15, mode="original"), len(tokenizer), tokenizer.mask_token_id, [0, 1, 2, 3])
    rng = np.random.default_rng(0)
    ids = np.array([1] + [20] * 126 + [2])  # 128 tokens: budget round(0.15 x 128) = 19, cap ceil(19.2 / 10) x 10 = 20
    firsts = []
    for _ in range(200):
        chosen = masker.select(ids, rng)
        inner = chosen[1:-1]
        assert chosen.sum() == 19 and not chosen[[0, 127]].any()
        per_window = [int(inner[w:w + 6].sum()) for w in range(0, 126, 6)]
        assert per_window[:19] == [1] * 19 and sum(per_window[19:]) == 0  # the windows past the budget stay unmasked
        firsts.append(int(np.flatnonzero(inner)[0]))
    assert set(firsts) == set(range(6))  # any place in its window
    long = np.array([1] + [20] * 1000 + [2])  # budget round(150.3) = 150, capped at ceil(1002 x 0.15 / 10) x 10 = 160
    assert masker.select(long, rng).sum() == 150
    short = np.array([1] + [20] * 600 + [2])
    sized = Masker(MaskingConfig("rtd", 0.15, mode="original"), len(tokenizer), tokenizer.mask_token_id, [0, 1, 2, 3])
    assert sized.select(short, rng).sum() == 90  # round(0.15 x 602) = 90 <= ceil(90.3 / 10) x 10 = 100


def test_deterministic_and_sharded(corpus, tokenizer):
    ds = _dataset(corpus, tokenizer)
    a = [b["input_ids"] for b in islice(ds.iter_shard(0), 3)]
    b = [b["input_ids"] for b in islice(_dataset(corpus, tokenizer).iter_shard(0), 3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ds.world_size = 2  # 2 shards: disjoint line sets
    s0 = next(iter(ds.iter_shard(0)))["input_ids"]
    s1 = next(iter(ds.iter_shard(1)))["input_ids"]
    assert not torch.equal(s0, s1)


def test_loader_resume_continues_exact_stream(corpus, tokenizer):
    ds = _dataset(corpus, tokenizer)
    reference = PretrainingLoader(ds, num_workers=2)
    expected = [b["input_ids"] for b in islice(reference, 7)]
    first = PretrainingLoader(_dataset(corpus, tokenizer), num_workers=2)
    got = [b["input_ids"] for b in islice(first, 3)]
    state = first.state_dict()
    assert state["consumed"] == 3 and state["num_shards"] == 2
    resumed = PretrainingLoader(_dataset(corpus, tokenizer), num_workers=2)
    resumed.load_state_dict(state)
    got += [b["input_ids"] for b in islice(resumed, 4)]
    assert all(torch.equal(x, y) for x, y in zip(got, expected))
    with pytest.raises(DataError, match="data shards"):
        PretrainingLoader(ds, num_workers=1).load_state_dict(state)


def test_one_process_two_workers_equals_two_ranks(corpus, tokenizer):
    one = [b["input_ids"] for b in islice(PretrainingLoader(_dataset(corpus, tokenizer), num_workers=2), 4)]
    r0 = [b["input_ids"] for b in islice(PretrainingLoader(_dataset(corpus, tokenizer), 0, 2, 0), 2)]
    r1 = [b["input_ids"] for b in islice(PretrainingLoader(_dataset(corpus, tokenizer), 1, 2, 0), 2)]
    assert all(torch.equal(x, y) for x, y in zip(one, [r0[0], r1[0], r0[1], r1[1]]))


def test_stray_nul_line_is_skipped_with_its_line_number(tmp_path, tokenizer, caplog):
    """A real corpus (../shared's bg.txt.gz, line 30448) has one NUL byte: the run must skip it, not die."""
    lines = ["the first line of text", "a broken \x00 line", "the third line of text"]
    path = tmp_path / "xx.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    files = discover_corpus(path)
    ds = PackedTextDataset(files, tokenizer, max_seq_length=64, batch_size=1, shuffle=ShuffleConfig(buffer_lines=0))
    with caplog.at_level("WARNING", logger="mdeberta.data"):
        batch = next(ds.iter_shard(0))
    ids = torch.where(batch["labels"] >= 0, batch["labels"], batch["input_ids"])[0].tolist()  # undo the masking
    assert f"{path}:2: NUL byte" in caplog.text
    good = [t for line in (lines[0], lines[2]) for t in tokenizer.encode(line, add_special_tokens=False)]
    assert ids[1:1 + len(good)] == good  # line 2 left out, lines 1 and 3 packed back to back
    broken = tokenizer.encode("broken", add_special_tokens=False)
    assert not any(ids[i:i + len(broken)] == broken for i in range(len(ids)))


def test_bad_input_is_reported(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        discover_corpus(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    with pytest.raises(DataError, match="no text"):
        discover_corpus(tmp_path / "blank.txt")
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02" * 10)
    with pytest.raises(DataError, match="binary"):
        discover_corpus(tmp_path / "bin.txt")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt compressed file"):
        discover_corpus(tmp_path / "bad.txt.gz")
    with pytest.raises(DataError, match="not found"):
        discover_corpus(tmp_path / "missing")
    (tmp_path / "one.txt").write_text("only one line\n")
    ds = PackedTextDataset(discover_corpus(tmp_path / "one.txt"), tokenizer, max_seq_length=16, batch_size=1)
    ds.world_size = 2
    with pytest.raises(DataError, match="fewer non-empty lines than shards"):
        list(islice(ds.iter_shard(1), 2))
    with pytest.raises(DataError, match="mask_prob"):
        MaskingConfig(mask_prob=1.5)


# --------------------------------------------------------------------------- shuffling
BLOCK_WORDS = ["alpha", "bravo", "delta", "gamma"]  # block k of the file uses word k only


def _block_ordered(path: Path, lines_per_block: int = 300, gz: bool = False) -> list[str]:
    """A source-ordered corpus: four blocks, each one word repeated (a line = 'word word ... N')."""
    lines = [f"{word} {word} {word} {i}" for word in BLOCK_WORDS for i in range(lines_per_block)]
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return lines


@pytest.fixture(scope="module")
def block_tokenizer(tmp_path_factory):
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer

    folder = tmp_path_factory.mktemp("blocktok")
    _block_ordered(folder / "train.txt")
    return DebertaTokenizer.from_pretrained(train_tokenizer(folder / "train.txt", folder / "tok", vocab_size=28,
                                                            num_threads=1))


def _blocks_in(batch, tokenizer) -> set[str]:
    ids = batch["labels"].where(batch["labels"] != -100, batch["input_ids"])
    text = tokenizer.decode(ids.reshape(-1).tolist())
    return {w for w in BLOCK_WORDS if w in text}


@pytest.mark.parametrize("gz", [False, True])
def test_shuffled_stream_mixes_a_block_ordered_file_from_the_first_batch(tmp_path, block_tokenizer, gz):
    path = tmp_path / ("xx.txt.gz" if gz else "xx.txt")
    _block_ordered(path, gz=gz)
    files = discover_corpus(path)
    ordered = PackedTextDataset(files, block_tokenizer, max_seq_length=32, batch_size=4,
                                shuffle=ShuffleConfig(buffer_lines=0))
    assert all(_blocks_in(b, block_tokenizer) == {"alpha"} for b in islice(ordered.iter_shard(0), 3))
    shuffled = PackedTextDataset(files, block_tokenizer, max_seq_length=32, batch_size=4,
                                 shuffle=ShuffleConfig(buffer_lines=64, segments=8))
    first = next(iter(shuffled.iter_shard(0)))
    assert _blocks_in(first, block_tokenizer) == set(BLOCK_WORDS)  # all four blocks in the very first batch


def _epoch_lines(files, shuffle, shard=0, num_shards=1, epochs=1, seed=0):
    from mdeberta.data.text import _SourceStream

    stream = _SourceStream("xx", files, shard, num_shards, shuffle, seed)
    out: list[list[str]] = [[] for _ in range(epochs)]
    while True:
        text = stream.next_document()
        if stream.epoch >= epochs:
            return out
        out[stream.epoch].append(text.strip())


@pytest.mark.parametrize("segments", [1, 3, 16, 200])
def test_pieces_and_shards_cover_every_line_once_per_epoch(tmp_path, segments):
    """Pieces are cut at arbitrary bytes: every line must still be read exactly once, by exactly one shard."""
    rng = random.Random(segments)
    lines = [" ".join("w" * rng.randint(1, 9) for _ in range(rng.randint(1, 30))) + f" {i}" for i in range(500)]
    path = tmp_path / "xx.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    files = discover_corpus(path)
    shuffle = ShuffleConfig(buffer_lines=50, segments=segments)
    per_shard = [_epoch_lines(files, shuffle, shard, 3, epochs=4) for shard in range(3)]
    for epoch in range(4):
        got = [line for shard in per_shard for line in shard[epoch]]
        assert sorted(got) == sorted(lines)  # each line once, over the shards together
    if segments > 1:  # several places of the file are read at once
        assert per_shard[0][0] != sorted(per_shard[0][0], key=lines.index)


def test_shards_of_a_language_folder_are_read_in_a_new_order_each_epoch(tmp_path, block_tokenizer):
    folder = tmp_path / "corpus" / "xx"
    folder.mkdir(parents=True)
    for k, word in enumerate(BLOCK_WORDS):
        (folder / f"part-{k}.txt").write_text("\n".join(f"{word} {i}" for i in range(20)) + "\n")
    (tmp_path / "corpus" / "yy.txt").write_text("delta delta\n" * 30)
    files = discover_corpus(tmp_path / "corpus")
    assert [f.language for f in files] == ["yy", "xx", "xx", "xx", "xx"] or sorted(
        f.language for f in files) == ["xx"] * 4 + ["yy"]
    xx = [f for f in files if f.language == "xx"]
    order = [[line.split()[0] for line in epoch][::20] for epoch in _epoch_lines(
        xx, ShuffleConfig(buffer_lines=2, segments=1), epochs=4)]
    assert all(sorted(o) == sorted(BLOCK_WORDS) for o in order)  # whole files, one after another
    assert len({tuple(o) for o in order}) > 1  # in a new order per epoch
    ds = PackedTextDataset(files, block_tokenizer, max_seq_length=16, batch_size=2, alpha=1.0)
    assert ds.probabilities["xx"] == pytest.approx(sum(f.size for f in xx) / sum(f.size for f in files))
    (tmp_path / "corpus" / "xx.txt").write_text("one more\n")
    with pytest.raises(DataError, match="two origins for language 'xx'"):
        discover_corpus(tmp_path / "corpus")


def test_shuffled_loader_resume_is_exact_across_windows(tmp_path, block_tokenizer):
    path = tmp_path / "xx.txt.gz"
    _block_ordered(path, gz=True)
    (tmp_path / "yy.txt").write_text("\n".join(f"gamma delta {i}" for i in range(200)) + "\n")

    def loader():
        ds = PackedTextDataset(discover_corpus([path, tmp_path / "yy.txt"]), block_tokenizer, max_seq_length=24,
                               batch_size=3, seed=5, shuffle=ShuffleConfig(buffer_lines=40, segments=5))
        return PretrainingLoader(ds, num_workers=2)

    expected = [b["input_ids"] for b in islice(loader(), 40)]  # several windows and a pass over yy
    for cut in (1, 7, 23):
        first = loader()
        got = [b["input_ids"] for b in islice(first, cut)]
        resumed = loader()
        resumed.load_state_dict(first.state_dict())
        got += [b["input_ids"] for b in islice(resumed, 40 - cut)]
        assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True)), cut


def test_shuffle_config_is_checked():
    with pytest.raises(DataError, match="buffer_lines"):
        ShuffleConfig(buffer_lines=-1)
    with pytest.raises(DataError, match="segments"):
        ShuffleConfig(segments=0)
