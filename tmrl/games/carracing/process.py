"""The built-in game process: ``python -m tmrl.games.carracing.process --shm NAME --parent-pid PID --config JSON``.

Runs CarRacing-v3 physics at 50 frames per wall-clock second whatever the agent does. Each physics frame it reads
the controls from shared memory, steps, and sends the 44-byte telemetry frame to its one TCP client. It renders when
asked (command ``R`` on its command socket; render_mode "on_demand") or after physics frames (render_mode
"continuous"), at most ``max_render_hz``; it respawns on ``S`` and quits on ``Q``.
It exits when the command connection closes (its owner closed or died), when its parent process is gone, or when
no control write / heartbeat arrived for ``silence_timeout_s``: no orphans.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time

from tmrl.games.carracing import shm as S
from tmrl.games.config import CarRacingConfig

CMD_RENDER = b"R"
CMD_RESPAWN = b"S"
CMD_QUIT = b"Q"
ACK_RENDER = b"r"
ACK_RESPAWN = b"s"
RESPAWN_PAYLOAD = struct.Struct("<q")
"""After ACK_RESPAWN: frames queued on the telemetry connection up to and including the first after respawn
(-1 when no telemetry client is connected)."""

PHYSICS_HZ = 50.0  # CarRacing's FPS: one physics frame = 1/50 s of game time = 1/50 s of wall time
_RESYNC_S = 0.25  # fell this far behind (machine stalled): skip ahead instead of bursting


class GameProcess:
    """State and main loop of one built-in game instance."""

    def __init__(self, config: CarRacingConfig, shm_name: str, parent_pid: int) -> None:
        from tmrl.games.carracing.sim import RaceSim, Renderer
        from tmrl.games.telemetry import TelemetryServer

        self.config = config
        self.parent_pid = parent_pid
        self.state = S.SharedState.attach(shm_name, config.render_width, config.render_height)
        try:
            self.sim = RaceSim(config.seed, config.lap_complete_percent)
            self.renderer = Renderer(self.sim, config.render_width, config.render_height, config.supersample)
            try:
                self.telemetry = TelemetryServer("127.0.0.1", config.port)
            except OSError as e:
                raise SystemExit(
                    f"cannot listen for telemetry on 127.0.0.1:{config.port}: {e.strerror or e}; "
                    "choose another port (0 = pick a free one)"
                ) from e
            self.cmd_listener = socket.create_server(("127.0.0.1", 0))
        except BaseException:
            self.state.header[S.H_STATE] = S.STATE_FAILED
            self.state.close()
            raise
        self.cmd: socket.socket | None = None
        self.parent = ParentWatch(parent_pid)
        self.last_render = -1e9
        self.render_period = 1.0 / config.max_render_hz
        self.continuous = config.render_mode == "continuous"
        self.controls = (0.0, 0.0, 0.0)

    def run(self) -> str:
        """Run until told to stop; returns why it stopped."""
        h = self.state.header
        self.state.write_frame(self.renderer.render())
        h[S.H_TELEMETRY_PORT] = self.telemetry.port
        h[S.H_COMMAND_PORT] = self.cmd_listener.getsockname()[1]
        h[S.H_PID] = os.getpid()
        h[S.H_STATE] = S.STATE_READY
        dt = 1.0 / PHYSICS_HZ
        silence = self.config.silence_timeout_s
        ready_at = last_activity = time.monotonic()
        seen = (int(h[S.H_CTRL_COUNT]), int(h[S.H_HEARTBEAT]))
        next_check = 0.0
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            wait = next_tick - now
            if wait > 0:
                sock = self.cmd if self.cmd is not None else self.cmd_listener
                readable, _, _ = select.select([sock], [], [], wait)
                if readable:
                    reason = self._on_readable(sock)
                    if reason:
                        return reason
                    last_activity = time.monotonic()
                continue
            controls = self.state.read_controls()
            if controls is not None:
                self.controls = controls
            frame = self.sim.tick(*self.controls)
            self.telemetry.poll()
            self.telemetry.send(frame)
            h[S.H_TICKS] += 1
            # Continuous rendering is paced by the tick schedule, not by the wall clock after the physics: wake-up
            # jitter must not skip a frame (it did: 50 ticks/s rendered only ~32 frames/s, some frames 2 ticks old).
            if self.continuous and next_tick - self.last_render >= self.render_period - 1e-6:
                self.last_render = next_tick
                self.state.write_frame(self.renderer.render())
            next_tick += dt
            now = time.monotonic()
            if now - next_tick > _RESYNC_S:
                next_tick = now
            if now >= next_check:
                next_check = now + 0.1
                current = (int(h[S.H_CTRL_COUNT]), int(h[S.H_HEARTBEAT]))
                if self.cmd is None:  # the silence clock starts when the owner has connected
                    if now - ready_at > self.config.startup_timeout_s:
                        return f"no owner connected within {self.config.startup_timeout_s:.1f} s"
                elif current != seen:
                    seen = current
                    last_activity = now
                elif now - last_activity > silence:
                    return f"no control or heartbeat for {silence:.1f} s"
                if not self.parent.alive():
                    return f"parent process {self.parent_pid} is gone"

    def _on_readable(self, sock: socket.socket) -> str | None:
        if sock is self.cmd_listener:
            conn, _ = self.cmd_listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.cmd = conn
            self.cmd_listener.close()
            return None
        try:
            data = sock.recv(256)
        except OSError:
            data = b""
        if not data:
            return "the owner closed the command connection"
        for b in data:
            cmd = bytes((b,))
            if cmd == CMD_RENDER:
                now = time.monotonic()
                if not self.continuous and now - self.last_render >= self.render_period:
                    self.last_render = now
                    self.state.write_frame(self.renderer.render())
                sock.sendall(ACK_RENDER)
            elif cmd == CMD_RESPAWN:
                # the owner writes the track, tile and speed before the command; a tile off the track means the
                # start line
                self.sim.set_track(max(0, int(self.state.header[S.H_RESPAWN_TRACK])))
                tile = int(self.state.header[S.H_RESPAWN_TILE])
                speed_kmh = max(0, int(self.state.header[S.H_RESPAWN_SPEED])) / 1000.0
                self.sim.reset(tile if 0 <= tile < self.sim.n_tiles else 0, speed_kmh)
                self.controls = (0.0, 0.0, 0.0)
                self.state.header[S.H_RESPAWNS] += 1
                if self.continuous:  # the next grab must not show the car before its respawn
                    self.state.write_frame(self.renderer.render())
                self.telemetry.poll()
                self.telemetry.send(self.sim.telemetry())
                queued = self.telemetry.frames_queued if self.telemetry.has_client else -1
                sock.sendall(ACK_RESPAWN + RESPAWN_PAYLOAD.pack(queued))
            elif cmd == CMD_QUIT:
                return "quit requested"
        return None

    def close(self) -> None:
        """Close sockets and detach from shared memory (the owner unlinks it)."""
        self.telemetry.close()
        if self.cmd is not None:
            self.cmd.close()
        self.cmd_listener.close()
        self.state.header[S.H_STATE] = S.STATE_EXITED
        self.state.close()


class ParentWatch:
    """Tells whether the process that started the game still runs (POSIX: our parent pid changes when it dies;
    Windows: a SYNCHRONIZE handle on it becomes signalled)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._handle: int | None = None
        if pid > 0 and sys.platform == "win32":
            import ctypes

            self._kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            self._handle = self._kernel32.OpenProcess(0x00100000, False, pid) or None  # SYNCHRONIZE

    def alive(self) -> bool:
        if self.pid <= 0:
            return True
        if sys.platform == "win32":
            if self._handle is None:
                return True  # could not watch it: the command connection's EOF still covers a dead owner
            return self._kernel32.WaitForSingleObject(self._handle, 0) != 0  # 0 = WAIT_OBJECT_0: it exited
        return os.getppid() == self.pid


def main(argv: list[str] | None = None) -> int:
    """Entry point of the game process."""
    parser = argparse.ArgumentParser(prog="python -m tmrl.games.carracing.process")
    parser.add_argument("--shm", required=True, help="shared-memory block created by the owner")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    parser.add_argument("--config", required=True, help="CarRacingConfig as JSON")
    args = parser.parse_args(argv)
    config = CarRacingConfig.model_validate_json(args.config)
    game = GameProcess(config, args.shm, args.parent_pid)
    try:
        reason = game.run()
    finally:
        game.close()
    print(f"tmrl built-in game (pid {os.getpid()}) exits: {reason}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
