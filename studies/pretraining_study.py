"""Does pretraining help? The whole study of RESULTS.md in one resumable script.

For each corpus (``en``: the English-only ../shared corpus_en with an 8k tokenizer; ``multi``: the 15-language
corpus with a 16k tokenizer; ``nli``: the in-domain arm, only the premises and hypotheses of the 18k English NLI
training pairs, with ``en``'s tokenizer and random-init runs, the self-pretraining setting of Krishna et al., ACL 2023)
it pretrains the same architecture with every objective at equal tokens

* ``gdes`` / ``es`` / ``none``: RTD with gradient-disentangled / plain / no embedding sharing (``mdeberta pretrain``)
* ``decoupled``: RTD + GDES trained as the original's ``rtd.sh`` does (``--decoupled-training``)
* ``mlm``: the MLM baseline (``mdeberta pretrain --objective mlm``)
* ``reference``: transformers' DebertaV2ForMaskedLM in a plain loop on the same batches (``reference_mlm.py``)

then fine-tunes every model and a random init with several seeds on the English NLI pairs (``mdeberta xnli``: best
checkpoint on English XNLI dev, full XNLI test sets), evaluates the held-out MNLI / SNLI pairs, runs frozen-feature
linear probes (``mdeberta probe``), scores every pretrained model (discriminator and generator, or the MLM model)
and the runs' shared initial weights zero-shot on a BLiMP sample (``mdeberta evaluate --task minimal-pairs``),
compares each objective with random init (``mdeberta compare``) and writes ``summary.md`` / ``summary.json`` /
``summary.png`` into the output folder.

Every step is a command line (printed with ``--dry-run``) whose output folder marks it done, so an interrupted
study continues where it stopped; ``--only GLOB ...`` runs the matching jobs and what they depend on (``--dry-run``
lists the names). ``--jobs`` steps run at once (one thread each). On a GPU, scale it up::

    python studies/pretraining_study.py --output runs/study                       # CPU: ~3 h on 2 cores
    python studies/pretraining_study.py --output runs/study-gpu --steps 100000 --batch-size 128 \\
        --preset deberta-v3-xsmall --jobs 1 --device cuda                       # ~100x the tokens
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OBJECTIVES = ("gdes", "es", "none", "decoupled", "mlm", "reference")
PRETRAIN_FLAGS = {"mlm": ["--objective", "mlm"], "decoupled": ["--embedding-sharing", "gdes", "--decoupled-training"]}
CORPORA = {"en": ("corpus_en", 8000), "multi": ("corpus", 16000), "nli": (None, None)}
NLI_TRAIN = ("mnli_train_subset_8999.tsv.gz", "snli_train_subset_8999.tsv.gz")


def write_in_domain_corpus(shared: Path, target: Path) -> Path:
    """The ``nli`` corpus: every distinct premise and hypothesis of the English NLI training pairs, one per line
    (never a dev or test sentence), written once as ``target/en.txt.gz``; pretraining packs and shuffles them."""
    path = target / "en.txt.gz"
    if path.exists():
        return target
    import csv
    import gzip

    seen: dict[str, None] = {}
    for name in NLI_TRAIN:
        with gzip.open(shared / "data" / "nli_en" / name, "rt", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                for text in (row["premise"], row["hypothesis"]):
                    if text.strip():
                        seen.setdefault(text.strip())
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "en.txt.gz.partial"
    with gzip.open(partial, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in seen)
    partial.replace(path)
    return target


@dataclass
class Job:
    name: str
    cmd: list[str]
    done: Path  # exists once the job has finished
    deps: list[str] = field(default_factory=list)
    log: Path | None = None
    cwd: Path | None = None  # run the command there (relative paths in it are the run's own)


def mdeberta(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdeberta", *args]


def plan(a: argparse.Namespace) -> list[Job]:
    shared, out = Path(a.shared), Path(a.output)
    nli = shared / "data" / "nli_en"
    train = [str(nli / name) for name in NLI_TRAIN]
    heldout = {"mnli": nli / "mnli_heldout_subset_1000.tsv.gz", "snli": nli / "snli_heldout_subset_1000.tsv.gz"}
    device = ["--device", a.device] if a.device else []
    jobs: list[Job] = []
    for corpus in a.corpora:
        # the in-domain arm reuses en's tokenizer and random-init runs (same architecture, same pieces)
        base = "en" if corpus == "nli" else corpus
        folder, vocab = CORPORA[base]
        root = out / corpus
        data = (write_in_domain_corpus(shared, root / "corpus") if corpus == "nli" and not a.dry_run
                else root / "corpus" if corpus == "nli" else shared / "data" / folder)
        tok = out / base / "tokenizer"
        jobs.append(Job(f"{base}/tokenizer", mdeberta(
            "tokenizer", "train", "--input", str(shared / "data" / folder), "--output-dir", str(tok),
            "--vocab-size", str(vocab), "--input-sentence-size", "300000", "--num-threads", "1"), tok / "spm.model"))
        run_args = ["--data", str(data), "--tokenizer", str(tok), "--model-preset", a.preset, "--batch-size",
                    str(a.batch_size), "--max-seq-length", str(a.max_seq_length), "--precision", a.precision,
                    "--seed", str(a.pretrain_seed)]  # what fixes the initial weights and the batches
        if a.lr:
            run_args += ["--lr", str(a.lr)]
        common = [*run_args, "--max-steps", str(a.steps)]
        models: dict[str, str] = {}
        for objective in a.objectives:
            run = root / objective / "pretrain"
            if objective == "reference":
                cmd = [sys.executable, str(HERE / "reference_mlm.py"), *common, *device, "--output", str(run)]
                models[objective] = str(run / "model")
                done = run / "model" / "config.json"
            else:
                extra = PRETRAIN_FLAGS.get(objective, ["--embedding-sharing", objective])
                resume = ["--resume"]  # continues an interrupted run, or starts it
                cmd = mdeberta("pretrain", *common, *extra, *device, "--output-dir", str(run), "--num-workers", "0",
                               "--log-every", "50", "--save-every", "500", "--no-progress", *resume)
                sub = "model" if objective == "mlm" else "discriminator"
                models[objective] = str(run / "export" / sub)
                done = run / "export" / sub / "config.json"
            jobs.append(Job(f"{corpus}/{objective}/pretrain", cmd, done, [f"{base}/tokenizer"]))
        jobs += blimp_jobs(a, corpus, base, models, run_args)
        languages = "all" if corpus == "multi" else "en"
        for model in [*a.objectives, "random"]:
            source = (["--model", a.preset, "--random-init", "--tokenizer", str(tok)] if model == "random"
                      else ["--model", models[model], "--tokenizer", str(tok)])
            deps = [f"{base}/tokenizer"] + ([] if model == "random" else [f"{corpus}/{model}/pretrain"])
            owner = base if model == "random" else corpus  # whose folder (and job names) the runs live in
            for seed in a.seeds:
                run = out / owner / model / f"finetune-s{seed}"
                jobs.append(Job(f"{owner}/{model}/finetune-s{seed}", mdeberta(
                    "xnli", *source, *device, "--seed", str(seed), "--train-file", *train,
                    "--eval-dir", str(shared / "data" / "xnli"), "--languages", languages,
                    "--max-seq-length", str(a.max_seq_length), "--learning-rate", str(a.finetune_lr),
                    "--warmup-ratio", "0.1", "--epochs", str(a.epochs), "--eval-every", "250",
                    "--max-dev-examples", "1000", "--save-every", "100000", "--log-every", "50",
                    "--name", f"{model} s{seed}", "--output-dir", str(run), "--resume"), run / "xnli_summary.json",
                    deps))
                for name, path in heldout.items():
                    target = run / f"eval-{name}"
                    jobs.append(Job(f"{owner}/{model}/finetune-s{seed}/{name}", mdeberta(
                        "evaluate", "--task", "nli", "--model", str(run / "best"), "--eval-file", str(path),
                        "--max-seq-length", str(a.max_seq_length), *device, "--output-dir", str(target),
                        "--overwrite"),
                        target / "predictions.jsonl", [f"{owner}/{model}/finetune-s{seed}"]))
            for features in ("pair", "sentences"):
                target = out / owner / model / f"probe-{features}.json"
                jobs.append(Job(f"{owner}/{model}/probe-{features}", mdeberta(
                    "probe", *source, "--features", features, "--train-file", *train, "--eval-file",
                    *map(str, heldout.values()), "--max-seq-length", str(a.max_seq_length), "--output",
                    str(target), "--overwrite"), target, deps))
    unique: dict[str, Job] = {}
    for job in jobs:  # corpora that share a tokenizer share its jobs
        unique.setdefault(job.name, job)
    return list(unique.values())


def blimp_jobs(a: argparse.Namespace, corpus: str, base: str, models: dict[str, str], run_args: list[str]
               ) -> list[Job]:
    """Zero-shot BLiMP on the first ``--blimp-pairs-per-paradigm`` pairs of every paradigm: each RTD model's
    discriminator and generator, each MLM model, and (as ``BASE/random``) the initial weights the runs start from."""
    if not a.blimp_pairs_per_paradigm:
        return []
    out, blimp = Path(a.output), Path(a.shared) / "data" / "blimp" / "blimp.jsonl.gz"
    jobs: list[Job] = []

    def score(name: str, model: str, target: Path, dep: str) -> Job:
        return Job(name, mdeberta(
            "evaluate", "--task", "minimal-pairs", "--model", model, "--eval-file", str(blimp),
            "--max-pairs-per-paradigm", str(a.blimp_pairs_per_paradigm), "--name", name, "--output-dir", str(target),
            "--overwrite"), target / "minimal_pairs.json", [dep])

    for objective, model in models.items():
        dep = f"{corpus}/{objective}/pretrain"
        for part in (["model"] if objective in ("mlm", "reference") else ["discriminator", "generator"]):
            path = str(Path(model).parent / part)
            jobs.append(score(f"{corpus}/{objective}/blimp-{part}", path, out / corpus / objective / f"blimp-{part}",
                              dep))
    # random init: a 1-step RTD run's step 0 (its initial weights, rebuilt from its seed: every run of this preset,
    # vocabulary and seed starts from them), independent of which objectives this invocation pretrains
    run, init = out / base / "random" / "run", out / base / "random" / "init"
    jobs.append(Job(f"{base}/random/run", mdeberta("pretrain", *run_args, "--max-steps", "1", "--output-dir", str(run),
                                                    "--num-workers", "0", "--no-progress", "--overwrite"),
                    run / "export" / "discriminator" / "config.json", [f"{base}/tokenizer"]))
    jobs.append(Job(f"{base}/random/init", mdeberta("export-checkpoint", str(run), "--step", "0", "--output-dir",
                                                     str(init), "--overwrite"), init / "tokenizer" / "spm.model",
                    [f"{base}/random/run"]))
    for part in ("discriminator", "generator"):
        jobs.append(score(f"{base}/random/blimp-{part}", str(init / part), out / base / "random" / f"blimp-{part}",
                          f"{base}/random/init"))
    return jobs


def select(jobs: list[Job], patterns: list[str]) -> list[Job]:
    """The jobs whose names match one of the glob ``patterns``, with every job they depend on (transitively)."""
    from fnmatch import fnmatchcase

    by_name = {j.name: j for j in jobs}
    unknown = [p for p in patterns if not any(fnmatchcase(j.name, p) for j in jobs)]
    if unknown:
        raise SystemExit(f"--only: no job matches {', '.join(unknown)} (jobs: {', '.join(by_name)})")
    wanted = {j.name for j in jobs if any(fnmatchcase(j.name, p) for p in patterns)}
    todo = list(wanted)
    while todo:
        for dep in by_name[todo.pop()].deps:
            if dep in by_name and dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [j for j in jobs if j.name in wanted]


def run_jobs(jobs: list[Job], parallel: int, dry_run: bool, logs: Path) -> list[str]:
    """Run every job whose dependencies are done, ``parallel`` at a time (logs in ``logs/<job>.log``); returns the
    names of failed jobs."""
    by_name = {j.name: j for j in jobs}
    pending = [j for j in jobs if not j.done.exists()]
    if dry_run:
        for j in pending:
            print(f"# {j.name}\n{shlex.join(j.cmd)}")
        return []
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1" if parallel > 1 else "2"))
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: list[str] = []
    while pending or running:
        for name, (proc, start) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                ok = proc.returncode == 0 and by_name[name].done.exists()
                print(f"[{time.strftime('%H:%M:%S')}] {'done' if ok else 'FAILED'} {name} "
                      f"({time.time() - start:.0f} s)", flush=True)
                if not ok:
                    failed.append(name)
        blocked = set(failed)  # a failed job's dependents, and theirs, can never run
        while True:
            more = {j.name for j in pending if j.name not in blocked and any(d in blocked for d in j.deps)}
            if not more:
                break
            blocked |= more
        pending = [j for j in pending if j.name not in blocked]
        for j in list(pending):
            if len(running) >= parallel:
                break
            if j.done.exists():  # finished meanwhile by another invocation on the same folder: never run twice
                pending.remove(j)
                continue
            if all(by_name[d].done.exists() and d not in running for d in j.deps if d in by_name):
                logs.mkdir(parents=True, exist_ok=True)
                log = open(logs / f"{j.name.replace('/', '_')}.log", "w")  # noqa: SIM115
                print(f"[{time.strftime('%H:%M:%S')}] start {j.name}: {shlex.join(j.cmd)}", flush=True)
                running[j.name] = (subprocess.Popen(j.cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                    cwd=j.cwd), time.time())
                pending.remove(j)
        time.sleep(2)
    return failed


def study_parser(doc: str | None) -> argparse.ArgumentParser:
    """A study's command line: its docstring as help, ``--output`` (the resumable folder) and ``--shared``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="the study's folder (an interrupted study continues there)")
    p.add_argument("--shared", default=str(HERE.parents[1] / "shared"), help="the ../shared folder")
    return p


