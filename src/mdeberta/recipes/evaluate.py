"""``mdeberta evaluate``: XNLI accuracy per language, as a table in the published layout, JSON, a plot and a
per-example prediction file from which every number can be recomputed.

    mdeberta evaluate --model out/xnli/best --task xnli --languages all --eval-dir ../shared/data/xnli

Outputs (``--output-dir``, default ``<model>/eval-xnli-<split>``): ``xnli_<split>.md``, ``xnli_<split>.json``,
``xnli_<split>.png`` and ``predictions_<split>.jsonl`` (language, index, premise, hypothesis, gold, predicted,
probabilities).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mdeberta.arguments import CommonConfig, add_alias, add_config_arguments, whole_number
from mdeberta.data.nli import LABELS, XNLI_LANGUAGES, NLIDataError, NLIExample, load_xnli, read_nli_file
from mdeberta.files import atomic_save, atomic_write_text
from mdeberta.tasks import TASKS
from mdeberta.tasks.base import add_text_task_arguments

logger = logging.getLogger("mdeberta.evaluate")

# Zero-shot cross-lingual transfer (train on English MultiNLI, test on each XNLI language); from the DeBERTa-V3
# paper (He et al., 2021, Table 7) and XLM-R (Conneau et al., 2020). Same numbers as
# shared/reference/xnli_published.json, kept here so that reports do not depend on that folder.
PUBLISHED: dict[str, dict[str, float]] = {
    "XLM-R-base": {"avg": 76.2, "en": 85.8, "fr": 79.7, "es": 80.7, "de": 78.7, "el": 77.5, "bg": 79.6, "ru": 78.1,
                   "tr": 74.2, "ar": 73.8, "vi": 76.5, "th": 74.6, "zh": 76.7, "hi": 72.4, "sw": 66.5, "ur": 68.3},
    "mDeBERTa-V3-base": {"avg": 79.8, "en": 88.2, "fr": 82.6, "es": 84.4, "de": 82.7, "el": 82.3, "bg": 82.4,
                         "ru": 80.8, "tr": 79.5, "ar": 78.5, "vi": 78.1, "th": 76.4, "zh": 79.5, "hi": 75.9,
                         "sw": 73.9, "ur": 72.4},
}
TABLE_COLUMNS = ("avg", *XNLI_LANGUAGES)


# --------------------------------------------------------------------------- scoring
def evaluate_examples(
    model: Any, tokenizer: Any, examples: Sequence[NLIExample], batch_size: int = 64, max_length: int = 256,
    bf16: bool = False,
) -> tuple[float, list[dict[str, Any]]]:
    """Accuracy (percent) and one prediction record per example (labels by name, probabilities per label)."""
    from mdeberta.tasks.nli import nli_logits as predict_logits
    from mdeberta.tasks.nli import nli_output_order

    order = nli_output_order(model.config)
    probs = predict_logits(model, tokenizer, examples, batch_size, max_length, bf16=bf16).softmax(-1)[:, order]
    records, correct = [], 0
    for ex, row in zip(examples, probs.tolist()):
        predicted = max(range(len(LABELS)), key=lambda i: row[i])
        correct += int(predicted == ex.label)
        records.append({
            "language": ex.language, "index": ex.index, "premise": ex.premise, "hypothesis": ex.hypothesis,
            "gold": LABELS[ex.label] if ex.label is not None else None, "predicted": LABELS[predicted],
            "probabilities": {name: round(p, 6) for name, p in zip(LABELS, row)},
        })
    return 100.0 * correct / max(1, len(examples)), records


def evaluate_xnli(
    model: Any, tokenizer: Any, data: dict[str, list[NLIExample]], batch_size: int = 64, max_length: int = 256,
    bf16: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-language accuracy (percent), their average, example counts; and all prediction records."""
    accuracy, counts, records = {}, {}, []
    for lang, examples in data.items():
        start = time.perf_counter()
        accuracy[lang], recs = evaluate_examples(model, tokenizer, examples, batch_size, max_length, bf16)
        counts[lang] = len(examples)
        records += recs
        logger.info("xnli %s: %.2f%% of %d (%.1fs)", lang, accuracy[lang], len(examples), time.perf_counter() - start)
    avg = sum(accuracy.values()) / len(accuracy)
    return {"avg": avg, "accuracy": accuracy, "num_examples": counts}, records


