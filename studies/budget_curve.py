"""What does pretraining teach, token by token? BLiMP minimal pairs (and XNLI-en fine-tuning) along one run.

One pretraining run per objective on English ``corpus_en`` (8k tokenizer, deberta-v3-tiny, 32 x 128 tokens a step,
the schedule of ``--max-steps`` 8192 = 33.6M tokens), every checkpoint kept; at each budget step (0 = the run's own
initial weights, then 2^k x 1M tokens) the checkpoint is exported (``mdeberta export-checkpoint``) and scored on
BLiMP (``mdeberta evaluate --task minimal-pairs``): the generator / MLM model by pseudo-log-likelihood, the
discriminator by log P(original). A Kneser-Ney 5-gram trained on the same corpus (``mdeberta ngram train``) is the
floor measured on the same text. Every checkpoint is also scored on 1000 English word-order pairs (real XNLI dev
hypotheses against one adjacent-word swap, ``studies/word_order_pairs.py``; ``--word-order-pairs 0``: none), the
contrast on which pretraining moved first in RESULTS.md's tenth round, each budget tested against the same model's
step 0 with the exact sign test. With ``--finetune`` each budget's discriminator / MLM model is also fine-tuned on
the 18k English NLI pairs (3 seeds, full English XNLI test), as in the pretraining study.

Every step is a command line (``--dry-run`` prints them) whose output marks it done; pretraining runs continue with
``--resume`` (run this script again in a later session), and the evaluations pick up whatever checkpoints exist::

    python studies/budget_curve.py --output runs/budget --jobs 2            # pretrain + score what exists
    python studies/budget_curve.py --output runs/budget --no-pretrain       # only score the checkpoints so far
    python studies/budget_curve.py --output runs/budget --summary-only      # curve.md / curve.json / curve.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pretraining_study import Job, add_runner_arguments, mdeberta, run_study, sign_test, study_parser, welch_t  # noqa: E402
from word_order_pairs import correctness, ensure_pairs  # noqa: E402

TOKENS_PER_STEP = 32 * 128
BUDGET_STEPS = (0, 256, 512, 1024, 2048, 4096, 8192)  # 0, 1M, 2M, 4M, 8M, 16M, 32M tokens (2^20 each)
OBJECTIVES = {"gdes": ["--embedding-sharing", "gdes"], "es": ["--embedding-sharing", "es"],
              "none": ["--embedding-sharing", "none"], "mlm": ["--objective", "mlm"]}
PARTS = {"mlm": ("model",), "rtd": ("generator", "discriminator")}


def parts_of(objective: str) -> tuple[str, ...]:
    return PARTS["mlm" if objective == "mlm" else "rtd"]


def plan(a: argparse.Namespace) -> list[Job]:
    shared, out = Path(a.shared), Path(a.output)
    corpus = shared / "data" / "corpus_en"
    blimp = shared / "data" / "blimp" / "blimp.jsonl.gz"
    tok = out / "tokenizer"
    jobs = [Job("tokenizer", mdeberta("tokenizer", "train", "--input", str(corpus), "--output-dir", str(tok),
                                      "--vocab-size", "8000", "--input-sentence-size", "300000", "--num-threads",
                                      "1"), tok / "spm.model"),
            Job("ngram", mdeberta("ngram", "train", "--input", str(corpus), "--order", "5", "--output",
                                  str(out / "ngram5.npz")), out / "ngram5.npz"),
            Job("ngram/blimp", mdeberta("evaluate", "--task", "minimal-pairs", "--model", str(out / "ngram5.npz"),
                                        "--eval-file", str(blimp), "--name", "5-gram (corpus_en)", "--output-dir",
                                        str(out / "blimp" / "ngram5"), "--overwrite"),
                out / "blimp" / "ngram5" / "minimal_pairs.json", ["ngram"])]
    if a.word_order_pairs:
        target = out / "word_order" / "ngram5"
        jobs.append(Job("ngram/word-order", mdeberta(
            "evaluate", "--task", "minimal-pairs", "--model", str(out / "ngram5.npz"), "--eval-file",
            str(out / "word_order" / "pairs.tsv"), "--name", "5-gram (corpus_en)", "--output-dir", str(target),
            "--overwrite"), target / "minimal_pairs.json", ["ngram"]))
    sample = ["--max-pairs-per-paradigm", str(a.pairs_per_paradigm)] if a.pairs_per_paradigm else []
    for objective in a.objectives:
        run = out / objective
        if a.pretrain:  # run inside the output folder: the run records its paths relative to it
            resume = ["--resume"]  # continues the run there, or starts it
            jobs.append(Job(f"{objective}/pretrain", mdeberta(
                "pretrain", "--data", str(corpus), "--tokenizer", "tokenizer", "--model-preset", a.preset,
                "--max-steps", str(a.steps), "--batch-size", "32", "--max-seq-length", "128", "--precision",
                a.precision, "--seed", "42", *OBJECTIVES[objective], "--output-dir", objective, "--num-workers", "0",
                "--log-every", "64", "--save-every", "256", "--keep-last", "0", "--no-progress", *resume),
                run / "export" / parts_of(objective)[-1] / "config.json", ["tokenizer"], cwd=out))
        kept = sorted(int(c.stem.removeprefix("step-")) for c in (run / "checkpoints").glob("step-*.pt"))
        for step in sorted({0, *kept}) if a.all_checkpoints else BUDGET_STEPS:
            if step > a.steps or (step and not (run / "checkpoints" / f"step-{step:08d}.pt").is_file()):
                continue
            export = out / "exports" / objective / f"step-{step}"
            deps = [] if step else ["tokenizer"]
            jobs.append(Job(f"{objective}/step-{step}/export", mdeberta(
                "export-checkpoint", str(run), "--step", str(step), "--output-dir", str(export), "--overwrite"),
                export / "tokenizer" / "spm.model", deps))
            for part in parts_of(objective):
                target = out / "blimp" / objective / f"step-{step}" / part
                jobs.append(Job(f"{objective}/step-{step}/{part}/blimp", mdeberta(
                    "evaluate", "--task", "minimal-pairs", "--model", str(export / part), "--eval-file", str(blimp),
                    *sample, "--name", f"{objective} {part} {step * TOKENS_PER_STEP / 2**20:g}M",
                    "--output-dir", str(target), "--overwrite"), target / "minimal_pairs.json",
                    [f"{objective}/step-{step}/export"]))
                if a.word_order_pairs:
                    target = out / "word_order" / objective / f"step-{step}" / part
                    jobs.append(Job(f"{objective}/step-{step}/{part}/word-order", mdeberta(
                        "evaluate", "--task", "minimal-pairs", "--model", str(export / part), "--eval-file",
                        str(out / "word_order" / "pairs.tsv"), "--name", f"{objective} {part} {step}",
                        "--output-dir", str(target), "--overwrite"), target / "minimal_pairs.json",
                        [f"{objective}/step-{step}/export"]))
            if a.finetune:
                nli = shared / "data" / "nli_en"
                model = export / ("model" if objective == "mlm" else "discriminator")
                for seed in a.seeds:
                    ft = out / "finetune" / objective / f"step-{step}" / f"s{seed}"
                    jobs.append(Job(f"{objective}/step-{step}/finetune-s{seed}", mdeberta(
                        "xnli", "--model", str(model), "--tokenizer", str(export / "tokenizer"), "--seed", str(seed),
                        "--train-file", str(nli / "mnli_train_subset_8999.tsv.gz"),
                        str(nli / "snli_train_subset_8999.tsv.gz"), "--eval-dir", str(shared / "data" / "xnli"),
                        "--languages", "en", "--max-seq-length", "128", "--learning-rate", "3e-4", "--warmup-ratio",
                        "0.1", "--epochs", "2", "--eval-every", "250", "--max-dev-examples", "1000", "--save-every",
                        "100000", "--log-every", "50", "--name", f"{objective} {step * TOKENS_PER_STEP / 2**20:g}M",
                        "--output-dir", str(ft), "--resume"),
                        ft / "xnli_summary.json", [f"{objective}/step-{step}/export"]))
    return jobs


def read_curves(root: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, dict]]]:
    """Accuracy per model ("objective part") and token budget from ``root/<objective>/step-N/<part>``, and the exact
    sign test of every budget against the same model's step 0 on the same pairs (where both have per-pair scores)."""
    curves: dict[str, dict[int, float]] = {}
    paired: dict[str, dict[int, dict]] = {}
    for path in sorted(root.glob("*/step-*/*/minimal_pairs.json")):
        objective, step, part = path.parts[-4], int(path.parts[-3].removeprefix("step-")), path.parts[-2]
        name = f"{objective} {part}"
        curves.setdefault(name, {})[step * TOKENS_PER_STEP] = json.loads(path.read_text())["overall"]
        hits, init = (correctness(root / objective / f"step-{s}" / part / "scores.jsonl") for s in (step, 0))
        if step and hits and len(hits) == len(init):
            paired.setdefault(name, {})[step * TOKENS_PER_STEP] = sign_test(hits, init)
    return curves, paired


