"""Multilingual minimal pairs built from real text: a sentence against itself with two adjacent words swapped.

No minimal-pair set for the other 14 XNLI languages ships with ``../shared``, and writing one by hand would be
inventing data. What can be built honestly is a word-order contrast: every good sentence is a real XNLI dev
hypothesis (distinct, at least 4 words), its bad twin the same words with one adjacent pair swapped, chosen at
random among pairs that are whole words of letters (Unicode categories L and M, so the punctuation stays where it
was and attached punctuation never moves) and never the first word (its capital would give the answer away). A swap
can leave a sentence grammatical ("red and blue" -> "and red blue" does not, "he quickly ran" -> "he ran quickly"
does): such pairs lower every model's ceiling alike, so the test ranks models and tells them from chance, and the
per-language word n-gram trained on the same pretraining text is the floor. Thai and Chinese are left out: their
text has no spaces between words, and a swap of characters or of tokenizer pieces would be another test.

    python studies/word_order_pairs.py --output /work/exp/word_order --model multi-gdes-discriminator=DIR ... \\
        [--ngram-order 5] [--pairs-per-language 200]

writes ``pairs.tsv`` (``good<TAB>bad<TAB>language``; the language is the paradigm, so ``mdeberta evaluate --task
minimal-pairs`` reports per language) and ``pairs.<lang>.tsv``, scores every ``--model`` and the n-grams, and
writes ``summary.md`` / ``summary.json`` / ``summary.png`` (with ``--compare A=B``: the exact sign test of model A
against model B on the pairs one gets right and the other wrong).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pretraining_study import Job, add_runner_arguments, mdeberta, run_study, sign_test, study_parser  # noqa: E402

LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "hi", "sw", "ur")  # XNLI less th, zh


def is_word(token: str) -> bool:
    """Only letters and combining marks (Devanagari and Arabic vowel signs are marks, not letters)."""
    return bool(token) and all(unicodedata.category(c)[0] in "LM" for c in token)


def swap_adjacent_words(sentence: str, rng: random.Random) -> str | None:
    """The sentence with one random adjacent pair of distinct letter-only words swapped (never the first word), or
    None when it has no such pair or fewer than 4 words."""
    words = sentence.split()
    if len(words) < 4:
        return None
    spots = [i for i in range(1, len(words) - 1)
             if is_word(words[i]) and is_word(words[i + 1]) and words[i].lower() != words[i + 1].lower()]
    if not spots:
        return None
    i = rng.choice(spots)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def build_pairs(xnli: Path, out: Path, languages: list[str], per_language: int, seed: int) -> Path:
    """``pairs.tsv`` and ``pairs.<lang>.tsv`` from the distinct dev hypotheses (the same sample for every model)."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    for lang in languages:
        with gzip.open(xnli / f"xnli.dev.{lang}.tsv.gz", "rt", encoding="utf-8", newline="") as f:
            sentences = list(dict.fromkeys(" ".join(r["hypothesis"].split())
                                           for r in csv.DictReader(f, delimiter="\t")))
        rng = random.Random(f"{seed}-{lang}")
        rng.shuffle(sentences)
        mine = []
        for sentence in sentences:
            bad = swap_adjacent_words(sentence, rng)
            if bad is not None:
                mine.append((sentence, bad, lang))
            if len(mine) == per_language:
                break
        write_tsv(out / f"pairs.{lang}.tsv", mine)
        rows += mine
    return write_tsv(out / "pairs.tsv", rows)