def accuracy_from_predictions(path: str | os.PathLike) -> dict[str, float]:
    """Recompute per-language accuracy (percent) from a predictions file: the check anyone can run."""
    hits: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            hits.setdefault(r["language"] or "all", []).append(int(r["gold"] == r["predicted"]))
    return {lang: 100.0 * sum(h) / len(h) for lang, h in hits.items()}


# --------------------------------------------------------------------------- reports
def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """Rows (name -> {"avg", lang: percent}) as a Markdown table in the published column order."""
    lines = ["| model | " + " | ".join(TABLE_COLUMNS) + " |", "|---|" + "---:|" * len(TABLE_COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def result_row(results: dict[str, Any]) -> dict[str, float]:
    return {"avg": results["avg"], **results["accuracy"]}


def plot_xnli(rows: dict[str, dict[str, float]], path: str | os.PathLike, title: str = "XNLI accuracy",
              columns: list[str] | None = None, ylabel: str = "accuracy (%)", chance: float | None = 100 / 3) -> None:
    """Grouped bar chart: one group per column (avg + languages), one bar per row; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in (columns or TABLE_COLUMNS) if any(c in r for r in rows.values())]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(columns)), 4.2))
    for k, (name, row) in enumerate(rows.items()):
        xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(columns))]
        ax.bar(xs, [row.get(c, 0.0) for c in columns], width, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.1f})")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_xnli_report(
    results: dict[str, Any], records: list[dict[str, Any]], output_dir: str | os.PathLike, name: str, split: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the table (this run + published rows), JSON, plot and predictions; return their paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{stem}_{split}.{ext}" for k, stem, ext in (
        ("markdown", "xnli", "md"), ("json", "xnli", "json"), ("plot", "xnli", "png"),
        ("predictions", "predictions", "jsonl"))}
    rows = {name: result_row(results), **PUBLISHED}
    n_langs = len(results["accuracy"])
    note = "" if n_langs == len(XNLI_LANGUAGES) else (
        f"\nThis run's avg is over the {n_langs} evaluated language(s); the published avg is over all 15.\n")
    capped = sorted(set(results["num_examples"].values()))
    md = (f"# XNLI ({split}) — {name}\n\n" + markdown_table(rows) + note +
          f"\nAccuracy in percent; examples per language: {', '.join(map(str, capped))}. "
          f"Published rows: fine-tuned on English MultiNLI only. Predictions: `{paths['predictions'].name}`.\n")
    atomic_write_text(paths["markdown"], md)
    payload = {"name": name, "split": split, **results, "published": PUBLISHED,
               "predictions_file": paths["predictions"].name, **(extra or {})}
    atomic_write_text(paths["json"], json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(paths["predictions"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    plot_xnli(rows, paths["plot"], title=f"XNLI {split} accuracy: {name} vs published")
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


# --------------------------------------------------------------------------- CLI
def run_evaluate_ner(args: argparse.Namespace) -> dict[str, Any]:
    """Entity F1 per language of a token-classification model: ``--eval-file LANG=PATH ...`` (CoNLL / JSON lines)
    or ``--eval-file google/xtreme:de ...`` (hub, ``--split``); Markdown, JSON, PNG and a predictions file."""
    from mdeberta.data.ner import check_labels, encode_tagged, entity_scores, load_tagged
    from mdeberta.inference import load_token_classifier
    from mdeberta.tasks.token_classification import predict_tags

    if not args.eval_file:
        raise NLIDataError("--task token-classification needs --eval-file LANG=PATH (or hub:LANG) entries")
    model, tokenizer = load_token_classifier(args.model, args.tokenizer, args.device)
    label2id = {v: k for k, v in model.config.id2label.items()}
    split = {"test": "test", "dev": "validation"}[args.split]
    f1, scores, records = {}, {}, []
    for entry in args.eval_file:
        lang, _, path = entry.partition("=") if "=" in entry else (entry.rsplit(":", 1)[-1], "", entry)
        sentences = load_tagged(path, split, lang)[:args.max_eval_examples]
        check_labels(sentences, label2id)
        encoded = encode_tagged(tokenizer, sentences, label2id, args.max_seq_length)
        predicted = predict_tags(model, tokenizer, encoded, [len(s.tokens) for s in sentences], args.eval_batch_size)
        scores[lang] = entity_scores([s.tags for s in sentences], predicted)
        f1[lang] = 100 * scores[lang]["f1"]
        records += [{"language": lang, "index": s.index, "source": s.where, "tokens": s.tokens, "gold": s.tags,
                     "predicted": p} for s, p in zip(sentences, predicted)]
        logger.info("%s: entity F1 %.2f on %d sentences", lang, f1[lang], len(sentences))
    name = args.name or Path(str(args.model).rstrip("/")).name
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    row = {"avg": sum(f1.values()) / len(f1), **f1}
    columns = ["avg", *f1]
    md = ("| model | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
          + f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |\n"
          + "\nEntity-level F1 in percent (seqeval chunking, exact type and boundaries); predictions: "
          + f"`predictions_{args.split}.jsonl`.\n")
    atomic_write_text(out / f"ner_{args.split}.md", md)
    atomic_write_text(out / f"ner_{args.split}.json", json.dumps(
        {"model": str(args.model), "name": name, "split": args.split, "avg": row["avg"], "f1": f1,
         "scores": scores}, indent=2) + "\n")
    atomic_write_text(out / f"predictions_{args.split}.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    plot_xnli({name: row}, out / f"ner_{args.split}.png", title=f"entity F1 ({args.split}): {name}", columns=columns,
              ylabel="entity F1 (%)", chance=None)
    print(md)
    return {"avg": row["avg"], "f1": f1}


def run_evaluate_qa(args: argparse.Namespace) -> dict[str, Any]:
    """Exact match and F1 per language of a QA model: ``--eval-file LANG=PATH ...`` (SQuAD / XQuAD / MLQA JSON) or
    hub entries (``google/xquad:de``); SQuAD's answer normalisation, or MLQA's per language (``--qa-metric``)."""
    from mdeberta.data.qa import encode_qa, load_qa, qa_scores
    from mdeberta.inference import load_question_answerer
    from mdeberta.tasks.question_answering import answer_questions

    if not args.eval_file:
        raise NLIDataError("--task question-answering needs --eval-file LANG=PATH (or hub:LANG) entries")
    model, tokenizer = load_question_answerer(args.model, args.tokenizer, args.device)
    split = {"test": "test", "dev": "validation"}[args.split]
    table, records = {}, []
    for entry in args.eval_file:
        lang, _, path = entry.partition("=") if "=" in entry else (entry.rsplit(":", 1)[-1], "", entry)
        examples = load_qa(path, split, lang)[:args.max_eval_examples]
        encoded = encode_qa(tokenizer, examples, args.max_seq_length, args.doc_stride)
        answers = answer_questions(model, tokenizer, examples, encoded, args.eval_batch_size, args.max_answer_length)
        table[lang] = qa_scores(examples, [a["text"] for a in answers], lang if args.qa_metric == "mlqa" else None)
        records += [{"language": lang, "id": e.id, "question": e.question, "gold": [g["text"] for g in e.answers],
                     "predicted": a["text"], "start": a["start"], "end": a["end"]} for e, a in zip(examples, answers)]
        logger.info("%s: EM %.2f F1 %.2f on %d questions", lang, table[lang]["exact_match"], table[lang]["f1"],
                    len(examples))
    name = args.name or Path(str(args.model).rstrip("/")).name
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    langs = list(table)
    avg = {k: sum(table[x][k] for x in langs) / len(langs) for k in ("exact_match", "f1")}
    md = ("| model | metric | avg | " + " | ".join(langs) + " |\n|---|---|---:|" + "---:|" * len(langs) + "\n"
          + "".join(f"| {name} | {label} | {avg[k]:.1f} | " + " | ".join(f"{table[x][k]:.1f}" for x in langs)
                    + " |\n" for k, label in (("exact_match", "EM"), ("f1", "F1")))
          + f"\n{args.qa_metric.upper()} answer normalisation; predictions: `predictions_{args.split}.jsonl`.\n")
    atomic_write_text(out / f"qa_{args.split}.md", md)
    atomic_write_text(out / f"qa_{args.split}.json", json.dumps(
        {"model": str(args.model), "name": name, "split": args.split, "metric": args.qa_metric, "avg": avg,
         "scores": table}, indent=2) + "\n")
    atomic_write_text(out / f"predictions_{args.split}.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    plot_xnli({f"{name} F1": {"avg": avg["f1"], **{x: table[x]["f1"] for x in langs}},
               f"{name} EM": {"avg": avg["exact_match"], **{x: table[x]["exact_match"] for x in langs}}},
              out / f"qa_{args.split}.png", title=f"QA ({args.split}): {name}", columns=["avg", *langs],
              ylabel="score (%)", chance=None)
    print(md)
    return {"avg": avg, "scores": table}


REPORT_PREFIX = {"text-classification": "classification", "regression": "regression",
                 "multiple-choice": "multiple_choice"}


def _eval_entries(entries: Sequence[str]) -> list[tuple[str, str]]:
    """``LANG=PATH`` -> (LANG, PATH); a bare file -> (its name without suffixes, PATH); hub ``NAME:CONFIG`` ->
    (CONFIG, NAME:CONFIG). Names must be unique: they are the table's columns."""
    pairs = []
    for entry in entries:
        if "=" in entry:
            name, _, path = entry.partition("=")
        elif Path(entry).exists():
            name, path = Path(entry).name, entry
            for suffix in (".gz", ".tsv", ".csv", ".jsonl", ".json"):
                name = name.removesuffix(suffix)
        else:
            name, path = entry.rsplit(":", 1)[-1], entry
        pairs.append((name, path))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise NLIDataError(f"--eval-file: the names {names} repeat; give each file a name as NAME=PATH")
    return pairs


def load_task_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model, tokenizer, task) for ``--task text-classification / regression / multiple-choice``: the task takes
    its labels (and multi-label threshold) from the model's config."""
    from mdeberta.tasks import TaskOptions
    from mdeberta.tasks.multiple_choice import MultipleChoiceTask
    from mdeberta.tasks.regression import RegressionTask
    from mdeberta.tasks.text_classification import TextClassificationTask

    options = TaskOptions.from_args(args)
    if args.task == "multiple-choice":
        from mdeberta.inference import default_device
        from mdeberta.model import DebertaForMultipleChoice
        from mdeberta.tokenizer import DebertaTokenizer

        model = DebertaForMultipleChoice.from_pretrained(args.model)
        if any(k.startswith("classifier") for k in getattr(model, "loading_info", {}).get("missing", [])):
            raise NLIDataError(f"{args.model} has no trained multiple-choice head; fine-tune it first "
                               "(`mdeberta finetune --task multiple-choice`)")
        tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer or args.model)
        return model.to(args.device or default_device()).eval(), tokenizer, MultipleChoiceTask(options, tokenizer)
    from mdeberta.inference import load_classifier

    model, tokenizer = load_classifier(args.model, args.tokenizer, args.device)
    regression = model.config.problem_type == "regression" or model.config.num_labels == 1
    if regression != (args.task == "regression"):
        raise NLIDataError(f"{args.model} is a {'regression' if regression else 'classification'} model; evaluate it "
                           f"with --task {'regression' if regression else 'text-classification'}")
    cls = RegressionTask if regression else TextClassificationTask
    return model, tokenizer, cls.for_model(model.config, tokenizer, options)