def table(curves: dict[str, dict[int, float]], paired: dict[str, dict[int, dict]], digits: int = 1) -> list[str]:
    """Markdown rows: accuracy at each budget, with the sign test's p against step 0 where there is one."""
    tokens = sorted({t for c in curves.values() for t in c})
    lines = ["| model | " + " | ".join(f"{t / 2**20:g}M" for t in tokens) + " |", "|---|" + "---:|" * len(tokens)]
    for name, curve in curves.items():
        cells = [(f"{curve[t]:.{digits}f}" + (f" (p={paired[name][t]['p']:.1g})" if t in paired.get(name, {}) else ""))
                 if t in curve else "–" for t in tokens]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def training_loss(out: Path, key: str = "mlm_loss") -> dict[str, dict[int, float]]:
    """Per objective, the generator's (or MLM model's) training loss logged at each scored budget step: when the
    curves move is read against when the model leaves the unigram plateau."""
    losses: dict[str, dict[int, float]] = {}
    for metrics in sorted(out.glob("*/metrics.jsonl")):
        logged = {}
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if key in row and "step" in row:
                logged[row["step"]] = row[key]
        steps = {int(f.name.removeprefix("step-")) for f in (out / "exports" / metrics.parent.name).glob("step-*")}
        if logged and steps & set(logged):
            losses[metrics.parent.name] = {s * TOKENS_PER_STEP: logged[s] for s in sorted(steps & set(logged))}
    return losses


