"""``RelayServer``: routes sample batches from workers to the trainer and weights from the trainer to workers.

asyncio (uvloop when installed); never imports numpy or torch: it routes on the small frame header and forwards
bodies as opaque bytes. Each connection is a ``BufferedProtocol`` (the kernel copies straight into the frame
parser's buffer; large bodies are received into their own buffer and forwarded without another copy); all the
routing is synchronous code run per chunk received, so acknowledgements and forwards are coalesced per chunk.
See docs/protocol.md for the protocol and the delivery guarantees.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmrl.errors import ProtocolError
from tmrl.net import protocol as P
from tmrl.net.config import DEFAULT_SECRET, RelayConfig
from tmrl.net.stream import frame_parts, parts_size, server_ssl_context

log = logging.getLogger("tmrl.relay")

MAX_SEEN_STREAMS = 100_000
HANDSHAKE_FRAME_BYTES = 1 << 16
TRAINER_HIGH_WATER = 4 << 20
SCRATCH_BYTES = 256 * 1024  # per connection: small frames are read many at a time (fewer reads and acks)
BIG_FRAME_BYTES = 64 * 1024  # frames this large are received into a buffer of their own (from the pool)
POOL_BYTES = 64 << 20  # receive buffers recycled once the trainer acknowledged their batch


class ForbiddenMessageError(ProtocolError):
    """A client sent a message its role may not send (answered with a clear error, then disconnected)."""


@dataclass
class _Entry:
    """One batch held for the trainer: the forwarded frame's buffers, its sample count and size."""

    parts: list[bytes | memoryview | bytearray]
    n: int
    size: int
    buf: bytearray | None = None  # the pooled receive buffer holding the body (recycled once acknowledged)


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


class _Connection(asyncio.BufferedProtocol):
    """One client connection: handshake state machine, then routing by role."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.parser = P.FrameParser(
            HANDSHAKE_FRAME_BYTES, SCRATCH_BYTES, big_bytes=BIG_FRAME_BYTES, alloc=server.pool.get
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.state = "hello"
        self.role = ""
        self.client_id = ""
        self.incarnation = 0
        self._cnonce = b""
        self._snonce = b""
        self.last_rx = 0.0
        self.paused = False
        self.pending_weights: list[bytes | memoryview | bytearray] | None = None
        self.ack_seq = -1  # worker: highest sequence to acknowledge after this chunk
        self.acked = 0  # trainer: batches acknowledged on this connection
        self._timer: asyncio.TimerHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def label(self) -> str:
        return f"{self.role or 'client'} {self.client_id!r} ({self.peer})" if self.client_id else self.peer

    # -- asyncio callbacks --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        if self.server.closing:
            transport.abort()
            return
        self.server.conns.add(self)
        self._timer = loop.call_later(self.server.config.handshake_timeout, self._handshake_expired)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.parser.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == "closed":
            return
        self.last_rx = self.server.loop.time()
        try:
            for header, body in self.parser.feed(nbytes):
                self._on_frame(header, body)
                if self.state == "closed":
                    return
        except ProtocolError as exc:
            self.server.protocol_error(self, exc)
            return
        except Exception:  # a bug must not take the relay down; log it and drop the connection
            log.exception("relay: unexpected error on %s", self.label())
            self.close()
            return
        if self.ack_seq >= 0:
            self.write(frame_parts({"t": "ack", "seq": self.ack_seq}))
            self.ack_seq = -1

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = "closed"
        if self._timer is not None:
            self._timer.cancel()
        self.server.detach(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.pending_weights is not None:
            parts, self.pending_weights = self.pending_weights, None
            self.push_weights(parts)
        if self.role == "trainer":
            self.server.pump()

    # -- helpers ------------------------------------------------------------------------------------------

    def write(self, parts: list[Any]) -> bool:
        """Buffer ``parts`` unless that exceeds the per-connection cap (then: slow consumer, disconnected)."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        if (
            self.role != "trainer"
            and t.get_write_buffer_size() + parts_size(parts) > self.server.config.send_buffer_bytes
        ):
            self.server.counters.slow_consumers += 1
            log.warning("relay: %s is not reading (send buffer full); disconnecting it", self.label())
            self.close()
            return False
        t.writelines(parts)
        return True

    def push_weights(self, parts: list[Any]) -> None:
        """Send weights now, or keep only the newest until this worker drains its buffer."""
        if self.paused:
            self.pending_weights = parts
        elif self.write(parts):
            self.server.counters.weights_out += 1

    def close(self) -> None:
        self.state = "closed"
        if self.transport is not None:
            self.transport.close()

    def _handshake_expired(self) -> None:
        if self.state in ("hello", "auth"):
            log.warning("relay: %s did not finish the handshake in time", self.label())
            self.close()

    # -- protocol -----------------------------------------------------------------------------------------

    def _on_frame(self, header: dict[str, Any], body: memoryview) -> None:
        if self.state == "open":
            self.server.route(self, header, body)
        elif self.state == "hello":
            self.role, self.client_id, self._cnonce, self.incarnation = P.parse_hello(header)
            self._snonce = secrets.token_bytes(P.NONCE_BYTES)
            proof = P.server_proof(self.server.secret, self._cnonce, self._snonce, self.role, self.client_id)
            self.write(frame_parts({"t": "challenge", "v": P.VERSION, "sn": self._snonce, "mac": proof}))
            self.state = "auth"
        elif self.state == "auth":
            if header["t"] != "auth":
                raise ProtocolError("expected an auth message")
            self.server.authenticate(self, header.get("mac"))


