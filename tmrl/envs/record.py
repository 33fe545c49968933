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
    _after_respawn(game)
    if game.name == "carracing":
        from tmrl.games.carracing.pilot import Pilot, drive_lap, track_centerline

        if track_seed is None:
            raise GameError("recording on the built-in game needs its track seed")
        say(f"The scripted pilot drives one lap of track {track_seed} (real time, about a minute).")
        frames = drive_lap(game, Pilot(track_centerline(track_seed)), timeout_s=timeout_s)
    else:
        frames = _human_lap(game, timeout_s, say)
    points = np.array([(f.x, f.y, f.z) for f in frames], dtype=np.float64)
    return Trajectory(points, game.name, track_seed, time.strftime("%Y-%m-%dT%H:%M:%S%z"))


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
    length = float(np.linalg.norm(np.diff(traj.points, axis=0), axis=1).sum())
    say(f"Recorded {len(traj.points)} positions ({length:.0f} units) into {path}")
    return path
