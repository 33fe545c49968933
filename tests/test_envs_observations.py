"""Observation layout per mode and assembly from synthetic frames and telemetry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from tmrl.envs.config import EnvConfig, ImageConfig, LidarConfig, RtgymConfig, resolved_lidar
from tmrl.envs.observations import ObservationBuilder, dict_space, observation_spec
from tmrl.games.telemetry import TelemetryFrame
from tmrl.spaces import ObservationSpec

ROAD = (102, 102, 102)
GRASS = (102, 215, 102)


def tel(speed: float = 0.0, x: float = 0.0, z: float = 0.0, **kw: float) -> TelemetryFrame:
    base = dict(speed=speed, distance=0.0, x=x, y=0.0, z=z, steer=0.0, gas=0.0, brake=0.0, finished=0.0)
    base.update(gear=kw.pop("gear", 1.0), rpm=kw.pop("rpm", 0.0), **kw)
    return TelemetryFrame(**base)


def road_frame(grass_from_col: int | None = None) -> np.ndarray:
    frame = np.empty((96, 96, 3), np.uint8)
    frame[:] = ROAD
    if grass_from_col is not None:
        frame[:, grass_from_col:] = GRASS
    frame[84:] = 0  # dashboard
    return frame


def test_specs_per_mode() -> None:
    lidar = observation_spec(EnvConfig())
    assert [(c.name, c.shape, c.dtype, c.history) for c in lidar.components] == [
        ("speed", (1,), "float32", 1),
        ("lidar", (19,), "float32", 4),
        ("prev_actions", (2, 3), "float32", 1),
    ]
    prog = observation_spec(EnvConfig(observation="lidar_progress", rtgym=RtgymConfig(act_buf_len=3)))
    assert [c.name for c in prog.components] == ["speed", "lidar", "progress", "prev_actions"]
    assert prog.components[-1].shape == (3, 3)
    img = observation_spec(
        EnvConfig(observation="images", image=ImageConfig(history=3), extra_telemetry=("gear", "yaw_rate"))
    )
    assert [(c.name, c.shape, c.dtype, c.history) for c in img.components] == [
        ("speed", (1,), "float32", 1),
        ("gear", (1,), "float32", 1),
        ("rpm", (1,), "float32", 1),
        ("frames", (64, 64), "uint8", 3),
        ("yaw_rate", (1,), "float32", 1),
        ("prev_actions", (2, 3), "float32", 1),
    ]
    assert ObservationSpec.from_dict(img.to_dict()) == img
    space = dict_space(img)
    assert space["frames"].shape == (3, 64, 64) and space["frames"].dtype == np.uint8
    assert space["prev_actions"].low.min() == -1.0


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        EnvConfig(observation="pixels")
    with pytest.raises(ValidationError):
        EnvConfig(lidar={"beams": 3})


def reference_scan(frame: np.ndarray, paths: list[np.ndarray]) -> np.ndarray:
    """First non-road pixel index on each path (road = gray 90..120, spread <= 12), else len - 1."""
    out = []
    for path in paths:
        px = frame[path[:, 0], path[:, 1]].astype(int)
        road = (px.max(1) - px.min(1) <= 12) & (px.min(1) >= 90) & (px.max(1) <= 120)
        hits = np.flatnonzero(~road)
        out.append(hits[0] if hits.size else len(path) - 1)
    return np.array(out, np.float32)


def test_lidar_normalised_by_beam_length() -> None:
    cfg = EnvConfig()
    b = ObservationBuilder(cfg, (96, 96, 3), "rgb", 0.05)
    paths = b.lidar.beam_paths()
    assert b.lidar.origin == (71, 48)
    frame = road_frame(grass_from_col=60)
    obs = b.reset(frame, tel(speed=150.0), 0.0)
    speed, lidar = obs
    assert speed.tolist() == [0.5]  # km/h / 300
    expected = reference_scan(frame, paths) / np.array([len(p) - 1 for p in paths], np.float32)
    assert np.allclose(lidar, expected[None, :].repeat(4, 0))
    assert lidar[-1, 0] < 0.5  # 90 degrees (right): grass 12 px away
    assert lidar[-1, 9] == 1.0  # straight up: road to the top of the frame
    # The beams never reach the dashboard rows.
    assert all(p[:, 0].max() <= 71 for p in paths)


def test_lidar_history_shifts_oldest_first() -> None:
    b = ObservationBuilder(EnvConfig(), (96, 96, 3), "rgb", 0.05)
    frames = [road_frame(c) for c in (90, 80, 70, 60, 55)]
    first = b.reset(frames[0], tel(), 0.0)[1]
    kept = first.copy()
    hist = [b.build(f, tel(), 0.0)[1] for f in frames[1:]]
    assert np.array_equal(first, kept)  # returned arrays are independent of later steps
    right = [h[:, 0] for h in hist]
    assert right[-1][0] > right[-1][1] > right[-1][2] > right[-1][3]  # grass closer and closer, newest last
    assert np.array_equal(hist[-1][:-1], hist[-2][1:])


def test_scalars_and_yaw_rate() -> None:
    cfg = EnvConfig(
        observation="lidar_progress",
        extra_telemetry=("yaw_rate", "steer", "gas", "brake", "gear", "rpm"),
        speed_scale=100.0,
    )
    b = ObservationBuilder(cfg, (96, 96, 3), "rgb", 0.05)
    names = [c.name for c in b.spec.components][:-1]
    frame = road_frame()
    omega, radius = 1.0, 20.0  # rad/s counter-clockwise in (x, z)
    positions = [(radius * math.cos(omega * 0.05 * k), radius * math.sin(omega * 0.05 * k)) for k in range(6)]
    obs = dict(zip(names, b.reset(frame, tel(x=positions[0][0], z=positions[0][1]), 0.0), strict=True))
    assert obs["yaw_rate"][0] == 0.0
    for k, (x, z) in enumerate(positions[1:], start=1):
        t = tel(speed=50.0, x=x, z=z, steer=-0.5, gas=1.0, brake=0.0, gear=3.0, rpm=5000.0)
        obs = dict(zip(names, b.build(frame, t, k / 10), strict=True))
    assert obs["yaw_rate"][0] == pytest.approx(omega / 5.0, rel=1e-3)
    assert obs["speed"][0] == pytest.approx(0.5)
    assert obs["progress"][0] == pytest.approx(0.5)
    assert obs["steer"][0] == -0.5 and obs["gas"][0] == 1.0 and obs["brake"][0] == 0.0
    assert obs["gear"][0] == pytest.approx(0.3) and obs["rpm"][0] == pytest.approx(0.5)
    assert all(v.dtype == np.float32 for v in obs.values())


def test_image_frames_history() -> None:
    cfg = EnvConfig(observation="images", image=ImageConfig(width=32, height=32, history=3))
    b = ObservationBuilder(cfg, (96, 96, 3), "rgb", 0.05)
    dark, light = np.full((96, 96, 3), 20, np.uint8), np.full((96, 96, 3), 200, np.uint8)
    speed, gear, rpm, frames = b.reset(dark, tel(gear=2.0, rpm=3000.0), 0.0)
    assert frames.shape == (3, 32, 32) and frames.dtype == np.uint8
    assert (frames == 20).all()
    assert gear[0] == pytest.approx(0.2) and rpm[0] == pytest.approx(0.3)
    frames2 = b.build(light, tel(), 0.0)[3]
    assert (frames2[:2] == 20).all() and (frames2[2] == 200).all()
    assert (frames == 20).all()  # the earlier observation was a copy


def test_trackmania_lidar_defaults() -> None:
    kw = resolved_lidar(EnvConfig(game="tm2020"), 488, 958)
    assert kw["origin"] == (44 * 488 // 49, 479) and kw["start"] == 20 and kw["border"] == "dark"
    kw = resolved_lidar(EnvConfig(lidar=LidarConfig(origin=(10, 10), start=2)), 96, 96)
    assert kw["origin"] == (10, 10) and kw["start"] == 2 and kw["border"] == "not_road"
