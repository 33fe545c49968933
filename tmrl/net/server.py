"""``RelayServer``: routes sample batches from workers to the trainer and weights from the trainer to workers.

asyncio (uvloop when installed); never imports numpy or torch: it routes on the small frame header and forwards
bodies as opaque bytes. See docs/protocol.md for the protocol and the delivery guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmrl.errors import AuthError, ProtocolError
from tmrl.net import protocol as P
from tmrl.net.config import DEFAULT_SECRET, RelayConfig
from tmrl.net.stream import frame_parts, parts_size, read_frame, server_ssl_context

log = logging.getLogger("tmrl.relay")

MAX_SEEN_STREAMS = 100_000


class ForbiddenMessageError(ProtocolError):
    """A client sent a message its role may not send (answered with a clear error, then disconnected)."""


@dataclass
class _Entry:
    """One batch held for the trainer: the forwarded frame's buffers, its sample count and size."""

    parts: list[bytes | memoryview]
    n: int
    size: int


@dataclass
class _Conn:
    role: str
    client_id: str
    incarnation: int
    peer: str
    writer: asyncio.StreamWriter
    pending_weights: list[bytes | memoryview] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    acked: int = 0  # trainer: batches acknowledged on this connection

    def label(self) -> str:
        return f"{self.role} {self.client_id!r} ({self.peer})"


@dataclass
class _Counters:
    batches_in: int = 0
    samples_in: int = 0
    bytes_in: int = 0
    batches_out: int = 0
    samples_out: int = 0
    bytes_out: int = 0
    dropped_batches: int = 0
    dropped_samples: int = 0
    duplicates: int = 0
    protocol_errors: int = 0
    auth_failures: int = 0
    slow_consumers: int = 0
    weights_in: int = 0
    weights_out: int = 0