def run_evaluate_task(args: argparse.Namespace) -> dict[str, Any]:
    """Any task's scores per evaluation file (zero-shot cross-lingual: ``--eval-file en=... de=...``): a Markdown
    table (one row per metric, one column per file, their average first), JSON, a PNG and every prediction."""
    if not args.eval_file:
        raise NLIDataError(f"--task {args.task} needs --eval-file [NAME=]PATH ... (TSV / CSV / JSON lines / hub)")
    entries = _eval_entries(args.eval_file)
    model, tokenizer, task = load_task_model(args)
    split = {"test": "test", "dev": "validation"}[args.split]
    scores, counts, records = {}, {}, []
    start = time.perf_counter()
    for name, path in entries:
        examples = task.read(path, split, name)[:args.max_eval_examples]
        predictions = task.predict(model, examples, args.eval_batch_size)
        scores[name], counts[name] = task.score(examples, predictions), len(examples)
        records += [task.record(ex, p) for ex, p in zip(examples, predictions)]
        logger.info("%s: %s on %d examples", name, ", ".join(f"{k} {v:.2f}" for k, v in scores[name].items()),
                    len(examples))
    metrics = list(next(iter(scores.values())))
    avg = {m: sum(scores[n][m] for n in scores) / len(scores) for m in metrics}
    name = args.name or Path(str(args.model).rstrip("/")).name
    out, prefix, columns = Path(args.output_dir), REPORT_PREFIX[args.task], ["avg", *scores]
    md = (f"# {args.task} ({args.split}) — {name}\n\n| metric | " + " | ".join(columns) + " |\n|---|"
          + "---:|" * len(columns) + "\n"
          + "".join(f"| {m} | {avg[m]:.1f} | " + " | ".join(f"{scores[n][m]:.1f}" for n in scores) + " |\n"
                    for m in metrics)
          + f"\nExamples per file: {', '.join(f'{n} {c}' for n, c in counts.items())}. Model selection metric: "
          + f"{task.metric}. Predictions: `predictions_{args.split}.jsonl`.\n")
    result = {"model": str(args.model), "name": name, "task": args.task, "split": args.split, "avg": avg,
              "scores": scores, "num_examples": counts, "eval_seconds": round(time.perf_counter() - start, 1)}
    atomic_write_text(out / f"{prefix}_{args.split}.md", md)
    atomic_write_text(out / f"{prefix}_{args.split}.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / f"predictions_{args.split}.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    shown = task.metric
    plot_xnli({f"{name} ({shown})": {"avg": avg[shown], **{n: scores[n][shown] for n in scores}}},
              out / f"{prefix}_{args.split}.png", title=f"{args.task} ({args.split}): {name}", columns=columns,
              ylabel=f"{shown} (%)", chance=None)
    print(md)
    return result


def run_evaluate_minimal_pairs(args: argparse.Namespace) -> dict[str, Any]:
    """Zero-shot grammaticality (BLiMP) of a masked LM / RTD generator (pseudo-log-likelihood), an RTD discriminator
    or a word n-gram model (``.npz`` from ``mdeberta ngram train``): table, JSON, plot and every pair's scores."""
    from mdeberta import minimal_pairs as mp
    from mdeberta.ngram import KneserNeyLM, is_ngram_file

    if not args.eval_file or len(args.eval_file) != 1:
        raise mp.MinimalPairsError("--task minimal-pairs needs one --eval-file (BLiMP JSON lines or good<TAB>bad TSV, "
                                   "e.g. ../shared/data/blimp/blimp.jsonl.gz)")
    pairs = mp.read_minimal_pairs(args.eval_file[0], args.max_pairs_per_paradigm)
    start = time.perf_counter()
    if is_ngram_file(args.model):
        lm = KneserNeyLM.load(args.model)
        records = mp.score_pairs(pairs, lm.scores)
        summary = {"method": f"{lm.order}-gram", **mp.summarize(records)}
    else:
        from mdeberta.inference import default_device
        from mdeberta.model.auto import load_detected
        from mdeberta.tokenizer import DebertaTokenizer

        model = load_detected(args.model).to(args.device or default_device())
        mp.scoring_method(model, args.method)  # a model without an MLM / RTD head fails before any work
        tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer or args.model)
        summary, records = mp.evaluate_minimal_pairs(model, tokenizer, pairs, args.method, args.batch_tokens,
                                                     args.max_seq_length, progress=True)
    summary["eval_seconds"] = round(time.perf_counter() - start, 1)
    name = args.name or Path(str(args.model).rstrip("/")).name
    out = args.output_dir
    reference = args.reference or mp.default_reference()
    paths = mp.write_report(summary, records, out, name, reference, {"model": str(args.model),
                                                                      "eval_file": str(args.eval_file[0])})
    print(Path(paths["markdown"]).read_text(encoding="utf-8").split("\n\n| paradigm")[0])
    return summary