def finetune_runs(out: Path) -> dict[str, dict[int, list[Path]]]:
    """Objective -> token budget -> its finished English NLI fine-tunes (``finetune/<objective>/step-N/s<seed>``)."""
    runs: dict[str, dict[int, list[Path]]] = {}
    for summary in sorted((out / "finetune").glob("*/step-*/s*/xnli_summary.json")):
        run = summary.parent
        step = int(run.parent.name.removeprefix("step-"))
        runs.setdefault(run.parent.parent.name, {}).setdefault(step * TOKENS_PER_STEP, []).append(run)
    return runs


def finetune_rows(out: Path) -> dict[str, dict]:
    """XNLI-en test accuracy of every fine-tuned budget against random init. Random init is every run's step 0 (the
    same architecture's initial weights; pooled over objectives): Welch's t over seeds, and McNemar's test on every
    pretrained x random pair of runs (``mdeberta compare``'s paired comparison over the 5010 test pairs)."""
    from mdeberta.recipes.compare import compare_groups

    def english(run: Path) -> float:
        return json.loads((run / "xnli_summary.json").read_text())["accuracy"]["en"]

    runs = finetune_runs(out)
    random_init = [run for by_budget in runs.values() for run in by_budget.get(0, [])]
    rows: dict[str, dict] = {}
    if random_init:
        rows["random init"] = {"tokens": 0, "en": [english(r) for r in random_init]}
    for objective, by_budget in runs.items():
        for tokens in sorted(t for t in by_budget if t):
            row: dict = {"tokens": tokens, "en": [english(r) for r in by_budget[tokens]]}
            if random_init:
                cmp = compare_groups(by_budget[tokens], random_init)
                row["welch_vs_random"] = welch_t(row["en"], rows["random init"]["en"])
                row["mcnemar_vs_random"] = [{"difference": p["difference"], "z": p["z"], "p": p["p_value"]}
                                            for p in cmp["pairs"]]
            rows[f"{objective} {tokens / 2**20:g}M"] = row
    return rows


