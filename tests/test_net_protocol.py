"""Relay protocol: framing, strict msgpack decoding, array bodies, handshake proofs (pure functions, no sockets)."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmrl.errors import ProtocolError
from tmrl.net import protocol as P
from tmrl.net.codec import decode_arrays, encode_arrays
from tmrl.net.config import RelayConfig
from tmrl.net.stream import read_frame

MAX = 1 << 20


def body(layout: object, meta: object = None, data: bytes = b"") -> bytes:
    """An array body with an arbitrary layout and meta (to forge bad ones)."""
    a, m = P.pack(layout), P.pack({} if meta is None else meta)
    pad = -(8 + len(a) + len(m)) % 8  # the data region starts 8-byte aligned
    return struct.pack("<I", len(a)) + a + struct.pack("<I", len(m)) + m + b"\x00" * pad + data


def test_frame_roundtrip_and_body_is_opaque() -> None:
    body = bytes(range(256)) * 10
    frame = P.encode_frame({"t": "batch", "seq": 7, "n": 3}, body)
    header, got = P.decode_frame(frame, MAX)
    assert header == {"t": "batch", "seq": 7, "n": 3}
    assert bytes(got) == body


def test_prefix_checks_size_before_reading() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        P.parse_prefix(struct.pack(">IH", MAX + 1, 10), MAX)
    with pytest.raises(ProtocolError, match="inconsistent"):
        P.parse_prefix(struct.pack(">IH", 5, 10), MAX)
    with pytest.raises(ProtocolError, match="inconsistent"):
        P.parse_prefix(struct.pack(">IH", 5, 0), MAX)
    with pytest.raises(ProtocolError, match="truncated"):
        P.parse_prefix(b"\x00\x00", MAX)


def test_header_must_be_a_typed_map() -> None:
    for bad in (P.pack([1, 2]), P.pack({"x": 1}), P.pack({"t": 3}), b"\xc1", b""):
        with pytest.raises(ProtocolError):
            P.decode_header(bad)


def test_huge_declared_lengths_are_refused_without_allocation() -> None:
    # bin32 / str32 / array32 / map32 headers declaring 4 GB with nothing behind them
    for tag in (b"\xc6", b"\xdb", b"\xdd", b"\xdf"):
        with pytest.raises(ProtocolError):
            P.decode_header(tag + b"\xff\xff\xff\xff")
        with pytest.raises(ProtocolError):
            decode_arrays(struct.pack("<I", 5) + tag + b"\xff\xff\xff\xff" + body([])[4:], MAX)
        with pytest.raises(ProtocolError):
            decode_arrays(struct.pack("<I", 5) + tag + b"\xff\xff\xff\xff", MAX)


def test_deep_nesting_and_ext_types_are_refused() -> None:
    deep = b"\x91" * 100_000 + b"\x00"  # 100k nested one-element arrays
    with pytest.raises(ProtocolError):
        P.decode_header(deep)
    with pytest.raises(ProtocolError):
        decode_arrays(body([], None)[:-1] + b"", MAX)  # truncated meta
    with pytest.raises(ProtocolError):
        decode_arrays(struct.pack("<I", len(deep)) + deep + struct.pack("<I", 1) + b"\x80", MAX)
    nested: object = 0
    for _ in range(40):
        nested = [nested]
    with pytest.raises(ProtocolError, match="deeper"):
        decode_arrays(encode_arrays({}, {"x": nested}), MAX)
    with pytest.raises(ProtocolError, match="ext"):
        P.decode_header(msgpack.packb({"t": "x", "e": msgpack.ExtType(5, b"zz")}))
    with pytest.raises(ProtocolError):  # integer map keys (strict_map_key)
        P.decode_header(msgpack.packb({"t": "x", 1: 2}))


def test_arrays_roundtrip_all_wire_dtypes() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "obs.img": rng.integers(0, 255, (4, 64, 64), dtype=np.uint8),
        "obs.lidar": rng.random((4, 19), dtype=np.float32),
        "action": rng.random((4, 3)).astype(np.float32)[:, ::-1],  # non-contiguous input
        "terminated": np.array([0, 0, 1, 0], bool),
        "big": np.arange(6, dtype=np.float64).reshape(2, 3),
        "empty": np.zeros((0, 5), np.int64),
    }
    meta = {"n": 4, "policy_version": 3, "returns": [1.5, 2.0]}
    got, got_meta = decode_arrays(encode_arrays(arrays, meta), MAX)
    assert got_meta == meta
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape
        np.testing.assert_array_equal(got[k], a)
    w, _ = decode_arrays(encode_arrays(arrays, meta), MAX, writable=True)
    assert w["big"].flags.writeable


def test_array_bodies_are_validated() -> None:
    with pytest.raises(ProtocolError, match="dtype"):
        encode_arrays({"o": np.array(["a"], dtype=object)}, {})
    good = ["a", "float32", [2], 0, 8]
    cases = [
        ["a", "object", [1], 0, 8],
        ["a", "float32", [3], 0, 8],  # size mismatch
        ["a", "float32", [-2], 0, 8],
        ["a", "float32", [1] * 9, 0, 8],
        ["a", "float32", "2", 0, 8],
        ["a", "float32", [2], 4, 8],  # past the end of the data
        ["a", "float32", [2], -1, 8],
        [1, "float32", [2], 0, 8],
        good[:4],
        {"a": 1},
    ]
    for spec in cases:
        with pytest.raises(ProtocolError):
            decode_arrays(body([spec], {}, b"\x00" * 8), MAX)
    assert decode_arrays(body([good], {}, b"\x00" * 8), MAX)[0]["a"].shape == (2,)
    for layout, meta in (({}, {}), ([1], {}), ([], [1]), ([], b"\x00")):
        with pytest.raises(ProtocolError):
            decode_arrays(body(layout, meta), MAX)
    with pytest.raises(ProtocolError):
        decode_arrays(struct.pack("<I", 1000) + b"\x80", MAX)  # descriptor longer than the body
    with pytest.raises(ProtocolError):  # body larger than the bin limit
        decode_arrays(encode_arrays({"a": np.zeros(1000, np.uint8)}, {}), 100)


def test_handshake_proofs_bind_everything() -> None:
    s, cn, sn = b"secret", b"c" * 32, b"s" * 32
    base = P.client_proof(s, cn, sn, "worker", "w0")
    assert P.verify(base, P.client_proof(s, cn, sn, "worker", "w0"))
    for other in (
        P.client_proof(b"other", cn, sn, "worker", "w0"),
        P.client_proof(s, sn, cn, "worker", "w0"),
        P.client_proof(s, cn, sn, "trainer", "w0"),
        P.client_proof(s, cn, sn, "worker", "w1"),
        P.server_proof(s, cn, sn, "worker", "w0"),  # a server proof is never a valid client proof
    ):
        assert not P.verify(base, other)
    assert not P.verify(base, "not bytes")


def test_hello_validation() -> None:
    ok = P.hello("worker", "w0", b"n" * 32, 5)
    assert P.parse_hello(ok) == ("worker", "w0", b"n" * 32, 5)
    for bad in (
        {**ok, "v": 99},
        {**ok, "proto": "http"},
        {**ok, "role": "admin"},
        {**ok, "id": ""},
        {**ok, "id": "x" * 500},
        {**ok, "cn": b"short"},
        {**ok, "inc": -1},
        {**ok, "inc": True},
    ):
        with pytest.raises(ProtocolError):
            P.parse_hello(bad)


def _feed(data: bytes, max_frame: int = MAX) -> object:
    async def go() -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, max_frame)

    return asyncio.run(go())


def test_stream_reader_framing() -> None:
    frame = P.encode_frame({"t": "ping"}, b"xyz")
    header, body = _feed(frame)  # type: ignore[misc]
    assert header == {"t": "ping"} and bytes(body) == b"xyz"
    with pytest.raises(asyncio.IncompleteReadError):
        _feed(frame[:-1])  # truncated: clean EOF error, connection closed by the server
    with pytest.raises(ProtocolError):
        _feed(frame, max_frame=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_decoders_raise_only_protocol_error(data: bytes) -> None:
    for fn in (
        lambda: P.decode_header(data),
        lambda: P.decode_frame(data, MAX),
        lambda: decode_arrays(data, MAX),
        lambda: P.split_frame(data, 3),
    ):
        try:
            fn()
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=20)
        | st.binary(max_size=20),
        lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=5), ch, max_size=4),
        max_leaves=30,
    ),
    st.integers(0, 64),
)
def test_fuzz_structured_bodies_and_mutations(obj: object, cut: int) -> None:
    """Valid msgpack of any shape, and truncations / bit flips of a real frame, never escape ProtocolError."""
    raw = P.pack({"meta": {}, "arrays": {"a": obj}})
    for data in (raw, raw[:cut], P.pack(obj)):
        try:
            decode_arrays(data, MAX)
        except ProtocolError:
            pass
    frame = bytearray(P.encode_frame({"t": "batch", "seq": 1, "n": 2}, encode_arrays({"r": np.ones(2)}, {})))
    frame[cut % len(frame)] ^= 0xFF
    try:
        _, body = P.decode_frame(bytes(frame), MAX)
        decode_arrays(body, MAX)
    except ProtocolError:
        pass


def test_config_defaults_and_validation() -> None:
    cfg = RelayConfig()
    assert cfg.port == 55555 and cfg.queue_bytes >= cfg.max_frame_bytes
    with pytest.raises(ValueError):
        RelayConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        RelayConfig(tls=True)
    with pytest.raises(ValueError):
        RelayConfig(queue_bytes=2**20, max_frame_bytes=2**21)
    assert "secret" not in repr(cfg.secret)


def test_server_never_imports_numpy_or_torch() -> None:
    code = "import sys, tmrl.net.server; sys.exit(('numpy' in sys.modules) + 2 * ('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 150_000), min_size=1, max_size=5),
    st.lists(st.integers(1, 200_000), min_size=1, max_size=50),
)
def test_frame_parser_reassembles_any_chunking(body_sizes: list[int], chunks: list[int]) -> None:
    """Frames of any size, cut into reads of any size, come out whole and in order."""
    frames = [
        P.encode_frame({"t": "batch", "seq": i, "n": 1}, bytes([i % 251]) * n)
        for i, n in enumerate(body_sizes)
    ]
    stream = b"".join(frames)
    parser = P.FrameParser(1 << 20, scratch_bytes=128 * 1024)
    out = []
    pos, k = 0, 0
    while pos < len(stream):
        buf = parser.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), chunks[k % len(chunks)], len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        pos += n
        k += 1
        out += parser.feed(n)
    assert [h["seq"] for h, _ in out] == list(range(len(body_sizes)))
    for (_, body), n in zip(out, body_sizes, strict=True):
        assert len(body) == n and (n == 0 or body[0] == body[-1])


def test_frame_parser_refuses_oversize_before_buffering() -> None:
    parser = P.FrameParser(1000)
    buf = parser.get_buffer()
    prefix = P.PREFIX.pack(10_000_000, 10)
    buf[: len(prefix)] = prefix
    with pytest.raises(ProtocolError, match="exceeds"):
        parser.feed(len(prefix))


@given(st.integers(0, 1 << 40), st.text(max_size=9), st.integers(1, 7))
def test_decoded_arrays_are_aligned_whatever_the_meta(version: int, text: str, n: int) -> None:
    arrays = {
        "first": np.zeros(n, bool),
        "obs.lidar": np.arange(n * 19, dtype=np.float32).reshape(n, 19),
        "action": np.ones((n, 3), np.float32),
        "x": np.arange(n, dtype=np.float64),
    }
    out, meta = decode_arrays(encode_arrays(arrays, {"policy_version": version, "s": text}), MAX)
    assert meta == {"policy_version": version, "s": text}
    for name, a in arrays.items():
        assert out[name].flags.aligned and out[name].flags.c_contiguous
        np.testing.assert_array_equal(out[name], a)


def test_buffer_pool_recycles_by_size_within_its_bound() -> None:
    pool = P.BufferPool(max_bytes=3000, per_size=2)
    a, b, c = pool.get(1000), pool.get(1000), pool.get(1000)
    assert len(a) == 1000 and a is not b
    for buf in (a, b, c):  # the third one of that size is not kept (per_size)
        pool.put(buf)
    assert pool.get(1000) in (a, b) and pool.reused == 1
    pool.put(bytearray(2500))  # over the byte bound with what is held: forgotten
    assert len(pool.get(2500)) == 2500 and pool.reused == 1


def test_frame_parser_reads_big_frames_into_allocated_buffers() -> None:
    """Frames of ``big_bytes`` or more are received into ``alloc``'s buffer: the body is a view of it."""
    pool = P.BufferPool()
    parser = P.FrameParser(1 << 20, 64 * 1024, big_bytes=4096, alloc=pool.get)
    recycled = bytearray(b"\xee" * (len(P.pack({"t": "batch", "seq": 1, "n": 1})) + 5000 + P.BODY_ALIGN - 1))
    pool.put(recycled)  # a dirty buffer of exactly the second frame's size: reused, fully overwritten
    frames = [
        P.encode_frame({"t": "batch", "seq": 0, "n": 1}, b"a" * 100),
        P.encode_frame({"t": "batch", "seq": 1, "n": 1}, bytes(range(250)) * 20),
    ]
    stream = b"".join(frames)
    out, pos = [], 0
    while pos < len(stream):
        buf = parser.get_buffer()
        n = min(len(buf), 1000, len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        pos += n
        out += parser.feed(n)
    assert [h["seq"] for h, _ in out] == [0, 1]
    assert type(out[0][1].obj) is bytes and out[1][1].obj is recycled and pool.reused == 1
    assert bytes(out[1][1]) == bytes(range(250)) * 20
    for _, body in out:  # bodies start 8-byte aligned (decoded arrays are views, not copies)
        assert np.frombuffer(body, np.uint8).ctypes.data % P.BODY_ALIGN == 0
