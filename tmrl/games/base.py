"""What every game offers the environments: a screen, a controller and a telemetry stream."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from tmrl.games.telemetry import TelemetryClient

CHANNEL_ORDERS = ("rgb", "bgr", "bgra", "rgba")


@runtime_checkable
class Screen(Protocol):
    """The game's picture."""

    channel_order: str
    """One of "rgb", "bgr", "bgra", "rgba": the meaning of the last axis of ``grab``'s array."""

    def grab(self) -> np.ndarray:
        """Return the current frame: (H, W, C) uint8, C-contiguous, owned by the caller, never torn."""
        ...


@runtime_checkable
class Controller(Protocol):
    """The game's input device."""

    def act(self, gas: float, brake: float, steer: float) -> None:
        """Apply an action; each value in [-1, 1] as the env sends it (gas/brake pressed when > 0)."""
        ...

    def respawn(self) -> None:
        """Put the car back on the start line (TrackMania: B held ~0.1 s; built-in: respawn command)."""
        ...

    def neutral(self) -> None:
        """Release every input."""
        ...


@runtime_checkable
class Game(Protocol):
    """A running game: its three channels and a close that leaves nothing behind."""

    @property
    def name(self) -> str:
        """Which game: "carracing" or "tm2020"."""
        ...

    @property
    def screen(self) -> Screen:
        """The game's picture."""
        ...

    @property
    def controller(self) -> Controller:
        """The game's input device."""
        ...

    @property
    def telemetry(self) -> TelemetryClient:
        """The game's telemetry stream (started)."""
        ...

    def close(self) -> None:
        """Release everything (idempotent); the built-in game's process exits."""
        ...


def clip_unit(value: float) -> float:
    """Clamp an action value to [-1, 1] (NaN becomes 0)."""
    if value != value:  # NaN
        return 0.0
    return -1.0 if value < -1.0 else 1.0 if value > 1.0 else float(value)
