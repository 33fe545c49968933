"""``record_reward``: record a reward trajectory from telemetry, from the start line until the finish flag.

The built-in game is driven by its scripted pilot (``tmrl.games.carracing.pilot``); on TrackMania a human drives
while telemetry is recorded. The CLI's ``tmrl record-reward --game {carracing,tm2020} --output PATH`` calls this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tmrl.envs.reward import Trajectory, save_trajectory
from tmrl.errors import GameError

if TYPE_CHECKING:
    from tmrl.games.base import Game
    from tmrl.games.config import CarRacingConfig, TM2020Config
    from tmrl.games.telemetry import TelemetryFrame

_SKIP_AFTER_RESPAWN = 3  # telemetry frames possibly sent before the respawn took effect
PILOT_ATTEMPTS = 3
MAX_DETOUR = 1.15  # a clean pilot lap is within 15 % of the centre line's length


def _after_respawn(game: Game) -> None:
    """Respawn and wait until the frames in flight from before the respawn have passed."""
    game.controller.respawn()
    counter, _ = game.telemetry.latest()
    for _ in range(_SKIP_AFTER_RESPAWN):
        counter, _ = game.telemetry.wait_newer(counter, timeout=5.0)


def _human_lap(game: Game, timeout_s: float, say: Callable[[str], None]) -> list[TelemetryFrame]:
    say("Drive the track to the finish line now; telemetry is being recorded.")
    counter, frame = game.telemetry.latest()
    frames = [frame]
    deadline = time.monotonic() + timeout_s
    while frame.finished < 0.5:
        if time.monotonic() > deadline:
            raise GameError(f"the finish line was not crossed within {timeout_s:.0f} s; nothing was recorded")
        counter, frame = game.telemetry.wait_newer(counter, timeout=max(0.1, deadline - time.monotonic()))
        frames.append(frame)
    return frames


def record_trajectory(
    game: Game,
    *,
    track_seed: int | None = None,
    timeout_s: float = 600.0,
    say: Callable[[str], None] = print,
) -> Trajectory:
    """Respawn, drive (pilot on the built-in game, a human on TrackMania) until the finish, return the positions."""
    if game.name == "carracing":
        points = _pilot_lap(game, track_seed, timeout_s, say)
    else:
        _after_respawn(game)
        points = _positions(_human_lap(game, timeout_s, say))
    return Trajectory(points, game.name, track_seed, time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _positions(frames: list[TelemetryFrame]) -> np.ndarray:
    return np.array([(f.x, f.y, f.z) for f in frames], dtype=np.float64)


def _length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _pilot_lap(
    game: Game, track_seed: int | None, timeout_s: float, say: Callable[[str], None]
) -> np.ndarray:
    """One clean pilot lap: a lap much longer than the track's centre line (the pilot ran wide or spun, e.g. on
    a starved CPU) is driven again, up to ``PILOT_ATTEMPTS`` times."""
    from tmrl.games.carracing.pilot import Pilot, drive_lap, track_centerline

    if track_seed is None:
        raise GameError("recording on the built-in game needs its track seed")
    centre = track_centerline(track_seed)
    lap = _length(np.vstack([centre, centre[:1]]))
    driven = 0.0
    for attempt in range(1, PILOT_ATTEMPTS + 1):
        _after_respawn(game)
        say(f"The scripted pilot drives one lap of track {track_seed} (real time, about a minute).")
        points = _positions(drive_lap(game, Pilot(centre), timeout_s=timeout_s))
        driven = _length(points)
        if driven <= MAX_DETOUR * lap:
            return points
        say(
            f"Attempt {attempt}: the lap was {driven:.0f} units for a {lap:.0f}-unit track (off the road); again."
        )
    raise GameError(
        f"the scripted pilot did not drive a clean lap of track {track_seed} in {PILOT_ATTEMPTS} attempts "
        f"(last: {driven:.0f} units for {lap:.0f}); is the machine overloaded?"
    )


def record_reward(
    game_config: CarRacingConfig | TM2020Config,
    output_path: str | os.PathLike,
    *,
    timeout_s: float = 600.0,
    say: Callable[[str], None] = print,
) -> Path:
    """Open the game, record one lap from the start line to the finish and save it to ``output_path`` (JSON).

    Raises ``GameError`` when the game cannot be opened or the lap is not finished within ``timeout_s``."""
    from tmrl.games import open_game
    from tmrl.games.config import CarRacingConfig

    seed = game_config.seed if isinstance(game_config, CarRacingConfig) else None
    game = open_game(game_config)
    try:
        traj = record_trajectory(game, track_seed=seed, timeout_s=timeout_s, say=say)
    finally:
        game.close()
    path = save_trajectory(output_path, traj)
    say(f"Recorded {len(traj.points)} positions ({_length(traj.points):.0f} units) into {path}")
    return path
