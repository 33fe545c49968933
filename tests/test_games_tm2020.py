"""TrackMania 2020 game: fake OpenPlanet plugin (real socket), fake capture / control / window backends."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from tmrl.errors import GameError, TelemetryError
from tmrl.games import Controller, Game, Screen, TM2020Config, open_game
from tmrl.games.telemetry import TelemetryFrame, encode_frame
from tmrl.games.tm2020 import capture as capture_mod
from tmrl.games.tm2020 import control as control_mod
from tmrl.games.tm2020.game import TM2020Game
from tmrl.games.tm2020.window import Rect, locate_window, outer_for_client


class FakeCapture:
    channel_order = "bgra"

    def __init__(self, h: int = 488, w: int = 958) -> None:
        self.frame = np.zeros((h, w, 4), dtype=np.uint8)
        self.frame[..., 1] = 200
        self.grabs = 0
        self.closed = False

    def grab(self) -> np.ndarray:
        self.grabs += 1
        return self.frame.copy()

    def close(self) -> None:
        self.closed = True


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.closed = False

    def set(self, gas: float, brake: float, steer: float) -> None:
        self.calls.append(("set", gas, brake, steer))

    def respawn(self, hold_s: float) -> None:
        self.calls.append(("respawn", hold_s))

    def confirm(self) -> None:
        self.calls.append(("confirm",))

    def release(self) -> None:
        self.calls.append(("release",))

    def close(self) -> None:
        self.closed = True


class FakePlugin:
    """Serves telemetry frames like the OpenPlanet plugin, on a real loopback socket."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frame = TelemetryFrame(100.0, 50.0, 1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 0.0, 3.0, 6000.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                while not self.stop.wait(0.01):
                    try:
                        conn.sendall(encode_frame(self.frame))
                    except OSError:
                        break

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5.0)
        self.listener.close()


@pytest.fixture
def plugin() -> Iterator[FakePlugin]:
    p = FakePlugin()
    try:
        yield p
    finally:
        p.close()


def test_tm2020_game_with_fake_backends(plugin: FakePlugin) -> None:
    cap, ctl = FakeCapture(), FakeControl()
    game = open_game(TM2020Config(telemetry_port=plugin.port), capture=cap, control=ctl)
    assert isinstance(game, TM2020Game)
    try:
        assert isinstance(game, Game) and isinstance(game.screen, Screen)
        assert isinstance(game.controller, Controller)
        assert game.name == "tm2020"
        frame = game.screen.grab()
        assert frame.shape == (488, 958, 4) and frame.flags.c_contiguous
        assert game.screen.channel_order == "bgra"
        counter, tel = game.telemetry.latest()
        assert tel.speed == pytest.approx(100.0) and tel.gear == 3.0
        game.controller.act(0.5, -1.0, 2.0)
        assert ctl.calls[-1] == ("set", 0.5, -1.0, 1.0)  # values clipped to [-1, 1]
        game.controller.respawn()  # not finished: no pop-up to close
        assert ctl.calls[-2:] == [("release",), ("respawn", 0.1)]
        plugin.frame = plugin.frame._replace(finished=1.0)
        game.telemetry.wait_newer(game.telemetry.latest()[0] + 2, timeout=5.0)
        game.controller.respawn()  # finished: A closes the pop-up before B respawns
        assert ctl.calls[-3:] == [("release",), ("confirm",), ("respawn", 0.1)]
        game.controller.neutral()
        assert ctl.calls[-1] == ("release",)
    finally:
        game.close()
    game.close()
    assert cap.closed and ctl.closed


def test_tm2020_without_plugin_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    game = open_game(
        TM2020Config(telemetry_port=port, telemetry_timeout_s=0.3),
        capture=FakeCapture(),
        control=FakeControl(),
    )
    try:
        with pytest.raises(TelemetryError, match="OpenPlanet plugin 'tmrl-telemetry'.*docs/tm2020.md"):
            game.telemetry.latest()
        game.controller.respawn()  # respawn still works without telemetry (no pop-up check)
    finally:
        game.close()


class FakeWindows:
    def __init__(self, border: tuple[int, int, int, int] = (8, 31, 8, 8), max_client: int = 10_000) -> None:
        self.border = border  # left, top, right, bottom frame thickness
        self.outer = Rect(300, 200, 800, 600)
        self.max_client = max_client
        self.moves: list[Rect] = []

    def find(self, title: str) -> int | None:
        return 42 if title == "Trackmania" else None

    def outer_rect(self, handle: int) -> Rect:
        return self.outer

    def client_rect(self, handle: int) -> Rect:
        bl, bt, br, bb = self.border
        w = min(self.outer.width - bl - br, self.max_client)
        return Rect(self.outer.left + bl, self.outer.top + bt, w, self.outer.height - bt - bb)

    def move_resize(self, handle: int, outer: Rect) -> None:
        self.moves.append(outer)
        self.outer = outer


