"""The relay wire protocol: pure framing, header and handshake functions over bytes (no I/O, no numpy).

A frame is ``u32 L | u16 H | header (H bytes, msgpack map) | body (L - 2 - H bytes, opaque)``, big-endian.
The server routes on the small header and forwards bodies untouched; see docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from tmrl.errors import ProtocolError

PROTOCOL = "tmrl-relay"
VERSION = 1
PREFIX = struct.Struct(">IH")  # L (bytes after the u32), H (header length)
PREFIX_SIZE = PREFIX.size
MAX_HEADER_BYTES = 65535
NONCE_BYTES = 32
ROLES = ("worker", "trainer", "observer")
MAX_ID_LEN = 128
MAX_DEPTH = 32

# Message types per direction (the server enforces which role may send what).
CLIENT_TYPES = frozenset({"hello", "auth", "batch", "weights", "tack", "ping", "status"})
SERVER_TYPES = frozenset(
    {"challenge", "welcome", "refuse", "ack", "batch", "weights", "status", "pong", "error"}
)

_HEADER_LIMITS: dict[str, int] = dict(
    max_str_len=4096, max_bin_len=4096, max_array_len=256, max_map_len=64, max_ext_len=0
)


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def check_depth(obj: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise ProtocolError if ``obj`` (decoded msgpack) nests deeper than ``max_depth`` (iterative walk)."""
    if type(obj) is dict:
        for v in obj.values():
            if type(v) is dict or type(v) is list:
                break
        else:
            return  # flat map (the usual meta / header): nothing to walk
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        cur, depth = stack.pop()
        if isinstance(cur, dict):
            children = list(cur.values())
        elif isinstance(cur, list):
            children = cur
        else:
            continue
        if depth >= max_depth:
            raise ProtocolError(f"message nests deeper than {max_depth} levels")
        stack.extend((c, depth + 1) for c in children)


def unpack(data: bytes | memoryview, *, limits: Mapping[str, int], max_depth: int | None = MAX_DEPTH) -> Any:
    """Decode msgpack with strict size limits, string map keys and no extension types.

    Any malformed, truncated, oversize or too deep input raises ``ProtocolError`` (and nothing else). msgpack's
    own parser stops at 1024 levels; ``max_depth`` (None = skip the walk) bounds what callers get.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_ext, **limits)
    except ProtocolError:
        raise
    except RecursionError as exc:  # pragma: no cover - msgpack's own stack limit raises ValueError first
        raise ProtocolError("message nests too deep") from exc
    except Exception as exc:  # msgpack raises ValueError, TypeError, ExtraData, FormatError, StackError...
        raise ProtocolError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    if max_depth is not None:
        check_depth(obj, max_depth)
    return obj


def pack(obj: Any) -> bytes:
    """Encode with msgpack (binary bytes stay bytes, str stays str)."""
    return msgpack.packb(obj, use_bin_type=True)


# -- framing -----------------------------------------------------------------------------------------------


def frame_prefix(header: bytes, body_len: int) -> bytes:
    """The prefix + header bytes of a frame whose body (``body_len`` bytes) follows separately."""
    if len(header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    return PREFIX.pack(2 + len(header) + body_len, len(header)) + header


def encode_frame(header: Mapping[str, Any], body: bytes | memoryview = b"") -> bytes:
    """One complete frame as bytes (copies ``body``; use ``frame_prefix`` + writelines to avoid it)."""
    return frame_prefix(pack(dict(header)), len(body)) + bytes(body)


def parse_prefix(prefix: bytes, max_frame_bytes: int) -> tuple[int, int]:
    """Check a 6-byte prefix before anything else is read. Returns (rest, header_len): ``rest`` bytes follow."""
    if len(prefix) != PREFIX_SIZE:
        raise ProtocolError("truncated frame prefix")
    length, hlen = PREFIX.unpack(prefix)
    return check_prefix(length, hlen, max_frame_bytes)


def check_prefix(length: int, hlen: int, max_frame_bytes: int) -> tuple[int, int]:
    """``parse_prefix`` on the two decoded prefix fields."""
    if length > max_frame_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_frame_bytes}-byte limit")
    if length < 2 + hlen or hlen == 0:
        raise ProtocolError(f"inconsistent frame: length {length}, header {hlen}")
    return length - 2, hlen


def split_frame(rest: bytes | memoryview, hlen: int) -> tuple[dict[str, Any], memoryview]:
    """Decode the header of a frame's ``rest`` (after the prefix); the body is returned as a memoryview."""
    view = memoryview(rest)
    if len(view) < hlen:
        raise ProtocolError("truncated frame")
    return decode_header(view[:hlen]), view[hlen:]