def add_runner_arguments(p: argparse.ArgumentParser, jobs: int) -> None:
    """The options every study shares: how many jobs at once, a dry run, rewriting only the summary, and running
    only some jobs."""
    p.add_argument("--jobs", type=int, default=jobs, help="jobs run at once (one thread each)")
    p.add_argument("--dry-run", action="store_true", help="print the commands still to run, run nothing")
    p.add_argument("--summary-only", action="store_true", help="only (re)write the summary")
    p.add_argument("--only", nargs="+", metavar="GLOB", help="run only the jobs whose names match (and their "
                   "dependencies), e.g. 'nli/es/*' 'multi/*/blimp-*'; --dry-run lists the names")


def run_study(a: argparse.Namespace, plan_jobs: Callable[[], list[Job]], summarize: Callable[[Any], Any]) -> int:
    """Every study's main: run the planned jobs (unless ``--summary-only``), name the failed ones, then summarise
    what exists (unless ``--dry-run``); 1 when a job failed. ``--only`` narrows the plan to the matching jobs."""
    failed = [] if a.summary_only else run_jobs(select(plan_jobs(), a.only) if a.only else plan_jobs(), a.jobs,
                                                a.dry_run, Path(a.output) / "logs")
    if failed:
        print("failed:", *failed, sep="\n  ")
    if not a.dry_run:
        summarize(a)
    return 1 if failed else 0