# The files each task writes into its output folder: an existing one is replaced only with --overwrite.
REPORT_FILES = {
    "xnli": ("xnli_{split}.md", "xnli_{split}.json", "xnli_{split}.png", "predictions_{split}.jsonl"),
    "nli": ("predictions.jsonl", "results.json"),
    "token-classification": ("ner_{split}.md", "ner_{split}.json", "ner_{split}.png", "predictions_{split}.jsonl"),
    "question-answering": ("qa_{split}.md", "qa_{split}.json", "qa_{split}.png", "predictions_{split}.jsonl"),
    "minimal-pairs": ("minimal_pairs.md", "minimal_pairs.json", "minimal_pairs.png", "scores.jsonl"),
    **{task: (f"{prefix}_{{split}}.md", f"{prefix}_{{split}}.json", f"{prefix}_{{split}}.png",
              "predictions_{split}.jsonl") for task, prefix in REPORT_PREFIX.items()},
}


def check_report_folder(args: argparse.Namespace) -> Path:
    """The output folder (default beside the model), checked before the model is loaded or anything scored: a file
    there, an unwritable folder, or this task's earlier report without --overwrite is an error."""
    from mdeberta.ngram import is_ngram_file
    from mdeberta.outputs import check_output_folder

    if args.output_dir:
        out = Path(args.output_dir)
    elif args.task == "minimal-pairs":
        out = (Path(args.model).parent if is_ngram_file(args.model) else Path(args.model)) / "eval-minimal-pairs"
    else:
        short = {"token-classification": "ner", "question-answering": "qa", **REPORT_PREFIX}.get(args.task, args.task)
        out = Path(args.model) / f"eval-{short}-{args.split}"
    names = [n.format(split=args.split) for n in REPORT_FILES[args.task]]
    return check_output_folder(out, overwrite=args.overwrite, flag="--output-dir", would_write=names)


