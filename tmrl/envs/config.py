"""Typed configuration of the real-time environments (observations, LIDAR, rtgym timing, reward).

Fields left at ``None`` take a per-game default, resolved by the ``resolved_*`` helpers below so that one
``EnvConfig`` serves both the built-in game and TrackMania 2020.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tmrl.errors import ConfigError
from tmrl.spaces import PedalMapping

GameName = Literal["carracing", "tm2020"]
ObservationMode = Literal["lidar", "lidar_progress", "images"]
ExtraTelemetry = Literal["steer", "gas", "brake", "yaw_rate", "gear", "rpm"]

# LIDAR defaults per game. The built-in game's 96x96 view has the car at rows 66-76, column 48, facing up; its
# bottom 12 rows are the dashboard, which beams from 90 to 270 degrees starting at row 71 never reach.
CARRACING_LIDAR_ORIGIN = (71, 48)
CARRACING_LIDAR_START = 6
# The built-in game's road is 2 x 6.67 units wide (CarRacing's TRACK_WIDTH): progress counts up to 10 units from
# the recorded line, i.e. with the car on the road or touching its edge, as CarRacing's tiles count when touched.
CARRACING_MAX_STRAY = 10.0
# Per-game timing. TrackMania keeps TMRL's 20 Hz with capture 0.04 s into the step. The built-in game steps at 50 Hz
# (one of its 50 physics frames per step) and captures at the end of the step: rtgym applies an action one time
# step after the observation it answers, so the action comes 20 ms after what it answers (TMRL's timing: 60 ms;
# docs/learning.md, sessions 5 and 14-16).
CARRACING_TIME_STEP_S = 0.02
# What is counted in steps defaults to TMRL's durations at any time step, rounded to the nearest step (ties to even):
# 50 s episodes, 3.5 s after a reset before steps without progress count, 0.5 s without progress ends an episode.
EPISODE_S = 50.0
MIN_PROGRESS_DELAY_S = 3.5
FAILURE_COUNTDOWN_S = 0.5
# The time step at which each game's discount and entropy coefficient per step are TMRL's 0.995 and 0.01: TMRL's
# 20 Hz on TrackMania, 25 Hz on the built-in game (where they were tuned, sessions 3-13). At other time steps the
# per-step values are scaled so that the horizon and the entropy bonus per second stay (tmrl.config.TmrlConfig.rl).
ALGORITHM_TIME_STEP_S: dict[str, float] = {"carracing": 0.04, "tm2020": 0.05}


def steps_in(seconds: float, time_step_s: float) -> int:
    """The number of time steps nearest to ``seconds`` (ties to even)."""
    return round(seconds / time_step_s)


class LidarConfig(BaseModel):
    """Geometry of the raycasting LIDAR (``tmrl._core.Lidar``) over the captured frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    angles_deg: tuple[float, ...] = Field(
        default=tuple(float(a) for a in range(90, 271, 10)),
        min_length=1,
        description="Beam angles in degrees (90 = right, 180 = up, 270 = left on screen); default 19 beams.",
    )
    origin: tuple[int, int] | None = Field(
        default=None,
        description="(row, column) the beams start from. None = per game: (71, 48) on the built-in game's "
        "96x96 frame (the car), TMRL's (44*h/49, w/2) on TrackMania.",
    )
    start: int | None = Field(
        default=None,
        ge=0,
        description="First pixel examined along each beam. None = per game: 6 on the built-in game (clears "
        "the car sprite), 20 on TrackMania (TMRL's value).",
    )
    border: Literal["dark", "not_road"] | None = Field(
        default=None,
        description="What stops a beam. None = per game: 'not_road' on the built-in game (grass, kerbs), "
        "'dark' (TrackMania's black track borders) on TrackMania.",
    )
    threshold: int = Field(default=55, ge=0, le=255, description="'dark' border: every channel below this.")
    road_min: int = Field(default=90, ge=0, le=255, description="'not_road' border: road channels >= this.")
    road_max: int = Field(default=120, ge=0, le=255, description="'not_road' border: road channels <= this.")
    road_tolerance: int = Field(
        default=12, ge=0, le=255, description="'not_road' border: road is gray, max - min channel <= this."
    )
    history: int = Field(default=4, ge=1, le=16, description="Number of past scans in the observation.")


