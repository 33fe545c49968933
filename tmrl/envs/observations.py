"""Observation layout (an ``ObservationSpec``) and its assembly from a captured frame plus telemetry.

Normalisation (every float component is scaled to roughly [0, 1] or [-1, 1]):

- ``speed``: telemetry speed / ``speed_scale`` (TrackMania 1000, built-in game 300, see ``EnvConfig``);
- ``lidar``: each beam's distance divided by that beam's maximum (its path length - 1), so 1.0 = nothing hit;
- ``progress``: index along the reward trajectory / its last index, in [0, 1];
- ``gear`` / 10, ``rpm`` / 10000 (TMRL's scales); ``steer``, ``gas``, ``brake`` as reported, in [-1, 1];
- ``yaw_rate``: change of the heading of the car's displacement per second, / 5 rad/s;
- ``frames``: grayscale uint8 as captured (models divide by 256); ``prev_actions``: rtgym's action buffer,
  oldest first, [gas, brake, steer] each in [-1, 1].

The hot path (LIDAR ray casting, frame resizing) runs in ``tmrl._core``, one call per frame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, cast

import gymnasium.spaces as gspaces
import numpy as np

from tmrl.envs.config import EnvConfig, resolved_lidar, resolved_speed_scale
from tmrl.errors import GameError
from tmrl.spaces import ACTION_NAMES, Component, ObservationSpec

if TYPE_CHECKING:
    from tmrl.games.telemetry import TelemetryFrame

ACTION_DIM = len(ACTION_NAMES)  # [gas, brake, steer]
ChannelOrder = Literal["bgr", "bgra", "rgb", "rgba"]
CHANNEL_ORDERS = ("bgr", "bgra", "rgb", "rgba")
YAW_RATE_SCALE = 5.0  # rad/s
_BOUNDED = {"lidar": (0.0, 1.0), "progress": (0.0, 1.0), "prev_actions": (-1.0, 1.0)}


def observation_spec(config: EnvConfig) -> ObservationSpec:
    """The components of the env's observations, in order; ``prev_actions`` (rtgym's action buffer) last."""
    comps: list[Component] = [Component("speed", (1,))]
    if config.observation == "images":
        comps += [Component("gear", (1,)), Component("rpm", (1,))]
        ic = config.image
        comps.append(Component("frames", (ic.height, ic.width), "uint8", ic.history))
    else:
        comps.append(Component("lidar", (len(config.lidar.angles_deg),), "float32", config.lidar.history))
        if config.observation == "lidar_progress":
            comps.append(Component("progress", (1,)))
    present = {c.name for c in comps}
    for name in dict.fromkeys(config.extra_telemetry):  # ordered, without repeats
        if name not in present:
            comps.append(Component(name, (1,)))
    comps.append(Component("prev_actions", (config.rtgym.act_buf_len, ACTION_DIM)))
    return ObservationSpec(tuple(comps), ACTION_DIM, config.pedals)


def component_space(comp: Component) -> gspaces.Box:
    """The gymnasium Box of one component, as the policy sees it (with its history axis)."""
    if comp.dtype == "uint8":
        return gspaces.Box(0, 255, comp.policy_shape, np.uint8)
    low, high = _BOUNDED.get(comp.name, (-np.inf, np.inf))
    return gspaces.Box(low, high, comp.policy_shape, np.float32)


def dict_space(spec: ObservationSpec) -> gspaces.Dict:
    return gspaces.Dict({c.name: component_space(c) for c in spec.components})


def action_space() -> gspaces.Box:
    """[gas, brake, steer], each in [-1, 1]."""
    return gspaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


class ObservationBuilder:
    """Turns (frame, telemetry, progress) into the spec's components, except ``prev_actions`` (rtgym adds it).

    ``reset`` fills every history slot with the first observation of an episode; ``build`` shifts in a new one.
    Arrays returned are fresh (the caller may keep them)."""

    def __init__(
        self, config: EnvConfig, frame_shape: tuple[int, ...], channel_order: str, time_step_s: float
    ) -> None:
        from tmrl import _core  # the Rust extension; imported here so importing tmrl.envs stays light

        if channel_order not in CHANNEL_ORDERS:
            raise GameError(
                f"the game's screen has channel order {channel_order!r}, not one of {CHANNEL_ORDERS}"
            )
        order = cast(ChannelOrder, channel_order)

        self.spec = observation_spec(config)
        self.names = [c.name for c in self.spec.components if c.name != "prev_actions"]
        self.speed_scale = resolved_speed_scale(config)
        self.time_step_s = time_step_s
        height, width = int(frame_shape[0]), int(frame_shape[1])
        self.images = config.observation == "images"
        self.lidar: Any = None
        self.frames: Any = None
        if self.images:
            ic = config.image
            self.frames = _core.FrameHistory(
                ic.height, ic.width, history=ic.history, channel_order=order, grayscale=True
            )
        else:
            self.lidar = _core.Lidar(
                height, width, channel_order=order, **resolved_lidar(config, height, width)
            )
            self.lidar_scale = (1.0 / np.maximum(1, self.lidar.beam_lengths() - 1)).astype(np.float32)
            self.scan = np.zeros(self.lidar.n_beams, np.float32)
            self.lidar_hist = np.zeros((config.lidar.history, self.lidar.n_beams), np.float32)
        self._xz: tuple[float, float] | None = None
        self._heading: float | None = None

    def _scalars(self, tel: TelemetryFrame, progress: float, yaw_rate: float) -> dict[str, float]:
        return {
            "speed": tel.speed / self.speed_scale,
            "gear": tel.gear / 10.0,
            "rpm": tel.rpm / 10000.0,
            "progress": progress,
            "steer": tel.steer,
            "gas": tel.gas,
            "brake": tel.brake,
            "yaw_rate": yaw_rate,
        }

    def _yaw_rate(self, tel: TelemetryFrame) -> float:
        """Heading change of the displacement since the previous step, per second, scaled."""
        xz = (tel.x, tel.z)
        rate = 0.0
        if self._xz is not None:
            dx, dz = xz[0] - self._xz[0], xz[1] - self._xz[1]
            if dx * dx + dz * dz > 1e-6:
                heading = math.atan2(dz, dx)
                if self._heading is not None:
                    delta = (heading - self._heading + math.pi) % (2.0 * math.pi) - math.pi
                    rate = delta / self.time_step_s / YAW_RATE_SCALE
                self._heading = heading
        self._xz = xz
        return rate

    def _assemble(self, tel: TelemetryFrame, progress: float, yaw_rate: float) -> list[np.ndarray]:
        scalars = self._scalars(tel, progress, yaw_rate)
        out: list[np.ndarray] = []
        for name in self.names:
            if name == "lidar":
                out.append(self.lidar_hist.copy())
            elif name == "frames":
                out.append(np.array(self.frames.view(), copy=True))
            else:
                out.append(np.array([scalars[name]], np.float32))
        return out

    def reset(self, frame: np.ndarray, tel: TelemetryFrame, progress: float) -> list[np.ndarray]:
        self._xz = None
        self._heading = None
        self._yaw_rate(tel)
        if self.images:
            self.frames.reset(frame)
        else:
            self.lidar.scan(frame, out=self.scan)
            self.lidar_hist[:] = self.scan * self.lidar_scale
        return self._assemble(tel, progress, 0.0)

    def build(self, frame: np.ndarray, tel: TelemetryFrame, progress: float) -> list[np.ndarray]:
        yaw_rate = self._yaw_rate(tel)
        if self.images:
            self.frames.push(frame)
        else:
            self.lidar.scan(frame, out=self.scan)
            self.lidar_hist[:-1] = self.lidar_hist[1:]
            np.multiply(self.scan, self.lidar_scale, out=self.lidar_hist[-1])
        return self._assemble(tel, progress, yaw_rate)
