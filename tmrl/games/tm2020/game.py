"""TrackMania 2020 as a ``Game``: window capture, gamepad / keyboard control, OpenPlanet telemetry."""

from __future__ import annotations

import time

import numpy as np

from tmrl.errors import GameError, TelemetryError
from tmrl.games.base import CHANNEL_ORDERS, clip_unit
from tmrl.games.config import TM2020Config
from tmrl.games.telemetry import TelemetryClient
from tmrl.games.tm2020.capture import CaptureBackend, make_capture
from tmrl.games.tm2020.control import ControlBackend, make_control
from tmrl.games.tm2020.window import WindowBackend, default_window_backend, locate_window

__all__ = ["CaptureBackend", "ControlBackend", "TM2020Controller", "TM2020Game", "TM2020Screen"]

PLUGIN_SOURCE = "the OpenPlanet plugin 'tmrl-telemetry'"
PLUGIN_HINT = (
    "start TrackMania 2020 with OpenPlanet, install and enable the 'tmrl-telemetry' plugin "
    "(docs/tm2020.md), load a track and drive; check telemetry_host / telemetry_port"
)


class TM2020Screen:
    """The game window's client area."""

    def __init__(self, capture: CaptureBackend) -> None:
        if capture.channel_order not in CHANNEL_ORDERS:
            raise GameError(
                f"capture backend channel order {capture.channel_order!r} not in {CHANNEL_ORDERS}"
            )
        self._capture = capture
        self.channel_order = capture.channel_order

    def grab(self) -> np.ndarray:
        """(H, W, C) uint8 C-contiguous frame of the client area."""
        frame = self._capture.grab()
        if frame.ndim != 3 or frame.dtype != np.uint8:
            raise GameError(f"the capture backend returned {frame.dtype} {frame.shape}, not (H, W, C) uint8")
        return np.ascontiguousarray(frame)


class TM2020Controller:
    """Env actions to the control backend; respawn closes the finish pop-up first when the race was finished."""

    def __init__(self, backend: ControlBackend, config: TM2020Config, telemetry: TelemetryClient) -> None:
        self._backend = backend
        self._config = config
        self._telemetry = telemetry

    def act(self, gas: float, brake: float, steer: float) -> None:
        self._backend.set(clip_unit(gas), clip_unit(brake), clip_unit(steer))

    def neutral(self) -> None:
        self._backend.release()

    def respawn(self) -> None:
        self._backend.release()
        try:
            _, frame = self._telemetry.latest()
            finished = frame.finished >= 0.5
        except TelemetryError:
            finished = False
        if finished:
            self._backend.confirm()
            time.sleep(0.1)
        self._backend.respawn(self._config.respawn_hold_s)


class TM2020Game:
    """A running TrackMania 2020: its window, controller and telemetry."""

    name = "tm2020"

    def __init__(
        self,
        config: TM2020Config,
        *,
        capture: CaptureBackend | None = None,
        control: ControlBackend | None = None,
        windows: WindowBackend | None = None,
    ) -> None:
        self.config = config
        self._closed = False
        self._capture: CaptureBackend | None = None
        self._control: ControlBackend | None = None
        self.telemetry = TelemetryClient(
            config.telemetry_host,
            config.telemetry_port,
            source=PLUGIN_SOURCE,
            timeout=config.telemetry_timeout_s,
            hint=PLUGIN_HINT,
        )
        try:
            self.telemetry.start()
            if capture is None:
                region = locate_window(
                    windows if windows is not None else default_window_backend(),
                    config.window_title,
                    width=config.window_width,
                    height=config.window_height,
                    x=config.window_x,
                    y=config.window_y,
                    place=config.place_window,
                )
                capture = make_capture(config.capture, region)
            self._capture = capture
            self._control = (
                control
                if control is not None
                else make_control(config.control, steer_deadzone=config.steer_deadzone)
            )
            self.screen = TM2020Screen(self._capture)
            self.controller = TM2020Controller(self._control, config, self.telemetry)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the controls, stop the capture and the telemetry client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._control is not None:
            try:
                self._control.close()
            finally:
                self._control = None
        if self._capture is not None:
            self._capture.close()
            self._capture = None
        self.telemetry.close()

    def __enter__(self) -> TM2020Game:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
