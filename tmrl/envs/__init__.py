"""Real-time environments over the games: rtgym interfaces, observations, reward, ``make_env``.

Bring your own agent (a standard ``gymnasium.Env``, Dict observations, actions [gas, brake, steer] in [-1, 1])::

    from tmrl.envs import EnvConfig, make_env, record_reward
    from tmrl.envs.config import RewardConfig
    from tmrl.games.config import CarRacingConfig

    game = CarRacingConfig(seed=0)
    record_reward(game, "reward.json")  # once: the scripted pilot drives a lap (about a minute)
    env = make_env(EnvConfig(reward=RewardConfig(path="reward.json")), game)
    obs, info = env.reset()
    try:
        while True:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, info = env.reset()
    finally:
        env.close()

``step`` paces itself on the game's real-time clock (by default 50 Hz on the built-in game, 20 Hz on TrackMania):
call it again within one time step.
Names are imported lazily (``tmrl.envs.make_env`` loads rtgym and the game code only when first used).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tmrl.envs.config import EnvConfig
    from tmrl.envs.env import RealTimeEnv, make_env
    from tmrl.envs.observations import observation_spec
    from tmrl.envs.record import record_reward

__all__ = ["EnvConfig", "RealTimeEnv", "make_env", "observation_spec", "record_reward"]

_WHERE = {
    "EnvConfig": "tmrl.envs.config",
    "RealTimeEnv": "tmrl.envs.env",
    "make_env": "tmrl.envs.env",
    "observation_spec": "tmrl.envs.observations",
    "record_reward": "tmrl.envs.record",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tmrl.envs' has no attribute {name!r}")
    return getattr(import_module(module), name)
