"""``mdeberta compare``: is one fine-tuned run really better than another on the same test set?

A difference of one or two points between XNLI runs of 1000 pairs per language is within seed noise, and an
unpaired reading (two averages, two error bars) wastes the fact that both runs answered *the same* questions.
This job reads the ``predictions_<split>.jsonl`` files that ``mdeberta evaluate`` / ``mdeberta xnli`` write and
compares every candidate run with every baseline run example by example:

    mdeberta compare --baseline out/random-s1 out/random-s2 --candidate out/pretrained-s1 out/pretrained-s2

Per pair it reports both averages, the difference with a 95% confidence interval, the discordant counts
(examples only the candidate gets right / only the baseline gets right) and McNemar's test on them: the exact
two-sided binomial p-value and the normal z. Per group it reports mean and spread of the average over seeds and
the difference of the group means with its standard error over runs (Welch's t: the seed-to-seed noise),
per language the mean difference and how many pairs the candidate wins, and each run's row in the published layout.
``--output cmp.json`` also writes all of it (per-language numbers of every pair included) as JSON, the report as
``cmp.md`` and a PNG of the per-language differences as ``cmp.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mdeberta.data.nli import XNLI_LANGUAGES
from mdeberta.errors import MdebertaError
from mdeberta.files import atomic_save, atomic_write_text
from mdeberta.recipes.evaluate import markdown_table

logger = logging.getLogger("mdeberta.compare")


class PredictionsError(MdebertaError, ValueError):
    """A predictions file that is missing, malformed or does not match the one it is compared with."""


# --------------------------------------------------------------------------- reading
def find_predictions(path: str | os.PathLike, split: str = "test") -> Path:
    """A predictions file, or the one inside a run folder (``eval/``, ``eval-xnli-<split>/`` or the folder itself)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        name = f"predictions_{split}.jsonl"
        for candidate in (p / "eval" / name, p / f"eval-xnli-{split}" / name, p / name, p / "predictions.jsonl"):
            if candidate.is_file():
                return candidate
        raise PredictionsError(f"{p}: no predictions_{split}.jsonl in the folder, in eval/ or in eval-xnli-{split}/")
    raise PredictionsError(f"{p}: no such file or folder")


def read_correctness(path: Path) -> dict[tuple[str, int], tuple[str, bool]]:
    """(language, index) -> (gold label, predicted correctly) for every line of a predictions file."""
    out: dict[tuple[str, int], tuple[str, bool]] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                key, gold, predicted = (r["language"] or "all", int(r["index"])), r["gold"], r["predicted"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise PredictionsError(f"{path}:{line_number}: not a prediction record with language, index, gold "
                                       f"and predicted ({type(e).__name__}: {e})") from None
            if key in out:
                raise PredictionsError(f"{path}:{line_number}: example {key[0]}/{key[1]} appears twice")
            out[key] = (gold, gold == predicted)
    if not out:
        raise PredictionsError(f"{path}: no prediction records")
    return out


# --------------------------------------------------------------------------- statistics
def mcnemar_exact_p(candidate_only: int, baseline_only: int) -> float:
    """Two-sided exact McNemar p-value: P(a Binomial(n, 1/2) count is at least as far from n/2 as observed).

    Computed with exact integers (Python's big ints), so it stays correct for thousands of discordant pairs where
    the normal approximation is the only thing a float-only implementation could offer.
    """
    n, k = candidate_only + baseline_only, min(candidate_only, baseline_only)
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); each next term C(n, i + 1) = C(n, i) * (n - i) / (i + 1), exact in integers
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


@dataclass
class PairedComparison:
    """Candidate vs baseline on the examples both answered; accuracies and differences in percent."""

    candidate: str
    baseline: str
    num_examples: int
    candidate_avg: float  # mean over languages of per-language accuracy (the XNLI "avg" column)
    baseline_avg: float
    difference: float  # candidate - baseline, over all examples
    ci95: tuple[float, float]
    candidate_only: int  # examples only the candidate gets right
    baseline_only: int
    z: float  # (candidate_only - baseline_only) / sqrt(candidate_only + baseline_only)
    p_value: float  # exact two-sided McNemar
    per_language: dict[str, dict[str, float]]


