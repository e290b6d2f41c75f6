"""Zero-shot grammaticality on minimal pairs (BLiMP): does the model prefer the acceptable sentence?

A minimal pair is two sentences that differ in one grammatical point ("The cats *are* / *is* here"). A model is
right on a pair only when it scores the good sentence *strictly* higher, so a degenerate model that gives every
sentence the same score gets 0 on those pairs, not 50 (a tie is wrong).

Scores per sentence:

* masked LMs (``DebertaForMaskedLM``, RTD generators): the pseudo-log-likelihood of Salazar et al. (2020), the
  sum over tokens of log P(token | the sentence with that token masked); every masked copy of every sentence runs
  in as few forward passes as ``batch_tokens`` allows (copies of equal length share a batch, no padding);
* RTD discriminators (``DebertaForReplacedTokenDetection``): the sum over tokens of log P(original), one forward
  pass per sentence;
* n-gram language models (:mod:`mdeberta.ngram`): the sentence's log-probability.

Special tokens ([CLS], [SEP]) are never scored. Files: BLiMP's JSON lines (``sentence_good``, ``sentence_bad``,
optional ``UID`` / ``field`` / ``linguistics_term``; ``.gz`` too) or a TSV of ``good<TAB>bad`` (optional third column:
the paradigm; an optional header line naming the columns).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdeberta.errors import MdebertaError
from mdeberta.jsonl import json_object

logger = logging.getLogger("mdeberta.minimal_pairs")

METHODS = ("auto", "pll", "rtd")


class MinimalPairsError(MdebertaError, ValueError):
    """A minimal-pairs file or model that cannot be scored; the message names the file and line or the heads."""


@dataclass(frozen=True)
class MinimalPair:
    good: str
    bad: str
    paradigm: str = "all"  # BLiMP's UID
    phenomenon: str = ""  # BLiMP's linguistics_term
    field: str = ""  # syntax, morphology, semantics, syntax_semantics
    where: str = ""  # file:line, for error messages and the scores file


# --------------------------------------------------------------------------- reading
def _lines(path: Path) -> Sequence[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read().splitlines()
    except OSError as e:
        raise MinimalPairsError(f"{path}: cannot read ({e})") from e


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise MinimalPairsError(f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise MinimalPairsError(f"{where}: {key!r} is empty")
    return value.strip()


def read_minimal_pairs(path: str | os.PathLike, max_per_paradigm: int | None = None) -> list[MinimalPair]:
    """The pairs of a BLiMP JSON-lines file or a ``good<TAB>bad`` TSV, in file order; with ``max_per_paradigm`` the
    first N of each paradigm (BLiMP's pairs are generated independently, so the first N are a fair sample)."""
    path = Path(path)
    if not path.is_file():
        raise MinimalPairsError(f"{path}: no such file")
    jsonl = path.name.lower().removesuffix(".gz").endswith((".jsonl", ".json"))
    pairs: list[MinimalPair] = []
    per_paradigm: dict[str, int] = {}
    for number, raw in enumerate(_lines(path), start=1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise MinimalPairsError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
        if not line:
            continue
        if jsonl:
            record = json_object(line, where, MinimalPairsError, "JSON object")
            missing = [k for k in ("sentence_good", "sentence_bad") if k not in record]
            if missing:
                raise MinimalPairsError(f"{where}: missing field(s) {missing}; the record has {sorted(record)}")
            pair = MinimalPair(_text(record["sentence_good"], "sentence_good", where),
                               _text(record["sentence_bad"], "sentence_bad", where),
                               str(record.get("UID") or "all"), str(record.get("linguistics_term") or ""),
                               str(record.get("field") or ""), where)
        else:
            cells = line.split("\t")
            if number == 1 and cells[:2] in (["good", "bad"], ["sentence_good", "sentence_bad"]):
                continue  # a header
            if len(cells) not in (2, 3):
                raise MinimalPairsError(f"{where}: expected 'good<TAB>bad' (or a third column, the paradigm), got "
                                        f"{len(cells)} column(s)")
            pair = MinimalPair(_text(cells[0], "good", where), _text(cells[1], "bad", where),
                               cells[2].strip() if len(cells) == 3 and cells[2].strip() else "all", where=where)
        if max_per_paradigm is not None:
            if per_paradigm.get(pair.paradigm, 0) >= max_per_paradigm:
                continue
            per_paradigm[pair.paradigm] = per_paradigm.get(pair.paradigm, 0) + 1
        pairs.append(pair)
    if not pairs:
        raise MinimalPairsError(f"{path}: no minimal pairs in the file")
    return pairs


# --------------------------------------------------------------------------- scoring with a model
def scoring_method(model: Any, method: str = "auto") -> str:
    """``pll`` for masked LMs, ``rtd`` for discriminators; a model with neither head is an error naming its head."""
    from mdeberta.model import DebertaForMaskedLM, DebertaForReplacedTokenDetection

    if method not in METHODS:
        raise MinimalPairsError(f"scoring method {method!r}; allowed: {list(METHODS)}")
    kind = ("pll" if isinstance(model, DebertaForMaskedLM) else
            "rtd" if isinstance(model, DebertaForReplacedTokenDetection) else None)
    if kind is None:
        raise MinimalPairsError(f"{type(model).__name__} has no masked-LM or replaced-token-detection head; minimal "
                                "pairs are scored with an MLM model / RTD generator (pseudo-log-likelihood) or an RTD "
                                "discriminator")
    if method != "auto" and method != kind:
        raise MinimalPairsError(f"--method {method} needs a {'masked-LM' if method == 'pll' else 'RTD'} head; "
                                f"{type(model).__name__} is scored with {kind}")
    return kind


def _batches(lengths: Sequence[int], copies: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Sentence indices grouped by length, each group holding at most ``batch_tokens`` tokens of copies (a sentence
    longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        cost = lengths[i] * copies[i]
        if current and (used + cost > batch_tokens or lengths[i] != lengths[current[0]]):
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += cost
    if current:
        groups.append(current)
    return groups


@torch.no_grad()
def sentence_scores(model: Any, tokenizer: Any, sentences: Sequence[str], method: str = "auto",
                    batch_tokens: int = 16384, max_length: int = 128, progress: bool = False,
                    embedding_table: torch.Tensor | None = None) -> list[float]:
    """The score of each sentence (higher = more acceptable): PLL for masked LMs, sum of log P(original) for RTD
    discriminators. Duplicates are scored once. ``embedding_table``: the word embeddings to use instead of the
    model's own (a GDES discriminator during pretraining: E_generator + delta)."""
    kind = scoring_method(model, method)
    unique = list(dict.fromkeys(sentences))
    encoded = tokenizer(unique, truncation=True, max_length=max_length, return_token_type_ids=False,
                        return_attention_mask=False)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    inner = [max(0, n - 2) for n in lengths]  # tokens scored ([CLS] and [SEP] are not)
    groups = _batches(lengths, inner if kind == "pll" else [1] * len(unique), batch_tokens)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = [0.0] * len(unique)
    if progress:
        from tqdm.auto import tqdm

        groups = tqdm(groups, desc=f"minimal pairs ({kind})", unit="batch", leave=False)
    mask_id = tokenizer.mask_token_id
    for group in groups:
        ids = torch.tensor([encoded[i] for i in group], device=device)  # (S, L): one length per group
        n, length = ids.shape
        if length <= 2:
            continue
        if kind == "pll":
            # Copy s*(L-2) + j masks position j + 1 of sentence s; labels carry the true token there only.
            positions = torch.arange(1, length - 1, device=device)
            copies = ids.repeat_interleave(length - 2, dim=0)
            rows = torch.arange(copies.shape[0], device=device)
            cols = positions.repeat(n)
            labels = torch.full_like(copies, -100)
            labels[rows, cols] = copies[rows, cols]
            copies[rows, cols] = mask_id
            logits = model(input_ids=copies, labels=labels, only_masked_logits=True).logits  # (S*(L-2), V)
            logp = logits.float().log_softmax(-1).gather(-1, labels[rows, cols].unsqueeze(-1)).squeeze(-1)
            per_sentence = logp.view(n, length - 2).sum(-1)
        else:
            if embedding_table is not None:
                logits = model(inputs_embeds=torch.nn.functional.embedding(ids, embedding_table)).logits.float()
            else:
                logits = model(input_ids=ids).logits.float()  # (S, L): logit of "replaced"
            per_sentence = torch.nn.functional.logsigmoid(-logits[:, 1:-1]).sum(-1)
        for i, value in zip(group, per_sentence.tolist()):
            totals[i] = value
    model.train(was_training)
    by_text = dict(zip(unique, totals))
    return [by_text[s] for s in sentences]


# --------------------------------------------------------------------------- pairs -> accuracy
def score_pairs(pairs: Sequence[MinimalPair], score_fn: Callable[[list[str]], list[float]]) -> list[dict[str, Any]]:
    """One record per pair: its scores and whether the good sentence scored strictly higher."""
    sentences = [s for p in pairs for s in (p.good, p.bad)]
    scores = score_fn(sentences)
    return [{"paradigm": p.paradigm, "phenomenon": p.phenomenon, "field": p.field, "where": p.where,
             "good": p.good, "bad": p.bad, "score_good": round(g, 6), "score_bad": round(b, 6), "correct": g > b}
            for p, g, b in zip(pairs, scores[0::2], scores[1::2])]


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (percent) per paradigm, per phenomenon (the mean of its paradigms, BLiMP's convention) and overall
    (the mean of the paradigms; with BLiMP's 1000 pairs each, the same as over pairs); ties counted."""
    hits: dict[str, list[bool]] = {}
    phenomenon_of: dict[str, str] = {}
    ties = 0
    for r in records:
        hits.setdefault(r["paradigm"], []).append(bool(r["correct"]))
        phenomenon_of[r["paradigm"]] = r["phenomenon"]
        ties += int(r["score_good"] == r["score_bad"])
    paradigms = {k: 100.0 * sum(v) / len(v) for k, v in sorted(hits.items())}
    groups: dict[str, list[float]] = {}
    for k, acc in paradigms.items():
        if phenomenon_of[k]:
            groups.setdefault(phenomenon_of[k], []).append(acc)
    phenomena = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    return {"overall": sum(paradigms.values()) / len(paradigms), "num_pairs": len(records), "ties": ties,
            "per_paradigm": paradigms, "per_phenomenon": phenomena,
            "pairs_per_paradigm": {k: len(v) for k, v in sorted(hits.items())}}


def evaluate_minimal_pairs(model: Any, tokenizer: Any, pairs: Sequence[MinimalPair], method: str = "auto",
                           batch_tokens: int = 16384, max_length: int = 128,
                           progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, per-pair records) of a model on minimal pairs."""
    kind = scoring_method(model, method)
    records = score_pairs(pairs, lambda s: sentence_scores(model, tokenizer, s, kind, batch_tokens, max_length,
                                                           progress))
    return {"method": kind, **summarize(records)}, records


# --------------------------------------------------------------------------- published rows and reports
PUBLISHED_NAMES = {"ngram": "5-gram (Gigaword)", "lstm": "LSTM", "txl": "Transformer-XL", "gpt2": "GPT-2"}


def published_rows(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """BLiMP's published models and human agreement (``shared/reference/blimp_published.json``) as rows of
    overall / per-phenomenon / per-paradigm percentages; {} when the file is absent."""
    if path is None or not Path(path).is_file():
        return {}
    ref = json.loads(Path(path).read_text(encoding="utf-8"))
    rows: dict[str, dict[str, Any]] = {}
    for key, name in PUBLISHED_NAMES.items():
        paradigms = {k: 100 * v[key] for k, v in ref["per_paradigm"].items() if key in v}
        phenomena = {k: 100 * v[key] for k, v in ref["per_phenomenon"].items() if key in v}
        rows[name] = {"overall": sum(paradigms.values()) / len(paradigms), "per_paradigm": paradigms,
                      "per_phenomenon": phenomena}
    human = {k: 100 * v for k, v in ref.get("human_agreement_per_paradigm", {}).items()}
    if human:
        groups: dict[str, list[float]] = {}
        for k, v in human.items():
            groups.setdefault(ref["per_paradigm"].get(k, {}).get("linguistics_term", ""), []).append(v)
        rows["human"] = {"overall": sum(human.values()) / len(human), "per_paradigm": human,
                         "per_phenomenon": {k: sum(v) / len(v) for k, v in groups.items() if k}}
    return rows


def default_reference() -> Path | None:
    """../shared/reference/blimp_published.json beside a checkout, when it is there."""
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = base.parent / "shared" / "reference" / "blimp_published.json"
        if candidate.is_file():
            return candidate
    return None


def markdown_report(name: str, summary: dict[str, Any], published: dict[str, dict[str, Any]]) -> str:
    rows = {name: summary, **published}
    phenomena = list(summary["per_phenomenon"]) or []
    columns = ["overall", *phenomena]
    head = "| model | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"

    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get("overall") if column == "overall" else row.get("per_phenomenon", {}).get(column)
        return "–" if value is None else f"{value:.1f}"

    table = head + "".join(f"| {n} | " + " | ".join(cell(r, c) for c in columns) + " |\n" for n, r in rows.items())
    paradigms = "| paradigm | pairs | " + " | ".join(rows) + " |\n|---|---:|" + "---:|" * len(rows) + "\n"
    for k, n in summary["pairs_per_paradigm"].items():
        values = [r.get("per_paradigm", {}).get(k) for r in rows.values()]
        paradigms += f"| {k} | {n} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in values) + " |\n"
    return (f"# Minimal pairs — {name}\n\n{table}\nAccuracy in percent ({summary['num_pairs']} pairs, method "
            f"{summary['method']}; a tie counts as wrong: {summary['ties']} ties). Overall: mean over paradigms; a "
            "phenomenon: mean over its paradigms." + (
                " Published rows: BLiMP (Warstadt et al., 2020), full-sentence log-probabilities of models trained "
                "on 83M tokens (LSTM) to 40 GB (GPT-2)." if published else "") + "\n\n" + paradigms)


def plot_report(name: str, summary: dict[str, Any], published: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped bars per phenomenon (and overall): this model beside the published rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mdeberta.files import atomic_save

    rows = {name: summary, **published}
    columns = ["overall", *summary["per_phenomenon"]]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(8, 0.8 * len(columns)), 4.5))
    for k, (label, row) in enumerate(rows.items()):
        values = [row.get("overall") if c == "overall" else row.get("per_phenomenon", {}).get(c) for c in columns]
        xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(columns))]
        ax.bar(xs, [v if v is not None else 0 for v in values], width, label=label)
    ax.axhline(50, color="grey", linestyle=":", linewidth=1, label="chance (50)")
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Minimal pairs: {name} ({summary['num_pairs']} pairs, {summary['method']})")
    ax.legend(fontsize=7, ncols=3, loc="lower right")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_report(summary: dict[str, Any], records: Sequence[dict[str, Any]], output_dir: str | os.PathLike,
                 name: str, reference: str | os.PathLike | None = None, extra: dict[str, Any] | None = None,
                 ) -> dict[str, Path]:
    """``minimal_pairs.md`` / ``.json`` / ``.png`` and ``scores.jsonl`` (every pair's two scores)."""
    from mdeberta.files import atomic_write_text

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # BLiMP's published rows only beside BLiMP's own paradigms (a TSV of other pairs is not comparable to them)
    published = {k: v for k, v in published_rows(reference).items()
                 if set(v["per_paradigm"]) & set(summary["per_paradigm"])}
    paths = {"markdown": out / "minimal_pairs.md", "json": out / "minimal_pairs.json",
             "plot": out / "minimal_pairs.png", "scores": out / "scores.jsonl"}
    atomic_write_text(paths["scores"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(paths["json"], json.dumps({"name": name, **summary, **(extra or {}),
                                                 "published": {k: v["overall"] for k, v in published.items()}},
                                                indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown_report(name, summary, published))
    plot_report(name, summary, published, paths["plot"])
    return paths
