"""Helpers for the fine-tuning / evaluation tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MDEBERTA_SHARED", REPO.parent / "shared"))
XNLI_DIR = SHARED / "data" / "xnli"
NLI_EN_DIR = SHARED / "data" / "nli_en"
LABEL_NAMES = ("entailment", "neutral", "contradiction")
WORDS = ("cat dog house tree river car book music city child garden window road table light water bird "
         "chat maison arbre livre Hund Baum Buch casa perro libro").split()


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """Pairs whose label follows from the words: hypothesis inside the premise -> entailment, negated ->
    contradiction, unrelated -> neutral. Learnable by a tiny model, no downloads."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, 6)
        premise = "the " + " and the ".join(words[:4]) + "."
        label = LABEL_NAMES[i % 3]
        if label == "entailment":
            hypothesis = f"there is a {words[rng.randrange(4)]}."
        elif label == "contradiction":
            hypothesis = f"there is no {words[rng.randrange(4)]}."
        else:
            hypothesis = f"there is a {words[4 + rng.randrange(2)]}."
        rows.append((premise, hypothesis, label))
    return rows


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, gzip-compressed when the name ends in .gz."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_tsv(path: Path, rows: list[tuple[str, ...]], header: str = "premise\thypothesis\tlabel") -> Path:
    return write_text(path, header + "\n" + "".join("\t".join(r) + "\n" for r in rows))


def tokenizer_text(folder: Path) -> Path:
    lines = [" ".join(r[:2]) for r in synthetic_pairs(300)]
    if XNLI_DIR.is_dir():  # real multilingual text, so that the tiny model can see every script
        for f in sorted(XNLI_DIR.glob("xnli.dev.*.tsv.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                next(fh)
                for i, line in enumerate(fh):
                    if i >= 100:
                        break
                    lines += line.rstrip("\n").split("\t")[:2]
    path = folder / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_xnli_folder(folder: Path, split: str = "test", n: int = 12, languages=None) -> Path:
    """Per-language files like shared/data/xnli with synthetic pairs (language-tagged text)."""
    from mdeberta.data.nli import XNLI_LANGUAGES

    folder.mkdir(parents=True, exist_ok=True)
    for k, lang in enumerate(languages or XNLI_LANGUAGES):
        rows = [(f"{p} {lang}", h, label) for p, h, label in synthetic_pairs(n, seed=100 + k)]
        write_tsv(folder / f"xnli.{split}.{lang}.tsv.gz", rows)
    return folder
