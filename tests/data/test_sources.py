"""Pretraining sources: every file format, blank-line documents, hub datasets (local, no network), weighted
mixtures, exact resume for each source kind, and clear errors for bad input."""

from __future__ import annotations

import gzip
import json
import lzma
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch

from mdeberta.data.sources import DataError, SourceOptions, discover_corpus, uncompressed_size
from mdeberta.data.text import PackedTextDataset, PretrainingLoader, ShuffleConfig, _SourceStream

WORDS = ["alpha", "bravo", "delta", "gamma", "kilo", "lima", "oscar", "tango"]


def _documents(n: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) + f" {i}" for i in range(n)]


def _write(path: Path, data: bytes) -> Path:
    name = path.name
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".xz"):
        data = lzma.compress(data)
    elif name.endswith(".zst"):
        zstandard = pytest.importorskip("zstandard")
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_text(path: Path, docs: list[str]) -> Path:
    return _write(path, ("\n".join(docs) + "\n").encode())


def write_jsonl(path: Path, docs: list[str], **extra) -> Path:
    lines = [json.dumps({"id": i, "text": d, **{k: v[i] for k, v in extra.items()}}) for i, d in enumerate(docs)]
    return _write(path, ("\n".join(lines) + "\n").encode())


def write_parquet(path: Path, docs: list[str], row_group_size: int = 25, **extra) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs, **extra}), path, row_group_size=row_group_size)
    return path


def read_epochs(files, epochs: int = 1, shard: int = 0, num_shards: int = 1, segments: int = 5,
                buffer_lines: int = 16) -> list[list[str]]:
    """The documents of one shard, per epoch, in reading order (before the window permutation)."""
    stream = _SourceStream(files[0].language, files, shard, num_shards, ShuffleConfig(buffer_lines, segments), 0)
    out: list[list[str]] = [[] for _ in range(epochs)]
    while True:
        text = stream.next_document()
        if stream.epoch >= epochs:
            return out
        out[stream.epoch].append(text)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer

    folder = tmp_path_factory.mktemp("srctok")
    text = write_text(folder / "train.txt", _documents(300) + [str(i) for i in range(300)])
    return DebertaTokenizer.from_pretrained(train_tokenizer(text, folder / "tok", vocab_size=34, num_threads=1))


