"""Games: the built-in racing game (default) and TrackMania 2020, each as a screen, a controller, a telemetry stream.

``open_game(config)`` starts / attaches to the game described by a ``CarRacingConfig`` or ``TM2020Config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmrl.errors import ConfigError
from tmrl.games.base import Controller, Game, Screen
from tmrl.games.config import CarRacingConfig, TM2020Config
from tmrl.games.telemetry import (
    FRAME_FORMAT,
    FRAME_SIZE,
    TelemetryClient,
    TelemetryFrame,
    decode_frame,
    encode_frame,
)

if TYPE_CHECKING:
    from tmrl.games.tm2020.game import CaptureBackend, ControlBackend

__all__ = [
    "FRAME_FORMAT",
    "FRAME_SIZE",
    "CarRacingConfig",
    "Controller",
    "Game",
    "Screen",
    "TM2020Config",
    "TelemetryClient",
    "TelemetryFrame",
    "decode_frame",
    "encode_frame",
    "open_game",
]


def open_game(
    config: CarRacingConfig | TM2020Config,
    *,
    capture: CaptureBackend | None = None,
    control: ControlBackend | None = None,
) -> Game:
    """Start the built-in game process, or attach to a running TrackMania 2020.

    ``capture`` / ``control`` replace the TrackMania backends chosen from the config (tests, custom setups).
    """
    if isinstance(config, CarRacingConfig):
        from tmrl.games.carracing.game import CarRacingGame

        return CarRacingGame(config)
    if isinstance(config, TM2020Config):
        from tmrl.games.tm2020.game import TM2020Game

        return TM2020Game(config, capture=capture, control=control)
    raise ConfigError(f"unknown game config {type(config).__name__}; use CarRacingConfig or TM2020Config")