class RelayServer:
    """The relay. ``await start()`` binds and returns the port; ``await close()`` shuts down in order."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._secret = config.secret_bytes()
        self._server: asyncio.base_events.Server | None = None
        self._queue: deque[_Entry] = deque()
        self._inflight: deque[_Entry] = deque()
        self._held_bytes = 0
        self._inflight_bytes = 0
        self._trainer: _Conn | None = None
        self._workers: dict[int, _Conn] = {}
        self._seen: dict[tuple[str, int], int] = {}
        self._weights: tuple[int, list[bytes | memoryview]] | None = None
        self._c = _Counters()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[asyncio.StreamWriter] = set()
        self._queue_event = asyncio.Event()
        self._closing = False
        self._started = time.monotonic()
        self._snap: tuple[float, _Counters] = (self._started, _Counters())
        self._rates: dict[str, float] = {}
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Load the spool (if any), bind, and start the status log. Returns the bound port."""
        cfg = self.config
        if cfg.spool_path is not None:
            self._load_spool(cfg.spool_path)
        if cfg.secret.get_secret_value() == DEFAULT_SECRET and cfg.host not in (
            "127.0.0.1",
            "localhost",
            "::1",
        ):
            log.warning("relay listens on %s with the default secret: set RelayConfig.secret", cfg.host)
        ssl_ctx = server_ssl_context(cfg.tls_cert, cfg.tls_key) if cfg.tls else None
        self._server = await asyncio.start_server(
            self._handle, cfg.host, cfg.port, ssl=ssl_ctx, limit=1 << 20, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._status_loop())
        log.info("relay listening on %s:%d (tls=%s)", cfg.host, self.port, cfg.tls)
        return self.port

    async def close(self) -> None:
        """Stop accepting, give the trainer ``shutdown_timeout`` to take queued batches (or spool them), close
        every connection, cancel the rest."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + self.config.shutdown_timeout
        if self.config.spool_path is None:
            while (
                (self._queue or self._inflight) and self._trainer is not None and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.01)
        self._requeue_inflight()
        if self.config.spool_path is not None:
            self._write_spool(self.config.spool_path)
        elif self._queue:
            lost = len(self._queue)
            while self._queue:
                self._drop_oldest()
            log.warning(
                "relay shut down with %d undelivered batches (counted as dropped; set spool_path)", lost
            )
        for w in list(self._conns):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(self.config.shutdown_timeout, 0.1))
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        log.info("relay stopped: %s", self._status_line())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- status -------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``tmrl status`` prints: connections, totals, rates, queue, drops, weight version."""
        c = self._c
        return {
            "uptime_s": round(time.monotonic() - self._started, 3),
            "trainer": self._trainer.client_id if self._trainer else None,
            "workers": sorted(w.client_id for w in self._workers.values()),
            "weights_version": self._weights[0] if self._weights else None,
            "queue_batches": len(self._queue),
            "inflight_batches": len(self._inflight),
            "queue_bytes": self._held_bytes,
            "queue_budget_bytes": self.config.queue_bytes,
            **{k: getattr(c, k) for k in c.__dataclass_fields__},
            "rates": dict(self._rates),
        }

    def _update_rates(self) -> None:
        now = time.monotonic()
        t0, old = self._snap
        dt = max(now - t0, 1e-9)
        c = self._c
        self._rates = {
            "batches_in_per_s": (c.batches_in - old.batches_in) / dt,
            "samples_in_per_s": (c.samples_in - old.samples_in) / dt,
            "mb_in_per_s": (c.bytes_in - old.bytes_in) / dt / 1e6,
            "batches_out_per_s": (c.batches_out - old.batches_out) / dt,
            "samples_out_per_s": (c.samples_out - old.samples_out) / dt,
            "mb_out_per_s": (c.bytes_out - old.bytes_out) / dt / 1e6,
        }
        self._snap = (now, _Counters(**vars(c)))

    def _status_line(self) -> str:
        s, r = self.status(), self._rates
        return (
            f"workers={len(s['workers'])} trainer={'yes' if s['trainer'] else 'no'} "
            f"in={r.get('samples_in_per_s', 0):.0f} samples/s ({r.get('mb_in_per_s', 0):.1f} MB/s) "
            f"out={r.get('samples_out_per_s', 0):.0f} samples/s queue={s['queue_batches']} batches "
            f"{s['queue_bytes'] / 1e6:.1f} MB dropped={s['dropped_batches']} weights=v{s['weights_version']}"
        )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval)
            self._update_rates()
            log.info("relay: %s", self._status_line())

    # -- connections --------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._conns.add(writer)
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn: _Conn | None = None
        try:
            conn = await self._handshake(reader, writer, peer_s)
            if conn is None:
                return
            log.info("relay: %s connected", conn.label())
            if conn.role == "worker":
                await self._run_worker(conn, reader)
            elif conn.role == "trainer":
                await self._run_trainer(conn, reader)
            else:
                await self._run_observer(conn, reader)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except ProtocolError as exc:
            self._c.protocol_errors += 1
            who = conn.label() if conn else peer_s
            log.warning("relay: dropping %s: %s", who, exc)
            code = "role" if isinstance(exc, ForbiddenMessageError) else "protocol"
            self._send_now(writer, {"t": "error", "code": code, "msg": str(exc)})
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not take the relay down; log it and drop the connection
            log.exception("relay: unexpected error on %s", peer_s)
        finally:
            if conn is not None:
                self._detach(conn)
            self._conns.discard(writer)
            writer.close()

    def _send_now(self, writer: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            if not writer.is_closing():
                writer.writelines(frame_parts(header))

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> _Conn | None:
        cfg = self.config
        async with asyncio.timeout(cfg.handshake_timeout):
            header, _ = await read_frame(reader, min(cfg.max_frame_bytes, 1 << 16))
            role, client_id, cnonce, inc = P.parse_hello(header)
            snonce = secrets.token_bytes(P.NONCE_BYTES)
            proof = P.server_proof(self._secret, cnonce, snonce, role, client_id)
            writer.writelines(frame_parts({"t": "challenge", "v": P.VERSION, "sn": snonce, "mac": proof}))
            await writer.drain()
            header, _ = await read_frame(reader, 1 << 16)
            if header.get("t") != "auth":
                raise ProtocolError("expected an auth message")
            expected = P.client_proof(self._secret, cnonce, snonce, role, client_id)
            if not P.verify(expected, header.get("mac")):
                self._c.auth_failures += 1
                log.warning("relay: %s %r from %s gave a wrong secret", role, client_id, peer)
                return await self._refuse(
                    writer, "auth", "wrong secret: the relay and its clients must share it"
                )
            if role == "trainer" and self._trainer is not None:
                return await self._refuse(
                    writer,
                    "busy",
                    f"the relay already has a trainer ({self._trainer.label()}); only one trainer at a time",
                )
            conn = _Conn(role, client_id, inc, peer, writer)
            writer.writelines(
                frame_parts({"t": "welcome", "v": P.VERSION, "wv": self._weights[0] if self._weights else -1})
            )
            await writer.drain()
        return conn

    async def _refuse(self, writer: asyncio.StreamWriter, code: str, msg: str) -> None:
        writer.writelines(frame_parts({"t": "refuse", "code": code, "msg": msg}))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 1.0)
        return None

    def _detach(self, conn: _Conn) -> None:
        if conn.role == "worker":
            self._workers.pop(id(conn), None)
        elif conn.role == "trainer" and self._trainer is conn:
            self._trainer = None
            self._requeue_inflight()
        log.info("relay: %s disconnected", conn.label())

    def _write(self, conn: _Conn, parts: list[bytes | memoryview]) -> bool:
        """Buffer ``parts`` on ``conn`` unless that would exceed the per-connection cap (slow consumer: cut)."""
        transport = conn.writer.transport
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() + parts_size(parts) > self.config.send_buffer_bytes:
            self._c.slow_consumers += 1
            log.warning("relay: %s is not reading (send buffer full); disconnecting it", conn.label())
            transport.close()
            return False
        conn.writer.writelines(parts)
        return True

    def _check_common(self, conn: _Conn, header: dict[str, Any]) -> bool:
        """Handle messages every role may send; True if handled."""
        t = header["t"]
        if t == "ping":
            self._write(conn, frame_parts({"t": "pong"}))
            return True
        if t == "status":
            if time.monotonic() - self._snap[0] > 1.0:
                self._update_rates()
            self._write(conn, frame_parts({"t": "status"}, P.pack(self.status())))
            return True
        return False

    # -- workers ------------------------------------------------------------------------------------------

    async def _run_worker(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        self._workers[id(conn)] = conn
        sender = self._spawn(self._weights_sender(conn))
        if self._weights is not None:
            conn.pending_weights = self._weights[1]
            conn.wake.set()
        key = (conn.client_id, conn.incarnation)
        try:
            while True:
                async with asyncio.timeout(self.config.idle_timeout):
                    header, body = await read_frame(reader, self.config.max_frame_bytes)
                if header["t"] == "batch":
                    seq, n = P.nonneg_int(header, "seq"), P.nonneg_int(header, "n")
                    self._on_batch(conn, key, seq, n, body)
                    self._write(conn, frame_parts({"t": "ack", "seq": seq}))
                elif not self._check_common(conn, header):
                    raise ForbiddenMessageError(f"a worker may not send {header['t']!r} messages")
        finally:
            sender.cancel()

    def _on_batch(self, conn: _Conn, key: tuple[str, int], seq: int, n: int, body: memoryview) -> None:
        if seq <= self._seen.get(key, -1):
            self._c.duplicates += 1  # resent after a lost ack: we hold (or delivered) it already
            return
        self._seen[key] = seq
        if len(self._seen) > MAX_SEEN_STREAMS:
            self._seen.pop(next(iter(self._seen)))
        hdr = P.pack({"t": "batch", "w": conn.client_id, "inc": conn.incarnation, "seq": seq, "n": n})
        parts: list[bytes | memoryview] = [P.frame_prefix(hdr, len(body)), body]
        entry = _Entry(parts, n, parts_size(parts))
        self._c.batches_in += 1
        self._c.samples_in += n
        self._c.bytes_in += entry.size
        self._queue.append(entry)
        self._held_bytes += entry.size
        while self._held_bytes > self.config.queue_bytes and self._queue:
            self._drop_oldest()
        self._queue_event.set()

    def _drop_oldest(self) -> None:
        e = self._queue.popleft()
        self._held_bytes -= e.size
        self._c.dropped_batches += 1
        self._c.dropped_samples += e.n

    async def _weights_sender(self, conn: _Conn) -> None:
        """Push the newest weights to one worker; a slow worker only ever has the newest pending."""
        with contextlib.suppress(ConnectionError):
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                parts, conn.pending_weights = conn.pending_weights, None
                if parts is not None and self._write(conn, parts):
                    self._c.weights_out += 1
                    await conn.writer.drain()

    # -- trainer ------------------------------------------------------------------------------------------

    async def _run_trainer(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        self._trainer = conn
        sender = self._spawn(self._trainer_sender(conn))
        try:
            while True:
                async with asyncio.timeout(self.config.idle_timeout):
                    header, body = await read_frame(reader, self.config.max_frame_bytes)
                t = header["t"]
                if t == "tack":
                    self._on_trainer_ack(conn, P.nonneg_int(header, "c"))
                elif t == "weights":
                    self._on_weights(P.nonneg_int(header, "v"), body)
                elif not self._check_common(conn, header):
                    raise ForbiddenMessageError(f"a trainer may not send {t!r} messages")
        finally:
            sender.cancel()

    async def _trainer_sender(self, conn: _Conn) -> None:
        window = self.config.trainer_window_bytes
        with contextlib.suppress(ConnectionError):
            while self._trainer is conn and not conn.writer.transport.is_closing():
                if not self._queue or (self._inflight and self._inflight_bytes >= window):
                    self._queue_event.clear()
                    await self._queue_event.wait()
                    continue
                entry = self._queue.popleft()
                self._inflight.append(entry)
                self._inflight_bytes += entry.size
                conn.writer.writelines(entry.parts)
                if conn.writer.transport.get_write_buffer_size() > 1 << 20:
                    await conn.writer.drain()

    def _on_trainer_ack(self, conn: _Conn, count: int) -> None:
        if count < conn.acked or count - conn.acked > len(self._inflight):
            raise ProtocolError(
                f"trainer acknowledged {count} batches, {conn.acked + len(self._inflight)} sent"
            )
        for _ in range(count - conn.acked):
            e = self._inflight.popleft()
            self._inflight_bytes -= e.size
            self._held_bytes -= e.size
            self._c.batches_out += 1
            self._c.samples_out += e.n
            self._c.bytes_out += e.size
        conn.acked = count
        self._queue_event.set()

    def _requeue_inflight(self) -> None:
        """Batches sent to a trainer that left without acknowledging them go back to the queue's front."""
        self._queue.extendleft(reversed(self._inflight))
        self._inflight.clear()
        self._inflight_bytes = 0

    def _on_weights(self, version: int, body: memoryview) -> None:
        parts: list[bytes | memoryview] = frame_parts({"t": "weights", "v": version}, body)
        self._weights = (version, parts)
        self._c.weights_in += 1
        for w in self._workers.values():
            w.pending_weights = parts
            w.wake.set()

    # -- observers ----------------------------------------------------------------------------------------

    async def _run_observer(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        while True:
            async with asyncio.timeout(self.config.idle_timeout):
                header, _ = await read_frame(reader, 1 << 16)
            if not self._check_common(conn, header):
                raise ForbiddenMessageError(f"an observer may not send {header['t']!r} messages")

    # -- spool --------------------------------------------------------------------------------------------

    def _write_spool(self, path: Path) -> None:
        """Save held batches (and the latest weights) as frames, atomically."""
        tmp = path.with_name(path.name + ".tmp")
        seen = [[w, inc, seq] for (w, inc), seq in self._seen.items()]
        with open(tmp, "wb") as f:
            f.write(P.encode_frame({"t": "spool", "n": len(self._queue), "seen": len(seen)}, P.pack(seen)))
            for e in self._queue:
                for p in e.parts:
                    f.write(p)
            if self._weights is not None:
                for p in self._weights[1]:
                    f.write(p)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        log.info("relay: spooled %d batches (%d bytes) to %s", len(self._queue), self._held_bytes, path)
        self._queue.clear()
        self._held_bytes = 0

    def _load_spool(self, path: Path) -> None:
        if not path.exists():
            return
        data = memoryview(path.read_bytes())
        pos, frames = 0, []
        while pos < len(data):
            rest, hlen = P.parse_prefix(bytes(data[pos : pos + P.PREFIX_SIZE]), 1 << 62)
            end = pos + P.PREFIX_SIZE + rest
            if end > len(data):
                raise ProtocolError(f"spool file {path} is truncated; move it away to start the relay")
            header, body = P.split_frame(data[pos + P.PREFIX_SIZE : end], hlen)
            frames.append((header, body, data[pos:end]))
            pos = end
        for header, body, raw in frames:
            if header["t"] == "spool":
                seen = P.unpack(body, limits={"max_array_len": 1 << 20, "max_str_len": 1 << 10})
                self._seen.update({(str(w), int(inc)): int(seq) for w, inc, seq in seen})
            elif header["t"] == "batch":
                e = _Entry([bytes(raw)], P.nonneg_int(header, "n"), len(raw))
                self._queue.append(e)
                self._held_bytes += e.size
            elif header["t"] == "weights":
                self._weights = (P.nonneg_int(header, "v"), [bytes(raw)])
        path.unlink()
        log.info("relay: reloaded %d batches from the spool %s", len(self._queue), path)


async def run_server(
    config: RelayConfig,
    stop: asyncio.Event | None = None,
    on_listen: Callable[[RelayServer], None] | None = None,
) -> None:
    """Run a relay in the current event loop until ``stop`` is set (or SIGINT/SIGTERM in the main thread)."""
    stop = stop or asyncio.Event()
    server = RelayServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    installed = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    try:
        if on_listen is not None:
            on_listen(server)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.close()


def serve(
    config: RelayConfig,
    *,
    ready: threading.Event | None = None,
    stop: asyncio.Event | None = None,
    on_listen: Callable[[RelayServer], None] | None = None,
) -> None:
    """Run the relay (blocking) until SIGINT/SIGTERM or ``stop``; ``ready`` is set once it listens.

    Uses uvloop's event loop on Linux/macOS when installed (chosen here, never at import).
    """

    def _listening(server: RelayServer) -> None:
        if on_listen is not None:
            on_listen(server)
        if ready is not None:
            ready.set()

    factory = None
    if sys.platform != "win32":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run_server(config, stop, _listening))


__all__ = ["AuthError", "RelayServer", "run_server", "serve"]