FORMATS = ["xx.txt", "xx.txt.gz", "xx.txt.xz", "xx.txt.zst", "xx.jsonl", "xx.jsonl.gz", "xx.jsonl.xz",
           "xx.jsonl.zst", "xx.parquet"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_reads_every_document_once_per_shard_and_epoch(tmp_path, name):
    docs = _documents()
    path = tmp_path / name
    if ".jsonl" in name:
        write_jsonl(path, docs)
    elif name.endswith(".parquet"):
        write_parquet(path, docs)
    else:
        write_text(path, docs)
    files = discover_corpus(path)
    assert [f.language for f in files] == ["xx"] and files[0].kind == (
        "jsonl" if ".jsonl" in name else "parquet" if name.endswith(".parquet") else "text")
    shards = [read_epochs(files, epochs=2, shard=s, num_shards=2) for s in range(2)]
    for epoch in range(2):
        assert sorted(shards[0][epoch] + shards[1][epoch]) == sorted(docs)
    assert not set(shards[0][0]) & set(shards[1][0])


def test_sizes_of_compressed_files(tmp_path):
    data = ("\n".join(_documents(500)) + "\n").encode()
    for name in ("a.txt", "a.txt.gz", "a.txt.xz"):
        assert uncompressed_size(write_text(tmp_path / name, _documents(500))) == len(data)
    # Two concatenated xz streams: both indexes are read.
    two = tmp_path / "b.txt.xz"
    two.write_bytes(lzma.compress(data) + lzma.compress(data))
    assert uncompressed_size(two) == 2 * len(data)


@pytest.mark.parametrize("segments", [1, 3, 17, 300])
def test_blank_line_documents_are_kept_whole(tmp_path, segments):
    """CC100's layout: documents of several lines between blank lines (sometimes several blank lines)."""
    rng = random.Random(segments)
    docs = ["\n".join(f"{d} line {k}" for k in range(rng.randint(1, 4))) for d in _documents(150)]
    text = "".join(d + "\n" + "\n" * rng.randint(1, 3) for d in docs)
    path = _write(tmp_path / "xx.txt.xz", ("\n\n" + text).encode())  # leading blank lines too
    files = discover_corpus(path, options=SourceOptions(documents="blank-line"))
    for num_shards in (1, 3):
        got = [doc for s in range(num_shards) for doc in read_epochs(files, 1, s, num_shards, segments)[0]]
        assert sorted(got) == sorted(docs)  # each document once, lines together


def test_jsonl_language_field_routes_mixed_records(tmp_path):
    docs = _documents(90)
    langs = [["aa", "bb", "cc"][i % 3] for i in range(90)]
    path = write_jsonl(tmp_path / "mixed.jsonl.gz", docs, lang=langs)
    options = SourceOptions(language_field="lang")
    with pytest.raises(DataError, match="name the languages"):
        discover_corpus(path, options=options)
    files = discover_corpus(path, ["bb", "aa"], options=options)
    assert [f.language for f in files] == ["bb", "aa"]
    got = read_epochs([files[0]], segments=4)[0]
    assert sorted(got) == sorted(d for d, g in zip(docs, langs) if g == "bb")


def test_hub_dataset_in_dataloader_workers_is_split_once(tmp_path, tokenizer):
    """datasets splits a stream between DataLoader workers by itself; our shards already are the workers' parts."""
    pytest.importorskip("datasets")
    (tmp_path / "hub").mkdir()
    docs = [f"kilo {i}" for i in range(60)]
    for k in range(3):
        write_jsonl(tmp_path / "hub" / f"p{k}.jsonl", docs[20 * k:20 * (k + 1)])
    files = discover_corpus(f"hf:{tmp_path / 'hub'}@xx")
    ds = PackedTextDataset(files, tokenizer, max_seq_length=8, batch_size=1, shuffle=ShuffleConfig(buffer_lines=0))
    streams: list[list[int]] = [[], []]  # batches come from the two workers (shards) in turn
    for i, batch in enumerate(islice(PretrainingLoader(ds, num_workers=2), 80)):
        streams[i % 2] += batch["labels"].where(batch["labels"] != -100, batch["input_ids"])[0, 1:-1].tolist()
    seen = {word for ids in streams for word in tokenizer.decode(ids).replace("kilo", " ").split()}
    assert {str(i) for i in range(60)} <= seen  # every document reached a batch: no double split


def test_hub_dataset_streams_like_the_local_files(tmp_path):
    """hf:FOLDER goes through datasets.load_dataset(..., streaming=True) and split_dataset_by_node: no network."""
    pytest.importorskip("datasets")
    folder = tmp_path / "hub"
    folder.mkdir()
    docs = _documents(90)
    for k in range(3):
        write_jsonl(folder / f"part-{k}.jsonl", docs[30 * k:30 * (k + 1)])
    files = discover_corpus(f"hf:{folder}@en")
    assert files[0].language == "en" and files[0].kind == "hub"
    shards = [read_epochs(files, epochs=2, shard=s, num_shards=2) for s in range(2)]
    for epoch in range(2):
        assert sorted(shards[0][epoch] + shards[1][epoch]) == sorted(docs)
    assert not set(shards[0][0]) & set(shards[1][0])
    parquet = tmp_path / "hubpq"
    parquet.mkdir()
    write_parquet(parquet / "train.parquet", docs)
    assert sorted(read_epochs(discover_corpus(f"hf:{parquet}"))[0]) == sorted(docs)


def _loader(files, tokenizer, workers: int = 2):
    ds = PackedTextDataset(files, tokenizer, max_seq_length=16, batch_size=3, seed=1,
                           shuffle=ShuffleConfig(buffer_lines=20, segments=4))
    return PretrainingLoader(ds, num_workers=workers)


@pytest.mark.parametrize("kind", ["text", "blank-line", "jsonl", "parquet", "hub"])
def test_resume_is_exact_for_each_source_kind(tmp_path, tokenizer, kind):
    docs = _documents(80)
    options = SourceOptions()
    if kind == "text":
        source = write_text(tmp_path / "xx.txt.zst", docs)
    elif kind == "blank-line":
        source = _write(tmp_path / "xx.txt.xz", ("\n\n".join(d + "\n" + d for d in docs) + "\n").encode())
        options = SourceOptions(documents="blank-line")
    elif kind == "jsonl":
        source = write_jsonl(tmp_path / "xx.jsonl.gz", docs)
    elif kind == "parquet":
        source = write_parquet(tmp_path / "xx.parquet", docs, row_group_size=10)
    else:
        pytest.importorskip("datasets")
        (tmp_path / "hub").mkdir()
        for k in range(2):
            write_jsonl(tmp_path / "hub" / f"p{k}.jsonl", docs[40 * k:40 * (k + 1)])
        source = f"hf:{tmp_path / 'hub'}@xx"
    other = _documents(30, seed=1)
    if kind == "blank-line":  # the option holds for every text source of the run
        other = [d + "\n" for d in other]
    files = discover_corpus([source, write_text(tmp_path / "yy.txt", other)], options=options)
    expected = [b["input_ids"] for b in islice(_loader(files, tokenizer), 30)]  # > 1 pass over yy
    for cut in (2, 13):
        first = _loader(files, tokenizer)
        got = [b["input_ids"] for b in islice(first, cut)]
        resumed = _loader(files, tokenizer)
        resumed.load_state_dict(first.state_dict())
        got += [b["input_ids"] for b in islice(resumed, 30 - cut)]
        assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True)), (kind, cut)


