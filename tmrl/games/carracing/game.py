"""The agent's side of the built-in game: starts the game process and exposes screen, controller, telemetry."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

from tmrl.errors import GameError
from tmrl.games.base import clip_unit
from tmrl.games.carracing import shm as S
from tmrl.games.carracing.process import (
    ACK_RENDER,
    ACK_RESPAWN,
    CMD_QUIT,
    CMD_RENDER,
    CMD_RESPAWN,
    RESPAWN_PAYLOAD,
)
from tmrl.games.config import CarRacingConfig
from tmrl.games.telemetry import TelemetryClient


class _CommandChannel:
    """Request / acknowledge over the game's loopback command socket (one request at a time)."""

    def __init__(self, port: int, describe: str, exit_reason: Callable[[], str]) -> None:
        self._lock = threading.Lock()
        self._describe = describe
        self._exit_reason = exit_reason
        self._owed: list[tuple[bytes, int]] = []
        self._sock: socket.socket | None = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, cmd: bytes, ack: bytes, timeout: float, payload: int = 0) -> bytes:
        """Send ``cmd``, wait for ``ack`` followed by ``payload`` bytes, return the payload.

        A request that timed out leaves its answer owed: the next request reads it first, so answers never get
        mixed up after a stall.
        """
        with self._lock:
            sock = self._sock
            if sock is None:
                raise GameError(f"{self._describe} is closed")
            try:
                sock.settimeout(timeout)
                while self._owed:
                    if self._read_answer(sock, *self._owed[0]) is None:
                        return self._fail_exited()
                    self._owed.pop(0)
                sock.sendall(cmd)
                self._owed.append((ack, payload))
                extra = self._read_answer(sock, ack, payload)
                if extra is None:
                    return self._fail_exited()
                self._owed.pop()
                return extra
            except TimeoutError as e:
                raise GameError(
                    f"{self._describe} did not answer within {timeout:.1f} s; is the machine overloaded?"
                ) from e
            except OSError as e:
                reason = self._exit_reason()
                if reason:
                    raise GameError(f"{self._describe} has exited{reason}; open the game again") from e
                raise GameError(f"{self._describe} is gone ({e.strerror or e}); open the game again") from e

    @staticmethod
    def _read_answer(sock: socket.socket, ack: bytes, payload: int) -> bytes | None:
        """Read ``ack`` + ``payload`` bytes; None when the game closed the connection or answered garbage."""
        if sock.recv(1) != ack:
            return None
        extra = b""
        while len(extra) < payload:
            chunk = sock.recv(payload - len(extra))
            if not chunk:
                return None
            extra += chunk
        return extra

    def _fail_exited(self) -> bytes:
        raise GameError(f"{self._describe} has exited{self._exit_reason()}; open the game again")

    def close(self, farewell: bytes | None = None) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is None:
            return
        if farewell:
            try:
                sock.sendall(farewell)
            except OSError:
                pass
        sock.close()