def test_window_region_is_the_client_area() -> None:
    wins = FakeWindows()
    region = locate_window(wins, "Trackmania", width=958, height=488, x=0, y=0)
    assert wins.moves == [Rect(0, 0, 958 + 16, 488 + 39)]
    assert region == Rect(8, 31, 958, 488)
    # not placed: the region is wherever the client area is
    wins2 = FakeWindows()
    assert locate_window(wins2, "Trackmania", width=958, height=488, place=False) == Rect(308, 231, 784, 561)
    assert wins2.moves == []


def test_window_errors() -> None:
    with pytest.raises(GameError, match="no window titled 'Nope'.*windowed"):
        locate_window(FakeWindows(), "Nope", width=958, height=488)
    with pytest.raises(GameError, match="could not be sized to a 958x488"):
        locate_window(FakeWindows(max_client=500), "Trackmania", width=958, height=488)
    with pytest.raises(GameError, match="larger than its frame"):
        outer_for_client(Rect(0, 0, 10, 10), Rect(0, 0, 20, 20), 0, 0, 100, 100)


def test_tm2020_game_places_the_window_through_its_backend(
    plugin: FakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[str, Rect]] = []

    def fake_make_capture(backend: str, region: Rect) -> FakeCapture:
        made.append((backend, region))
        return FakeCapture(region.height, region.width)

    monkeypatch.setattr("tmrl.games.tm2020.game.make_capture", fake_make_capture)
    game = TM2020Game(
        TM2020Config(telemetry_port=plugin.port, window_width=256, window_height=128),
        control=FakeControl(),
        windows=FakeWindows(),
    )
    try:
        assert made == [("auto", Rect(8, 31, 256, 128))]
        assert game.screen.grab().shape == (128, 256, 4)
    finally:
        game.close()


class RecordingKeys:
    def __init__(self) -> None:
        self.events: list[tuple[list[str], list[str]]] = []

    def send(self, down: Sequence[str], up: Sequence[str]) -> None:
        self.events.append((list(down), list(up)))


def test_keyboard_mapping() -> None:
    keys = RecordingKeys()
    kb = control_mod.KeyboardControl(keys, steer_deadzone=0.5)
    kb.set(1.0, 0.0, 0.7)
    assert keys.events[-1] == (["d", "w"], [])
    kb.set(1.0, 0.0, 0.6)  # no change: nothing sent
    assert len(keys.events) == 1
    kb.set(-1.0, 0.2, -0.7)
    assert keys.events[-1] == (["a", "s"], ["d", "w"])
    kb.set(0.0, 0.0, 0.3)  # inside the dead zone
    assert keys.events[-1] == ([], ["a", "s"])
    kb.set(1.0, 0.0, 0.0)
    kb.respawn(0.0)
    assert keys.events[-3:] == [([], ["w"]), (["respawn"], []), ([], ["respawn"])]
    kb.set(0.0, 1.0, 0.0)
    kb.release()
    assert keys.events[-1] == ([], ["s"])


def test_platform_key_names() -> None:
    assert control_mod.XdotoolKeys._KEYSYM["respawn"] == "BackSpace"
    assert control_mod.Win32Keys._SCAN["respawn"] == (0x53, True)  # Delete (extended scan code E0 53)


@pytest.mark.skipif(sys.platform == "win32", reason="vgamepad may be installed on Windows")
def test_missing_gamepad_is_a_clear_error() -> None:
    with pytest.raises(GameError, match="install vgamepad and its ViGEmBus driver"):
        control_mod.make_control("gamepad")


@pytest.mark.skipif(sys.platform == "win32", reason="dxcam is the Windows default")
def test_capture_selection_off_windows() -> None:
    with pytest.raises(GameError, match="Windows only"):
        capture_mod.make_capture("dxcam", Rect(0, 0, 10, 10))
    with pytest.raises(GameError, match="unknown capture backend"):
        capture_mod.make_capture("nope", Rect(0, 0, 10, 10))


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has a screen")
def test_mss_without_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(GameError, match="display|capture"):
        capture_mod.make_capture("auto", Rect(0, 0, 64, 32))


