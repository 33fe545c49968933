"""Telemetry: frame codec, and the client against a fake OpenPlanet plugin on a real loopback socket."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmrl.errors import TelemetryError
from tmrl.games.telemetry import (
    FRAME_FORMAT,
    FRAME_SIZE,
    TelemetryClient,
    TelemetryFrame,
    TelemetryServer,
    decode_frame,
    encode_frame,
)

SOURCE = "the OpenPlanet plugin 'tmrl-telemetry'"


def frame(i: float) -> TelemetryFrame:
    return TelemetryFrame(i, 2 * i, 3.0, 4.0, 5.0, -0.5, 1.0, 0.0, 0.0, 3.0, 5000.0 + i)


f32 = st.floats(width=32, allow_nan=False)


@given(st.lists(f32, min_size=11, max_size=11))
def test_codec_roundtrip(values: list[float]) -> None:
    f = TelemetryFrame(*values)
    raw = encode_frame(f)
    assert len(raw) == FRAME_SIZE == struct.calcsize(FRAME_FORMAT)
    assert decode_frame(raw) == f
    assert raw == struct.pack("<11f", *values)  # OpenPlanet order, little-endian float32


def test_decode_wrong_length() -> None:
    with pytest.raises(TelemetryError, match="44 bytes"):
        decode_frame(b"\x00" * 43)


class FakePlugin:
    """A fake OpenPlanet plugin: a real loopback server whose behaviour each test scripts."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5.0)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._threads: list[threading.Thread] = []

    def serve(self, handler: Callable[[socket.socket], None], connections: int = 1) -> None:
        def run() -> None:
            for _ in range(connections):
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                self.accepted += 1
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with conn:
                    handler(conn)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept
        except OSError:
            pass
        self.listener.close()
        for t in self._threads:
            t.join(timeout=10.0)


@pytest.fixture
def plugin() -> Iterator[FakePlugin]:
    p = FakePlugin()
    try:
        yield p
    finally:
        p.close()


def client_for(port: int, timeout: float = 3.0) -> TelemetryClient:
    c = TelemetryClient("127.0.0.1", port, source=SOURCE, timeout=timeout, hint="install the plugin")
    c.start()
    return c


def test_latest_frame_semantics(plugin: FakePlugin) -> None:
    done = threading.Event()

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"".join(encode_frame(frame(i)) for i in range(1, 11)))
        done.wait(5.0)

    plugin.serve(handler)
    c = client_for(plugin.port)
    try:
        counter, f = c.wait_newer(9, timeout=5.0)
        assert counter == 10 and f == frame(10)
        assert c.latest() == (10, frame(10))
    finally:
        done.set()
        c.close()


def test_partial_frames_split_across_reads(plugin: FakePlugin) -> None:
    done = threading.Event()
    sent = threading.Event()

    def handler(conn: socket.socket) -> None:
        raw = encode_frame(frame(1)) + encode_frame(frame(2))
        # 7-byte pieces: frame boundaries fall in the middle of sends
        for k in range(0, len(raw), 7):
            conn.sendall(raw[k : k + 7])
            time.sleep(0.01)
        conn.sendall(encode_frame(frame(3))[:30])  # an incomplete frame must never be published
        sent.set()
        done.wait(5.0)

    plugin.serve(handler)
    c = client_for(plugin.port)
    try:
        counter, f = c.wait_newer(1, timeout=5.0)
        assert (counter, f) == (2, frame(2))
        assert sent.wait(5.0)
        with pytest.raises(TelemetryError):
            c.wait_newer(2, timeout=0.3)
        assert c.latest() == (2, frame(2))
        assert c.recv_calls >= 3  # it really was reassembled from several reads
    finally:
        done.set()
        c.close()


def test_reconnects_after_the_plugin_drops(plugin: FakePlugin) -> None:
    second = threading.Event()

    def handler(conn: socket.socket) -> None:
        if plugin.accepted == 1:
            conn.sendall(encode_frame(frame(1)))
            time.sleep(0.1)
            return  # drop the connection
        conn.sendall(encode_frame(frame(7)))
        second.wait(5.0)

    plugin.serve(handler, connections=2)
    c = client_for(plugin.port)
    try:
        c.wait_newer(0, timeout=5.0)
        counter, f = c.wait_newer(1, timeout=5.0)
        assert f == frame(7) and counter == 2
        assert c.connections == 2
    finally:
        second.set()
        c.close()


