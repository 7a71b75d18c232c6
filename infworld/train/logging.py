"""Run logs: a tidy CSV (``RUN/metrics.csv``), TensorBoard (``RUN/tb``, if installed) and a tqdm bar.

The CSV has one row per value, ``step,time,name,value`` (``name`` like ``train/loss`` or
``val/psnr``), so new metrics never change the header; ``pandas.read_csv(...).pivot(index="step",
columns="name", values="value")`` gives the wide table. On resume, rows after the checkpoint's step
are dropped (atomically) so a resumed run's log has no duplicated steps. Only rank 0 logs.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path
from typing import Any

from infworld.data.episode import atomic_write_bytes

CSV_NAME = "metrics.csv"
CSV_HEADER = ["step", "time", "name", "value"]


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a metrics.csv as dicts (``step`` int, ``value`` float); torn last lines are skipped."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows.append({"step": int(row["step"]), "time": float(row["time"]), "name": row["name"],
                             "value": float(row["value"])})
            except (TypeError, ValueError, KeyError):
                continue
    return rows


class RunLogger:
    """Appends metrics to CSV and TensorBoard and shows a progress bar; a no-op when ``enabled`` is False."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, total_steps: int = 0,
                 start_step: int = 0, progress: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.start_time = time.time()
        self._csv = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / CSV_NAME
        self._truncate_after(path, start_step)
        new = not path.exists() or path.stat().st_size == 0
        self._csv = open(path, "a", newline="")  # kept open for the whole run
        self._writer = csv.writer(self._csv)
        if new:
            self._writer.writerow(CSV_HEADER)
            self._csv.flush()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step or None)
            except ImportError:  # tensorboard is an optional extra (infworld[train])
                self._tb = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, unit="step")

    @staticmethod
    def _truncate_after(path: Path, step: int) -> None:
        """Drop rows logged after ``step`` (they were computed by a run that did not checkpoint them)."""
        if not path.exists():
            return
        rows = read_metrics(path)
        kept = [r for r in rows if r["step"] <= step]
        if len(kept) == len(rows) and path.read_text().endswith("\n"):
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_HEADER)
        for r in kept:
            w.writerow([r["step"], f"{r['time']:.3f}", r["name"], repr(r["value"])])
        atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))

    def log(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled or not metrics:
            return
        now = time.time() - self.start_time
        for name, value in metrics.items():
            key = f"{prefix}/{name}"
            value = float(value)
            self._writer.writerow([step, f"{now:.3f}", key, repr(value)])
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(key, value, step)
        self._csv.flush()

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        if self._bar is None:
            return
        self._bar.n = step
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None
