"""Typed configuration of the games: the built-in racing game and TrackMania 2020."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CarRacingConfig(BaseModel):
    """The built-in racing game: Gymnasium's CarRacing-v3 physics in its own process, on its own wall clock."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    game: Literal["carracing"] = Field(default="carracing", description="Discriminator: the built-in game.")
    seed: int = Field(default=0, ge=0, description="Track seed: the same seed always builds the same track.")
    port: int = Field(
        default=0, ge=0, le=65535, description="Telemetry TCP port on 127.0.0.1 (0 = pick a free port)."
    )
    shm_name: str | None = Field(
        default=None,
        description="Shared-memory block name for screen and controls (None = a unique name per game).",
    )
    render_width: int = Field(
        default=96, ge=16, le=1024, description="Width of the rendered frame in pixels (96 = the LIDAR view)."
    )
    render_height: int = Field(
        default=96,
        ge=16,
        le=1024,
        description="Height of the rendered frame in pixels. At 96x96 the car sits at about row 72, column 48, "
        "facing up, and the bottom 12 rows are the dashboard.",
    )
    render_mode: Literal["on_demand", "continuous"] = Field(
        default="continuous",
        description="'continuous' (like a real game's screen): the game renders after its physics frames at up "
        "to max_render_hz and a grab copies the latest frame from shared memory (~0.1 ms, the frame is at most "
        "one render period old; measured p99 grab 0.9 ms on a loaded box). 'on_demand': each grab asks the "
        "game to render the current state (a fresh frame, but the grab waits for the game process: ~2 ms "
        "quiet, up to ~100 ms on a loaded box).",
    )
    max_render_hz: float = Field(
        default=50.0,
        gt=0.0,
        description="Frames are never rendered more often than this; an on-demand grab sooner than that "
        "returns the latest frame.",
    )
    supersample: int = Field(
        default=2,
        ge=1,
        le=4,
        description="The frame is drawn at this multiple of its size and smoothly scaled down (anti-aliasing).",
    )
    lap_complete_percent: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="Fraction of the track tiles to visit before crossing the start line counts as a lap "
        "(CarRacing's rule).",
    )
    silence_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="The game process exits when no control write or heartbeat arrived for this long "
        "(counted from its owner's connection).",
    )
    heartbeat_s: float = Field(
        default=1.0, gt=0.0, description="Period of the heartbeat the Game object sends while it is open."
    )
    startup_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="How long open_game waits for the game process to be ready, and how long a ready game "
        "waits for its owner to connect before exiting (the silence clock starts at that connection).",
    )
    telemetry_timeout_s: float = Field(
        default=5.0, gt=0.0, description="TelemetryClient.latest raises when no frame arrived for this long."
    )
    grab_timeout_s: float = Field(
        default=2.0,
        gt=0.0,
        description="Screen.grab raises GameError when the game renders nothing for this long.",
    )


class TM2020Config(BaseModel):
    """TrackMania 2020 on Windows (or Linux through Proton/Wine): window capture, virtual gamepad, OpenPlanet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    game: Literal["tm2020"] = Field(default="tm2020", description="Discriminator: TrackMania 2020.")
    telemetry_host: str = Field(
        default="127.0.0.1", description="Host of the OpenPlanet plugin 'tmrl-telemetry' TCP server."
    )
    telemetry_port: int = Field(default=9000, ge=1, le=65535, description="Port of the OpenPlanet plugin.")
    telemetry_timeout_s: float = Field(
        default=5.0, gt=0.0, description="TelemetryClient.latest raises when no frame arrived for this long."
    )
    window_title: str = Field(default="Trackmania", description="Title of the game window (exact match).")
    window_width: int = Field(default=958, ge=64, description="Client-area width the window is sized to.")
    window_height: int = Field(default=488, ge=64, description="Client-area height the window is sized to.")
    window_x: int = Field(default=0, description="Screen x of the window's top-left corner after placement.")
    window_y: int = Field(default=0, description="Screen y of the window's top-left corner after placement.")
    place_window: bool = Field(
        default=True, description="Move and size the window at start (False: capture it where it is)."
    )
    control: Literal["gamepad", "keyboard"] = Field(
        default="gamepad", description="Virtual gamepad (vgamepad + ViGEmBus) or keyboard fallback."
    )
    capture: Literal["auto", "dxcam", "mss"] = Field(
        default="auto", description="Screen capture backend; auto = dxcam on Windows, mss elsewhere."
    )
    respawn_hold_s: float = Field(
        default=0.1, ge=0.0, le=2.0, description="How long the respawn button (B / key) is held."
    )
    steer_deadzone: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        description="Keyboard only: steer beyond +-this presses right / left (TMRL 0.7.1 uses 0.5).",
    )