def check_input_form(model: str | os.PathLike, data: dict[str, list[NLIExample]]) -> None:
    """A model trained on pairs is not scored on single texts (or the reverse): the form it was trained on is in
    its training_info.json."""
    from mdeberta.data.nli import input_form

    info = Path(model) / "training_info.json"
    trained = json.loads(info.read_text(encoding="utf-8")).get("input_form") if info.is_file() else None
    kinds = {"pair": "pairs", "single": "single texts"}
    for key, examples in data.items():
        if trained and examples and input_form(examples, key) != trained:
            raise NLIDataError(f"{key}: the evaluation data holds {kinds[input_form(examples)]} but {model} was "
                               f"trained on {kinds[trained]}")


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from mdeberta.inference import load_classifier

    args.output_dir = check_report_folder(args)
    if args.task == "minimal-pairs":
        return run_evaluate_minimal_pairs(args)
    if args.task == "token-classification":
        return run_evaluate_ner(args)
    if args.task == "question-answering":
        return run_evaluate_qa(args)
    if args.task in REPORT_PREFIX:
        return run_evaluate_task(args)
    model, tokenizer = load_classifier(args.model, args.tokenizer, args.device)
    name = args.name or Path(str(args.model).rstrip("/")).name
    if args.task == "xnli":
        data = load_xnli(args.eval_dir, args.split, args.languages, args.max_eval_examples)
    else:
        if not args.eval_file or len(args.eval_file) != 1:
            raise NLIDataError("--task nli needs one --eval-file")
        examples = read_nli_file(args.eval_file[0], max_examples=args.max_eval_examples)
        data = {"all": [NLIExample(e.premise, e.hypothesis, e.label, "all", e.index) for e in examples]}
    check_input_form(args.model, {str(args.eval_file[0]) if args.task == "nli" else k: v for k, v in data.items()})
    start = time.perf_counter()
    results, records = evaluate_xnli(model, tokenizer, data, args.eval_batch_size, args.max_seq_length,
                                      args.precision == "bf16")
    results["eval_seconds"] = round(time.perf_counter() - start, 1)
    output_dir = args.output_dir
    if args.task == "xnli":
        paths = write_xnli_report(results, records, output_dir, name, args.split, {"model": str(args.model)})
        print(Path(paths["markdown"]).read_text(encoding="utf-8"))
    else:
        out = Path(output_dir)
        atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        atomic_write_text(out / "results.json", json.dumps({"model": str(args.model), **results}, indent=2) + "\n")
        print(f"accuracy {results['avg']:.2f}% on {len(records)} examples; wrote {out}")
    return results


