"""tmrl: distributed real-time reinforcement learning on video games.

Importing this package has no side effects; the roles live in their own modules (``tmrl.worker``,
``tmrl.net.server``, ``tmrl.trainer``) and the Rust hot path in ``tmrl._core``. ``tmrl.make_env`` (a Gymnasium
env on the built-in game or TrackMania 2020, for people who bring their own agent) is imported on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "make_env"]


def __getattr__(name: str) -> Any:
    if name == "make_env":
        from tmrl.envs import make_env

        return make_env
    raise AttributeError(f"module 'tmrl' has no attribute {name!r}")
