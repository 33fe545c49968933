"""Reward from a recorded trajectory: file format, resampling, progress tracking, and the two reward modes.

A trajectory file is JSON (never pickle)::

    {"format": "tmrl-reward-trajectory", "version": 1, "game": "carracing", "track_seed": 0,
     "recorded": "2026-...", "points": [[x, y, z], ...]}

holding the car's raw positions, one per telemetry frame, from the start line to the finish. It is resampled at
load time to points ``spacing`` apart along the polyline, so the spacing stays a configuration choice.

Progress tracking (TMRL 0.7.1's rule, DESIGN.md section 2): each step, from the current index, search forward for
the closest point, stopping after ``check_forward`` consecutive non-improving points; farther than ``max_stray``
means no progress. Without progress, search back (stopping after ``check_backward`` non-improving points) so the
index follows a car that backs up. After ``min_steps`` steps, each step without progress counts toward failure;
more than ``failure_countdown`` in a row ends the episode.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from tmrl.envs.config import EnvConfig, RewardConfig, resolved_reward, resolved_reward_mode
from tmrl.errors import RewardError

FORMAT = "tmrl-reward-trajectory"
VERSION = 1


def record_command(game: str) -> str:
    """The command that records a trajectory for ``game`` (quoted in error messages)."""
    return f"tmrl record-reward --game {game} --output PATH"


@dataclass(frozen=True)
class Trajectory:
    """Raw recorded positions (N, 3) float64 plus where they come from."""

    points: np.ndarray
    game: str
    track_seed: int | None = None
    recorded: str = ""

    def resampled(self, spacing: float) -> np.ndarray:
        return resample(self.points, spacing)


def resample(points: np.ndarray, spacing: float) -> np.ndarray:
    """Points ``spacing`` apart along the polyline through ``points`` (N, D), starting at the first point.

    The last point lies at most ``spacing`` before the polyline's end. Repeated points (a car standing still)
    contribute nothing. Raises ValueError when the polyline is shorter than ``spacing``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 2:
        raise ValueError("a trajectory needs at least two points")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate(([0.0], np.cumsum(seg)))
    total = float(cum[-1])
    if not math.isfinite(total) or total < spacing:
        raise ValueError(f"the trajectory is {total:.3g} units long, shorter than the spacing {spacing:g}")
    s = np.arange(0.0, total + 1e-9 * total, spacing)
    # Collapse zero-length segments so np.interp sees strictly increasing abscissae.
    keep = np.concatenate(([True], seg > 0.0))
    cum, pts = cum[keep], pts[keep]
    return np.stack([np.interp(s, cum, pts[:, d]) for d in range(pts.shape[1])], axis=1)