def add_eval_arguments(p: argparse.ArgumentParser, standalone: bool = True) -> None:
    """XNLI data options shared by ``evaluate`` and ``xnli`` (``standalone`` adds those ``finetune`` also has)."""
    p.add_argument("--languages", default="all", help="'all' or a comma list of XNLI codes (en,fr,...)")
    p.add_argument("--split", default="test", choices=["test", "dev"], help="XNLI split to evaluate")
    p.add_argument("--eval-dir", default="facebook/xnli",
                   help="folder of xnli.{split}.{lang}.tsv[.gz] files, an XNLI-1.0 folder/file, or facebook/xnli")
    p.add_argument("--max-eval-examples", type=int, default=None, help="cap examples per language (quick runs)")
    if standalone:
        p.add_argument("--eval-batch-size", type=int, default=64)
        p.add_argument("--max-seq-length", type=int, default=256, help="pairs are truncated longest-first to this")
        precision = p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                                   help="bf16: bfloat16 autocast (GPU; on this project's AVX2 CPUs it is slower)")
        add_alias(p, "--bf16", precision, const="bf16")
        add_config_arguments(p, CommonConfig, only=("device",))


def cmd_evaluate(args: argparse.Namespace) -> int:
    run_evaluate(args)
    return 0


_positive = whole_number(1)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="XNLI / NLI accuracy of a fine-tuned model (table, JSON, plot)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="fine-tuned model folder or hub id")
    add_config_arguments(p, CommonConfig, only=("tokenizer",))
    p.add_argument("--task", default="xnli",
                   choices=["xnli", *TASKS, "minimal-pairs"],
                   help="xnli: per-language table; nli: accuracy on one --eval-file; text-classification / "
                        "regression / multiple-choice / token-classification / question-answering: scores per "
                        "--eval-file NAME=PATH (zero-shot cross-lingual tables); minimal-pairs: zero-shot "
                        "grammaticality (BLiMP) of an MLM / RTD model or an n-gram .npz")
    p.add_argument("--eval-file", nargs="+", default=None,
                   help="--task nli: one NLI file; token-classification / question-answering: LANG=PATH (CoNLL / "
                        "JSON lines; SQuAD-layout JSON) or hub entries (google/xtreme:de, google/xquad:de)")
    p.add_argument("--doc-stride", type=int, default=128, help="question-answering: overlap of context windows")
    p.add_argument("--max-answer-length", type=int, default=30, help="question-answering: longest answer (tokens)")
    add_text_task_arguments(p, training=False)
    p.add_argument("--qa-metric", choices=["squad", "mlqa"], default="squad",
                   help="question-answering: SQuAD v1.1's answer normalisation, or MLQA's per language")
    p.add_argument("--max-pairs-per-paradigm", type=_positive, default=None,
                   help="minimal-pairs: the first N pairs of each paradigm (quick runs)")
    p.add_argument("--method", choices=["auto", "pll", "rtd"], default="auto",
                   help="minimal-pairs: pll (masked LMs, RTD generators) or rtd (discriminators); auto: from the head")
    p.add_argument("--batch-tokens", type=_positive, default=16384,
                   help="minimal-pairs: tokens per forward pass (all masked copies of a sentence length together)")
    p.add_argument("--reference", default=None,
                   help="minimal-pairs: published BLiMP scores (default: ../shared/reference/blimp_published.json)")
    p.add_argument("--output-dir", default=None, help="default: <model>/eval-<task>-<split>")
    p.add_argument("--overwrite", action="store_true", help="replace this task's earlier report in --output-dir")
    p.add_argument("--name", default=None, help="row name in the table (default: model folder name)")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_evaluate)