class ImageConfig(BaseModel):
    """Image observations: grayscale frames resized by ``tmrl._core.FrameHistory``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=64, ge=8, le=512, description="Width of each observed frame.")
    height: int = Field(default=64, ge=8, le=512, description="Height of each observed frame.")
    history: int = Field(default=4, ge=1, le=16, description="Number of past frames in the observation.")


class RtgymConfig(BaseModel):
    """Real-time timing of the rtgym environment (DESIGN.md section 2 defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    implementation: Literal["real-time-gym-ts-v1", "real-time-gym-v1"] = Field(
        default="real-time-gym-ts-v1",
        description="rtgym environment class; the '-ts' one runs every time step in one background thread "
        "(lower jitter under load than 'v1', which starts a thread per step).",
    )
    time_step_s: float | None = Field(
        default=None,
        gt=0.0,
        le=10.0,
        description="Nominal time-step duration. None = per game: 0.02 s (50 Hz, one physics frame per step) on "
        "the built-in game, 0.05 s (20 Hz, TMRL's) on TrackMania.",
    )
    start_obs_capture_s: float | None = Field(
        default=None,
        ge=0.0,
        le=10.0,
        description="Observation capture starts this long after the time step begins (<= time_step_s). None = "
        "per game: the end of the time step on the built-in game (its capture is instantaneous, so the "
        "observation is as fresh as rtgym allows), 0.04 s (TMRL's) on TrackMania.",
    )
    timeout_factor: float = Field(
        default=1.0,
        gt=0.0,
        description="Elasticity: a step later than this many time steps breaks the clock (a 'timeout').",
    )
    act_buf_len: int = Field(default=2, ge=1, le=16, description="Past actions appended to the observation.")
    ep_max_length: int | None = Field(
        default=None,
        ge=1,
        description="Steps after which an episode is truncated (not terminated). None = 50 s of time steps "
        "(2500 on the built-in game at 50 Hz, TMRL's 1000 on TrackMania at 20 Hz).",
    )
    wait_on_done: bool = Field(
        default=True, description="Pause the game (neutral controls) when an episode ends, until reset."
    )


class RewardConfig(BaseModel):
    """Reward from a recorded trajectory (DESIGN.md section 2) or on CarRacing's scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "trajectory", "carracing"] = Field(
        default="auto",
        description="'trajectory': TMRL's reward, (index gained) / index_per_reward, finish +finish_bonus. "
        "'carracing': CarRacing's scale, lap_reward x (new progress as a fraction of the lap) - frame_penalty "
        "per physics frame, the rest of lap_reward at the finish, so a return of 900 means 'solved'. "
        "'auto' = 'carracing' on the built-in game (its success is judged on that scale, and progress is "
        "counted once like CarRacing's tiles, so backing up and re-driving earns nothing), "
        "'trajectory' on TrackMania.",
    )
    path: Path | None = Field(
        default=None,
        description="Recorded trajectory file (JSON, written by `tmrl record-reward`). Required.",
    )
    spacing: float = Field(
        default=0.1, gt=0.0, description="The trajectory is resampled to this spacing (units)."
    )
    check_forward: int = Field(
        default=500,
        ge=1,
        description="Forward search stops after this many consecutive non-improving points.",
    )
    check_backward: int = Field(
        default=10, ge=0, description="Backward search (when no progress) stops after this many points."
    )
    max_stray: float | None = Field(
        default=None,
        gt=0.0,
        description="Farther than this from the closest trajectory point: no progress. None = per game: 10 on "
        "the built-in game (its road is 13.3 units wide: a car off the road earns nothing, like CarRacing's "
        "tiles), 100 on TrackMania (TMRL's value).",
    )
    index_per_reward: float = Field(
        default=100.0, gt=0.0, description="'trajectory' mode: reward = indices gained / this."
    )
    min_steps: int | None = Field(
        default=None,
        ge=0,
        description="Steps after reset before steps without progress count as failures. None = 3.5 s "
        "of time steps (175 on the built-in game at 50 Hz, TMRL's 70 on TrackMania at 20 Hz).",
    )
    failure_countdown: int | None = Field(
        default=None,
        ge=0,
        description="More than this many steps in a row without progress ends the episode. None = 0.5 s of "
        "time steps (25 on the built-in game at 50 Hz, TMRL's 10 on TrackMania at 20 Hz).",
    )
    finish_bonus: float = Field(default=100.0, description="'trajectory' mode: reward added at the finish.")
    constant_penalty: float = Field(
        default=0.0, ge=0.0, description="'trajectory' mode: subtracted from every step's reward."
    )
    lap_reward: float = Field(default=1000.0, gt=0.0, description="'carracing' mode: reward of a whole lap.")
    frame_penalty: float = Field(
        default=0.1,
        ge=0.0,
        description="'carracing' mode: penalty per physics frame elapsed (CarRacing: 0.1).",
    )


class EnvConfig(BaseModel):
    """Everything about the real-time environment: game, observations, timing, reward."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    game: GameName = Field(default="carracing", description="'carracing' (built-in game) or 'tm2020'.")
    observation: ObservationMode = Field(
        default="lidar",
        description="'lidar': speed + LIDAR x history + previous actions; 'lidar_progress': + track progress; "
        "'images': speed, gear, rpm + grayscale frames x history + previous actions.",
    )
    extra_telemetry: tuple[ExtraTelemetry, ...] = Field(
        default=(),
        description="Extra (1,) float components: steer/gas/brake inputs (as the game reports them), "
        "yaw_rate (heading change per second from positions, / 5 rad/s), gear (/10), rpm (/10000).",
    )
    speed_scale: float | None = Field(
        default=None,
        gt=0.0,
        description="Observed speed = telemetry speed / this. None = per game: 1000 on TrackMania (TMRL), "
        "300 on the built-in game (telemetry speed in km/h; flat out on a straight it reaches about 340).",
    )
    pedals: PedalMapping = Field(
        default="clip",
        description="How the gas and brake actions in [-1, 1] press the pedals. 'clip' (TMRL's): max(0, action), "
        "so the lower half of each range is the released pedal and changes there do nothing; 'linear': "
        "(action + 1) / 2, so every change of the action reaches the game (what SB3 does with CarRacing's [0, 1] "
        "pedals). An actor records the mapping it was trained with.",
    )
    lidar: LidarConfig = Field(default_factory=LidarConfig, description="LIDAR geometry.")
    image: ImageConfig = Field(default_factory=ImageConfig, description="Image observations.")
    rtgym: RtgymConfig = Field(default_factory=RtgymConfig, description="Real-time timing.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Reward.")
    reset_settle_s: float | None = Field(
        default=None,
        ge=0.0,
        description="Pause after a respawn before the first observation. None = per game: 0 on the built-in "
        "game (it respawns instantly), 1.5 s on TrackMania (TMRL's start countdown).",
    )
    priority: Literal["normal", "high", "realtime"] = Field(
        default="normal",
        description="Linux scheduling of the real-time path, so it runs first on busy cores (needs root or "
        "CAP_SYS_NICE): 'high' = nice -10 for this process's threads and the built-in game; 'realtime' = "
        "SCHED_FIFO for this process's threads (rtgym's time-step thread first) and the game; 'normal' = as "
        "started.",
    )
    respawn_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        description="reset() raises GameError when the respawn is not seen for this long.",
    )


