"""Telemetry: the OpenPlanet 44-byte frame, a reconnecting client and the built-in game's one-client server.

Frame (DESIGN.md §2): 11 little-endian float32 in this order: speed, distance driven, x, y (up), z, steer, gas,
brake, finished (0/1), gear, rpm. The OpenPlanet plugin ``tmrl-telemetry`` and the built-in game both write it
on every game frame to one TCP client; the client keeps only the latest complete frame.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import NamedTuple

from tmrl.errors import TelemetryError

FRAME_FORMAT = "<11f"
FRAME_SIZE = 44
_STRUCT = struct.Struct(FRAME_FORMAT)
assert _STRUCT.size == FRAME_SIZE


class TelemetryFrame(NamedTuple):
    """One telemetry frame (units are the game's: TM2020 speed in km/h, built-in speed = |v| * 3.6)."""

    speed: float
    distance: float
    x: float
    y: float
    z: float
    steer: float
    gas: float
    brake: float
    finished: float
    gear: float
    rpm: float


def encode_frame(f: TelemetryFrame) -> bytes:
    """Pack a frame into its 44 wire bytes."""
    return _STRUCT.pack(*f)


def decode_frame(b: bytes) -> TelemetryFrame:
    """Unpack exactly 44 wire bytes into a frame (TelemetryError on a wrong length)."""
    if len(b) != FRAME_SIZE:
        raise TelemetryError(f"a telemetry frame is {FRAME_SIZE} bytes, got {len(b)}")
    return TelemetryFrame(*_STRUCT.unpack(b))


class TelemetryClient:
    """Reads a telemetry stream in a background thread and keeps only the latest complete frame.

    The thread connects, reads, and on refusal or disconnection waits with exponential back-off (50 ms up to
    1 s) before reconnecting: it never spins on a closed socket. ``latest`` and ``wait_newer`` raise
    ``TelemetryError`` naming ``source`` and saying what to do when the stream stays silent.
    """

    _RECV_POLL_S = 0.25
    _BACKOFF_MIN_S = 0.05
    _BACKOFF_MAX_S = 1.0

    def __init__(self, host: str, port: int, *, source: str, timeout: float = 5.0, hint: str = "") -> None:
        self.host = host
        self.port = port
        self.source = source
        self.timeout = timeout
        self.hint = hint
        self._cond = threading.Condition()
        self._frame: TelemetryFrame | None = None
        self._counter = 0
        self._last_time = 0.0
        self._started_at = 0.0
        self._last_error = "not connected yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._conn_frames = 0
        self.recv_calls = 0
        self.connections = 0

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the reader thread (idempotent)."""
        if self._thread is not None:
            return
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader thread and close the socket (idempotent)."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> TelemetryClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------- readers
    def latest(self) -> tuple[int, TelemetryFrame]:
        """Return (frame counter, latest frame); waits up to ``timeout`` s for a first frame.

        Raises TelemetryError when no frame arrived within the last ``timeout`` seconds.
        """
        self._require_started()
        deadline = max(self._started_at, self._last_time) + self.timeout
        with self._cond:
            while True:
                now = time.monotonic()
                if self._frame is not None and now - self._last_time <= self.timeout:
                    return self._counter, self._frame
                if now >= deadline or self._stop.is_set():
                    raise self._silence_error()
                self._cond.wait(deadline - now)
                deadline = max(deadline, self._last_time + self.timeout)

    def wait_newer(self, counter: int, timeout: float) -> tuple[int, TelemetryFrame]:
        """Block until a frame newer than ``counter`` arrives; TelemetryError after ``timeout`` seconds."""
        self._require_started()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._counter <= counter or self._frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    raise self._silence_error(waited=timeout)
                self._cond.wait(remaining)
            return self._counter, self._frame

    def wait_connection_frames(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` frames arrived on the current connection; False on timeout or reconnection.

        Lets a game that knows how many frames it sent on this connection (the built-in game's respawn) make
        sure the latest frame is not an older one still in flight.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            connection = self.connections
            while self._conn_frames < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.connections != connection or self._stop.is_set():
                    return False
                self._cond.wait(remaining)
            return self.connections == connection

    @property
    def connected(self) -> bool:
        """Whether the reader currently holds an open connection."""
        return self._sock is not None

    # -------------------------------------------------------------------------------------------------- thread
    def _require_started(self) -> None:
        if self._thread is None:
            raise TelemetryError("TelemetryClient.start() must be called before reading telemetry")

    def _silence_error(self, waited: float | None = None) -> TelemetryError:
        if self._stop.is_set():
            return TelemetryError(f"the telemetry client for {self.source} is closed")
        waited = self.timeout if waited is None else waited
        what = "no telemetry frame" if self._frame is None else "no new telemetry frame"
        msg = (
            f"{what} from {self.source} at {self.host}:{self.port} within {waited:.1f} s "
            f"(last connection state: {self._last_error})"
        )
        if self.hint:
            msg += f"; {self.hint}"
        return TelemetryError(msg)

    def _run(self) -> None:
        backoff = self._BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
            except OSError as e:
                self._last_error = f"cannot connect: {e.strerror or e}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2.0, self._BACKOFF_MAX_S)
                continue
            with self._cond:
                self.connections += 1
                self._conn_frames = 0
            self._last_error = "connected"
            sock.settimeout(self._RECV_POLL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            got_frames = self._read(sock)
            self._sock = None
            sock.close()
            if got_frames:
                backoff = self._BACKOFF_MIN_S
            self._stop.wait(backoff)
            backoff = min(backoff * 2.0, self._BACKOFF_MAX_S)

    def _read(self, sock: socket.socket) -> bool:
        """Read frames until the peer closes or errors; return whether any frame arrived."""
        buf = bytearray()
        got = False
        while not self._stop.is_set():
            try:
                self.recv_calls += 1
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                self._last_error = f"connection lost: {e.strerror or e}"
                return got
            if not chunk:
                self._last_error = "the peer closed the connection"
                return got
            buf += chunk
            n = len(buf) // FRAME_SIZE
            if n == 0:
                continue
            last = bytes(buf[(n - 1) * FRAME_SIZE : n * FRAME_SIZE])
            del buf[: n * FRAME_SIZE]
            frame = TelemetryFrame(*_STRUCT.unpack(last))
            got = True
            with self._cond:
                self._frame = frame
                self._counter += n
                self._conn_frames += n
                self._last_time = time.monotonic()
                self._cond.notify_all()
        return got


class TelemetryServer:
    """Game side of the stream: a non-blocking loopback server that sends each frame to one client.

    ``poll`` accepts a pending client (a new one replaces the old one); ``send`` queues a frame and writes what
    the socket takes without blocking. A client that does not read loses whole frames, never parts of one.
    """

    _MAX_PENDING = 64 * FRAME_SIZE

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, send_buffer: int = 16384) -> None:
        """``send_buffer``: kernel send buffer of the client socket (small: a stalled client finds fresh frames,
        not megabytes of stale ones, when it resumes)."""
        self._send_buffer = send_buffer
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: nobody else may bind this port meanwhile
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:  # POSIX: a restarted game can rebind its fixed port despite connections in TIME_WAIT
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(1)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._client: socket.socket | None = None
        self._pending = bytearray()
        self.frames_queued = 0
        """Frames queued for the current client since it connected (each reaches it unless it disconnects)."""

    def poll(self) -> None:
        """Accept a waiting client, if any."""
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
        self._drop_client()
        self._client = conn
        self.frames_queued = 0

    def send(self, frame: TelemetryFrame) -> None:
        """Queue one frame for the client (dropped when there is none) and flush without blocking."""
        if self._client is None:
            return
        if len(self._pending) + FRAME_SIZE <= self._MAX_PENDING:
            self._pending += _STRUCT.pack(*frame)
            self.frames_queued += 1
        self.flush()

    def flush(self) -> None:
        """Write as much of the queued bytes as the socket takes, without blocking."""
        if self._client is None or not self._pending:
            return
        try:
            sent = self._client.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_client()
            return
        del self._pending[:sent]

    @property
    def pending_bytes(self) -> int:
        """Bytes queued but not yet taken by the socket."""
        return len(self._pending)

    @property
    def has_client(self) -> bool:
        """Whether a client is connected."""
        return self._client is not None

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
        self._client = None
        self._pending.clear()
        self.frames_queued = 0

    def close(self) -> None:
        """Close the client and the listening socket."""
        self._drop_client()
        self._listener.close()
