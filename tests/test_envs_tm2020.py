"""The TrackMania 2020 env against a simulated TrackMania: a fake OpenPlanet plugin on a real 127.0.0.1 socket
(a car driving along a 30 m straight), fake capture (a BGRA window with black track borders) and fake gamepad."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tmrl.envs.config import EnvConfig, RewardConfig, RtgymConfig
from tmrl.envs.env import RealTimeEnv
from tmrl.envs.record import record_trajectory
from tmrl.envs.reward import Trajectory, load_trajectory, save_trajectory
from tmrl.games import open_game
from tmrl.games.config import TM2020Config
from tmrl.games.telemetry import TelemetryFrame, TelemetryServer

TRACK_M = 30.0
SPEED_MS = 30.0  # with gas; the fake plugin ticks at 100 Hz
COUNTDOWN_TICKS = 20  # after a respawn


class FakeTrackMania:
    """The game's side: physics of a car on a straight line, the plugin's stream, the pad's effect."""

    def __init__(self) -> None:
        self.server = TelemetryServer("127.0.0.1", 0)
        self.port = self.server.port
        self.lock = threading.Lock()
        self.x = 0.0
        self.gas = 0.0
        self.finished = False
        self.countdown = 0
        self.respawns = 0
        self.respawned = threading.Event()
        self.confirms = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.server.poll()
            with self.lock:
                if self.countdown > 0:  # TrackMania's start countdown: the car cannot move yet
                    self.countdown -= 1
                elif not self.finished:
                    self.x += SPEED_MS * 0.01 * max(0.0, self.gas)
                    self.finished = self.x >= TRACK_M
                moving = not self.finished and self.countdown == 0
                speed = SPEED_MS * 3.6 * max(0.0, self.gas) if moving else 0.0
                frame = TelemetryFrame(
                    speed, self.x, self.x, 0.0, 0.0, 0.0, self.gas, 0.0, float(self.finished), 2.0, 4000.0
                )
            self.server.send(frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


class FakePad:
    """A ``ControlBackend`` acting on the fake game."""

    def __init__(self, tm: FakeTrackMania) -> None:
        self.tm = tm

    def set(self, gas: float, brake: float, steer: float) -> None:
        with self.tm.lock:
            self.tm.gas = gas

    def respawn(self, hold_s: float) -> None:
        with self.tm.lock:
            self.tm.x, self.tm.finished, self.tm.gas, self.tm.countdown = 0.0, False, 0.0, COUNTDOWN_TICKS
            self.tm.respawns += 1
        self.tm.respawned.set()

    def confirm(self) -> None:
        self.tm.confirms += 1

    def release(self) -> None:
        self.set(0.0, 0.0, 0.0)

    def close(self) -> None:
        self.release()


class FakeWindow:
    """A ``CaptureBackend``: 488x958 BGRA, gray road between black borders at columns 200 and 760."""

    channel_order = "bgra"

    def grab(self) -> np.ndarray:
        frame = np.full((488, 958, 4), 128, np.uint8)
        frame[:, 200:203, :3] = 0
        frame[:, 760:763, :3] = 0
        return frame

    def close(self) -> None:
        pass


@pytest.fixture
def tm() -> Iterator[FakeTrackMania]:
    fake = FakeTrackMania()
    yield fake
    fake.close()


def open_tm(tm: FakeTrackMania):
    cfg = TM2020Config(telemetry_port=tm.port, telemetry_timeout_s=2.0)
    return open_game(cfg, capture=FakeWindow(), control=FakePad(tm))


def straight(tmp_path: Path) -> Path:
    points = np.stack([np.linspace(0.0, TRACK_M, 61), np.zeros(61), np.zeros(61)], axis=1)
    return save_trajectory(tmp_path / "tm.json", Trajectory(points, "tm2020"))


def test_tm2020_env_drives_to_the_finish(tm: FakeTrackMania, tmp_path: Path) -> None:
    game = open_tm(tm)
    cfg = EnvConfig(
        game="tm2020",
        reset_settle_s=0.0,
        reward=RewardConfig(path=straight(tmp_path)),
        rtgym=RtgymConfig(ep_max_length=200),
    )
    env = RealTimeEnv(cfg, game, owns_game=True)
    try:
        obs, _ = env.reset()
        assert tm.respawns == 1
        assert env.observation_space.contains(obs)
        lidar = obs["lidar"][-1]
        assert 0.0 < lidar[0] < 1.0 and 0.0 < lidar[-1] < 1.0  # the black borders left and right
        total, terminated, steps = 0.0, False, 0
        while not terminated and steps < 100:
            obs, r, terminated, truncated, _ = env.step(np.array([1.0, 0.0, 0.0]))
            assert env.observation_space.contains(obs) and not truncated
            total += r
            steps += 1
        assert terminated
        # Progress along the whole 30 m at 0.1 m spacing (300 indices / 100) plus the finish bonus.
        assert total == pytest.approx(TRACK_M / 0.1 / 100.0 + 100.0, abs=0.05)
        assert obs["speed"][0] == 0.0
        env.reset()  # respawn after the finish: the pop-up is confirmed first (the game's controller does it)
        assert tm.respawns == 2 and tm.confirms == 1
    finally:
        env.close()


def test_record_a_human_lap(tm: FakeTrackMania, tmp_path: Path) -> None:
    game = open_tm(tm)
    said: list[str] = []

    def human() -> None:  # presses gas as soon as the car is back on the start line
        if tm.respawned.wait(timeout=10.0):
            FakePad(tm).set(1.0, 0.0, 0.0)

    driver = threading.Thread(target=human, daemon=True)
    driver.start()
    try:
        traj = record_trajectory(game, timeout_s=10.0, say=said.append)
    finally:
        game.close()
        driver.join(timeout=10.0)
    assert tm.respawns == 1 and "Drive the track" in said[0]
    assert traj.game == "tm2020" and traj.track_seed is None
    assert traj.points[0, 0] == pytest.approx(0.0, abs=0.5)
    assert traj.points[-1, 0] >= TRACK_M
    path = save_trajectory(tmp_path / "rec.json", traj)
    assert np.allclose(load_trajectory(path, "tm2020").points, traj.points, atol=1e-4)
