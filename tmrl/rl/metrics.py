"""Run metrics: TensorBoard event files and one CSV per run, and ``plot_run`` for ``tmrl plot``.

Scalars are grouped by prefix (``losses/*``, ``charts/*``, ``episodes/*``, ``speed/*``). The CSV is long-format
(``wall_time,env_steps,updates,tag,value``), so new tags never change its columns and a resumed run appends.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from tmrl.errors import RunError

CSV_NAME = "metrics.csv"
TB_DIR = "tensorboard"
FIELDS = ("wall_time", "env_steps", "updates", "tag", "value")


class MetricsWriter:
    """Writes scalars to TensorBoard (``<run>/tensorboard``) and ``<run>/metrics.csv``."""

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / CSV_NAME
        new = not path.exists()
        self._file = open(path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(FIELDS)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / TB_DIR))

    def scalars(self, values: Mapping[str, float], *, env_steps: int, updates: int) -> None:
        """Record scalars at the given counters (TensorBoard's x axis: environment steps)."""
        now = time.time()
        for tag, value in values.items():
            v = float(value)
            self._csv.writerow((f"{now:.3f}", env_steps, updates, tag, f"{v:.6g}"))
            if self._tb is not None:
                self._tb.add_scalar(tag, v, env_steps, walltime=now)
        self._file.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if not self._file.closed:
            self._file.close()


def read_metrics(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, int, float]]]:
    """tag -> [(env_steps, updates, value), ...] from a run's CSV."""
    path = Path(run_dir) / CSV_NAME
    if not path.is_file():
        raise RunError(f"no metrics at {path}: is {run_dir} a run directory that has trained?")
    series: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                series[row["tag"]].append((int(row["env_steps"]), int(row["updates"]), float(row["value"])))
            except (KeyError, TypeError, ValueError):
                continue  # a line cut by a crash
    return dict(series)


def plot_run(run_dir: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Render every scalar of a run against environment steps into one PNG; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_metrics(run_dir)
    if not series:
        raise RunError(f"{Path(run_dir) / CSV_NAME} holds no metrics yet")
    tags = sorted(series, key=lambda t: (not t.startswith("episodes/"), t))
    cols = min(3, len(tags))
    rows = math.ceil(len(tags) / cols)
    fig = Figure(figsize=(5 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, tag in enumerate(tags):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs = [p[0] for p in series[tag]]
        ys = [p[2] for p in series[tag]]
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None, linewidth=1)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"run {Path(run_dir).name}")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out
