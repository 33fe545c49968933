"""`record_reward` on the built-in game: the scripted pilot drives one real-time lap (about 45 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tmrl.envs.config import EnvConfig, RewardConfig
from tmrl.envs.record import record_reward
from tmrl.envs.reward import CarRacingReward, load_trajectory, make_reward
from tmrl.games.carracing.pilot import track_centerline
from tmrl.games.config import CarRacingConfig


@pytest.mark.timeout(240)
def test_record_reward_with_the_pilot(tmp_path: Path) -> None:
    said: list[str] = []
    path = record_reward(CarRacingConfig(seed=0), tmp_path / "reward.json", timeout_s=180.0, say=said.append)
    traj = load_trajectory(path, "carracing")
    assert traj.track_seed == 0
    centre = track_centerline(0)
    start = centre[0]
    assert np.hypot(traj.points[0, 0] - start[0], traj.points[0, 2] - start[1]) < 1.0  # from the start line
    assert (traj.points[:, 1] == 0.0).all()
    driven = float(np.linalg.norm(np.diff(traj.points, axis=0), axis=1).sum())
    lap = float(np.linalg.norm(np.diff(centre, axis=0), axis=1).sum())
    assert 0.85 * lap < driven < 1.15 * lap
    assert "Recorded" in said[-1] and str(path) in said[-1]
    # The recording is a usable reward: replaying it earns the whole lap on CarRacing's scale.
    reward = make_reward(EnvConfig(reward=RewardConfig(path=path)), track_seed=0)
    assert isinstance(reward, CarRacingReward)
    replay = [*traj.points[::10], traj.points[-1]]  # every 10th point, and always the last one
    total = sum(reward.step(p, False, 0)[0] for p in replay)
    assert total == pytest.approx(1000.0, abs=5.0)