def test_plugin_source_is_shipped() -> None:
    plugin_dir = Path(capture_mod.__file__).parent / "plugin"
    info = (plugin_dir / "info.toml").read_text()
    source = (plugin_dir / "main.as").read_text()
    assert 'name     = "tmrl-telemetry"' in info and "VehicleState" in info
    assert "Setting_Port = 9000" in source and 'Listen("127.0.0.1"' in source
    # 11 floats per frame, in the documented order
    writes = [line.strip() for line in source.splitlines() if line.strip().startswith("buf.Write(")]
    assert len(writes) == 11
    for needle, line in zip(
        [
            "FrontSpeed",
            "g_distance",
            "Position.x",
            "Position.y",
            "Position.z",
            "InputSteer",
            "InputGasPedal",
            "InputIsBraking",
            "RaceFinished",
            "CurGear",
            "GetRPM",
        ],
        writes,
        strict=True,
    ):
        assert needle in line


class _FakeCar:
    """The state a fake TrackMania would keep: driven by FakeDrivenControl, reported by FakeDrivenPlugin."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.x = 0.0
        self.gas = 0.0
        self.respawns = 0


class FakeDrivenControl(FakeControl):
    def __init__(self, car: _FakeCar) -> None:
        super().__init__()
        self.car = car

    def set(self, gas: float, brake: float, steer: float) -> None:
        super().set(gas, brake, steer)
        with self.car.lock:
            self.car.gas = max(0.0, gas)

    def respawn(self, hold_s: float) -> None:
        super().respawn(hold_s)
        with self.car.lock:
            self.car.x, self.car.gas = 0.0, 0.0
            self.car.respawns += 1


def _track_picture(h: int = 488, w: int = 958) -> np.ndarray:
    """A TrackMania-like BGRA view: gray road between black borders, on a light background."""
    img = np.full((h, w, 4), 255, dtype=np.uint8)
    img[:, w // 2 - 200 : w // 2 + 200, :3] = 110
    img[:, w // 2 - 210 : w // 2 - 200, :3] = 0
    img[:, w // 2 + 200 : w // 2 + 210, :3] = 0
    return img


def test_tm2020_through_the_real_time_env_with_fakes(tmp_path: Path) -> None:
    """The whole TrackMania path minus the game: env (rtgym, LIDAR, reward) over TM2020Game over fakes."""
    from tmrl.envs.config import EnvConfig
    from tmrl.envs.env import RealTimeEnv
    from tmrl.envs.reward import Trajectory, save_trajectory

    car = _FakeCar()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def plugin() -> None:  # 100 frames/s; the car moves 0.5 units per frame at full gas
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                while not stop.wait(0.01):
                    with car.lock:
                        car.x += 0.5 * car.gas
                        f = TelemetryFrame(
                            car.gas * 200.0, car.x, car.x, 0.0, 0.0, 0.0, car.gas, 0.0, 0.0, 2, 5e3
                        )
                    try:
                        conn.sendall(encode_frame(f))
                    except OSError:
                        break

    thread = threading.Thread(target=plugin, daemon=True)
    thread.start()
    reward_file = save_trajectory(
        tmp_path / "tm.json", Trajectory(np.array([[0.0, 0.0, 0.0], [500.0, 0.0, 0.0]]), "tm2020")
    )
    capture, control = FakeCapture(), FakeDrivenControl(car)
    capture.frame = _track_picture()
    game = TM2020Game(
        TM2020Config(telemetry_port=listener.getsockname()[1]), capture=capture, control=control
    )
    config = EnvConfig.model_validate(
        {"game": "tm2020", "reward": {"path": str(reward_file)}, "reset_settle_s": 0.0}
    )
    env = RealTimeEnv(config, game, owns_game=True)
    try:
        obs, _ = env.reset()
        assert env.observation_space.contains(obs)
        assert car.respawns == 1
        total = 0.0
        for _ in range(20):
            obs, reward, terminated, truncated, _ = env.step(np.array([1.0, 0.0, 0.0], dtype=np.float32))
            assert env.observation_space.contains(obs)
            total += reward
            assert not terminated and not truncated
        assert total > 0.0, "driving along the recorded trajectory is rewarded"
        assert ("set", 1.0, 0.0, 0.0) in control.calls
        lidar = obs["lidar"][-1]
        assert 0.0 < lidar.min() and lidar.max() <= 1.0 + 1e-6
        assert capture.grabs >= 20
    finally:
        env.close()
        stop.set()
        thread.join(timeout=5.0)
        listener.close()
    assert control.closed and capture.closed