def save_trajectory(path: str | os.PathLike, traj: Trajectory) -> Path:
    """Write ``traj`` as JSON atomically (temporary name, then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "game": traj.game,
        "track_seed": traj.track_seed,
        "recorded": traj.recorded or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "points": np.asarray(traj.points, dtype=np.float64).round(5).tolist(),
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, out)
    return out


def load_trajectory(path: str | os.PathLike | None, game: str) -> Trajectory:
    """Read a trajectory file; any problem is a ``RewardError`` naming the file and the command to record one."""
    how = f"record one with `{record_command(game)}` and set the env's reward.path to it"
    if path is None:
        raise RewardError(f"no reward trajectory file is configured; {how}")
    p = Path(path)
    if not p.is_file():
        raise RewardError(f"reward trajectory file {p} does not exist; {how}")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RewardError(f"reward trajectory file {p} is not readable JSON ({exc}); {how}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RewardError(f"{p} is not a tmrl reward trajectory file; {how}")
    if doc.get("version") != VERSION:
        raise RewardError(
            f"{p} has trajectory format version {doc.get('version')!r}, expected {VERSION}; {how}"
        )
    if doc.get("game") != game:
        raise RewardError(f"{p} was recorded on game {doc.get('game')!r}, not {game!r}; {how}")
    try:
        points = np.asarray(doc["points"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise RewardError(f"{p} has no valid 'points' list; {how}") from None
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 2 or not np.isfinite(points).all():
        raise RewardError(f"{p}: 'points' must be at least two finite [x, y, z] positions; {how}")
    seed = doc.get("track_seed")
    return Trajectory(points, game, None if seed is None else int(seed), str(doc.get("recorded", "")))


class ProgressTracker:
    """Follows the car's index along a resampled trajectory (the search rule of the module docstring)."""

    def __init__(self, points: np.ndarray, check_forward: int, check_backward: int, max_stray: float) -> None:
        self.points = np.ascontiguousarray(points, dtype=np.float64)
        self.check_forward = check_forward
        self.check_backward = check_backward
        self.max_stray = max_stray
        self.index = 0

    @property
    def last_index(self) -> int:
        return len(self.points) - 1

    def reset(self, index: int = 0) -> None:
        self.index = index

    def heading(self, motion: np.ndarray, min_move: float = 0.05) -> float:
        """Cosine of the angle between ``motion`` (the car's displacement over a step) and the trajectory's
        direction at the current index: 1 along the driving direction, -1 the wrong way, 0 when the car moved
        less than ``min_move``."""
        norm = float(np.linalg.norm(motion))
        if norm < min_move:
            return 0.0
        i = self.index
        tangent = self.points[min(i + 1, self.last_index)] - self.points[max(i - 1, 0)]
        t = float(np.linalg.norm(tangent))
        return 0.0 if t == 0.0 else float(np.dot(motion, tangent)) / (norm * t)

    def nearest(self, pos: np.ndarray, last: int | None = None) -> int:
        """Index of the point closest to ``pos`` among the first ``last + 1`` (all when None): where a car put
        down anywhere on the track is along the trajectory."""
        pts = self.points if last is None else self.points[: last + 1]
        diff = pts - pos
        return int(np.argmin(np.einsum("ij,ij->i", diff, diff)))

    def _forward(self, pos: np.ndarray) -> tuple[int, float]:
        """Closest point from ``self.index`` on, stopping after ``check_forward`` non-improving points.

        Vectorised by chunks of squared distances; returns (index, distance)."""
        n = len(self.points)
        best, best_d2 = self.index, math.inf
        start = self.index
        chunk = self.check_forward + 256
        while start < n:
            stop = min(n, start + chunk)
            diff = self.points[start:stop] - pos
            d2 = np.einsum("ij,ij->i", diff, diff)
            # A point improves when it is at most as far as every point before it (ties go to the later point).
            prev = np.empty_like(d2)
            prev[0] = best_d2
            np.minimum.accumulate(d2[:-1], out=prev[1:])
            np.minimum(prev[1:], best_d2, out=prev[1:])
            imp = np.flatnonzero(d2 <= prev)
            if imp.size:
                gaps = np.diff(imp, prepend=best - start)
                bad = np.flatnonzero(gaps > self.check_forward)
                if bad.size:
                    k = int(bad[0])
                    if k > 0:
                        best, best_d2 = int(imp[k - 1]) + start, float(d2[imp[k - 1]])
                    return best, math.sqrt(best_d2)
                best, best_d2 = int(imp[-1]) + start, float(d2[imp[-1]])
            if stop - best > self.check_forward:
                break
            start = stop
        return best, math.sqrt(best_d2)

    def _backward(self, pos: np.ndarray) -> tuple[int, float]:
        """Closest point from ``self.index`` backwards, stopping after ``check_backward`` non-improving points."""
        best, best_d = self.index, math.inf
        i, misses = self.index, 0
        while i >= 0 and misses < self.check_backward:
            p = self.points[i]
            d = math.dist((p[0], p[1], p[2]), (pos[0], pos[1], pos[2]))
            if d <= best_d:
                best, best_d, misses = i, d, 0
            else:
                misses += 1
            i -= 1
        return best, best_d

    def update(self, pos: np.ndarray) -> int:
        """Move along the trajectory to ``pos``; returns the indices gained (0 when no progress)."""
        best, best_d = self._forward(pos)
        if best > self.index and best_d <= self.max_stray:
            gained = best - self.index
            self.index = best
            return gained
        back, back_d = self._backward(pos)
        if back_d <= self.max_stray:
            self.index = back
        return 0


class RewardFunction(Protocol):
    """Per-episode reward state; ``step`` is called once per time step with the latest telemetry."""

    tracker: ProgressTracker

    def reset(self, start_index: int = 0) -> None:
        """A new episode, the car at trajectory index ``start_index`` (0: the start line)."""
        ...

    def step(self, pos: np.ndarray, finished: bool, frames_elapsed: int) -> tuple[float, bool]:
        """(reward, terminated) for the step that brought the car to ``pos``."""
        ...


