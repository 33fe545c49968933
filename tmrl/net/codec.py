"""Message bodies that carry numpy arrays (never pickle).

A body is ``u32 A | layout (A bytes) | u32 M | meta (M bytes) | padding | data`` (u32 little-endian); the padding
makes the data region start at a multiple of 8 bytes from the body's start. The layout is a msgpack list
``[[name, dtype, shape, offset, nbytes], ...]``; each array's raw little-endian bytes sit at ``offset`` (a multiple
of 8) in the data region, so decoded views are aligned for every allowed dtype. The meta is a msgpack map. Decoding validates every field (dtype allow-list, shape, bounds) and returns
zero-copy views of the received buffer. A worker sends the same layout batch after batch, so a validated layout
is cached by its exact bytes and only the meta is decoded again. Used by the clients only (the server forwards bodies as opaque
bytes and never imports numpy).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from tmrl.errors import ProtocolError
from tmrl.net.protocol import pack, unpack

DTYPES = frozenset(
    {
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
    }
)
MAX_NDIM = 8
_LITTLE = np.little_endian
_WIRE = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}
_NAMES = {dt: name for name, dt in _WIRE.items()}  # dtype -> wire name, little-endian dtypes only


_LEN = struct.Struct("<I")
_ALIGN = 8
_PAD = bytes(_ALIGN)


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


_MAX_LAYOUTS = 256
_DESC_LIMITS: dict[str, int] = dict(
    max_bin_len=1 << 20, max_str_len=1 << 20, max_array_len=1 << 20, max_map_len=1 << 16, max_ext_len=0
)


_EncLayout = tuple[bytes, tuple[bytes, ...]]  # (u32 A + layout bytes, padding before each array)


@lru_cache(maxsize=_MAX_LAYOUTS)  # by (name, dtype, shape) of every array
def _enc_layout(key: tuple[Any, ...]) -> _EncLayout:
    specs: list[list[Any]] = []
    pads: list[bytes] = []
    offset = 0
    for name, dt, shape in key:
        pad = _aligned(offset) - offset
        pads.append(_PAD[:pad])
        offset += pad
        nbytes = math.prod(shape) * dt.itemsize
        specs.append([name, _NAMES[dt], shape, offset, nbytes])
        offset += nbytes
    layout = pack(specs)
    return _LEN.pack(len(layout)) + layout, tuple(pads)


def encode_parts(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> list[Any]:
    """The body as a list of buffers (the arrays' own memory, not copied): for immediate writes only."""
    arrs: list[np.ndarray] = []
    key: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    for name, arr in arrays.items():
        a = arr if type(arr) is np.ndarray else np.asarray(arr)
        if a.dtype not in _NAMES or not a.flags.c_contiguous:  # native little-endian dtypes: the usual case
            if a.dtype.kind not in "biuf" or a.dtype.newbyteorder("<") not in _NAMES:
                raise ProtocolError(
                    f"array {name!r}: dtype {a.dtype} is not allowed on the wire ({sorted(DTYPES)})"
                )
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        if type(name) is not str:
            raise ProtocolError(f"array name {name!r} is not a string")
        arrs.append(a)
        key.append((name, a.dtype, a.shape))
    layout, pads = _enc_layout(tuple(key))
    try:
        meta_b = pack(dict(meta))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"meta is not msgpack-serialisable: {exc}") from None
    head = 4 + len(layout) + len(meta_b)
    parts: list[Any] = [layout, _LEN.pack(len(meta_b)), meta_b, _PAD[: _aligned(head) - head]]
    for a, pad in zip(arrs, pads, strict=True):
        if pad:
            parts.append(pad)
        if a.nbytes:
            parts.append(a.data.cast("B") if a.ndim else a.tobytes())
    return parts


def encode_arrays(
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    alloc: Callable[[int], bytearray] | None = None,
) -> bytes | bytearray:
    """Encode named arrays plus a msgpack-able ``meta`` map into one body (one copy of the array bytes).

    With ``alloc`` (e.g. ``BufferPool.get``), the body is written into ``alloc(size)`` (a recycled buffer saves
    the allocator's zero-fill and page faults of a fresh large block); else it is a new ``bytes``.
    """
    parts = encode_parts(arrays, meta)
    if alloc is None:
        return b"".join(parts)
    buf = alloc(sum(len(p) for p in parts))
    view = memoryview(buf)
    pos = 0
    for p in parts:
        n = len(p)
        view[pos : pos + n] = p
        pos += n
    return buf


_Layout = list[tuple[str, np.dtype, tuple[int, ...], int, int]]


@lru_cache(
    maxsize=_MAX_LAYOUTS
)  # validated layouts by their exact bytes; invalid ones raise and are not kept
def _parse_layout(raw: bytes) -> tuple[_Layout, int]:
    specs = unpack(raw, limits=_DESC_LIMITS, max_depth=3)
    if type(specs) is not list:
        raise ProtocolError("array layout must be a list")
    out: _Layout = []
    end = 0
    for spec in specs:
        if type(spec) is not list or len(spec) != 5:
            raise ProtocolError("array spec must be [name, dtype, shape, offset, nbytes]")
        name, dtype, shape, offset, nbytes = spec
        dt = _WIRE.get(dtype) if type(dtype) is str else None
        if type(name) is not str or dt is None:
            raise ProtocolError(f"array {name!r}: bad name or dtype {dtype!r} (allowed: {sorted(DTYPES)})")
        if (
            type(shape) is not list
            or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)
        ):
            raise ProtocolError(f"array {name!r}: bad shape {shape!r}")
        if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0:
            raise ProtocolError(f"array {name!r}: bad data range [{offset!r}, +{nbytes!r})")
        if math.prod(shape) * dt.itemsize != nbytes:
            raise ProtocolError(f"array {name!r}: {nbytes} bytes do not match shape {shape} of {dtype}")
        out.append((name, dt, tuple(shape), offset, nbytes))
        end = max(end, offset + nbytes)
    return out, end


def decode_arrays(
    body: bytes | bytearray | memoryview, max_bytes: int, *, writable: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode a body made by ``encode_arrays``; anything malformed raises ``ProtocolError``.

    Arrays are views of ``body`` (read-only when ``body`` is); ``writable`` copies read-only ones.
    """
    view = memoryview(body)
    size = len(view)
    if size > max_bytes:
        raise ProtocolError(f"array body of {size} bytes exceeds {max_bytes}")
    if size < 8:
        raise ProtocolError("array body too short")
    (alen,) = _LEN.unpack_from(view)
    if alen > size - 8:
        raise ProtocolError("array layout overruns the body")
    layout, end = _parse_layout(bytes(view[4 : 4 + alen]))
    (mlen,) = _LEN.unpack_from(view, 4 + alen)
    meta_end = 8 + alen + mlen
    start = _aligned(meta_end)
    if start > size:
        raise ProtocolError("array meta overruns the body")
    meta = unpack(view[8 + alen : meta_end], limits=_DESC_LIMITS, max_depth=16)
    if type(meta) is not dict:
        raise ProtocolError("array meta must be a map")
    if end > size - start:
        raise ProtocolError(f"array data needs {end} bytes, the body holds {size - start}")
    out: dict[str, np.ndarray] = {}
    for name, dt, shape, offset, _nbytes in layout:
        a = np.ndarray(shape, dt, view, start + offset)  # a view of the body (bounds checked above)
        if (writable and not a.flags.writeable) or not a.flags.aligned:
            a = a.copy()  # a misaligned view only when the receive buffer itself is misaligned
        out[name] = a
    return out, meta