def _language_order(languages: Sequence[str]) -> list[str]:
    known = [lang for lang in XNLI_LANGUAGES if lang in languages]
    return known + sorted(set(languages) - set(known))


Correctness = dict[tuple[str, int], tuple[str, bool]]


def compare_pair(candidate_path: Path, baseline_path: Path, records: dict[Path, Correctness] | None = None,
                 ) -> PairedComparison:
    """Compare two predictions files example by example; they must hold the same examples with the same gold.

    ``records``: files already read (path -> read_correctness), so that a group comparison reads each file once.
    """
    records = records if records is not None else {}
    for path in (candidate_path, baseline_path):
        if path not in records:
            records[path] = read_correctness(path)
    cand, base = records[candidate_path], records[baseline_path]
    if cand.keys() != base.keys():
        only_c, only_b = sorted(cand.keys() - base.keys()), sorted(base.keys() - cand.keys())
        first = (f"{only_c[0][0]}/{only_c[0][1]} only in {candidate_path}" if only_c
                 else f"{only_b[0][0]}/{only_b[0][1]} only in {baseline_path}")
        raise PredictionsError(f"{candidate_path} ({len(cand)} examples) and {baseline_path} ({len(base)}) do not hold "
                               f"the same examples: {len(only_c)} + {len(only_b)} differ, e.g. {first}; evaluate both "
                               "with the same --split, --languages and --max-eval-examples")
    for key in cand:
        if cand[key][0] != base[key][0]:
            raise PredictionsError(f"example {key[0]}/{key[1]}: gold label {cand[key][0]!r} in {candidate_path} but "
                                   f"{base[key][0]!r} in {baseline_path}: not the same test set")
    n = len(cand)
    per_language: dict[str, dict[str, float]] = {}
    counts: dict[str, list[int]] = {}  # language -> [n, candidate right, baseline right, cand only, base only]
    for (lang, index), (_, c_ok) in cand.items():
        b_ok = base[(lang, index)][1]
        row = counts.setdefault(lang, [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += c_ok
        row[2] += b_ok
        row[3] += c_ok and not b_ok
        row[4] += b_ok and not c_ok
    for lang in _language_order(list(counts)):
        m, c_right, b_right, c_only, b_only = counts[lang]
        per_language[lang] = {"num_examples": m, "candidate": 100 * c_right / m, "baseline": 100 * b_right / m,
                              "difference": 100 * (c_right - b_right) / m, "candidate_only": c_only,
                              "baseline_only": b_only, "p_value": mcnemar_exact_p(c_only, b_only)}
    c_only, b_only = sum(r[3] for r in counts.values()), sum(r[4] for r in counts.values())
    diff = (c_only - b_only) / n
    # Variance of the mean of the paired differences d_i in {-1, 0, 1}: (E[d^2] - E[d]^2) / n.
    se = math.sqrt(max(0.0, (c_only + b_only) / n - diff**2) / n)
    return PairedComparison(
        candidate=str(candidate_path), baseline=str(baseline_path), num_examples=n,
        candidate_avg=statistics.fmean(r["candidate"] for r in per_language.values()),
        baseline_avg=statistics.fmean(r["baseline"] for r in per_language.values()),
        difference=100 * diff, ci95=(100 * (diff - 1.96 * se), 100 * (diff + 1.96 * se)),
        candidate_only=c_only, baseline_only=b_only,
        z=(c_only - b_only) / math.sqrt(c_only + b_only) if c_only + b_only else 0.0,
        p_value=mcnemar_exact_p(c_only, b_only), per_language=per_language,
    )


def compare_groups(candidates: Sequence[str | os.PathLike], baselines: Sequence[str | os.PathLike],
                   split: str = "test") -> dict[str, Any]:
    """Every candidate run against every baseline run, plus per-group and per-language summaries."""
    cand_paths = [find_predictions(p, split) for p in candidates]
    base_paths = [find_predictions(p, split) for p in baselines]
    records: dict[Path, Correctness] = {}
    pairs = [compare_pair(c, b, records) for c in cand_paths for b in base_paths]

    def group(avgs: list[float]) -> dict[str, float]:
        return {"runs": len(avgs), "mean_avg": statistics.fmean(avgs),
                "std_avg": statistics.stdev(avgs) if len(avgs) > 1 else 0.0, "min_avg": min(avgs), "max_avg": max(avgs)}

    cand_avgs = {pair.candidate: pair.candidate_avg for pair in pairs}
    base_avgs = {pair.baseline: pair.baseline_avg for pair in pairs}
    languages = list(pairs[0].per_language)
    per_language = {lang: {"mean_difference": statistics.fmean(p.per_language[lang]["difference"] for p in pairs),
                           "candidate_wins": sum(p.per_language[lang]["difference"] > 0 for p in pairs),
                           "pairs": len(pairs)} for lang in languages}
    # Each run's own row in the published layout (avg + languages), from its first pair.
    runs: dict[str, dict[str, float]] = {}
    for pair in pairs:
        for role, path, avg in (("candidate", pair.candidate, pair.candidate_avg),
                                ("baseline", pair.baseline, pair.baseline_avg)):
            runs.setdefault(path, {"avg": avg, **{x: r[role] for x, r in pair.per_language.items()}})
    cand_group, base_group = group(list(cand_avgs.values())), group(list(base_avgs.values()))
    return {"candidate_group": cand_group, "baseline_group": base_group,
            "group_difference": group_difference(cand_group, base_group),
            "candidate_wins": sum(p.difference > 0 for p in pairs), "pairs": [asdict(p) for p in pairs],
            "per_language": per_language, "runs": runs}


def group_difference(candidate: dict[str, float], baseline: dict[str, float]) -> dict[str, float | None]:
    """Difference of the groups' mean averages and Welch's t over runs (seed-to-seed noise, which the per-pair
    McNemar test cannot see: it treats each run as fixed and only the test examples as random)."""
    diff = candidate["mean_avg"] - baseline["mean_avg"]
    if candidate["runs"] < 2 or baseline["runs"] < 2:
        return {"difference": diff, "se": None, "welch_t": None}
    se = math.sqrt(candidate["std_avg"] ** 2 / candidate["runs"] + baseline["std_avg"] ** 2 / baseline["runs"])
    return {"difference": diff, "se": se, "welch_t": diff / se if se > 0 else None}


# --------------------------------------------------------------------------- report
def _short(path: str) -> str:
    """A run's name for the table: the run folder for ``<run>/eval/predictions_test.jsonl``."""
    p = Path(path)
    parent = p.parent.parent if p.parent.name == "eval" or p.parent.name.startswith("eval-") else p.parent
    return parent.name or p.name


def _run_names(paths: Sequence[str]) -> dict[str, str]:
    """Short names for the table, falling back to full paths when two runs would share one."""
    short = {p: _short(p) for p in paths}
    return {p: short[p] if list(short.values()).count(short[p]) == 1 else p for p in paths}


def _group_line(g: dict[str, float | None]) -> str:
    if g["se"] is None:
        return f"group means differ by {g['difference']:+.2f} (seed noise unknown: fewer than 2 runs in a group)"
    t = "undefined" if g["welch_t"] is None else f"{g['welch_t']:+.2f}"
    return f"group means differ by {g['difference']:+.2f} ± {g['se']:.2f} (standard error over runs; Welch t {t})"


def markdown_report(result: dict[str, Any]) -> str:
    c, b = result["candidate_group"], result["baseline_group"]
    names = _run_names(list(result["runs"]))
    lines = [
        f"candidate: {c['runs']} run(s), avg {c['mean_avg']:.2f} ± {c['std_avg']:.2f} (min {c['min_avg']:.1f}, "
        f"max {c['max_avg']:.1f}); baseline: {b['runs']} run(s), avg {b['mean_avg']:.2f} ± {b['std_avg']:.2f} "
        f"(min {b['min_avg']:.1f}, max {b['max_avg']:.1f}); candidate ahead in {result['candidate_wins']} of "
        f"{len(result['pairs'])} pairs",
        _group_line(result["group_difference"]),
        "",
        "| candidate | baseline | candidate avg | baseline avg | difference | 95% CI | only candidate right | "
        "only baseline right | McNemar z | p |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for p in result["pairs"]:
        lines.append(f"| {names[p['candidate']]} | {names[p['baseline']]} | {p['candidate_avg']:.2f} | "
                     f"{p['baseline_avg']:.2f} | {p['difference']:+.2f} | [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | "
                     f"{p['candidate_only']} | {p['baseline_only']} | {p['z']:+.2f} | {p['p_value']:.2g} |")
    langs = list(result["per_language"])
    lines += ["", "| per language | " + " | ".join(langs) + " |", "|---|" + "---:|" * len(langs),
              "| mean difference | " + " | ".join(f"{result['per_language'][x]['mean_difference']:+.1f}" for x in langs)
              + " |",
              "| candidate ahead (pairs) | " + " | ".join(
                  f"{result['per_language'][x]['candidate_wins']}/{result['per_language'][x]['pairs']}" for x in langs)
              + " |"]
    lines += ["", markdown_table({names[path]: row for path, row in result["runs"].items()}).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot_comparison(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Bar per column (avg + languages): mean candidate - baseline difference, whiskers = range over the pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = result["pairs"]
    columns = ["avg", *result["per_language"]]
    diffs = [[p["candidate_avg"] - p["baseline_avg"] for p in pairs]]
    diffs += [[p["per_language"][x]["difference"] for p in pairs] for x in columns[1:]]
    means = [statistics.fmean(d) for d in diffs]
    low = [m - min(d) for m, d in zip(means, diffs)]
    high = [max(d) - m for m, d in zip(means, diffs)]
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(columns)), 4))
    ax.bar(range(len(columns)), means, yerr=[low, high], capsize=3,
           color=["tab:green" if m > 0 else "tab:red" for m in means])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("candidate - baseline (accuracy points)")
    c, b = result["candidate_group"], result["baseline_group"]
    ax.set_title(f"{c['runs']} candidate run(s), avg {c['mean_avg']:.1f} vs {b['runs']} baseline run(s), avg "
                 f"{b['mean_avg']:.1f}; whiskers: range over {len(pairs)} pair(s)", fontsize=9)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def cmd_compare(args: argparse.Namespace) -> int:
    from mdeberta.outputs import check_output_file

    if args.output:
        out = Path(args.output)
        for path in (out, out.with_suffix(".md"), out.with_suffix(".png")):
            check_output_file(path, [*args.candidate, *args.baseline], overwrite=args.overwrite)
    result = compare_groups(args.candidate, args.baseline, args.split)
    report = markdown_report(result)
    print(report, end="")
    if args.output:
        out = Path(args.output)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), report)
        plot_comparison(result, out.with_suffix(".png"))
        logger.info("wrote %s and its .md and .png", out)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="paired significance test of fine-tuned runs on the same test set",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", nargs="+", required=True,
                   help="run folders (of `mdeberta xnli` / `evaluate`) or predictions_<split>.jsonl files")
    p.add_argument("--baseline", nargs="+", required=True, help="the runs to compare against, same forms")
    p.add_argument("--split", default="test", choices=["test", "dev"], help="which predictions file in a run folder")
    p.add_argument("--output", default=None, help="write the result as JSON here (and the table next to it as .md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output (and its .md / .png)")
    p.set_defaults(func=cmd_compare)