def test_timeout_error_names_the_source_and_the_fix() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    # nothing listens on `port` any more
    c = client_for(port, timeout=0.5)
    try:
        with pytest.raises(TelemetryError) as info:
            c.latest()
        msg = str(info.value)
        assert "OpenPlanet plugin 'tmrl-telemetry'" in msg and f"127.0.0.1:{port}" in msg
        assert "cannot connect" in msg and "install the plugin" in msg
        assert "\n" not in msg
    finally:
        c.close()


def test_silence_after_frames_is_an_error(plugin: FakePlugin) -> None:
    done = threading.Event()

    def handler(conn: socket.socket) -> None:
        conn.sendall(encode_frame(frame(1)))
        done.wait(5.0)  # connected but silent, like a game paused in its menus

    plugin.serve(handler)
    c = client_for(plugin.port, timeout=0.4)
    try:
        assert c.wait_newer(0, timeout=10.0)[1] == frame(1)
        deadline = time.monotonic() + 5.0
        with pytest.raises(TelemetryError, match="no new telemetry frame"):
            while time.monotonic() < deadline:
                c.latest()
                time.sleep(0.05)
    finally:
        done.set()
        c.close()


def test_no_busy_spin_on_a_closing_peer(plugin: FakePlugin) -> None:
    """A plugin that accepts and closes at once: the client backs off instead of spinning."""

    def handler(conn: socket.socket) -> None:
        return  # close immediately

    plugin.serve(handler, connections=1000)
    c = client_for(plugin.port)
    try:
        time.sleep(1.5)  # observation window: count what the reader did meanwhile
        connections, recvs = c.connections, c.recv_calls
    finally:
        c.close()
    assert 1 <= connections <= 12, connections
    assert recvs <= 2 * connections + 12, recvs


def test_wait_newer_and_close(plugin: FakePlugin) -> None:
    release = threading.Event()

    def handler(conn: socket.socket) -> None:
        for i in range(1, 4):
            conn.sendall(encode_frame(frame(i)))
            time.sleep(0.05)
        release.wait(5.0)

    plugin.serve(handler)
    c = client_for(plugin.port)
    counter, _ = c.wait_newer(0, timeout=5.0)
    counter, f = c.wait_newer(counter, timeout=5.0)
    assert f.speed >= 2.0
    c.close()
    release.set()
    with pytest.raises(TelemetryError, match="closed"):
        c.wait_newer(counter, timeout=0.1)
    c.close()  # idempotent


def test_reading_before_start_is_an_error() -> None:
    c = TelemetryClient("127.0.0.1", 9, source=SOURCE)
    with pytest.raises(TelemetryError, match="start"):
        c.latest()


def test_server_keeps_frame_boundaries_for_a_slow_reader() -> None:
    server = TelemetryServer("127.0.0.1", 0)
    reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", server.port))
        deadline = time.monotonic() + 5.0
        while not server.has_client and time.monotonic() < deadline:
            server.poll()
            time.sleep(0.005)
        assert server.has_client
        sent = 20_000  # far more than the socket buffers hold while nobody reads: whole frames get dropped
        for i in range(sent):
            server.send(frame(float(i)))
        assert server.frames_queued < sent
        reader.settimeout(0.5)
        data = b""
        while True:
            server.flush()
            try:
                chunk = reader.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        assert server.pending_bytes == 0
        assert len(data) % FRAME_SIZE == 0
        frames = [decode_frame(data[k : k + FRAME_SIZE]) for k in range(0, len(data), FRAME_SIZE)]
        assert len(frames) == server.frames_queued
        assert all(f == frame(f.speed) for f in frames), "a frame was cut"
        speeds = [f.speed for f in frames]
        assert speeds == sorted(speeds)
    finally:
        reader.close()
        server.close()
