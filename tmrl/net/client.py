"""Relay clients: an asyncio core in a background thread behind synchronous facades.

``WorkerClient`` (send batches, receive weights), ``TrainerClient`` (receive batches, publish weights) and
``ObserverClient`` (status). Connection, handshake, back-off with jitter, resends and acknowledgements all run
on the client's own thread (a ``BufferedProtocol`` reading frames straight into their buffers), so the caller's
real-time or torch loop never blocks on the network and decoding happens off the caller's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import random
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmrl.errors import AuthError, ProtocolError, TmrlError
from tmrl.net import protocol as P
from tmrl.net.codec import decode_arrays, encode_arrays
from tmrl.net.config import RelayConfig
from tmrl.net.stream import check_pin, client_ssl_context, frame_parts

log = logging.getLogger("tmrl.net")

HIGH_WATER = 4 << 20  # bytes buffered in the transport before a sender waits for resume_writing
SCRATCH_BYTES = 256 * 1024  # receive buffer for small frames (many per read)
BIG_FRAME_BYTES = 64 * 1024  # frames this large are received into a buffer of their own
BIG_BODY_BYTES = 64 * 1024  # batch bodies this large are encoded into recycled buffers
POOL_BYTES = 64 << 20


def _uninitialised(n: int) -> np.ndarray:
    """A receive buffer for one large frame: not zero-filled first (the socket overwrites all of it), and the
    decoded arrays are views of it."""
    return np.empty(n, np.uint8)


class _Busy(AuthError):
    """The relay already has a trainer (retried for a while: it may be the previous run's, just dying)."""


class _Lost:
    """Sentinel queued when the connection closes during the handshake."""


class _ClientProtocol(asyncio.BufferedProtocol):
    """Frames in, callbacks out. During the handshake frames queue up for ``next_frame``; afterwards they go
    straight to the core's ``on_frame`` (on the loop thread, synchronously per chunk received)."""

    def __init__(self, max_frame_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.parser = P.FrameParser(1 << 16, SCRATCH_BYTES, big_bytes=BIG_FRAME_BYTES, alloc=_uninitialised)
        self.max_frame_bytes = max_frame_bytes
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[Any] | None = asyncio.Queue()
        self.core: _Core | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.paused = False
        self.last_rx = loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[union-attr]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.parser.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = self.loop.time()
        try:
            for header, body in self.parser.feed(nbytes):
                if self.core is None:
                    assert self.queue is not None
                    self.queue.put_nowait((header, body))
                else:
                    self.core.on_frame(header, body)
            if self.core is not None:
                self.core.end_chunk()
        except Exception as exc:  # ProtocolError, a refusal turned into AuthError, or a bug: end this session
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.queue is not None:
            self.queue.put_nowait(_Lost)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.core is not None:
            self.core.on_writable()

    async def next_frame(self) -> tuple[dict[str, Any], memoryview]:
        assert self.queue is not None
        item = await self.queue.get()
        if item is _Lost:
            if self.error is not None:
                raise self.error
            raise ConnectionResetError("the relay closed the connection")
        return item

    def attach(self, core: _Core) -> None:
        """Hand frames to ``core`` from now on (frames already queued first)."""
        self.parser.max_frame_bytes = self.max_frame_bytes
        pending, self.queue = self.queue, None
        self.core = core
        while pending is not None and not pending.empty():
            item = pending.get_nowait()
            if item is not _Lost:
                core.on_frame(*item)


async def open_session(
    config: RelayConfig, role: str, client_id: str, incarnation: int = 0
) -> tuple[asyncio.Transport, _ClientProtocol, dict[str, Any]]:
    """Connect (TLS if configured, pinned certificate), run the handshake, return (transport, protocol, welcome).

    Raises ``AuthError`` when the secrets differ, the certificate is not the pinned one or the relay refuses the
    role; ``OSError`` / ``TimeoutError`` / ``ProtocolError`` when the relay is unreachable or misbehaves.
    """
    ssl_ctx, pin = client_ssl_context(config.tls_cert) if config.tls else (None, b"")
    where = f"{config.host}:{config.port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(config.connect_timeout):
            transport, proto = await loop.create_connection(
                lambda: _ClientProtocol(config.max_frame_bytes),
                config.host,
                config.port,
                ssl=ssl_ctx,
                server_hostname=config.host if ssl_ctx else None,
            )
    except ssl.SSLCertVerificationError as exc:
        raise AuthError(
            f"the relay at {where} presented a TLS certificate other than tls_cert={config.tls_cert}: "
            f"{exc.verify_message}"
        ) from None
    try:
        if ssl_ctx is not None:
            check_pin(transport, pin)
        secret = config.secret_bytes()
        cnonce = secrets.token_bytes(P.NONCE_BYTES)
        async with asyncio.timeout(config.handshake_timeout):
            transport.writelines(frame_parts(P.hello(role, client_id, cnonce, incarnation)))
            header, _ = await proto.next_frame()
            _raise_refusal(header, where)
            if header["t"] != "challenge":
                raise ProtocolError(f"relay at {where} answered the hello with {header['t']!r}")
            snonce = P.field(header, "sn", bytes)
            if not P.verify(P.server_proof(secret, cnonce, snonce, role, client_id), header.get("mac")):
                raise AuthError(
                    f"the relay at {where} does not know our secret: set the same RelayConfig.secret on the relay "
                    "and every client"
                )
            mac = P.client_proof(secret, cnonce, snonce, role, client_id)
            transport.writelines(frame_parts({"t": "auth", "mac": mac}))
            header, _ = await proto.next_frame()
            _raise_refusal(header, where)
            if header["t"] != "welcome":
                raise ProtocolError(f"relay at {where} answered the auth with {header['t']!r}")
        return transport, proto, header  # type: ignore[return-value]
    except BaseException:
        transport.abort()
        raise


def _raise_refusal(header: Mapping[str, Any], where: str) -> None:
    t = header.get("t")
    if t not in ("refuse", "error"):
        return
    code, msg = header.get("code"), str(header.get("msg", ""))[:500]
    if code == "busy":
        raise _Busy(f"relay at {where} refused this trainer: {msg}")
    if t == "refuse" or code == "role":
        raise AuthError(f"relay at {where} refused the connection: {msg}")
    raise ProtocolError(f"relay at {where} reported a protocol error: {msg}")


class _Core:
    """Owns the event loop thread and the connect / session / back-off cycle of one client."""

    role = "worker"

    def __init__(self, config: RelayConfig, client_id: str, incarnation: int = 0) -> None:
        self.config = config
        self.client_id = client_id
        self.incarnation = incarnation
        self.where = f"{config.host}:{config.port}"
        self.fatal: TmrlError | None = None
        self.connected = threading.Event()
        self.connections = 0
        self.loop = _new_loop()
        self.transport: asyncio.Transport | None = None
        self.proto: _ClientProtocol | None = None
        self._closing: asyncio.Event | None = None
        self._started = threading.Event()
        self._state = threading.Condition()  # notified on connect and on a fatal error
        self._thread = threading.Thread(target=self._run, name=f"tmrl-{self.role}-{client_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the client's loop (thread-safe, non-blocking)."""
        with contextlib.suppress(RuntimeError):  # loop already closed
            self.loop.call_soon_threadsafe(fn, *args)

    def close(self, timeout: float = 5.0) -> None:
        if self._closing is not None:
            self.call(self._closing.set)
        self._thread.join(timeout)

    def _notify(self) -> None:
        with self._state:
            self._state.notify_all()

    def wait_connected(self, timeout: float) -> bool:
        with self._state:
            ok = self._state.wait_for(lambda: self.connected.is_set() or self.fatal is not None, timeout)
        self.raise_fatal()
        return ok

    def raise_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    async def _main(self) -> None:
        self._closing = asyncio.Event()
        self._started.set()
        cfg = self.config
        attempt, busy_since = 0, None
        while not self._closing.is_set():
            transport = None
            try:
                transport, proto, welcome = await open_session(
                    cfg, self.role, self.client_id, self.incarnation
                )
                attempt, busy_since = 0, None
                self.transport, self.proto = transport, proto
                self.connections += 1
                self.on_session_start(welcome)
                proto.attach(self)
                self.connected.set()
                self._notify()
                await self._session(proto)
            except _Busy as exc:
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since > cfg.connect_timeout:
                    self.fatal = exc
                    log.error("%s", exc)
                    break
            except AuthError as exc:
                self.fatal = exc
                log.error("%s", exc)
                break
            except (OSError, EOFError, TimeoutError, ProtocolError, ssl.SSLError) as exc:
                log.debug("%s %s: connection lost: %s", self.role, self.client_id, exc)
            except TmrlError as exc:  # e.g. ConfigError: an unreadable TLS certificate
                self.fatal = exc
                log.error("%s", exc)
                break
            except Exception as exc:  # a bug: surface it to the caller instead of dying silently
                log.exception("%s %s: relay client failed", self.role, self.client_id)
                self.fatal = TmrlError(f"relay client {self.role} {self.client_id!r} failed: {exc!r}")
                break
            finally:
                self.connected.clear()
                self.transport = self.proto = None
                if transport is not None:
                    transport.abort()
                self.on_session_end()
            if self._closing.is_set():
                break
            delay = min(cfg.backoff_max, cfg.backoff_initial * 2**attempt) * random.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 30)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
        self._notify()
        self.on_close()

    async def _session(self, proto: _ClientProtocol) -> None:
        """Until the connection drops or ``close()``: ping every third of ``idle_timeout``, watch for silence."""
        assert self._closing is not None
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while not proto.lost.done() and not self._closing.is_set():
                await asyncio.wait(
                    [proto.lost, closing],
                    timeout=self.config.idle_timeout / 3,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if proto.lost.done() or self._closing.is_set():
                    break
                if self.loop.time() - proto.last_rx > self.config.idle_timeout:
                    raise TimeoutError(f"the relay at {self.where} went silent")
                self.write(frame_parts({"t": "ping"}))
        finally:
            closing.cancel()
        if proto.error is not None and not self._closing.is_set():
            raise proto.error
        if self._closing.is_set():
            await self.on_closing()

    def write(self, parts: list[Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(parts)

    def on_frame(self, header: dict[str, Any], body: memoryview) -> None:
        t = header["t"]
        if t == "pong":
            return
        _raise_refusal(header, self.where)
        self.handle(t, header, body)

    # hooks ---------------------------------------------------------------------------------------------------
    def end_chunk(self) -> None:
        """Called after the frames of one received chunk were handled (hand results over in one go)."""

    def handle(self, t: str, header: dict[str, Any], body: memoryview) -> None:
        raise ProtocolError(f"unexpected {t!r} message for a {self.role}")

    def on_session_start(self, welcome: dict[str, Any]) -> None:
        pass

    def on_session_end(self) -> None:
        pass

    def on_writable(self) -> None:
        pass

    async def on_closing(self) -> None:
        pass

    def on_close(self) -> None:
        pass


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()


# -- worker --------------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    seq: int
    n: int
    parts: list[Any]
    size: int
    dropped: bool = False
    buf: bytearray | None = None  # pooled body buffer, recycled once the relay acknowledged the batch


class _WorkerCore(_Core):
    role = "worker"

    def __init__(self, config: RelayConfig, client_id: str, incarnation: int) -> None:
        super().__init__(config, client_id, incarnation)
        self.unacked: deque[_Pending] = deque()
        self.unacked_bytes = 0
        self.to_send: deque[_Pending] = deque()
        self.flush_scheduled = False
        self.inbox: deque[_Pending] = deque()  # caller thread appends, loop thread pops
        self.pool = P.BufferPool(POOL_BYTES)  # large batch bodies, recycled on acknowledgement
        self.inbox_scheduled = False
        self.submitted = 0  # caller thread
        self.done = 0  # loop thread: acknowledged + dropped
        self.done_cond = threading.Condition()
        self.weights_cond = threading.Condition()
        self.latest: tuple[int, dict[str, np.ndarray], dict[str, Any]] | None = None
        self.latest_gen = 0
        self.stats = dict(
            sent_batches=0,
            sent_samples=0,
            acked_batches=0,
            acked_samples=0,
            dropped_batches=0,
            dropped_samples=0,
            resent_batches=0,
            weights_received=0,
            bad_weights=0,
        )

    def submit(self, p: _Pending) -> None:
        """Caller thread: hand a batch to the loop (one wake-up per burst, not per batch)."""
        self.submitted += 1
        self.inbox.append(p)
        if not self.inbox_scheduled:
            self.inbox_scheduled = True
            self.call(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self.inbox_scheduled = (
            False  # cleared before draining: a batch appended meanwhile is drained now or rescheduled
        )
        while self.inbox:
            self._add(self.inbox.popleft())

    def _mark_done(self, k: int) -> None:
        with self.done_cond:
            self.done += k
            self.done_cond.notify_all()

    def _add(self, p: _Pending) -> None:
        cfg = self.config
        self.stats["sent_batches"] += 1
        self.stats["sent_samples"] += p.n
        self.unacked.append(p)
        self.unacked_bytes += p.size
        while len(self.unacked) > 1 and (
            len(self.unacked) > cfg.max_unacked_batches or self.unacked_bytes > cfg.max_unacked_bytes
        ):
            old = self.unacked.popleft()
            old.dropped = True
            self.unacked_bytes -= old.size
            self.stats["dropped_batches"] += 1
            self.stats["dropped_samples"] += old.n
            self._mark_done(1)
        if self.transport is not None:
            self.to_send.append(p)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write pending batches, a few MB per call, until done or the transport pauses us (resume continues)."""
        self.flush_scheduled = False
        t, proto = self.transport, self.proto
        while (
            t is not None and proto is not None and self.to_send and not proto.paused and not t.is_closing()
        ):
            parts: list[Any] = []
            size = 0
            while self.to_send and size < HIGH_WATER:
                p = self.to_send.popleft()
                if not p.dropped:
                    parts += p.parts
                    size += p.size
            if parts:
                t.writelines(parts)  # calls pause_writing synchronously above the high-water mark

    def on_writable(self) -> None:
        self._flush()

    def on_session_start(self, welcome: dict[str, Any]) -> None:
        self.to_send = deque(self.unacked)
        if self.connections > 1:
            self.stats["resent_batches"] += len(self.to_send)
        self.flush_scheduled = True
        self.loop.call_soon(self._flush)

    def on_session_end(self) -> None:
        self.to_send.clear()

    def handle(self, t: str, header: dict[str, Any], body: memoryview) -> None:
        if t == "ack":
            seq = P.nonneg_int(header, "seq")
            k = 0
            while self.unacked and self.unacked[0].seq <= seq:
                p = self.unacked.popleft()
                self.unacked_bytes -= p.size
                if p.buf is not None:  # the relay holds it: the transport is done with this buffer
                    self.pool.put(p.buf)
                self.stats["acked_batches"] += 1
                self.stats["acked_samples"] += p.n
                k += 1
            self._mark_done(k)
        elif t == "weights":
            version = P.nonneg_int(header, "v")
            try:
                arrays, meta = decode_arrays(body, self.config.max_frame_bytes, writable=True)
            except ProtocolError as exc:
                self.stats["bad_weights"] += 1
                log.warning("worker %s: ignoring malformed weights v%d: %s", self.client_id, version, exc)
                return
            with self.weights_cond:
                self.latest = (version, arrays, meta)
                self.latest_gen += 1
                self.weights_cond.notify_all()
            self.stats["weights_received"] += 1
        else:
            super().handle(t, header, body)

    def on_close(self) -> None:
        for cond in (self.done_cond, self.weights_cond):  # wake waiters on a client that just stopped
            with cond:
                cond.notify_all()


class WorkerClient:
    """A rollout worker's link to the relay (thread-backed; never blocks the caller's real-time loop).

    Batches are numbered (worker id, incarnation, sequence) and kept until the relay acknowledges them; they are
    resent after a reconnect. Beyond ``max_unacked_batches`` / ``max_unacked_bytes`` the oldest is dropped and
    counted (``stats()['dropped_samples']``).
    """

    def __init__(self, config: RelayConfig, worker_id: str = "worker") -> None:
        self.config = config
        self.worker_id = worker_id
        self.incarnation = secrets.randbits(62)
        self._seq = itertools.count()
        self._returned_gen = 0
        self._core = _WorkerCore(config, worker_id, self.incarnation)
        self._core.start()

    def send_batch(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> int:
        """Queue one batch (encoded now, sent in the background). Returns its sequence number.

        ``meta`` should carry ``n`` (rows) and ``policy_version``; without ``n`` the first array's length is used.
        """
        self._core.raise_fatal()
        if not arrays:
            raise ProtocolError("a batch needs at least one array")
        n = int(meta["n"]) if "n" in meta else len(next(iter(arrays.values())))
        seq = next(self._seq)
        big = sum(getattr(a, "nbytes", 0) for a in arrays.values()) >= BIG_BODY_BYTES
        body = encode_arrays(arrays, {**meta, "n": n}, self._core.pool.get if big else None)
        hdr = P.pack({"t": "batch", "seq": seq, "n": n})
        size = P.PREFIX_SIZE + len(hdr) + len(body)
        if size - 4 > self.config.max_frame_bytes:
            raise ProtocolError(
                f"batch of {size} bytes exceeds max_frame_bytes={self.config.max_frame_bytes}: send smaller batches"
            )
        buf = body if type(body) is bytearray else None
        self._core.submit(_Pending(seq, n, [P.frame_prefix(hdr, len(body)), body], size, buf=buf))
        return seq

    def latest_weights(self) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        """The newest weights (version, arrays, meta) if they changed since the last call, else None."""
        self._core.raise_fatal()
        with self._core.weights_cond:
            if self._core.latest is None or self._core.latest_gen == self._returned_gen:
                return None
            self._returned_gen = self._core.latest_gen
            return self._core.latest

    def wait_weights(self, timeout: float) -> bool:
        """Block until weights newer than the last ``latest_weights()`` are available (True) or ``timeout``."""
        core = self._core
        with core.weights_cond:
            core.weights_cond.wait_for(
                lambda: core.latest_gen != self._returned_gen or core.fatal is not None, timeout
            )
        core.raise_fatal()
        return core.latest_gen != self._returned_gen

    def flush(self, timeout: float) -> bool:
        """Wait until every batch sent so far is acknowledged (or dropped); True if so within ``timeout``."""
        core, target = self._core, self._core.submitted
        with core.done_cond:
            ok = core.done_cond.wait_for(lambda: core.done >= target or core.fatal is not None, timeout)
        core.raise_fatal()
        return ok

    def wait_connected(self, timeout: float) -> bool:
        """True once connected and authenticated (raises the fatal error if the relay refused us)."""
        return self._core.wait_connected(timeout)

    @property
    def connected(self) -> bool:
        return self._core.connected.is_set()

    def stats(self) -> dict[str, Any]:
        """Counters: sent / acked / dropped batches and samples, resends, weights received, connections."""
        return {
            **self._core.stats,
            "unacked_batches": len(self._core.unacked),
            "connected": self.connected,
            "connections": self._core.connections,
        }

    def close(self, flush_timeout: float = 0.0) -> None:
        """Stop the client (optionally waiting up to ``flush_timeout`` for acknowledgements first)."""
        if flush_timeout > 0 and self._core.fatal is None:
            self.flush(flush_timeout)
        self._core.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- trainer -------------------------------------------------------------------------------------------------


class _TrainerCore(_Core):
    role = "trainer"

    def __init__(self, config: RelayConfig, client_id: str) -> None:
        super().__init__(config, client_id, 0)
        # batches decoded from one received chunk are handed to the caller's thread as one list (one wake-up)
        self.items: queue.SimpleQueue[list[tuple[int, dict[str, Any], dict[str, np.ndarray]]]] = (
            queue.SimpleQueue()
        )
        self.chunk: list[tuple[int, dict[str, Any], dict[str, np.ndarray]]] = []
        self.gen = 0
        self.consumed = 0
        self.seen: dict[tuple[str, int], int] = {}
        self.weights_parts: list[Any] | None = None
        self.weights_pending = False
        self.stats = dict(
            received_batches=0,
            received_samples=0,
            duplicates=0,
            bad_batches=0,
            polled_batches=0,
            polled_samples=0,
            published_weights=0,
        )

    def on_session_start(self, welcome: dict[str, Any]) -> None:
        self.gen += 1
        self.consumed = 0
        # the relay may have restarted: give it our latest weights again
        self.weights_pending = self.weights_parts is not None
        self.loop.call_soon(self._send_weights)

    def _send_weights(self) -> None:
        if (
            self.weights_pending
            and self.weights_parts is not None
            and self.proto is not None
            and not self.proto.paused
        ):
            self.weights_pending = False
            self.write(self.weights_parts)

    def on_writable(self) -> None:
        self._send_weights()

    def set_weights(self, parts: list[Any]) -> None:
        self.weights_parts = parts
        self.weights_pending = True
        self.stats["published_weights"] += 1
        self._send_weights()

    def handle(self, t: str, header: dict[str, Any], body: memoryview) -> None:
        if t != "batch":
            return super().handle(t, header, body)
        worker, inc = P.field(header, "w", str), P.nonneg_int(header, "inc")
        seq, n = P.nonneg_int(header, "seq"), P.nonneg_int(header, "n")
        key = (worker, inc)
        if seq <= self.seen.get(key, -1):
            self.stats["duplicates"] += 1
            self.consume(self.gen, 1)
            return
        try:
            arrays, meta = decode_arrays(body, self.config.max_frame_bytes)
        except ProtocolError as exc:
            self.stats["bad_batches"] += 1
            if self.stats["bad_batches"] <= 10 or self.stats["bad_batches"] % 1000 == 0:
                log.warning(
                    "trainer: dropping a malformed batch from worker %r (%d so far): %s",
                    worker,
                    self.stats["bad_batches"],
                    exc,
                )
            self.consume(self.gen, 1)
            return
        self.seen[key] = seq
        meta.update(worker_id=worker, incarnation=inc, seq=seq, n=n)
        meta.setdefault("policy_version", -1)
        self.stats["received_batches"] += 1
        self.stats["received_samples"] += n
        self.chunk.append((self.gen, meta, arrays))

    def end_chunk(self) -> None:
        if self.chunk:
            chunk, self.chunk = self.chunk, []
            self.items.put(chunk)

    def consume(self, gen: int, k: int) -> None:
        """Acknowledge ``k`` more batches of connection ``gen`` (cumulative count on the wire)."""
        if gen != self.gen or self.transport is None:
            return
        self.consumed += k
        self.write(frame_parts({"t": "tack", "c": self.consumed}))

    async def on_closing(self) -> None:
        """Give a weights publish still buffered a moment to leave before the connection closes."""
        if self.weights_pending:
            self._send_weights()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                while self.transport is not None and self.transport.get_write_buffer_size() > 0:
                    await asyncio.sleep(0.005)


class TrainerClient:
    """The trainer's link to the relay: receives batches (duplicates dropped), publishes weights.

    A batch is acknowledged to the relay only once ``poll_batches`` has returned it, so batches in flight when
    the trainer stops are delivered again to the next trainer.
    """

    def __init__(self, config: RelayConfig, trainer_id: str = "trainer") -> None:
        self.config = config
        self._core = _TrainerCore(config, trainer_id)
        self._ready: deque[tuple[int, dict[str, Any], dict[str, np.ndarray]]] = deque()  # caller's thread
        self._core.start()

    def poll_batches(self, max_n: int, timeout: float) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """Up to ``max_n`` batches as (meta, arrays), waiting at most ``timeout`` seconds for the first.

        ``meta`` holds the worker's meta plus ``worker_id``, ``incarnation``, ``seq``, ``n``, ``policy_version``.
        """
        self._core.raise_fatal()
        out: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []
        acks: dict[int, int] = {}
        ready, items = self._ready, self._core.items
        with contextlib.suppress(queue.Empty):
            if not ready:
                ready.extend(items.get(timeout=timeout) if timeout > 0 else items.get_nowait())
            while len(out) < max_n:
                if not ready:
                    ready.extend(items.get_nowait())
                gen, meta, arrays = ready.popleft()
                out.append((meta, arrays))
                acks[gen] = acks.get(gen, 0) + 1
        for gen, k in acks.items():
            self._core.call(self._core.consume, gen, k)
        self._core.stats["polled_batches"] += len(out)
        self._core.stats["polled_samples"] += sum(m["n"] for m, _ in out)
        return out

    def publish_weights(
        self, version: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> None:
        """Send versioned weights (raw arrays + meta) to the relay, which pushes them to every worker."""
        self._core.raise_fatal()
        body = encode_arrays(arrays, meta)
        hdr = P.pack({"t": "weights", "v": int(version)})
        if 2 + len(hdr) + len(body) > self.config.max_frame_bytes:
            raise ProtocolError(
                f"weights of {len(body)} bytes exceed max_frame_bytes={self.config.max_frame_bytes}"
            )
        self._core.call(self._core.set_weights, [P.frame_prefix(hdr, len(body)), body])

    def wait_connected(self, timeout: float) -> bool:
        """True once connected and authenticated (raises the fatal error if the relay refused us)."""
        return self._core.wait_connected(timeout)

    @property
    def connected(self) -> bool:
        return self._core.connected.is_set()

    def stats(self) -> dict[str, Any]:
        """Counters: received / duplicate / malformed / polled batches and samples, weights published."""
        return {**self._core.stats, "connected": self.connected, "connections": self._core.connections}

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> TrainerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- observer ------------------------------------------------------------------------------------------------


class ObserverClient:
    """Reads the relay's status (what ``tmrl status`` prints)."""

    def __init__(self, config: RelayConfig, observer_id: str = "observer") -> None:
        self.config = config
        self.observer_id = observer_id

    def status(self) -> dict[str, Any]:
        """One status snapshot; raises ``TmrlError`` subclasses or ``ConnectionError`` with a clear message."""
        return asyncio.run(self._status())

    async def _status(self) -> dict[str, Any]:
        where = f"{self.config.host}:{self.config.port}"
        try:
            transport, proto, _ = await open_session(self.config, "observer", self.observer_id)
        except (OSError, TimeoutError) as exc:
            raise ConnectionRefusedError(
                f"cannot reach the relay at {where}: {exc or type(exc).__name__}"
            ) from None
        try:
            transport.writelines(frame_parts({"t": "status"}))
            async with asyncio.timeout(self.config.handshake_timeout):
                header, body = await proto.next_frame()
                while header["t"] == "pong":
                    header, body = await proto.next_frame()
            _raise_refusal(header, where)
            if header["t"] != "status":
                raise ProtocolError(f"relay answered a status request with {header['t']!r}")
            doc = P.unpack(
                body, limits={"max_str_len": 1 << 16, "max_array_len": 1 << 16, "max_map_len": 1 << 10}
            )
            if not isinstance(doc, dict):
                raise ProtocolError("relay status is not a map")
            return doc
        finally:
            transport.close()