class CarRacingScreen:
    """Frames from shared memory: the latest one the game rendered (continuous), or one it renders on request."""

    channel_order = "rgb"

    def __init__(
        self,
        state: S.SharedState,
        channel: _CommandChannel,
        timeout: float,
        *,
        continuous: bool = False,
        render_hz: float = 50.0,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self._state = state
        self._channel = channel
        self._timeout = timeout
        self._continuous = continuous
        self._stall_s = max(timeout, 3.0 / render_hz)
        self._alive = alive
        self._seen = (-1, 0.0)  # (frame count, when it last changed): continuous mode's liveness check

    def grab(self) -> np.ndarray:
        """The current view, (H, W, 3) uint8 RGB. On demand: rendered after this call began (or the latest one
        when the render rate cap was reached). Continuous: the latest frame the game rendered."""
        if not self._continuous:
            self._channel.request(CMD_RENDER, ACK_RENDER, self._timeout)
            return self._state.read_frame(self._timeout)
        channel = self._channel
        if self._state.closed:
            raise GameError(f"{channel._describe} is closed")
        if not self._alive():
            raise GameError(f"{channel._describe} has exited{channel._exit_reason()}; open the game again")
        frame = self._state.read_frame(self._timeout)
        count, now = int(self._state.header[S.H_FRAME_COUNT]), time.monotonic()
        if count != self._seen[0]:
            self._seen = (count, now)
        elif now - self._seen[1] > self._stall_s:
            raise GameError(
                f"{channel._describe} rendered no new frame for {self._stall_s:.1f} s"
                f"{channel._exit_reason() or ' (is it stalled?)'}; open the game again"
            )
        return frame

    def latest(self) -> np.ndarray:
        """The most recently rendered frame, without asking for a new one."""
        return self._state.read_frame(self._timeout)


class CarRacingController:
    """Controls written to shared memory (read by the game each physics frame); respawn by command."""

    def __init__(
        self,
        state: S.SharedState,
        channel: _CommandChannel,
        timeout: float,
        telemetry: TelemetryClient,
        track_seed: int = 0,
    ) -> None:
        self._state = state
        self._channel = channel
        self._timeout = timeout
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self.track_seed = track_seed
        """The seed of the track the game runs (the configured one until a respawn onto another)."""

    def act(self, gas: float, brake: float, steer: float) -> None:
        """Set gas, brake, steer (env values in [-1, 1]; the game applies max(0, gas), max(0, brake))."""
        with self._lock:
            self._state.write_controls(clip_unit(gas), clip_unit(brake), clip_unit(steer))

    def neutral(self) -> None:
        """Release everything."""
        self.act(0.0, 0.0, 0.0)

    def respawn(self, tile: int = 0, speed_kmh: float = 0.0, track_seed: int | None = None) -> None:
        """Reset the car to the start line of the same track, or onto track tile ``tile``; standing, or rolling
        along its heading at ``speed_kmh``. ``track_seed``: the track of another seed (the game builds it, tens of
        ms) and the car on it; None stays on the current track.

        Returns once the game has done it and the telemetry client holds a frame from after the reset.
        """
        if track_seed is not None:
            if track_seed < 0:
                raise ValueError(f"track seed {track_seed} must be >= 0")
            self.track_seed = track_seed
        self.neutral()
        self._state.header[S.H_RESPAWN_TRACK] = self.track_seed
        self._state.header[S.H_RESPAWN_TILE] = tile
        self._state.header[S.H_RESPAWN_SPEED] = round(speed_kmh * 1000.0)
        payload = self._channel.request(CMD_RESPAWN, ACK_RESPAWN, self._timeout + 5.0, RESPAWN_PAYLOAD.size)
        (queued,) = RESPAWN_PAYLOAD.unpack(payload)
        if queued >= 0 and self._telemetry.wait_connection_frames(queued, timeout=1.0):
            return
        # no telemetry client yet, or it reconnected meanwhile: two fresh publications are after the reset
        counter, _ = self._telemetry.latest()
        counter, _ = self._telemetry.wait_newer(counter, timeout=self._timeout)
        self._telemetry.wait_newer(counter, timeout=self._timeout)


class CarRacingGame:
    """A running built-in game process and its three channels."""

    name = "carracing"

    def __init__(self, config: CarRacingConfig) -> None:
        self.config = config
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: _CommandChannel | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.shm_name = config.shm_name or f"tmrl_{os.getpid()}_{secrets.token_hex(6)}"
        self._state = S.SharedState.create(self.shm_name, config.render_width, config.render_height)
        self._stderr = tempfile.TemporaryFile()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        cfg = self.config
        env = dict(os.environ)
        env.setdefault("SDL_VIDEODRIVER", "dummy")
        env.setdefault("SDL_AUDIODRIVER", "dummy")
        env["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "tmrl.games.carracing.process",
            "--shm",
            self.shm_name,
            "--parent-pid",
            str(os.getpid()),
            "--config",
            cfg.model_dump_json(),
        ]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # Windows: no console window
        )
        h = self._state.header
        deadline = time.monotonic() + cfg.startup_timeout_s
        while int(h[S.H_STATE]) == S.STATE_STARTING:
            if self._proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise GameError(
                    f"the built-in game did not start within {cfg.startup_timeout_s:.0f} s; "
                    "raise startup_timeout_s if the machine is very busy"
                )
            time.sleep(0.01)
        if int(h[S.H_STATE]) != S.STATE_READY:
            self._proc.wait(timeout=5.0)
            raise GameError(f"the built-in game failed to start: {self._stderr_tail()}")
        self.pid = self._proc.pid
        describe = f"the built-in game (pid {self.pid})"
        try:
            self._channel = _CommandChannel(int(h[S.H_COMMAND_PORT]), describe, self._exit_reason)
        except OSError as e:
            raise GameError(f"cannot connect to {describe}{self._exit_reason()}: {e.strerror or e}") from e
        self.telemetry_port = int(h[S.H_TELEMETRY_PORT])
        self.telemetry = TelemetryClient(
            "127.0.0.1",
            self.telemetry_port,
            source=describe,
            timeout=cfg.telemetry_timeout_s,
            hint="the game process may have exited (silence timeout or crash); open the game again",
        )
        self.telemetry.start()
        self.screen = CarRacingScreen(
            self._state,
            self._channel,
            cfg.grab_timeout_s,
            continuous=cfg.render_mode == "continuous",
            render_hz=cfg.max_render_hz,
            alive=lambda: self.alive,
        )
        self.controller = CarRacingController(
            self._state, self._channel, cfg.grab_timeout_s, self.telemetry, track_seed=cfg.seed
        )
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"carracing-heartbeat-{self.pid}", daemon=True
        )
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._heartbeat_stop.wait(self.config.heartbeat_s):
            if self._closed:
                return
            self._state.header[S.H_HEARTBEAT] += 1

    def _stderr_tail(self) -> str:
        if self._stderr.closed:
            return "the game was closed"
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        code = None if self._proc is None else self._proc.returncode
        return lines[-1] if lines else f"no error output (exit code {code})"

    def _exit_reason(self) -> str:
        """' (<why it exited>)' once the process has exited (it prints one line saying why), else ''."""
        if self._proc is None:
            return ""
        try:
            self._proc.wait(timeout=1.0)  # called on a failure: give a dying process a moment to finish
        except subprocess.TimeoutExpired:
            return ""
        tail = self._stderr_tail()
        return f" ({tail.split(' exits: ', 1)[-1]})"

    @property
    def alive(self) -> bool:
        """Whether the game process is still running."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def track_seed(self) -> int:
        """The seed of the track the game runs now (``config.seed`` until a respawn onto another track)."""
        return self.controller.track_seed

    @property
    def track(self) -> np.ndarray:
        """Centre line (N, 2) of the current track in world x, z, driving order from the start line (built
        in-process)."""
        from tmrl.games.carracing.pilot import track_centerline

        return track_centerline(self.track_seed)

    def close(self) -> None:
        """Stop the game process and release the shared memory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._heartbeat_stop.set()
        telemetry = getattr(self, "telemetry", None)
        if telemetry is not None:
            telemetry.close()
        if self._channel is not None:
            self._channel.close(farewell=CMD_QUIT)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5.0)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2.0)
        self._state.close()
        self._stderr.close()

    def __enter__(self) -> CarRacingGame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
