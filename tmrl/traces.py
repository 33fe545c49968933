"""Step-by-step traces of driven episodes: what the policy asked for and what the car did, one CSV row per step.

A trace answers the question a return cannot: *how* an episode ended. Each row holds the step, its time (step
times the time step), the lap progress, the car's speed, its distance from the reward trajectory, its heading
relative to the trajectory (1 = along it, -1 = the wrong way), the step's reward and the action (gas, brake,
steer in [-1, 1] as the policy gave them) with the pedals it pressed (0 to 1, through ``env.pedals``).

Test episodes of a training run are traced by the worker (``worker.trace_tests``, into ``<run dir>/traces/``),
``tmrl test --trace DIR`` traces the episodes it drives, and ``tmrl trace FILE`` prints how an episode ended.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tmrl.errors import TmrlError
from tmrl.spaces import pedal_values

COLUMNS = (
    "step",
    "time_s",
    "progress",
    "speed_kmh",
    "off_trajectory",
    "heading",
    "reward",
    "gas",
    "brake",
    "steer",
    "gas_pressed",
    "brake_pressed",
)
"""The columns of a trace file, in order."""

_FORMATS = ("{:d}", "{:.3f}", "{:.4f}", "{:.1f}", "{:.2f}", "{:.3f}", "{:.4f}") + ("{:.3f}",) * 5


class TraceError(TmrlError):
    """A trace file is missing or is not a trace."""


class EpisodeTrace:
    """Collects one episode's rows in memory (a list append per step); ``write`` saves them as CSV."""

    def __init__(self, time_step_s: float, pedals: str) -> None:
        if not time_step_s > 0.0:
            raise ValueError(f"time step {time_step_s} s must be > 0")
        self.time_step_s = time_step_s
        self.pedals = pedals
        self.rows: list[tuple[float, ...]] = []

    def add(self, action: Sequence[float], reward: float, info: Mapping[str, float]) -> None:
        """Record a step: ``action`` as given to ``env.step``, then the reward and info it returned."""
        gas, brake, steer = (float(a) for a in action[:3])
        gas_pressed, brake_pressed = pedal_values(gas, brake, self.pedals)
        self.rows.append(
            (
                float(info.get("progress", math.nan)),
                float(info.get("speed_kmh", math.nan)),
                float(info.get("off_trajectory", math.nan)),
                float(info.get("heading", math.nan)),
                float(reward),
                gas,
                brake,
                steer,
                min(1.0, max(0.0, gas_pressed)),
                min(1.0, max(0.0, brake_pressed)),
            )
        )

    def write(self, path: Path) -> None:
        """Write the trace to ``path`` (through a temporary file and a rename: readers never see half a file)."""
        lines = [",".join(COLUMNS)]
        for i, row in enumerate(self.rows):
            values = (i + 1, (i + 1) * self.time_step_s, *row)
            lines.append(",".join(f.format(v) for f, v in zip(_FORMATS, values, strict=True)))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def read_trace(path: Path) -> dict[str, np.ndarray]:
    """The columns of a trace file as float64 arrays (``step`` too). Raises ``TraceError`` for a missing file or
    one that is not a trace."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(header) != COLUMNS:
                raise TraceError(f"{path} is not a tmrl trace (its first line is not {','.join(COLUMNS)})")
            rows = []
            for n, row in enumerate(reader, start=2):
                try:
                    rows.append([float(v) for v in row])
                except ValueError:
                    raise TraceError(f"{path}, line {n}: a value is not a number") from None
                if len(row) != len(COLUMNS):
                    raise TraceError(f"{path}, line {n}: {len(row)} values where a trace has {len(COLUMNS)}")
    except FileNotFoundError:
        raise TraceError(f"trace file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace file {path}: {exc}") from None
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(COLUMNS))
    return {name: data[:, i] for i, name in enumerate(COLUMNS)}


def newest_trace(folder: Path) -> Path:
    """The most recently written test-episode trace under ``folder`` (any worker's); ``TraceError`` if none."""
    found = [p for p in folder.glob("*/test-*.csv") if p.is_file()] if folder.is_dir() else []
    if not found:
        raise TraceError(f"no test-episode traces in {folder} (worker.trace_tests writes them during a run)")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def ending(trace: Mapping[str, np.ndarray], seconds: float = 2.0, every_s: float = 0.1) -> str:
    """A table of the episode's last ``seconds``: one row per ``every_s`` of game time, each the mean of the
    steps it covers (speed, distance from the trajectory, heading, the pedals as pressed, steering), then where
    and how the episode ended."""
    n = len(trace["step"])
    if n == 0:
        return "the trace is empty (the episode ended before its first step)"
    t = trace["time_s"]
    dt = float(t[0]) if n == 1 else float(t[1] - t[0])
    per = max(1, round(every_s / dt))
    bins = max(1, round(seconds / (per * dt)))
    # each bin ends at one of these steps, the last at the episode's end
    ends = [e for e in range(n, n - bins * per, -per) if e > 0][::-1]
    lines = [
        f"{'t (s)':>7} {'progress':>8} {'km/h':>6} {'off':>6} {'heading':>7} {'gas':>6} {'brake':>6} {'steer':>6}"
    ]
    for b in ends:
        a = max(0, b - per)

        def mean(name: str, a: int = a, b: int = b) -> float:
            return float(np.mean(trace[name][a:b]))

        lines.append(
            f"{t[b - 1]:7.2f} {100 * trace['progress'][b - 1]:7.1f}% {mean('speed_kmh'):6.0f} "
            f"{mean('off_trajectory'):6.1f} {mean('heading'):7.2f} {mean('gas_pressed'):6.2f} "
            f"{mean('brake_pressed'):6.2f} {mean('steer'):6.2f}"
        )
    lines.append(
        f"{n} steps, {t[-1]:.2f} s, return {float(np.sum(trace['reward'])):.1f}, ended at "
        f"{100 * trace['progress'][-1]:.1f} % of the lap at {trace['speed_kmh'][-1]:.0f} km/h, "
        f"{trace['off_trajectory'][-1]:.1f} units from the trajectory"
    )
    return "\n".join(lines)


class TraceDirectory:
    """Numbered trace files in one folder, ``<prefix>-000042.csv``, ..., keeping the newest ``keep`` (None: all).
    Numbering continues after the highest number already there (a resumed run does not overwrite its traces)."""

    def __init__(self, folder: Path, keep: int | None, prefix: str = "test") -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1, not {keep}")
        self.folder = folder
        self.keep = keep
        self.prefix = prefix
        self.next = 1 + max(self._numbers(), default=0)
        self._prune()

    def _numbers(self) -> list[int]:
        out = []
        if self.folder.is_dir():
            for p in self.folder.glob(f"{self.prefix}-*.csv"):
                number = p.stem[len(self.prefix) + 1 :]
                if number.isdigit():
                    out.append(int(number))
        return out

    def path(self, number: int) -> Path:
        return self.folder / f"{self.prefix}-{number:06d}.csv"

    def save(self, trace: EpisodeTrace) -> Path:
        """Write ``trace`` as the next number; delete what falls out of the newest ``keep``."""
        path = self.path(self.next)
        trace.write(path)
        self.next += 1
        if self.keep is not None:  # the folder was pruned when opened: one file at most falls out
            self.path(self.next - 1 - self.keep).unlink(missing_ok=True)
        return path

    def _prune(self) -> None:
        if self.keep is not None:
            for number in self._numbers():
                if number < self.next - self.keep:
                    self.path(number).unlink(missing_ok=True)
