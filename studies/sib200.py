"""Does pretraining help a small lexical task? SIB-200 topic classification (7 labels) fine-tuned on the 701
English training sentences, model picked on English dev, tested on the 204 parallel test sentences of all 15 XNLI
languages (zero-shot cross-lingual), ``--task text-classification``.

Arms: random init, and the discriminator of the budget curve's RTD+GDES run (``studies/budget_curve.py``, English
corpus_en, 8k tokenizer) at each ``--steps`` checkpoint that exists (exported with ``mdeberta export-checkpoint``),
``--seeds`` seeds each; every arm keeps the same tokenizer, schedule and learning rate. ``summary.md`` /
``summary.json`` / ``summary.png``: per arm the mean and standard deviation over seeds of English and 15-language
average test accuracy, and the paired test of each pretrained arm against random init on the pooled predictions
on the English test predictions (an exact sign test over the examples one arm gets right and the other wrong,
seeds pooled); the majority class of the (parallel) test sets is the floor of every column.

    python studies/sib200.py --budget /work/exp/budget --output /work/exp/sib200 --jobs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pretraining_study import Job, add_runner_arguments, mdeberta, run_study, sign_test, study_parser  # noqa: E402

LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
TOKENS_PER_STEP = 32 * 128


def plan(a: argparse.Namespace) -> list[Job]:
    sib, budget, out = Path(a.shared) / "data" / "sib200", Path(a.budget), Path(a.output)
    tokenizer = budget / "tokenizer"
    arms: dict[str, tuple[list[str], list[str]]] = {"random": (["--model", a.preset, "--random-init"], [])}
    jobs: list[Job] = []
    for step in a.steps:
        if not (budget / "gdes" / "checkpoints" / f"step-{step:08d}.pt").is_file():
            continue
        export = out / "models" / f"gdes-{step}"
        jobs.append(Job(f"export-{step}", mdeberta("export-checkpoint", str(budget / "gdes"), "--step", str(step),
                                                   "--output-dir", str(export), "--overwrite"),
                        export / "discriminator" / "config.json"))
        arms[f"gdes-{step}"] = (["--model", str(export / "discriminator")], [f"export-{step}"])
    tests = [f"{lang}={sib}/test.{lang}.tsv.gz" for lang in LANGUAGES]
    for arm, (model, deps) in arms.items():
        for seed in a.seeds:
            run = out / arm / f"s{seed}"
            jobs.append(Job(f"{arm}/s{seed}/finetune", mdeberta(
                "finetune", "--task", "text-classification", *model, "--tokenizer", str(tokenizer), "--train-file",
                f"{sib}/train.en.tsv.gz", "--dev-file", f"{sib}/dev.en.tsv.gz", "--output-dir", str(run),
                "--seed", str(seed), "--epochs", str(a.epochs), "--batch-size", "32", "--learning-rate", str(a.lr),
                "--warmup-ratio", "0.1", "--max-seq-length", "128", "--eval-every", "22", "--save-every", "0",
                "--log-every", "22", "--device", "cpu", "--overwrite"), run / "best" / "training_info.json", deps))
            jobs.append(Job(f"{arm}/s{seed}/evaluate", mdeberta(
                "evaluate", "--task", "text-classification", "--model", str(run / "best"), "--eval-file", *tests,
                "--max-seq-length", "128", "--output-dir", str(run / "test"), "--name", f"{arm} s{seed}",
                "--overwrite"), run / "test" / "classification_test.json", [f"{arm}/s{seed}/finetune"]))
    return jobs


def _majority(test_file: Path) -> float | None:
    """Accuracy of always answering the test set's most frequent label (the test sets are parallel: the same in
    every language)."""
    import gzip
    from collections import Counter

    if not test_file.is_file():
        return None
    with gzip.open(test_file, "rt", encoding="utf-8") as f:
        import csv

        labels = [row["category"] for row in csv.DictReader(f, delimiter="\t")]
    return 100.0 * Counter(labels).most_common(1)[0][1] / len(labels)


def summarize(a: argparse.Namespace) -> dict:
    out = Path(a.output)
    rows, hits = {}, {}
    for arm_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in ("models", "logs")):
        results = sorted(arm_dir.glob("s*/test/classification_test.json"))
        if not results:
            continue
        runs = [json.loads(p.read_text()) for p in results]
        per_lang = {lang: [r["scores"][lang]["accuracy"] for r in runs] for lang in LANGUAGES}
        avg = [r["avg"]["accuracy"] for r in runs]
        dev = [json.loads((p.parents[1] / "best" / "training_info.json").read_text())["dev_accuracy"] for p in results]
        rows[arm_dir.name] = {"seeds": len(runs), "avg": statistics.mean(avg),
                              "avg_sd": statistics.stdev(avg) if len(avg) > 1 else 0.0,
                              "dev_en": statistics.mean(dev),
                              **{lang: statistics.mean(v) for lang, v in per_lang.items()},
                              "en_sd": statistics.stdev(per_lang["en"]) if len(runs) > 1 else 0.0}
        correct = []
        for p in results:  # English test predictions, per seed in order: the paired test compares like with like
            for line in (p.parent / "predictions_test.jsonl").read_text().splitlines():
                r = json.loads(line)
                if r.get("language") in ("en", None):
                    correct.append(int(r["gold"] == r["predicted"]))
        hits[arm_dir.name] = correct
    tests = {arm: sign_test(hits[arm], hits["random"]) for arm in hits if arm != "random" and "random" in hits
             and len(hits[arm]) == len(hits["random"])}
    order = sorted(rows, key=lambda k: (k != "random", int(k.split("-")[-1]) if k != "random" else 0))
    cols = ["dev_en", "en", "avg", *LANGUAGES[1:]]
    lines = ["| arm | tokens | seeds | " + " | ".join(cols) + " | en vs random (wins / losses, p) |",
             "|---|---:|---:|" + "---:|" * len(cols) + "---|"]
    for arm in order:
        r = rows[arm]
        tokens = "0" if arm == "random" else f"{int(arm.split('-')[-1]) * TOKENS_PER_STEP / 2**20:g}M"
        test = tests.get(arm)
        vs = f"{test['wins']} / {test['losses']}, p = {test['p']:.2g}" if test else "–"
        cells = [f"{r['dev_en']:.1f}", f"{r['en']:.1f} ± {r['en_sd']:.1f}", f"{r['avg']:.1f} ± {r['avg_sd']:.1f}",
                 *(f"{r[lang]:.1f}" for lang in LANGUAGES[1:])]
        lines.append(f"| {arm} | {tokens} | {r['seeds']} | " + " | ".join(cells) + f" | {vs} |")
    majority = _majority(Path(a.shared) / "data" / "sib200" / "test.en.tsv.gz")
    if majority is not None:
        lines.append(f"| majority class | – | – | – | {majority:.1f} | {majority:.1f} | " + " | ".join(
            f"{majority:.1f}" for _ in LANGUAGES[1:]) + " | – |")
    md = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "paired": tests}, indent=2) + "\n")
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(11, 4))
        width = 0.8 / len(order)
        for k, arm in enumerate(order):
            xs = [i + (k - (len(order) - 1) / 2) * width for i in range(len(LANGUAGES) + 1)]
            ax.bar(xs, [rows[arm]["avg"], *(rows[arm][lang] for lang in LANGUAGES)], width, label=arm)
        ax.axhline(100 * 176 / 701, color="grey", ls=":", lw=1, label="majority class (train)")
        ax.set_xticks(range(len(LANGUAGES) + 1), ["avg", *LANGUAGES])
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("SIB-200, fine-tuned on English only: random init vs RTD+GDES pretraining (deberta-v3-tiny)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "summary.png", dpi=120)
    print(md)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = study_parser(__doc__)
    p.add_argument("--budget", required=True, help="the budget curve's output folder (tokenizer/, gdes/)")
    p.add_argument("--preset", default="deberta-v3-tiny")
    p.add_argument("--steps", nargs="+", type=int, default=[256, 1024, 2048], help="budget checkpoints to fine-tune")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--lr", type=float, default=3e-4)
    add_runner_arguments(p, jobs=1)
    a = p.parse_args(argv)
    return run_study(a, lambda: plan(a), summarize)


if __name__ == "__main__":
    raise SystemExit(main())