def test_weights_set_the_mixture(tmp_path, tokenizer):
    """Two sources of one language, weights 1 and 3 (same size): 1/4 and 3/4 of its documents; and a weight moves
    the language-sampling probability like a bigger corpus would."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_text(a / "xx.txt", [f"alpha {i}" for i in range(200)])
    write_text(b / "xx.txt", [f"bravo {i}" for i in range(200)])
    write_text(b / "yy.txt", [f"gamma {i}" for i in range(200)])
    files = discover_corpus([str(a), f"{b}=3"])
    assert sorted((f.language, f.weight) for f in files) == [("xx", 1.0), ("xx", 3.0), ("yy", 3.0)]
    ds = PackedTextDataset(files, tokenizer, max_seq_length=16, batch_size=2, alpha=1.0,
                           shuffle=ShuffleConfig(buffer_lines=400))
    assert ds.probabilities["xx"] == pytest.approx(4 / 7)
    from mdeberta.data.text import _LanguageStream

    stream = _LanguageStream("xx", [f for f in files if f.language == "xx"], 0, 1, lambda t: [1],
                             ShuffleConfig(buffer_lines=400), 0)
    stream._fill_window()
    counts = Counter(doc.split()[0] for doc in stream.window)
    assert counts["bravo"] / 400 == pytest.approx(0.75, abs=0.05)
    with pytest.raises(DataError, match="positive number"):
        discover_corpus(f"{b}=0")


def test_bad_sources_are_clear(tmp_path, monkeypatch):
    docs = _documents(5)
    write_jsonl(tmp_path / "xx.jsonl", docs)
    with pytest.raises(DataError, match=r"xx.jsonl:1: no field 'content' \(the record has \['id', 'text'\]\)"):
        discover_corpus(tmp_path / "xx.jsonl", options=SourceOptions(text_field="content"))
    write_parquet(tmp_path / "yy.parquet", docs)
    with pytest.raises(DataError, match=r"yy.parquet: no column 'body' \(it has \['text'\]\)"):
        discover_corpus(tmp_path / "yy.parquet", options=SourceOptions(text_field="body"))
    bad = tmp_path / "bad" / "zz.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    files = discover_corpus(bad)
    with pytest.raises(DataError, match=r"zz.jsonl:2: not a JSON record"):
        read_epochs(files, segments=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no text / JSON lines / Parquet files in folder"):
        discover_corpus(empty)
    (tmp_path / "e.txt.xz").write_bytes(lzma.compress(b""))
    with pytest.raises(DataError, match="has no text"):
        discover_corpus(tmp_path / "e.txt.xz")
    with pytest.raises(DataError, match="not a text / JSON lines / Parquet file"):
        (tmp_path / "x.csv").write_text("a,b\n")
        discover_corpus(tmp_path / "x.csv")
    # A hub dataset that cannot be opened (offline / unknown), and one without `datasets` installed.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if pytest.importorskip("datasets"):
        with pytest.raises(DataError, match="hf:no-such-user/no-such-dataset: cannot open the dataset"):
            discover_corpus("hf:no-such-user/no-such-dataset")
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="need the datasets package"):
        discover_corpus("hf:cc100:sw")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    (tmp_path / "z.txt.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(DataError, match="needs the zstandard package"):
        discover_corpus(tmp_path / "z.txt.zst")