def summarize(a: argparse.Namespace) -> None:
    """summary.md / .json / .png: per corpus and model, the XNLI English test accuracy per seed, the held-out
    MNLI / SNLI accuracy, the probes, and the paired comparison with random init."""
    out = Path(a.output)
    rows, text = {}, ["# Pretraining study", ""]
    for corpus in a.corpora:
        root = out / corpus
        random_root = out / ("en" if corpus == "nli" else corpus)
        text += [f"## {corpus}", "", "| model | XNLI en test per seed | mean ± sd | XNLI avg | MNLI held-out | "
                 "SNLI held-out | probe pair | probe sentences | en vs random: diff ± se (Welch t) | BLiMP |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for model in ["random", *a.objectives]:
            runs = [(random_root if model == "random" else root) / model / f"finetune-s{s}" for s in a.seeds]
            runs = [r for r in runs if (r / "xnli_summary.json").exists()]
            blimp = blimp_scores((random_root if model == "random" else root) / model)
            if not runs and not blimp:
                continue
            summaries = [json.loads((r / "xnli_summary.json").read_text()) for r in runs]
            en = [s["accuracy"]["en"] for s in summaries]
            avg = [s["avg"] for s in summaries]
            held = {}
            for name in ("mnli", "snli"):
                accs = []
                for r in runs:
                    f = r / f"eval-{name}" / "predictions.jsonl"
                    if f.exists():
                        recs = [json.loads(line) for line in f.read_text().splitlines()]
                        accs.append(100 * sum(x["gold"] == x["predicted"] for x in recs) / len(recs))
                held[name] = accs
            probes = {}
            for features in ("pair", "sentences"):
                f = (random_root if model == "random" else root) / model / f"probe-{features}.json"
                if f.exists():
                    layers = json.loads(f.read_text())["layers"]
                    probes[features] = max(v["eval"] for k, v in layers.items() if k != "all_layers")
            group = None
            if model != "random" and (random_root / "random").exists():
                baseline = [random_root / "random" / f"finetune-s{seed}" for seed in a.seeds]
                baseline = [str(b) for b in baseline if (b / "xnli_summary.json").exists()]
                cmp = root / model / "compare.json"
                done = subprocess.run(mdeberta("compare", "--candidate", *map(str, runs), "--baseline", *baseline,
                                               "--output", str(cmp), "--overwrite"), capture_output=True)
                if done.returncode == 0:
                    group = json.loads(cmp.read_text())["group_difference"]
            row = {"en": en, "avg": avg, "heldout": held, "probes": probes, "compare_avg": group, "blimp": blimp,
                   "welch_en": welch_t(en, rows[f"{corpus}/random"]["en"]) if model != "random" and
                   f"{corpus}/random" in rows else None}
            rows[f"{corpus}/{model}"] = row

            def ms(values: list[float]) -> str:
                if not values:
                    return "-"
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.1f} ± {sd:.1f}"

            diff = "-"
            if row["welch_en"]:
                d, se, t = row["welch_en"]
                diff = f"{d:+.2f} ± {se:.2f} (t {t:+.2f})"
            if group and corpus == "multi":
                diff += f"; avg of 15: {group['difference']:+.2f} (t {group['welch_t'] or float('nan'):+.2f})"
            text.append(f"| {model} | {' / '.join(f'{x:.1f}' for x in en)} | {ms(en)} | {ms(avg)} | "
                        f"{ms(held['mnli'])} | {ms(held['snli'])} | {probes.get('pair', float('nan')):.1f} | "
                        f"{probes.get('sentences', float('nan')):.1f} | {diff} | "
                        f"{' / '.join(f'{k} {v:.1f}' for k, v in blimp.items()) or '-'} |")
        text.append("")
    (out / "summary.md").write_text("\n".join(text) + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(text))
    try:
        plot(rows, out / "summary.png")
    except Exception as e:  # a plot must never fail the study
        print(f"no plot: {e}")


