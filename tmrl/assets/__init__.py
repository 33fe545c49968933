"""Files shipped with tmrl: the trained LIDAR actor of the built-in game.

``carracing_actor_path()`` is what ``tmrl test --game carracing`` uses when no run of its own has exported an
actor yet (raw arrays + JSON metadata in the safetensors layout of ``tmrl.rl.export``; no pickle). Its
metadata holds the observation layout it was trained on (the default ``EnvConfig``) and how it was trained
(``training``: minutes, samples, returns measured); ``carracing_actor_info()`` returns that metadata.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tmrl.errors import CheckpointError

CARRACING_ACTOR = "carracing-lidar-actor.safetensors"


def carracing_actor_path() -> Path:
    """Path of the shipped actor for the built-in game (CheckpointError when the package lacks it)."""
    path = Path(str(resources.files(__name__) / CARRACING_ACTOR))
    if not path.is_file():
        raise CheckpointError(
            f"the shipped actor {path} is missing from this installation of tmrl; reinstall tmrl or train "
            "one with `tmrl run --game carracing`"
        )
    return path


def carracing_actor_info() -> dict:
    """The shipped actor's metadata (observation spec, model, and the ``training`` record)."""
    from tmrl.rl.export import load_arrays

    _, meta = load_arrays(carracing_actor_path())
    return meta
