"""A scripted pilot for the built-in game: pure pursuit on the track centre line, speed from the curvature ahead.

It reads only telemetry (position, speed) and the track, which it rebuilds from the seed exactly as the game does
(``track_centerline``). Used to record reward trajectories and in tests; it finishes a lap on the default tracks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from tmrl.errors import GameError
from tmrl.games.telemetry import TelemetryFrame


@lru_cache(maxsize=64)  # a worker training on many tracks (worker.other_tracks) asks for each often
def _centerline(seed: int) -> tuple[tuple[float, float], ...]:
    from tmrl.games.carracing.sim import RaceSim

    sim = RaceSim(seed)
    try:
        return tuple(map(tuple, sim.track_xy.tolist()))  # type: ignore[arg-type]
    finally:
        sim.env.close()


def track_centerline(seed: int) -> np.ndarray:
    """Centre line (N, 2) (world x, z) of the built-in game's track for ``seed``, from the start line on."""
    return np.array(_centerline(seed), dtype=np.float64)


class Pilot:
    """Stateful controller: call ``action(frame)`` with each new telemetry frame, apply (gas, brake, steer)."""

    def __init__(
        self,
        track: np.ndarray,
        *,
        lookahead: float = 9.0,
        lookahead_per_speed: float = 0.2,
        steer_gain: float = 2.2,
        max_speed: float = 42.0,
        min_speed: float = 14.0,
        curve_window: float = 45.0,
        curve_slowdown: float = 34.0,
    ) -> None:
        self.track = np.asarray(track, dtype=np.float64)
        if self.track.ndim != 2 or self.track.shape[1] != 2 or len(self.track) < 10:
            raise GameError("the pilot needs a track centre line of shape (N >= 10, 2)")
        seg = np.diff(np.vstack([self.track, self.track[:1]]), axis=0)
        self.seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self.heading = np.arctan2(seg[:, 1], seg[:, 0])
        self.spacing = float(self.seg_len.mean())
        self.lookahead = lookahead
        self.lookahead_per_speed = lookahead_per_speed
        self.steer_gain = steer_gain
        self.max_speed = max_speed
        self.min_speed = min_speed
        self.curve_window = curve_window
        self.curve_slowdown = curve_slowdown
        self.index = 0
        self._prev_xy: np.ndarray | None = None
        self._yaw: float | None = None

    def reset(self) -> None:
        """Forget the state (call after a respawn)."""
        self.index = 0
        self._prev_xy = None
        self._yaw = None

    def _nearest(self, xy: np.ndarray) -> int:
        """Closest centre-line point: searched near the last one, over the whole track when that is far
        (after a respawn without ``reset``, or when the car left the road)."""
        n = len(self.track)
        window = (self.index + np.arange(-5, 40)) % n
        d = np.hypot(*(self.track[window] - xy).T)
        best = int(np.argmin(d))
        if d[best] < 15.0:
            return int(window[best])
        return int(np.argmin(np.hypot(*(self.track - xy).T)))

    def action(self, frame: TelemetryFrame) -> tuple[float, float, float]:
        """(gas, brake, steer) in env convention for the car described by ``frame``."""
        xy = np.array([frame.x, frame.z], dtype=np.float64)
        n = len(self.track)
        self.index = self._nearest(xy)
        speed = frame.speed / 3.6
        if self._prev_xy is not None:
            d = xy - self._prev_xy
            if math.hypot(d[0], d[1]) > 0.05:
                self._yaw = math.atan2(d[1], d[0])
        self._prev_xy = xy
        if self._yaw is None:
            self._yaw = float(self.heading[self.index])
        ahead = self.lookahead + self.lookahead_per_speed * speed
        target = self.track[(self.index + max(1, int(round(ahead / self.spacing)))) % n]
        bearing = math.atan2(target[1] - xy[1], target[0] - xy[0])
        err = (bearing - self._yaw + math.pi) % (2 * math.pi) - math.pi
        steer = max(-1.0, min(1.0, -self.steer_gain * err))
        # target speed from the heading change over the window ahead
        k = max(2, int(self.curve_window / self.spacing))
        idx = (self.index + np.arange(k)) % n
        dh = np.diff(np.unwrap(self.heading[idx]))
        turn = float(np.max(np.abs(np.cumsum(dh)))) if len(dh) else 0.0
        target_speed = max(self.min_speed, self.max_speed - self.curve_slowdown * turn)
        gas = brake = 0.0
        if speed < target_speed:
            gas = 1.0 if abs(steer) < 0.6 else 0.4
        elif speed > target_speed + 4.0:
            brake = 0.6
        return gas, brake, steer


def drive_lap(
    game: object,
    pilot: Pilot,
    *,
    timeout_s: float = 180.0,
    on_frame: Callable[[TelemetryFrame], None] | None = None,
) -> list[TelemetryFrame]:
    """Drive ``game`` (a built-in ``Game``) with ``pilot`` in real time until the lap is finished.

    Returns every telemetry frame the loop saw (the latest at each iteration; one per physics frame when the
    loop keeps up), the last one with ``finished == 1``.
    Raises GameError if the lap is not finished within ``timeout_s`` seconds of wall time.
    """
    telemetry = game.telemetry  # type: ignore[attr-defined]
    controller = game.controller  # type: ignore[attr-defined]
    counter, frame = telemetry.latest()
    frames = [frame]
    deadline = time.monotonic() + timeout_s
    try:
        while frame.finished < 0.5:
            if time.monotonic() > deadline:
                raise GameError(f"the pilot did not finish the lap within {timeout_s:.0f} s")
            controller.act(*pilot.action(frame))
            counter, frame = telemetry.wait_newer(counter, timeout=5.0)
            frames.append(frame)
            if on_frame is not None:
                on_frame(frame)
    finally:
        controller.neutral()
    return frames