def blimp_scores(folder: Path) -> dict[str, float]:
    """BLiMP sample accuracy per scored part (discriminator / generator / model) of one model's folder."""
    return {f.parent.name.removeprefix("blimp-"): json.loads(f.read_text())["overall"]
            for f in sorted(folder.glob("blimp-*/minimal_pairs.json"))}


def sign_test(a: list[int], b: list[int]) -> dict[str, float]:
    """Exact two-sided sign test (McNemar) on the examples where two models disagree in correctness (1 / 0 each)."""
    from math import comb

    wins, losses = sum(x > y for x, y in zip(a, b)), sum(x < y for x, y in zip(a, b))
    n, k = wins + losses, min(wins, losses)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"wins": wins, "losses": losses, "p": p}


def welch_t(candidate: list[float], baseline: list[float]) -> tuple[float, float, float] | None:
    """Difference of means, its standard error over runs and Welch's t (None with fewer than 2 runs a side)."""
    if len(candidate) < 2 or len(baseline) < 2:
        return None
    diff = statistics.mean(candidate) - statistics.mean(baseline)
    se = (statistics.variance(candidate) / len(candidate) + statistics.variance(baseline) / len(baseline)) ** 0.5
    return diff, se, diff / se if se > 0 else float("inf")


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if rows[n]["en"]]  # rows with fine-tuning runs (BLiMP-only rows have none)
    if not names:
        print("no plot yet: no fine-tuning run has finished")
        return
    means = [statistics.mean(rows[n]["en"]) for n in names]
    sds = [statistics.stdev(rows[n]["en"]) if len(rows[n]["en"]) > 1 else 0 for n in names]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(names) + 2), 4))
    ax.bar(range(len(names)), means, yerr=sds, capsize=4, color=["#999" if n.endswith("/random") else "#4a7"
                                                                 for n in names])
    for i, n in enumerate(names):
        ax.scatter([i] * len(rows[n]["en"]), rows[n]["en"], color="k", s=10, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("XNLI en test accuracy (%)")
    ax.set_ylim(min(means) - 6, max(means) + 4)
    ax.axhline(100 / 3, color="r", lw=0.8, ls="--")
    ax.set_title("Fine-tuned on 18k English NLI pairs: pretrained vs random init (dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = study_parser(__doc__)
    p.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    p.add_argument("--preset", default="deberta-v3-tiny")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="pretraining lr (default: the preset's)")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--pretrain-seed", type=int, default=42)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--device", default=None)
    p.add_argument("--blimp-pairs-per-paradigm", type=int, default=50,
                   help="BLiMP pairs per paradigm scored zero-shot for every model (0: no BLiMP)")
    add_runner_arguments(p, jobs=2)
    a = p.parse_args()
    return run_study(a, lambda: plan(a), summarize)


if __name__ == "__main__":
    raise SystemExit(main())
