"""Synthetic token-classification data for the NER tests: a learnable pattern, no downloads."""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["anna", "bruno", "carla", "diego", "elena", "farid"]
SURNAMES = ["smith", "rossi", "khan", "novak"]
PLACES = ["paris", "lima", "oslo", "cairo", "quito"]
QA_WORDS = ["key", "where", "is", "?"]
FILLER = ["the", "a", "went", "to", "saw", "with", "in", "and", "today", "yesterday", "met", "from"]


def synthetic_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Sentences mixing filler words, one- or two-word person names and places (IOB2 tags)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 7)):
            r = rng.random()
            if r < 0.2:
                tokens.append(rng.choice(NAMES))
                tags.append("B-PER")
                if rng.random() < 0.5:
                    tokens.append(rng.choice(SURNAMES))
                    tags.append("I-PER")
            elif r < 0.35:
                tokens.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sentences, prefix: str = "") -> Path:
    lines = ["-DOCSTART- O", ""]
    for tokens, tags in sentences:
        lines += [f"{prefix}{t}\t{g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_ner_jsonl(path: Path, sentences) -> Path:
    path.write_text("".join(json.dumps({"tokens": t, "ner_tags": g}) + "\n" for t, g in sentences), encoding="utf-8")
    return path


def ner_tokenizer_text(folder: Path) -> Path:
    words = NAMES + SURNAMES + PLACES + FILLER + QA_WORDS
    path = folder / "ner_text.txt"
    rng = random.Random(0)
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(300)) + "\n")
    return path


def synthetic_squad(n: int, seed: int = 0, filler: int = 14) -> dict:
    """SQuAD-layout questions whose answer is the place after "key in" somewhere in a longer context."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(FILLER + NAMES) for _ in range(filler)]
        place = rng.choice(PLACES)
        at = rng.randint(0, len(words))
        words[at:at] = ["key", "in", place]
        context = " ".join(words)
        start = len(" ".join(words[:at + 2])) + 1
        assert context[start:start + len(place)] == place
        paragraphs.append({"context": context, "qas": [{"id": f"q{i}", "question": "where is the key ?",
                                                        "answers": [{"text": place, "answer_start": start}]}]})
    return {"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}