def crossing(points: list[tuple[int, float, float]]) -> dict | None:
    """Where the fine-tuned gap to random init reaches 0, extrapolated: a weighted least-squares line of the gap
    (points: tokens, difference, its standard error over seeds) against log2(tokens), weights 1 / se^2. Its
    uncertainty is the seed noise carried through the fit (delta method), not the error of assuming a straight
    line; None with fewer than two budgets or a zero standard error."""
    if len(points) < 2 or any(se <= 0 for _, _, se in points):
        return None
    x = [math.log2(t / 2**20) for t, _, _ in points]
    w = [1 / se**2 for _, _, se in points]
    sw, sx = sum(w), sum(wi * xi for wi, xi in zip(w, x))
    sxx = sum(wi * xi * xi for wi, xi in zip(w, x))
    sy = sum(wi * d for wi, (_, d, _) in zip(w, points))
    sxy = sum(wi * xi * d for wi, xi, (_, d, _) in zip(w, x, points))
    det = sw * sxx - sx * sx
    if det <= 0:
        return None
    slope, intercept = (sw * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det
    var_slope, var_intercept, cov = sw / det, sxx / det, -sx / det
    fit = {"slope_per_doubling": slope, "slope_se": var_slope**0.5, "gap_at_1M": intercept}
    if slope <= 0:
        return {**fit, "crossing_tokens": None}  # the gap does not close along this line
    x0 = -intercept / slope
    se_x0 = max(0.0, var_intercept + x0 * x0 * var_slope + 2 * x0 * cov) ** 0.5 / slope
    return {**fit, "crossing_tokens": 2**x0 * 2**20, "crossing_range95": [2 ** (x0 - 1.96 * se_x0) * 2**20,
                                                                          2 ** (x0 + 1.96 * se_x0) * 2**20]}


def extrapolate(rows: dict[str, dict]) -> dict[str, dict]:
    """Per objective, ``crossing`` over its fine-tuned budgets (the rows ``finetune_rows`` compared with random
    init)."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    for name, row in rows.items():
        if row.get("welch_vs_random"):
            diff, se, _ = row["welch_vs_random"]
            points.setdefault(name.rsplit(" ", 1)[0], []).append((row["tokens"], diff, se))
    fits = {objective: crossing(p) for objective, p in points.items()}
    return {objective: fit for objective, fit in fits.items() if fit}


def finetune_table(rows: dict[str, dict]) -> list[str]:
    lines = ["| model | XNLI en test per seed | mean ± sd | vs random init: diff ± se (Welch t) | McNemar over the "
             "pretrained x random pairs |", "|---|---|---:|---|---|"]
    for name, row in rows.items():
        en = row["en"]
        sd = statistics.stdev(en) if len(en) > 1 else 0.0
        welch, pairs = row.get("welch_vs_random"), row.get("mcnemar_vs_random", [])
        diff = f"{welch[0]:+.2f} ± {welch[1]:.2f} (t {welch[2]:+.1f})" if welch else "–"
        paired = "–"
        if pairs:
            better = sum(p["difference"] > 0 and p["p"] < 0.05 for p in pairs)
            worse = sum(p["difference"] < 0 and p["p"] < 0.05 for p in pairs)
            zs = [p["z"] for p in pairs]
            paired = (f"{better} better, {worse} worse, {len(pairs) - better - worse} n.s. of {len(pairs)} "
                      f"(z {min(zs):+.1f} to {max(zs):+.1f})")
        lines.append(f"| {name} | {' / '.join(f'{x:.1f}' for x in en)} | {statistics.mean(en):.1f} ± {sd:.1f} | "
                     f"{diff} | {paired} |")
    return lines


def overall(path: Path) -> float | None:
    return json.loads(path.read_text())["overall"] if path.is_file() else None


def summarize(a: argparse.Namespace) -> None:
    """curve.json / curve.md / curve.png: BLiMP (and, where scored, English word-order pairs) accuracy against
    pretraining tokens for every scored model, beside the 5-gram trained on the same corpus."""
    out = Path(a.output)
    panels = {"BLiMP": (*read_curves(out / "blimp"), overall(out / "blimp" / "ngram5" / "minimal_pairs.json")),
              "word order": (*read_curves(out / "word_order"),
                             overall(out / "word_order" / "ngram5" / "minimal_pairs.json"))}
    panels = {k: v for k, v in panels.items() if v[0]}
    finetuned = finetune_rows(out)
    if not panels and not finetuned:
        print("nothing scored yet")
        return
    md = []
    for title, (curves, paired, ngram) in panels.items():
        what = ("BLiMP" if title == "BLiMP" else "English word-order pairs (XNLI dev hypotheses against one adjacent-"
                "word swap, studies/word_order_pairs.py)")
        md += [f"## {what}", "", *table(curves, paired), ""]
        if ngram is not None:
            md += [f"5-gram on the same corpus: {ngram:.1f}", ""]
    losses = training_loss(out)
    if losses:
        configs = sorted((out / "exports").glob("*/step-0/*/config.json"))  # what a uniform guess spreads over
        vocab = json.loads(configs[0].read_text())["vocab_size"] if configs else None
        at_init = f"; ln {vocab} = {math.log(vocab):.1f} at init" if vocab else ""
        md += [f"## Training MLM loss logged at those steps (the generator's{at_init})", "",
               *table({f"{k} MLM loss": v for k, v in losses.items()}, {}, digits=2), ""]
    if finetuned:
        md += ["## XNLI-en after fine-tuning on the 18k English NLI pairs (full English test set, 5010 pairs)", "",
               *finetune_table(finetuned), ""]
        for objective, fit in extrapolate(finetuned).items():
            md.append(f"{objective}: the gap to random init changes by {fit['slope_per_doubling']:+.2f} ± "
                      f"{fit['slope_se']:.2f} points per doubling of tokens; " + (
                          "it does not close along this line" if fit["crossing_tokens"] is None else
                          f"it reaches 0 at {fit['crossing_tokens'] / 2**20:.3g}M tokens (95%, seed noise only: "
                          f"{fit['crossing_range95'][0] / 2**20:.3g}-{fit['crossing_range95'][1] / 2**20:.3g}M)"))
        md.append("")
    md += ["(p: exact sign test against the same model's step 0 on the same pairs)"]
    (out / "curve.md").write_text("\n".join(md) + "\n")
    def by_budget(curves: dict) -> dict:  # JSON keys: the token count as a string
        return {name: {str(t): v for t, v in curve.items()} for name, curve in curves.items()}

    blimp, word_order = (panels.get(title, ({}, {}, None)) for title in ("BLiMP", "word order"))
    (out / "curve.json").write_text(json.dumps(
        {"curves": by_budget(blimp[0]), "ngram5": blimp[2], "word_order": by_budget(word_order[0]),
         "word_order_ngram5": word_order[2], "training_mlm_loss": by_budget(losses),
         "paired_vs_step0": {title: by_budget(paired) for title, (_, paired, _) in panels.items()},
         "finetune_xnli_en": finetuned, "finetune_crossing": extrapolate(finetuned)}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(panels) + bool(finetuned)
    fig, axes = plt.subplots(1, count, figsize=(7 * count, 4.2), squeeze=False)
    for ax, (title, (curves, _, ngram)) in zip(axes[0], panels.items()):
        for name, curve in curves.items():
            xs = sorted(curve)
            ax.plot([max(x, 2**18) / 2**20 for x in xs], [curve[x] for x in xs], marker="o", label=name)
        if ngram is not None:
            ax.axhline(ngram, color="k", ls="--", lw=1, label=f"5-gram, same corpus ({ngram:.1f})")
        ax.axhline(50, color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("pretraining tokens (M; step 0 drawn at 0.25M)")
        ax.set_ylabel(f"{title} accuracy (%)")
        ax.set_title(f"{title} along pretraining (deberta-v3-tiny, corpus_en)")
        ax.legend(fontsize=7)
    if finetuned:
        plot_finetuning(axes[0][-1], finetuned)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    print("\n".join(md))


def plot_finetuning(ax, rows: dict[str, dict]) -> None:
    """Mean ± sd of the seeds per objective against tokens, random init as a band, every seed as a dot."""
    by_objective: dict[str, list[dict]] = {}
    for name, row in rows.items():
        if row["tokens"]:
            by_objective.setdefault(name.rsplit(" ", 1)[0], []).append(row)
    if "random init" in rows:
        en = rows["random init"]["en"]
        sd = statistics.stdev(en) if len(en) > 1 else 0.0
        ax.axhspan(statistics.mean(en) - sd, statistics.mean(en) + sd, color="grey", alpha=0.3,
                   label=f"random init ({statistics.mean(en):.1f} ± {sd:.1f})")
    for objective, points in by_objective.items():
        xs = [p["tokens"] / 2**20 for p in points]
        means = [statistics.mean(p["en"]) for p in points]
        sds = [statistics.stdev(p["en"]) if len(p["en"]) > 1 else 0.0 for p in points]
        line = ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=objective)
        for x, p in zip(xs, points):
            ax.scatter([x] * len(p["en"]), p["en"], s=8, color=line[0].get_color())
    ax.axhline(100 / 3, color="grey", ls=":", lw=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("pretraining tokens (M)")
    ax.set_ylabel("XNLI en test accuracy (%)")
    ax.set_title("fine-tuned on 18k English NLI pairs")
    ax.legend(fontsize=7)


def main() -> int:
    p = study_parser(__doc__)
    p.add_argument("--objectives", nargs="+", default=["gdes", "mlm"], choices=list(OBJECTIVES))
    p.add_argument("--preset", default="deberta-v3-tiny")
    p.add_argument("--steps", type=int, default=8192, help="the schedule's length (8192 x 4096 tokens = 32M)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="fp32: bf16 autocast is 6x slower on CPUs without bf16 instructions (AVX2 only)")
    p.add_argument("--pairs-per-paradigm", type=int, default=50, help="BLiMP sample per checkpoint (0: all 1000)")
    p.add_argument("--no-pretrain", dest="pretrain", action="store_false", help="only score existing checkpoints")
    p.add_argument("--finetune", action="store_true", help="also fine-tune every budget's model on English NLI")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--all-checkpoints", action="store_true",
                   help="score every kept checkpoint (every 256 steps), not only the doubling budgets")
    p.add_argument("--word-order-pairs", type=int, default=1000,
                   help="English word-order pairs scored at every checkpoint (0: none)")
    add_runner_arguments(p, jobs=2)
    a = p.parse_args()

    def plan_jobs() -> list[Job]:
        if a.word_order_pairs and not a.dry_run:
            ensure_pairs(Path(a.shared) / "data" / "xnli", Path(a.output) / "word_order", ["en"], a.word_order_pairs,
                         seed=0)
        return plan(a)

    return run_study(a, plan_jobs, summarize)


if __name__ == "__main__":
    raise SystemExit(main())