def resolved_reward_mode(config: EnvConfig) -> Literal["trajectory", "carracing"]:
    """The reward mode after resolving 'auto' for the configured game."""
    if config.reward.mode != "auto":
        return config.reward.mode
    return "carracing" if config.game == "carracing" else "trajectory"


def resolved_reward(config: EnvConfig) -> RewardConfig:
    """The reward configuration with its per-game defaults (fields left at None) filled in."""
    rc = config.reward
    update: dict[str, float | int] = {}
    if rc.max_stray is None:
        update["max_stray"] = CARRACING_MAX_STRAY if config.game == "carracing" else 100.0
    step = resolved_rtgym(config).time_step_s
    assert step is not None
    if rc.min_steps is None:
        update["min_steps"] = steps_in(MIN_PROGRESS_DELAY_S, step)
    if rc.failure_countdown is None:
        update["failure_countdown"] = steps_in(FAILURE_COUNTDOWN_S, step)
    return rc.model_copy(update=update) if update else rc


def resolved_rtgym(config: EnvConfig) -> RtgymConfig:
    """The timing configuration with its per-game defaults (fields left at None) filled in."""
    rc = config.rtgym
    carracing = config.game == "carracing"
    step = rc.time_step_s if rc.time_step_s is not None else (CARRACING_TIME_STEP_S if carracing else 0.05)
    capture = rc.start_obs_capture_s
    if capture is None:
        capture = step if carracing else min(0.04, step)
    if capture > step:
        raise ConfigError(
            f"env.rtgym.start_obs_capture_s = {capture} is later than the end of the time step "
            f"(env.rtgym.time_step_s = {step}); use a value <= {step}"
        )
    length = rc.ep_max_length if rc.ep_max_length is not None else steps_in(EPISODE_S, step)
    return rc.model_copy(
        update={"time_step_s": step, "start_obs_capture_s": capture, "ep_max_length": length}
    )


def resolved_speed_scale(config: EnvConfig) -> float:
    if config.speed_scale is not None:
        return config.speed_scale
    return 300.0 if config.game == "carracing" else 1000.0


def resolved_reset_settle(config: EnvConfig) -> float:
    if config.reset_settle_s is not None:
        return config.reset_settle_s
    return 0.0 if config.game == "carracing" else 1.5


def resolved_lidar(config: EnvConfig, height: int, width: int) -> dict:
    """Keyword arguments of ``tmrl._core.Lidar`` for a frame of ``height`` x ``width``."""
    lc = config.lidar
    carracing = config.game == "carracing"
    if lc.origin is not None:
        origin = lc.origin
    elif carracing:
        # Scale the 96x96 reference position to the rendered size.
        origin = (CARRACING_LIDAR_ORIGIN[0] * height // 96, CARRACING_LIDAR_ORIGIN[1] * width // 96)
    else:
        origin = (44 * height // 49, width // 2)
    start = lc.start if lc.start is not None else (CARRACING_LIDAR_START * height // 96 if carracing else 20)
    border = lc.border or ("not_road" if carracing else "dark")
    return {
        "angles_deg": list(lc.angles_deg),
        "origin": origin,
        "start": start,
        "border": border,
        "threshold": lc.threshold,
        "road_min": lc.road_min,
        "road_max": lc.road_max,
        "road_tolerance": lc.road_tolerance,
    }
