"""Real-time environments over the games: rtgym interfaces, observations, reward, ``make_env``.

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