class RelayServer:
    """The relay. Create it inside a running event loop (``serve`` / ``run_server`` do); ``await start()`` binds
    and returns the port; ``status()`` is the observer's snapshot; ``await close()`` shuts down in order."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.secret = config.secret_bytes()
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.base_events.Server | None = None
        self._queue: deque[_Entry] = deque()
        self._inflight: deque[_Entry] = deque()
        self._held_bytes = 0
        self._inflight_bytes = 0
        self._trainer: _Connection | None = None
        self._workers: set[_Connection] = set()
        self.conns: set[_Connection] = set()
        self._seen: dict[tuple[str, int], int] = {}
        self._weights: tuple[int, list[Any]] | None = None
        self.pool = P.BufferPool(POOL_BYTES)
        self.counters = _Counters()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump_scheduled = False
        self.closing = False
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
        if self.secret == DEFAULT_SECRET.encode() and cfg.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("relay listens on %s with the default secret: set RelayConfig.secret", cfg.host)
        ssl_ctx = server_ssl_context(cfg.tls_cert, cfg.tls_key) if cfg.tls else None
        self._server = await self.loop.create_server(
            lambda: _Connection(self), cfg.host, cfg.port, ssl=ssl_ctx, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._status_loop())
        self._spawn(self._idle_loop())
        log.info("relay listening on %s:%d (tls=%s)", cfg.host, self.port, cfg.tls)
        return self.port

    async def close(self) -> None:
        """Stop accepting; give the trainer ``shutdown_timeout`` to take what is queued (unless spooling);
        save or count what is left; close every connection; cancel the rest."""
        if self.closing:
            return
        self.closing = True
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
        conns = list(self.conns)
        for c in conns:
            c.close()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=max(self.config.shutdown_timeout, 0.5))
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        log.info("relay stopped: %s", self._status_line())

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- status -------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``tmrl status`` prints: connections, totals, rates, queue, drops, weight version."""
        c = self.counters
        return {
            "uptime_s": round(time.monotonic() - self._started, 3),
            "trainer": self._trainer.client_id if self._trainer else None,
            "workers": sorted(w.client_id for w in self._workers),
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
        c = self.counters
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

    async def _idle_loop(self) -> None:
        """Disconnect peers silent for longer than ``idle_timeout`` (clients ping every third of it)."""
        while True:
            await asyncio.sleep(self.config.idle_timeout / 3)
            limit = self.loop.time() - self.config.idle_timeout
            for c in list(self.conns):
                if c.last_rx < limit:
                    log.warning(
                        "relay: %s silent for %.0f s; disconnecting it", c.label(), self.config.idle_timeout
                    )
                    c.close()

    # -- connections --------------------------------------------------------------------------------------

    def protocol_error(self, conn: _Connection, exc: ProtocolError) -> None:
        self.counters.protocol_errors += 1
        log.warning("relay: dropping %s: %s", conn.label(), exc)
        code = "role" if isinstance(exc, ForbiddenMessageError) else "protocol"
        with contextlib.suppress(Exception):
            conn.write(frame_parts({"t": "error", "code": code, "msg": str(exc)[:500]}))
        conn.close()

    def authenticate(self, conn: _Connection, mac: Any) -> None:
        expected = P.client_proof(self.secret, conn._cnonce, conn._snonce, conn.role, conn.client_id)
        if not P.verify(expected, mac):
            self.counters.auth_failures += 1
            log.warning("relay: %s gave a wrong secret", conn.label())
            return self._refuse(conn, "auth", "wrong secret: the relay and its clients must share it")
        if conn.role == "trainer" and self._trainer is not None:
            return self._refuse(
                conn, "busy", f"the relay already has a trainer ({self._trainer.label()}); only one at a time"
            )
        conn.state = "open"
        if conn._timer is not None:
            conn._timer.cancel()
        conn.parser.max_frame_bytes = self.config.max_frame_bytes
        conn.write(
            frame_parts({"t": "welcome", "v": P.VERSION, "wv": self._weights[0] if self._weights else -1})
        )
        log.info("relay: %s connected", conn.label())
        if conn.role == "worker":
            self._workers.add(conn)
            if self._weights is not None:  # a late joiner gets the latest weights at once
                conn.push_weights(self._weights[1])
        elif conn.role == "trainer":
            self._trainer = conn
            assert conn.transport is not None
            conn.transport.set_write_buffer_limits(high=TRAINER_HIGH_WATER)
            self.pump()

    def _refuse(self, conn: _Connection, code: str, msg: str) -> None:
        conn.write(frame_parts({"t": "refuse", "code": code, "msg": msg}))
        conn.close()

    def detach(self, conn: _Connection) -> None:
        self.conns.discard(conn)
        if conn.role == "worker":
            self._workers.discard(conn)
        elif conn.role == "trainer" and self._trainer is conn:
            self._trainer = None
            self._requeue_inflight()
        if conn.client_id and conn.state != "hello":
            log.info("relay: %s disconnected", conn.label())

    def route(self, conn: _Connection, header: dict[str, Any], body: memoryview) -> None:
        t = header["t"]
        if conn.role == "worker" and t == "batch":
            self._on_batch(conn, P.nonneg_int(header, "seq"), P.nonneg_int(header, "n"), body)
        elif conn.role == "trainer" and t == "tack":
            self._on_trainer_ack(conn, P.nonneg_int(header, "c"))
        elif conn.role == "trainer" and t == "weights":
            self._on_weights(P.nonneg_int(header, "v"), body)
        elif t == "ping":
            conn.write(frame_parts({"t": "pong"}))
        elif t == "status":
            if time.monotonic() - self._snap[0] > 1.0:
                self._update_rates()
            conn.write(frame_parts({"t": "status"}, P.pack(self.status())))
        else:
            raise ForbiddenMessageError(f"a {conn.role} may not send {t!r} messages")

    # -- batches ------------------------------------------------------------------------------------------

    def _on_batch(self, conn: _Connection, seq: int, n: int, body: memoryview) -> None:
        conn.ack_seq = max(conn.ack_seq, seq)
        key = (conn.client_id, conn.incarnation)
        if seq <= self._seen.get(key, -1):
            self.counters.duplicates += 1  # resent after a lost ack: we hold (or delivered) it already
            return
        self._seen[key] = seq
        if len(self._seen) > MAX_SEEN_STREAMS:
            self._seen.pop(next(iter(self._seen)))
        hdr = P.pack({"t": "batch", "w": conn.client_id, "inc": conn.incarnation, "seq": seq, "n": n})
        parts: list[Any] = [P.frame_prefix(hdr, len(body)), body]
        buf = body.obj if type(body.obj) is bytearray else None  # received into its own (pooled) buffer
        entry = _Entry(parts, n, parts_size(parts), buf)
        c = self.counters
        c.batches_in += 1
        c.samples_in += n
        c.bytes_in += entry.size
        self._queue.append(entry)
        self._held_bytes += entry.size
        while self._held_bytes > self.config.queue_bytes and self._queue:
            self._drop_oldest()
        if not self._pump_scheduled and self._trainer is not None:
            self._pump_scheduled = True
            self.loop.call_soon(self.pump)

    def _drop_oldest(self) -> None:
        e = self._queue.popleft()
        self._held_bytes -= e.size
        self.counters.dropped_batches += 1
        self.counters.dropped_samples += e.n

    def pump(self) -> None:
        """Forward queued batches to the trainer, in one write, within its unacknowledged window."""
        self._pump_scheduled = False
        trainer = self._trainer
        if trainer is None or trainer.paused or trainer.transport is None or trainer.transport.is_closing():
            return
        window = self.config.trainer_window_bytes
        out: list[Any] = []
        while self._queue and (not self._inflight or self._inflight_bytes < window):
            entry = self._queue.popleft()
            self._inflight.append(entry)
            self._inflight_bytes += entry.size
            out += entry.parts
        if out:
            trainer.transport.writelines(out)

    def _on_trainer_ack(self, conn: _Connection, count: int) -> None:
        if count < conn.acked or count - conn.acked > len(self._inflight):
            raise ProtocolError(
                f"trainer acknowledged {count} batches, {conn.acked + len(self._inflight)} sent"
            )
        c = self.counters
        for _ in range(count - conn.acked):
            e = self._inflight.popleft()
            self._inflight_bytes -= e.size
            self._held_bytes -= e.size
            c.batches_out += 1
            c.samples_out += e.n
            c.bytes_out += e.size
            if e.buf is not None:  # the trainer holds it: nothing reads this buffer any more
                self.pool.put(e.buf)
        conn.acked = count
        self.pump()

    def _requeue_inflight(self) -> None:
        """Batches sent to a trainer that left without acknowledging them go back to the queue's front."""
        self._queue.extendleft(reversed(self._inflight))
        self._inflight.clear()
        self._inflight_bytes = 0

    # -- weights ------------------------------------------------------------------------------------------

    def _on_weights(self, version: int, body: memoryview) -> None:
        parts = frame_parts({"t": "weights", "v": version}, body)
        self._weights = (version, parts)
        self.counters.weights_in += 1
        for w in list(self._workers):
            w.push_weights(parts)

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
                e = _Entry([raw], P.nonneg_int(header, "n"), len(raw))
                self._queue.append(e)
                self._held_bytes += e.size
            elif header["t"] == "weights":
                self._weights = (P.nonneg_int(header, "v"), [raw])
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

    ``on_listen(server)`` runs on the relay's loop once it listens (``server.port`` is the bound port). Uses
    uvloop's event loop on Linux/macOS when installed (chosen here, never at import).
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


__all__ = ["RelayServer", "run_server", "serve"]