def decode_header(data: bytes | memoryview) -> dict[str, Any]:
    """Decode and sanity-check a header: a msgpack map with a string ``t`` (the message type)."""
    obj = unpack(data, limits=_HEADER_LIMITS, max_depth=4)
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ProtocolError("frame header is not a map with a message type 't'")
    return obj


def decode_frame(frame: bytes | memoryview, max_frame_bytes: int) -> tuple[dict[str, Any], memoryview]:
    """Decode one complete frame held in memory (tests, fuzzing, spool files)."""
    view = memoryview(frame)
    rest, hlen = parse_prefix(bytes(view[:PREFIX_SIZE]), max_frame_bytes)
    if len(view) - PREFIX_SIZE != rest:
        raise ProtocolError(f"frame holds {len(view) - PREFIX_SIZE} bytes after its prefix, declared {rest}")
    return split_frame(view[PREFIX_SIZE:], hlen)


# -- typed field access ---------------------------------------------------------------------------------


def field(header: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``header[key]`` checked against ``kind`` (bool is never accepted as an int)."""
    value = header.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(f"message {header.get('t')!r}: field {key!r} missing or not {kinds}")
    return value


def nonneg_int(header: Mapping[str, Any], key: str) -> int:
    value = field(header, key, int)
    if value < 0 or value >= 1 << 63:
        raise ProtocolError(f"message {header.get('t')!r}: field {key!r} out of range")
    return value


# -- handshake --------------------------------------------------------------------------------------------


def _mac(secret: bytes, label: bytes, *parts: bytes) -> bytes:
    h = hmac.new(secret, label, hashlib.sha256)
    for p in parts:
        h.update(struct.pack(">I", len(p)))
        h.update(p)
    return h.digest()


def server_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes, role: str, client_id: str) -> bytes:
    """What the server sends to prove it knows the secret (the client checks it: mutual authentication)."""
    return _mac(secret, b"tmrl-relay/server", client_nonce, server_nonce, role.encode(), client_id.encode())


def client_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes, role: str, client_id: str) -> bytes:
    """What the client sends to prove it knows the secret; binds both nonces, the role and the id."""
    return _mac(secret, b"tmrl-relay/client", client_nonce, server_nonce, role.encode(), client_id.encode())


def verify(expected: bytes, got: Any) -> bool:
    """Constant-time comparison of a proof."""
    return isinstance(got, bytes) and hmac.compare_digest(expected, got)


def hello(role: str, client_id: str, client_nonce: bytes, incarnation: int = 0) -> dict[str, Any]:
    return {
        "t": "hello",
        "proto": PROTOCOL,
        "v": VERSION,
        "role": role,
        "id": client_id,
        "cn": client_nonce,
        "inc": incarnation,
    }


def parse_hello(header: Mapping[str, Any]) -> tuple[str, str, bytes, int]:
    """Validate a hello: returns (role, client_id, client_nonce, incarnation)."""
    if header.get("t") != "hello" or header.get("proto") != PROTOCOL:
        raise ProtocolError("expected a tmrl-relay hello")
    if header.get("v") != VERSION:
        raise ProtocolError(f"protocol version {header.get('v')!r} is not supported (relay speaks {VERSION})")
    role = field(header, "role", str)
    if role not in ROLES:
        raise ProtocolError(f"unknown role {role!r} (expected one of {ROLES})")
    client_id = field(header, "id", str)
    if not 0 < len(client_id) <= MAX_ID_LEN or not client_id.isprintable():
        raise ProtocolError(f"client id must be 1..{MAX_ID_LEN} printable characters")
    nonce = field(header, "cn", bytes)
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError("bad client nonce")
    return role, client_id, nonce, nonneg_int(header, "inc")


class BufferPool:
    """Recycled receive/encode buffers for large frames, by exact size (thread-safe, bounded).

    Allocating a fresh multi-hundred-KB ``bytearray`` per frame costs more than the frame's memcpy: the allocator
    zero-fills it and, above its mmap threshold, the kernel faults every page in again. Workers send the same
    batch size again and again, so a buffer released once its frame is acknowledged is reused for the next one.
    ``get`` always returns a buffer of exactly ``n`` bytes (contents undefined); ``put`` keeps at most
    ``max_bytes`` in total and at most ``per_size`` buffers of one size.
    """

    def __init__(self, max_bytes: int = 64 << 20, per_size: int = 64) -> None:
        self.max_bytes = max_bytes
        self.per_size = per_size
        self._free: dict[int, list[bytearray]] = {}
        self._held = 0
        self._lock = threading.Lock()
        self.reused = 0

    def get(self, n: int) -> bytearray:
        with self._lock:
            free = self._free.get(n)
            if free:
                self._held -= n
                self.reused += 1
                return free.pop()
        return bytearray(n)

    def put(self, buf: bytearray) -> None:
        """Give back a buffer nobody reads or writes any more (a live memoryview of it is harmless)."""
        n = len(buf)
        with self._lock:
            free = self._free.setdefault(n, [])
            if len(free) < self.per_size and self._held + n <= self.max_bytes:
                free.append(buf)
                self._held += n


BODY_ALIGN = 8  # bodies are received at 8-byte aligned addresses (array data inside is aligned to 8 too)


class FrameParser:
    """Incremental frame parser for ``asyncio.BufferedProtocol``: the transport reads straight into
    ``get_buffer()``; ``feed(n)`` returns the frames completed by those ``n`` bytes.

    Small frames are assembled in a reusable scratch buffer (one copy out); a frame of ``big_bytes`` or more
    (default: half the scratch buffer) gets its own writable buffer of exactly its size (from ``alloc``, e.g. a
    ``BufferPool.get``, or an uninitialised numpy array on the client side), read into directly: its body is then a zero-copy view, ``body.obj`` is that buffer. The
    declared size is checked against ``max_frame_bytes`` as soon as the 6-byte prefix is in, before anything else
    is buffered.
    """

    def __init__(
        self,
        max_frame_bytes: int,
        scratch_bytes: int = 256 * 1024,
        *,
        big_bytes: int | None = None,
        alloc: Callable[[int], Any] = bytearray,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray(scratch_bytes)
        self._big_bytes = min(big_bytes or scratch_bytes // 2, scratch_bytes // 2)
        self._alloc = alloc
        self._start = 0
        self._end = 0
        self._big: memoryview | None = None  # where a large frame (after its prefix) is being received
        self._big_fill = 0
        self._big_hlen = 0

    def get_buffer(self) -> memoryview:
        if self._big is not None:
            return self._big[self._big_fill :]
        if self._start and len(self._buf) - self._end < 65536:  # move the partial frame to the front
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start : self._end]
            self._start, self._end = 0, n
        return memoryview(self._buf)[self._end :]

    def feed(self, nbytes: int) -> list[tuple[dict[str, Any], memoryview]]:
        frames: list[tuple[dict[str, Any], memoryview]] = []
        if self._big is not None:
            self._big_fill += nbytes
            if self._big_fill == len(self._big):
                big, self._big = self._big, None
                frames.append(split_frame(big, self._big_hlen))
            return frames
        self._end += nbytes
        buf = self._buf
        while self._end - self._start >= PREFIX_SIZE:
            rest, hlen = check_prefix(*PREFIX.unpack_from(buf, self._start), self.max_frame_bytes)
            total = PREFIX_SIZE + rest
            avail = self._end - self._start
            if total >= self._big_bytes and avail < total:
                # the frame's own buffer, placed so that its body starts 8-byte aligned: decoded arrays are
                # then views, not copies
                lead = -hlen % BODY_ALIGN
                big = memoryview(self._alloc(rest + BODY_ALIGN - 1))[lead : lead + rest]
                have = avail - PREFIX_SIZE
                big[:have] = buf[self._start + PREFIX_SIZE : self._end]
                self._start = self._end = 0
                self._big, self._big_fill, self._big_hlen = big, have, hlen
                break
            if avail >= total:
                head = self._start + PREFIX_SIZE
                with memoryview(buf) as view:
                    header = decode_header(view[head : head + hlen])
                    # one copy of the body alone: a bytes object's data is 16-byte aligned in CPython
                    body = memoryview(bytes(view[head + hlen : self._start + total]))
                self._start += total
                frames.append((header, body))
            else:
                break
        if self._start == self._end:
            self._start = self._end = 0
        return frames