def ensure_pairs(xnli: Path, out: Path, languages: list[str], per_language: int, seed: int) -> Path:
    """``out/pairs.tsv``: built once (every model of a study is scored on the same file), then reused only when it
    was built with the same languages, count and seed; a different request stops with both, so that a changed
    ``--pairs-per-language`` is never answered silently with the old sample."""
    wanted = {"languages": sorted(languages), "per_language": per_language, "seed": seed}
    pairs, recipe = out / "pairs.tsv", out / "pairs.json"
    if not pairs.is_file():
        build_pairs(xnli, out, languages, per_language, seed)
        recipe.write_text(json.dumps(wanted) + "\n", encoding="utf-8")
        return pairs
    if recipe.is_file():
        built = json.loads(recipe.read_text(encoding="utf-8"))
    else:  # written before pairs.json existed: its languages and per-language count are read from the rows
        counts: dict[str, int] = {}
        with open(pairs, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                counts[row["language"]] = counts.get(row["language"], 0) + 1
        built = {"languages": sorted(counts), "per_language": max(counts.values(), default=0), "seed": seed}
    if built != wanted:
        raise SystemExit(f"{pairs} was built with {built}, this run asks for {wanted}: use another --output, "
                         "or delete the file to rebuild it (every model scored on it must then be scored again)")
    return pairs


def write_tsv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("good\tbad\tlanguage\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return partial.replace(path)


def plan(a: argparse.Namespace) -> list[Job]:
    out, corpus = Path(a.output), Path(a.shared) / "data" / "corpus"
    jobs = []
    for spec in a.model:
        name, _, path = spec.partition("=")
        target = out / "scores" / name
        jobs.append(Job(name, mdeberta("evaluate", "--task", "minimal-pairs", "--model", path, "--eval-file",
                                       str(out / "pairs.tsv"), "--name", name, "--output-dir", str(target),
                                       "--overwrite"), target / "minimal_pairs.json"))
    if a.ngram_order:
        for lang in a.languages:
            model = out / "ngram" / f"{lang}.npz"
            jobs.append(Job(f"ngram/{lang}", mdeberta("ngram", "train", "--input", str(corpus / f"{lang}.txt.gz"),
                                                      "--order", str(a.ngram_order), "--output", str(model)), model))
            target = out / "scores" / "ngram" / lang
            jobs.append(Job(f"ngram/{lang}/score", mdeberta(
                "evaluate", "--task", "minimal-pairs", "--model", str(model), "--eval-file",
                str(out / f"pairs.{lang}.tsv"), "--output-dir", str(target), "--overwrite"),
                target / "minimal_pairs.json", [f"ngram/{lang}"]))
    return jobs


def summarize(a: argparse.Namespace) -> dict:
    """Accuracy per model and language (and the mean over languages) from the evaluations that exist."""
    out = Path(a.output)
    table: dict[str, dict[str, float]] = {}
    for spec in a.model:
        name = spec.partition("=")[0]
        f = out / "scores" / name / "minimal_pairs.json"
        if f.is_file():
            table[name] = per_language(json.loads(f.read_text()))
    if a.ngram_order:
        ngram = {}
        for lang in a.languages:
            f = out / "scores" / "ngram" / lang / "minimal_pairs.json"
            if f.is_file():
                ngram[lang] = json.loads(f.read_text())["overall"]
        if ngram:
            table[f"word {a.ngram_order}-gram, same corpus"] = ngram
    langs = [lang for lang in a.languages if any(lang in row for row in table.values())]
    lines = ["| model | " + " | ".join(langs) + " | mean |", "|---|" + "---:|" * (len(langs) + 1)]
    for name, row in table.items():
        values = [row[lang] for lang in langs if lang in row]
        mean = sum(values) / len(values) if values else float("nan")
        lines.append(f"| {name} | " + " | ".join(f"{row[lang]:.1f}" if lang in row else "–" for lang in langs)
                     + f" | {mean:.1f} |")
    paired = {}
    for spec in a.compare:
        candidate, _, baseline = spec.partition("=")
        hits = [correctness(out / "scores" / name / "scores.jsonl") for name in (candidate, baseline)]
        if all(hits) and len(hits[0]) == len(hits[1]):
            paired[f"{candidate} vs {baseline}"] = test = sign_test(*hits)
            lines.append(f"\n{candidate} vs {baseline}, pairs one gets right and the other wrong: {test['wins']} / "
                         f"{test['losses']}, exact sign test p = {test['p']:.2g}")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"accuracy": table, "paired": paired}, indent=2) + "\n")
    print("\n".join(lines))
    if table:
        plot(table, langs, out / "summary.png")
    return table


def correctness(scores: Path) -> list[int]:
    """1 / 0 per pair, in file order, from an evaluation's scores.jsonl ([] when it is not there)."""
    if not scores.is_file():
        return []
    return [int(json.loads(line)["correct"]) for line in scores.read_text(encoding="utf-8").splitlines()]


def per_language(report: dict) -> dict[str, float]:
    """The per-paradigm accuracies of a minimal-pairs report (the paradigm column of pairs.tsv is the language)."""
    return dict(report["per_paradigm"])


def plot(table: dict[str, dict[str, float]], langs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(langs) + 3) + 3, 4))
    width = 0.8 / len(table)
    for k, (name, row) in enumerate(table.items()):
        xs = [i + k * width for i, lang in enumerate(langs) if lang in row]
        ax.bar(xs, [row[lang] for lang in langs if lang in row], width, label=name)
    ax.axhline(50, color="grey", ls=":", lw=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(langs))], langs)
    ax.set_ylabel("pairs right (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Adjacent-word swaps in XNLI dev hypotheses: the real sentence preferred")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = study_parser(__doc__)
    p.add_argument("--model", nargs="*", default=[], metavar="NAME=DIR", help="models to score (MLM / RTD folders)")
    p.add_argument("--compare", nargs="*", default=[], metavar="CANDIDATE=BASELINE",
                   help="paired sign tests between two --model names over the same pairs")
    p.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=list(LANGUAGES))
    p.add_argument("--pairs-per-language", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ngram-order", type=int, default=0, help="also a word n-gram per language (0: none)")
    add_runner_arguments(p, jobs=1)
    a = p.parse_args()
    bad = [m for m in [*a.model, *a.compare] if "=" not in m or not m.partition("=")[0]]
    if bad:
        p.error(f"--model takes NAME=DIR and --compare CANDIDATE=BASELINE, got {bad}")

    def plan_jobs() -> list[Job]:
        if not a.dry_run:
            ensure_pairs(Path(a.shared) / "data" / "xnli", Path(a.output), a.languages, a.pairs_per_language, a.seed)
        return plan(a)

    return run_study(a, plan_jobs, summarize)


if __name__ == "__main__":
    raise SystemExit(main())
