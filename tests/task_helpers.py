"""Synthetic, learnable data for the text-classification / regression / multiple-choice tests (no downloads): the
words of ner_helpers, whose micro tokenizer (the ``tagging_backbone`` fixture) knows them."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from ner_helpers import FILLER, NAMES, PLACES


def topic_rows(n: int, seed: int = 0, filler: tuple[int, int] = (3, 6)) -> list[dict]:
    """Texts of filler words with names ("people"), places ("places") or neither ("none"); ``count`` is the number
    of places (a regression target), ``kinds`` the kinds present (multi-label, sometimes both, sometimes none)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(*filler))]
        label = ("people", "places", "none")[i % 3]
        kinds = set()
        count = 0
        if label == "people":
            words.insert(rng.randrange(len(words)), rng.choice(NAMES))
            kinds.add("people")
        if label == "places":
            count = rng.randint(1, 3)
            for _ in range(count):
                words.insert(rng.randrange(len(words)), rng.choice(PLACES))
            kinds.add("places")
            if rng.random() < 0.5:
                words.insert(rng.randrange(len(words)), rng.choice(NAMES))
                kinds.add("people")
        rows.append({"text": " ".join(words), "label": label, "count": count, "kinds": sorted(kinds)})
    return rows


def write_rows(path: Path, rows: list[dict], columns: tuple[str, ...] = ("text", "label")) -> Path:
    """TSV / CSV (standard quoting) or JSON lines, by the file name."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({c: r[c] for c in columns}) + "\n" for r in rows), encoding="utf-8")
        return path
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="," if path.suffix == ".csv" else "\t")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([",".join(r[c]) if isinstance(r[c], list) else r[c] for c in columns])
    return path


def choice_rows(n: int, seed: int = 0) -> list[dict]:
    """"who went there ?" with a name and a place as endings: the name is right."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        endings = [rng.choice(NAMES), rng.choice(PLACES)]
        label = 0
        if rng.random() < 0.5:
            endings.reverse()
            label = 1
        rows.append({"context": f"{rng.choice(FILLER)} who went to the {rng.choice(FILLER)}",
                     "endings": endings, "label": label})
    return rows


def multi_label_rows(n: int, seed: int = 0) -> list[dict]:
    """Filler texts with a name (label "people") and / or a place ("places"), each independently, half the time."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, kinds = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))], []
        for kind, vocabulary in (("people", NAMES), ("places", PLACES)):
            if rng.random() < 0.5:
                words.insert(rng.randrange(len(words)), rng.choice(vocabulary))
                kinds.append(kind)
        rows.append({"text": " ".join(words), "kinds": kinds})
    return rows
