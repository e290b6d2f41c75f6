"""Metric logging (JSONL always, TensorBoard when installed, a tqdm bar on a terminal) and PNG curves."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from mdeberta.errors import MissingFileError, UsageError

logger = logging.getLogger("mdeberta.train")

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


class MetricsLogger:
    """Rank 0 writes ``<run>/metrics.jsonl`` (one JSON object per log line) and mirrors it to TensorBoard."""

    def _drop_records_after(self, step: int) -> None:
        """A run killed after its last checkpoint logged steps that the resumed run logs again: keep one copy (a
        fresh run, step 0, starts an empty log)."""
        if not self.path.exists():
            return
        from mdeberta.files import atomic_write_text

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
        atomic_write_text(self.path, "".join(kept) if step > 0 else "")

    def __init__(self, output_dir: str | Path, enabled: bool = True, total_steps: int | None = None,
                 progress: bool | None = None, initial_step: int = 0) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_records_after(initial_step)
        self._file = open(self.path, "a", encoding="utf-8")  # append: a resumed run continues the same log
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except Exception:  # tensorboard is optional
            self._tb = None
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True, desc="train")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            shown = {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "lr") or k.endswith("_loss")}
            self._bar.set_postfix(shown, refresh=False)
        else:
            logger.info("step %d %s", step, " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k != "step"))

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    return v


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        raise MissingFileError(f"no {METRICS_FILE} in {run_dir}: is it a training output folder?")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{number}: not a JSON line ({e})") from e
    return records


def plot_metrics(run_dir: str | Path, output: str | Path | None = None, keys: list[str] | None = None) -> Path:
    """One subplot per numeric metric against step; written as PNG with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in records:
        for k, v in r.items():
            if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if keys is not None and k not in keys:
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(r["step"])
            ys.append(v)
    if not series:
        raise UsageError(f"{Path(run_dir) / METRICS_FILE} has no numeric metrics to plot")
    names = sorted(series)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs, ys = series[name]
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(output) if output is not None else Path(run_dir) / PLOT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
