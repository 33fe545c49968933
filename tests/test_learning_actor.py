"""The shipped LIDAR actor (``tmrl/assets``): it loads, fits the default observations and drives the game."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tmrl.assets import carracing_actor_info, carracing_actor_path
from tmrl.envs.config import EnvConfig, RewardConfig
from tmrl.envs.env import make_env
from tmrl.envs.observations import observation_spec
from tmrl.envs.reward import Trajectory, save_trajectory
from tmrl.games.carracing.pilot import track_centerline
from tmrl.games.config import CarRacingConfig
from tmrl.rl.config import ModelConfig
from tmrl.rl.export import load_actor, save_actor
from tmrl.rl.models import Actor

SEED = 0
STEPS = 300  # 6 s of game time at 50 Hz


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward trajectory along the default track's centre line (no real-time pilot lap needed)."""
    xz = track_centerline(SEED)
    points = np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1)
    return save_trajectory(
        tmp_path_factory.mktemp("reward") / "reward.json", Trajectory(points, "carracing", SEED)
    )


def test_shipped_actor_fits_the_default_observations() -> None:
    actor = load_actor(carracing_actor_path())
    assert actor.spec == observation_spec(EnvConfig())
    info = carracing_actor_info()
    assert info["format"] == "tmrl-actor"
    assert "training" in info  # how it was trained and what it scored
    obs = {c.name: np.zeros(c.policy_shape, np.float32) for c in actor.spec.components}
    action = actor.act(obs, deterministic=True)
    assert action.shape == (3,) and np.all(np.abs(action) <= 1.0)


def test_shipped_actor_drives_the_builtin_game(reward_file: Path) -> None:
    """Real time, real game process: the deterministic policy makes progress along the track without help."""
    actor = load_actor(carracing_actor_path())
    env = make_env(EnvConfig(reward=RewardConfig(path=reward_file)), CarRacingConfig(seed=SEED))
    try:
        obs, _ = env.reset()
        ret, info = 0.0, {}
        for _ in range(STEPS):
            obs, reward, terminated, truncated, info = env.step(actor.act(obs, deterministic=True))
            ret += reward
            if terminated or truncated:
                break
        # 6 s of a car that drives: well beyond what creeping or random actions cover (about 1 %). The
        # shipped actor sometimes leaves the road at the first sharp turn (about 5 % of the lap) in real time.
        assert info["progress"] > 0.03, info
        assert ret > 0.0
    finally:
        env.close()


def test_tmrl_test_refuses_an_actor_of_the_other_pedal_mapping(tmp_path: Path, reward_file: Path) -> None:
    """An actor trained with linear pedals is not driven with clipped ones: one line naming the setting."""
    path = save_actor(
        tmp_path / "linear.safetensors",
        Actor(observation_spec(EnvConfig(pedals="linear")), ModelConfig(hidden=(8,))),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update({"TMRL_DATA_DIR": str(tmp_path), "PYGAME_HIDE_SUPPORT_PROMPT": "1"})
    cmd = [str(Path(sys.executable).parent / "tmrl"), "test", "--game", "carracing", "--weights", str(path)]
    cmd += ["--episodes", "1", "--set", f"env.reward.path={reward_file}"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert (
        len(lines) == 1 and "env.pedals = 'linear'" in lines[0] and "--set env.pedals=linear" in lines[0]
    ), lines