@dataclass
class _FailureCounter:
    min_steps: int
    countdown: int
    steps: int = 0
    misses: int = 0

    def reset(self) -> None:
        self.steps = self.misses = 0

    def update(self, progressed: bool) -> bool:
        """True when the episode fails: more than ``countdown`` steps in a row without progress."""
        self.steps += 1
        if progressed:
            self.misses = 0
            return False
        if self.steps > self.min_steps:
            self.misses += 1
        return self.misses > self.countdown


@dataclass
class TrajectoryReward:
    """TMRL's reward: (indices gained) / index_per_reward per step; finish adds ``finish_bonus`` and ends."""

    tracker: ProgressTracker
    config: RewardConfig
    failure: _FailureCounter = field(init=False)

    def __post_init__(self) -> None:
        self.failure = _FailureCounter(self.config.min_steps, self.config.failure_countdown)

    def reset(self, start_index: int = 0) -> None:
        self.tracker.reset(start_index)
        self.failure.reset()

    def step(self, pos: np.ndarray, finished: bool, frames_elapsed: int) -> tuple[float, bool]:
        gained = self.tracker.update(pos)
        terminated = self.failure.update(gained > 0)
        reward = gained / self.config.index_per_reward - self.config.constant_penalty
        if finished:
            reward += self.config.finish_bonus
            terminated = True
        return reward, terminated


@dataclass
class CarRacingReward:
    """CarRacing's scale from telemetry: ``lap_reward`` x (new progress / lap) - ``frame_penalty`` per physics
    frame; progress counts once (a high-water mark, like CarRacing's tiles); the finish pays the rest of the lap,
    so a full lap in F physics frames returns exactly lap_reward - frame_penalty * F."""

    tracker: ProgressTracker
    config: RewardConfig
    failure: _FailureCounter = field(init=False)
    high: int = 0

    def __post_init__(self) -> None:
        self.failure = _FailureCounter(self.config.min_steps, self.config.failure_countdown)

    def reset(self, start_index: int = 0) -> None:
        self.tracker.reset(start_index)
        self.failure.reset()
        self.high = start_index

    def step(self, pos: np.ndarray, finished: bool, frames_elapsed: int) -> tuple[float, bool]:
        self.tracker.update(pos)
        per_index = self.config.lap_reward / max(1, self.tracker.last_index)
        gained = max(0, self.tracker.index - self.high)
        self.high += gained
        terminated = self.failure.update(gained > 0)
        reward = gained * per_index - self.config.frame_penalty * frames_elapsed
        if finished:
            reward += (self.tracker.last_index - self.high) * per_index
            self.high = self.tracker.last_index
            terminated = True
        return reward, terminated


def make_reward(config: EnvConfig, *, track_seed: int | None = None) -> TrajectoryReward | CarRacingReward:
    """Load the configured trajectory and build the reward of the configured mode.

    ``track_seed`` (built-in game) must match the seed the trajectory was recorded on."""
    rc = resolved_reward(config)
    traj = load_trajectory(rc.path, config.game)
    if track_seed is not None and traj.track_seed is not None and traj.track_seed != track_seed:
        raise RewardError(
            f"reward trajectory file {rc.path} was recorded on track seed {traj.track_seed} but the game uses "
            f"seed {track_seed}; record one with `{record_command(config.game)}` for this track"
        )
    try:
        return reward_on(config, traj)
    except ValueError as exc:
        raise RewardError(f"reward trajectory file {rc.path}: {exc}; record it again") from None


def reward_on(config: EnvConfig, traj: Trajectory) -> TrajectoryReward | CarRacingReward:
    """The configured reward along ``traj`` (a loaded file or a track's centre line). Raises ValueError when the
    trajectory is shorter than the reward's point spacing."""
    rc = resolved_reward(config)
    tracker = ProgressTracker(traj.resampled(rc.spacing), rc.check_forward, rc.check_backward, rc.max_stray)
    mode: Literal["trajectory", "carracing"] = resolved_reward_mode(config)
    return CarRacingReward(tracker, rc) if mode == "carracing" else TrajectoryReward(tracker, rc)


def centerline_trajectory(seed: int) -> Trajectory:
    """The built-in game's track of ``seed``: its centre line from the start line round to it again, as a reward
    trajectory (the reward of tracks without a recorded pilot lap: the unseen tracks of the learning bench and
    the other tracks of ``worker.other_tracks``)."""
    from tmrl.games.carracing.pilot import track_centerline

    xy = track_centerline(seed)
    xy = np.vstack([xy, xy[:1]])
    return Trajectory(np.stack([xy[:, 0], np.zeros(len(xy)), xy[:, 1]], axis=1), "carracing", seed)
