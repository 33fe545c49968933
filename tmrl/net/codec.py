"""Message bodies that carry numpy arrays: msgpack maps of ``{dtype, shape, data}`` (never pickle).

Used by the clients only (the server forwards bodies as opaque bytes and never imports numpy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tmrl.errors import ProtocolError
from tmrl.net.protocol import check_depth, pack, unpack

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


def _body_limits(max_bytes: int) -> dict[str, int]:
    return dict(
        max_bin_len=max_bytes, max_str_len=1 << 20, max_array_len=1 << 20, max_map_len=1 << 16, max_ext_len=0
    )


def encode_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """Encode named arrays plus a msgpack-able ``meta`` map into one body (one copy of the array bytes)."""
    enc: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        a = arr if type(arr) is np.ndarray else np.asarray(arr)
        wire = _NAMES.get(a.dtype)  # native little-endian dtypes (the usual case) map straight to their name
        if wire is None or not a.flags.c_contiguous:
            if a.dtype.kind not in "biuf" or a.dtype.newbyteorder("<") not in _NAMES:
                raise ProtocolError(
                    f"array {name!r}: dtype {a.dtype} is not allowed on the wire ({sorted(DTYPES)})"
                )
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            wire = _NAMES[a.dtype]
        enc[name] = {
            "dtype": wire,
            "shape": a.shape,
            "data": a.data.cast("B") if a.ndim and a.size else a.tobytes(),
        }
    try:
        return pack({"meta": dict(meta), "arrays": enc})
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"meta is not msgpack-serialisable: {exc}") from None


def decode_arrays(
    body: bytes | memoryview, max_bytes: int, *, writable: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode a body made by ``encode_arrays``; anything malformed raises ``ProtocolError``.

    Arrays are read-only views of the decoded buffer unless ``writable`` (then they are copied).
    """
    doc = unpack(body, limits=_body_limits(max_bytes), max_depth=None)
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("meta"), dict)
        or not isinstance(doc.get("arrays"), dict)
    ):
        raise ProtocolError("array body must be a map with 'meta' and 'arrays' maps")
    check_depth(doc["meta"], 16)  # the array specs are checked field by field below
    out: dict[str, np.ndarray] = {}
    for name, spec in doc["arrays"].items():
        if not isinstance(spec, dict):
            raise ProtocolError(f"array {name!r}: spec is not a map")
        dtype, shape, data = spec.get("dtype"), spec.get("shape"), spec.get("data")
        dt = _WIRE.get(dtype) if isinstance(dtype, str) else None
        if dt is None:
            raise ProtocolError(f"array {name!r}: dtype {dtype!r} is not allowed")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)
        ):
            raise ProtocolError(f"array {name!r}: bad shape {shape!r}")
        if not isinstance(data, bytes):
            raise ProtocolError(f"array {name!r}: data is not bytes")
        if math.prod(shape) * dt.itemsize != len(data):
            raise ProtocolError(f"array {name!r}: {len(data)} bytes do not match shape {shape} of {dtype}")
        a = np.frombuffer(data, dtype=dt).reshape(shape)
        out[name] = a.astype(dt.newbyteorder("="), copy=True) if writable else a
    return out, doc["meta"]
