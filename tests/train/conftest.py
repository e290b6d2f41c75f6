"""Shared fixtures for the training tests: a tiny tokenizer and a small synthetic multilingual corpus."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

SYLLABLES = {
    "aa": ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po"],
    "bb": ["zu", "xe", "qo", "vi", "ja", "wu", "ge", "fo"],
}


def write_corpus(folder: Path, lines_per_lang: dict[str, int], seed: int = 0) -> Path:
    """Per-language files of pseudo-words; each language has its own syllables, so RTD is learnable."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for lang, n in lines_per_lang.items():
        syl = SYLLABLES.get(lang, SYLLABLES["aa"])
        words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(60)]
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(n)]
        (folder / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), {"aa": 400, "bb": 100})


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    from mdeberta.tokenizer import train_tokenizer

    return Path(train_tokenizer(corpus, tmp_path_factory.mktemp("tok"), vocab_size=120, num_threads=1))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from mdeberta.tokenizer import DebertaTokenizer

    return DebertaTokenizer.from_pretrained(tokenizer_dir)
