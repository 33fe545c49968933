"""The built-in game: a real game process, its telemetry, screen, controller, lifetime."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np
import pytest

from tmrl.errors import GameError, TelemetryError
from tmrl.games import CarRacingConfig, Controller, Game, Screen, open_game
from tmrl.games.carracing import shm as S
from tmrl.games.carracing.game import CarRacingGame
from tmrl.games.telemetry import TelemetryFrame


@pytest.fixture(scope="module")
def game() -> Iterator[CarRacingGame]:
    g = open_game(CarRacingConfig(seed=3))
    assert isinstance(g, CarRacingGame)
    try:
        yield g
    finally:
        g.close()


def _drive_until(game: Game, gas: float, pred: object, max_frames: int = 400) -> TelemetryFrame:
    counter, frame = game.telemetry.latest()
    for _ in range(max_frames):
        game.controller.act(gas, 0.0, 0.0)
        if pred(frame):  # type: ignore[operator]
            return frame
        counter, frame = game.telemetry.wait_newer(counter, timeout=2.0)
    raise AssertionError(f"condition not reached within {max_frames} telemetry frames; last {frame}")


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith(("Z", "X"))
    except FileNotFoundError:
        return True


def test_protocols(game: CarRacingGame) -> None:
    assert isinstance(game, Game)
    assert isinstance(game.screen, Screen)
    assert isinstance(game.controller, Controller)
    assert game.name == "carracing"
    assert game.screen.channel_order == "rgb"


def test_telemetry_changes_with_gas_and_respawn_resets(game: CarRacingGame) -> None:
    game.controller.respawn()
    c0, f0 = game.telemetry.latest()
    assert f0.distance < 1.0 and f0.finished == 0.0 and f0.y == 0.0
    fast = _drive_until(game, 1.0, lambda f: f.speed > 30.0 and f.distance > 3.0)
    assert fast.gas == 1.0 and fast.brake == 0.0
    assert fast.distance > f0.distance + 1.0
    assert (fast.x, fast.z) != (f0.x, f0.z)
    assert fast.gear >= 1.0 and fast.rpm > 0.0
    game.controller.respawn()
    c1, f1 = game.telemetry.wait_newer(game.telemetry.latest()[0], timeout=2.0)
    assert c1 > c0
    assert f1.distance < 1.0 and f1.speed < 1.0
    assert abs(f1.x - f0.x) < 1e-3 and abs(f1.z - f0.z) < 1e-3


def test_game_keeps_its_own_clock(game: CarRacingGame) -> None:
    """Physics frames follow the wall clock at 50 Hz whatever the agent does: never ahead of it (after a stall
    the game catches up at most 0.25 s, then skips), and it advances while the agent does nothing."""
    header = game._state.header
    t0, ticks0 = time.monotonic(), int(header[S.H_TICKS])
    counter, _ = game.telemetry.latest()
    for _ in range(30):  # the agent idles; the game does not wait for it
        counter, _ = game.telemetry.wait_newer(counter, timeout=5.0)
    ticks1, t1 = int(header[S.H_TICKS]), time.monotonic()
    assert ticks1 > ticks0
    assert ticks1 - ticks0 <= 50 * (t1 - t0) + 13


def test_grab_frame(game: CarRacingGame) -> None:
    game.controller.respawn()
    frame = game.screen.grab()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    view = frame[:84].astype(int)
    r, g, b = view[..., 0], view[..., 1], view[..., 2]
    road = (abs(r - g) <= 3) & (abs(g - b) <= 3) & (r >= 95) & (r <= 112)
    grass = (g >= 190) & (r < 130) & (b < 130)
    assert road.sum() > 200, "no road-gray pixels in the view"
    assert grass.sum() > 200, "no grass-green pixels in the view"
    assert road[60:84, 40:56].sum() > 20, "the car should start on the road, near row 72 column 48"
    assert frame[86:].max(axis=2).mean() < 60, "the bottom rows are the dark dashboard"
    # the frame belongs to the caller
    frame[:] = 0
    assert game.screen.grab().max() > 0


def test_grab_follows_the_car(game: CarRacingGame) -> None:
    game.controller.respawn()
    first = game.screen.grab()
    _drive_until(game, 1.0, lambda f: f.distance > 15.0)
    later = game.screen.grab()
    assert np.abs(first[:84].astype(int) - later[:84].astype(int)).sum() > 0


def test_two_instances_side_by_side(game: CarRacingGame) -> None:
    other = open_game(CarRacingConfig(seed=5))
    try:
        assert isinstance(other, CarRacingGame)
        assert other.telemetry_port != game.telemetry_port
        assert other.shm_name != game.shm_name
        game.controller.respawn()
        other.controller.respawn()
        _, fa = game.telemetry.latest()
        _, fb = other.telemetry.latest()
        assert (fa.x, fa.z) != (fb.x, fb.z), "different seeds give different tracks"
        moved = _drive_until(other, 1.0, lambda f: f.distance > 5.0)
        assert moved.distance > 5.0
        _, fa2 = game.telemetry.latest()
        assert fa2.distance < 1.0, "controls of one instance do not reach the other"
        assert other.screen.grab().shape == (96, 96, 3)
    finally:
        other.close()
    assert not other.alive


def test_close_is_idempotent_and_leaves_nothing() -> None:
    g = open_game(CarRacingConfig(seed=1, render_width=64, render_height=48))
    assert isinstance(g, CarRacingGame)
    assert g.screen.grab().shape == (48, 64, 3)
    name, pid = g.shm_name, g.pid
    g.close()
    g.close()
    assert _process_gone(pid)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name, create=False)
    with pytest.raises(GameError):
        g.screen.grab()
    with pytest.raises(GameError, match="closed"):
        g.controller.act(1.0, 0.0, 0.0)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(GameError, match=f"{port}.*choose another port"):
            open_game(CarRacingConfig(port=port, startup_timeout_s=20))


def test_telemetry_error_names_the_game_when_it_dies() -> None:
    g = open_game(CarRacingConfig(seed=2, telemetry_timeout_s=0.5))
    assert isinstance(g, CarRacingGame)
    try:
        g.telemetry.wait_newer(0, timeout=10.0)
        os.kill(g.pid, signal.SIGKILL)
        with pytest.raises(TelemetryError, match=r"built-in game \(pid \d+\)"):
            for _ in range(100):
                g.telemetry.latest()
                time.sleep(0.05)
        with pytest.raises(GameError, match="built-in game"):
            g.screen.grab()
    finally:
        g.close()


def _run_bare_process(cfg: CarRacingConfig, parent_pid: int, tag: str) -> tuple[S.SharedState, str, int]:
    """Start the game process directly (no Game object, no command connection) and wait for it to exit."""
    name = f"tmrl_test_{tag}_{os.getpid()}"
    state = S.SharedState.create(name, cfg.render_width, cfg.render_height)
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYGAME_HIDE_SUPPORT_PROMPT="1")
    cmd = [
        sys.executable,
        "-m",
        "tmrl.games.carracing.process",
        "--shm",
        name,
        "--parent-pid",
        str(parent_pid),
    ]
    proc = subprocess.Popen(
        [*cmd, "--config", cfg.model_dump_json()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return state, err.decode(), proc.returncode


def test_game_exits_when_no_owner_connects() -> None:
    cfg = CarRacingConfig(seed=0, silence_timeout_s=60.0, startup_timeout_s=1.0)
    state, err, code = _run_bare_process(cfg, os.getpid(), "silence")
    try:
        assert code == 0
        assert "no owner connected within 1.0 s" in err
        assert int(state.header[S.H_STATE]) == S.STATE_EXITED
        assert int(state.header[S.H_TICKS]) > 10  # it did run its clock before giving up
    finally:
        state.close()


def test_game_exits_when_its_parent_is_not_the_expected_one() -> None:
    """The parent-pid watch: a game told to watch a process that is not (or no longer) its parent exits."""
    cfg = CarRacingConfig(seed=0, silence_timeout_s=60.0)
    state, err, code = _run_bare_process(cfg, 1, "parent")
    try:
        assert code == 0
        assert "parent process 1 is gone" in err
        assert int(state.header[S.H_STATE]) == S.STATE_EXITED
    finally:
        state.close()


def test_a_silent_game_says_why_it_exited() -> None:
    g = open_game(CarRacingConfig(seed=0, silence_timeout_s=0.5, heartbeat_s=1000.0))
    assert isinstance(g, CarRacingGame)
    try:
        assert g._proc is not None
        g._proc.wait(timeout=30)  # no act(), no heartbeat: the game gives up on its own
        with pytest.raises(
            GameError, match=r"has exited \(no control or heartbeat for 0.5 s\); open the game"
        ):
            g.screen.grab()
    finally:
        g.close()


def test_game_exits_when_its_owner_dies() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from tmrl.games import CarRacingConfig, open_game
        g = open_game(CarRacingConfig(seed=0, silence_timeout_s=60))
        print(g.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        game_pid = int(line)
        assert not _process_gone(game_pid)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10.0
        while not _process_gone(game_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _process_gone(game_pid), "the game outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_frame_seqlock_never_tears() -> None:
    name = f"tmrl_test_seqlock_{os.getpid()}"
    writer = S.SharedState.create(name, 256, 256)
    reader = writer  # same block, two threads: the reader copies while the writer rewrites
    stop = threading.Event()
    frames = [np.full((256, 256, 3), v, dtype=np.uint8) for v in (10, 200)]

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer.write_frame(frames[i % 2])
            i += 1
            time.sleep(0.0001)

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(1000):
            f = reader.read_frame(timeout=2.0)
            assert f.min() == f.max(), "torn frame"
    finally:
        stop.set()
        t.join()
        writer.close()


def test_odd_frame_counter_is_never_read() -> None:
    name = f"tmrl_test_odd_{os.getpid()}"
    state = S.SharedState.create(name, 16, 16)
    try:
        state.header[S.H_FRAME_SEQ] = 1
        with pytest.raises(GameError, match="consistent frame"):
            state.read_frame(timeout=0.05)
    finally:
        state.close()


def test_controls_are_clipped(game: CarRacingGame) -> None:
    game.controller.respawn()
    frame = _drive_until(game, 5.0, lambda f: f.gas == 1.0, max_frames=100)
    assert frame.gas == 1.0
    counter, frame = game.telemetry.latest()
    for _ in range(100):
        game.controller.act(-3.0, 0.0, float("nan"))
        counter, frame = game.telemetry.wait_newer(counter, timeout=2.0)
        assert frame.gas >= 0.0 and -1.0 <= frame.steer <= 1.0
        if frame.gas == 0.0 and frame.steer == 0.0:
            break
    assert frame.gas == 0.0 and frame.steer == 0.0
    game.controller.neutral()


def test_command_channel_keeps_answers_in_order_after_a_stall() -> None:
    from tmrl.games.carracing.game import _CommandChannel

    with socket.create_server(("127.0.0.1", 0)) as server:
        released = threading.Event()

        def fake_game() -> None:
            conn, _ = server.accept()
            with conn:
                assert conn.recv(1) == b"R"
                released.wait(5.0)  # a stall longer than the client's timeout
                conn.sendall(b"r")
                assert conn.recv(1) == b"S"
                conn.sendall(b"s" + (7).to_bytes(8, "little"))
                conn.recv(1)  # until the client closes

        t = threading.Thread(target=fake_game)
        t.start()
        channel = _CommandChannel(server.getsockname()[1], "the fake game", lambda: "")
        try:
            with pytest.raises(GameError, match="did not answer within 0.1 s"):
                channel.request(b"R", b"r", 0.1)
            released.set()
            assert channel.request(b"S", b"s", 5.0, 8) == (7).to_bytes(8, "little")
        finally:
            channel.close()
            t.join(timeout=5.0)


def test_a_fixed_port_can_be_reused_right_after_close() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    for _ in range(2):  # the second game binds the port while the first one's connections are in TIME_WAIT
        g = open_game(CarRacingConfig(port=port))
        try:
            assert isinstance(g, CarRacingGame) and g.telemetry_port == port
            g.telemetry.latest()
        finally:
            g.close()


def test_continuous_rendering() -> None:
    g = open_game(CarRacingConfig(seed=3, render_mode="continuous", max_render_hz=25.0, grab_timeout_s=2.0))
    assert isinstance(g, CarRacingGame)
    try:
        header = g._state.header
        first_count = int(header[S.H_FRAME_COUNT])
        _drive_until(g, 1.0, lambda f: f.distance > 10.0)
        assert int(header[S.H_FRAME_COUNT]) > first_count + 2, "the game renders without being asked"
        a = g.screen.grab()
        _drive_until(g, 1.0, lambda f: f.distance > 25.0)
        b = g.screen.grab()
        assert a.shape == b.shape == (96, 96, 3)
        assert np.abs(a[:84].astype(int) - b[:84].astype(int)).sum() > 0
        os.kill(g.pid, signal.SIGSTOP)  # a stalled game: alive, but no new frame
        try:
            with pytest.raises(GameError, match=r"rendered no new frame for 2.0 s \(is it stalled\?\)"):
                for _ in range(100):
                    g.screen.grab()
                    time.sleep(0.05)
        finally:
            os.kill(g.pid, signal.SIGCONT)
        os.kill(g.pid, signal.SIGKILL)
        exited = r"(has exited|rendered no new frame for 2.0 s) \(no error output \(exit code -9\)\)"
        with pytest.raises(GameError, match=exited):
            for _ in range(100):
                g.screen.grab()
                time.sleep(0.05)
    finally:
        g.close()


def test_continuous_rendering_keeps_pace_with_the_physics(game: CarRacingGame) -> None:
    """At the default cap (50 Hz = the physics rate) every tick renders a frame, however late it wakes up."""
    header = game._state.header
    t0, f0 = int(header[S.H_TICKS]), int(header[S.H_FRAME_COUNT])
    while int(header[S.H_TICKS]) < t0 + 40:
        time.sleep(0.02)
    t1, f1 = int(header[S.H_TICKS]), int(header[S.H_FRAME_COUNT])
    # a read can fall between a tick and its render
    assert f1 - f0 >= (t1 - t0) - 2, f"{f1 - f0} frames rendered for {t1 - t0} ticks"


def test_on_demand_rendering() -> None:
    g = open_game(CarRacingConfig(seed=3, render_mode="on_demand", max_render_hz=1000.0))
    assert isinstance(g, CarRacingGame)
    try:
        header = g._state.header
        count = int(header[S.H_FRAME_COUNT])
        _drive_until(g, 1.0, lambda f: f.distance > 10.0)
        assert int(header[S.H_FRAME_COUNT]) == count, "nothing is rendered unless asked"
        a = g.screen.grab()
        assert int(header[S.H_FRAME_COUNT]) == count + 1
        _drive_until(g, 1.0, lambda f: f.distance > 25.0)
        b = g.screen.grab()
        assert np.abs(a[:84].astype(int) - b[:84].astype(int)).sum() > 0
        g.controller.respawn()
        start = g.screen.grab()
        road = start[60:84, 40:56].astype(int)
        assert (
            (abs(road[..., 0] - road[..., 1]) <= 3) & (road[..., 0] >= 95) & (road[..., 0] <= 112)
        ).sum() > 20
    finally:
        g.close()
    with pytest.raises(GameError, match="closed"):
        g.screen.grab()
