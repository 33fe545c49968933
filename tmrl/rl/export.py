"""The actor as raw arrays + JSON metadata: what workers receive over the relay and what ``tmrl test`` loads.

No pickle anywhere: ``actor_to_arrays`` gives the state dict as numpy arrays, ``actor_from_arrays`` rebuilds the
network from the metadata (observation spec + model config) and those arrays. ``save_actor`` writes them in the
safetensors layout (8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
range, with our metadata as a JSON string under ``__metadata__["tmrl"]``, then the raw little-endian bytes), written
to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from tmrl.errors import CheckpointError
from tmrl.rl.config import ModelConfig
from tmrl.rl.models import Actor
from tmrl.spaces import ObservationSpec

FORMAT = "tmrl-actor"
VERSION = 1
_DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_CODES = {np.dtype(v).str: k for k, v in _DTYPES.items()}
MAX_HEADER = 16 << 20


def actor_meta(actor: Actor, **extra: object) -> dict:
    """JSON metadata that ``actor_from_arrays`` needs (plus any ``extra`` keys, e.g. the weight version)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "spec": actor.spec.to_dict(),
        "model": actor.config.model_dump(mode="json"),
        **extra,
    }


def actor_to_arrays(actor: Actor) -> dict[str, np.ndarray]:
    """The actor's parameters and buffers as contiguous CPU numpy arrays (copies)."""
    return {k: np.ascontiguousarray(v.detach().cpu().numpy()).copy() for k, v in actor.state_dict().items()}


AVERAGE_PREFIX = "average/"
"""Published weights of a trainer with ``algorithm.actor_average`` on carry the averaged actor's arrays under
this prefix beside the live actor's."""


def published_arrays(actor: Actor, average: Actor | None = None) -> dict[str, np.ndarray]:
    """The arrays a trainer publishes: the live actor's, plus the averaged actor's under ``AVERAGE_PREFIX``."""
    arrays = actor_to_arrays(actor)
    if average is not None:
        arrays.update({AVERAGE_PREFIX + k: v for k, v in actor_to_arrays(average).items()})
    return arrays


def split_published(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """(live actor's arrays, averaged actor's arrays or None) of published weights."""
    live = {k: v for k, v in arrays.items() if not k.startswith(AVERAGE_PREFIX)}
    average = {k[len(AVERAGE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(AVERAGE_PREFIX)}
    return live, (average or None)


def actor_from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping) -> Actor:
    """Rebuild an actor (CPU, eval mode) from ``actor_to_arrays`` output and ``actor_meta``."""
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"actor weights: format {meta.get('format')!r} version {meta.get('version')!r} is not "
            f"{FORMAT!r} version {VERSION}; re-export the actor with this tmrl"
        )
    try:
        actor = Actor(ObservationSpec.from_dict(meta["spec"]), ModelConfig.model_validate(meta["model"]))
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}
        actor.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"actor weights do not match their metadata: {exc}") from exc
    return actor.eval()


def save_actor(path: str | os.PathLike, actor: Actor, **extra: object) -> Path:
    """Write the actor (arrays + metadata) to ``path`` atomically."""
    return save_arrays(path, actor_to_arrays(actor), actor_meta(actor, **extra))


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping) -> Path:
    """Write named arrays and JSON metadata in the safetensors layout, atomically."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": {"tmrl": json.dumps(meta)}}
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        code = _CODES.get(a.dtype.str)
        if code is None:
            raise ValueError(f"array {name!r}: dtype {a.dtype} cannot be exported")
        blob = a.tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by ``save_arrays``: (arrays, meta). CheckpointError naming the path if unreadable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"actor file {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        if len(data) < 8:
            raise ValueError("file too short")
        (n,) = struct.unpack("<Q", data[:8])
        if n > MAX_HEADER or 8 + n > len(data):
            raise ValueError("header length out of range")
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header.pop("__metadata__")["tmrl"])
        body = memoryview(data)[8 + n :]
        arrays = {}
        for name, info in header.items():
            begin, end = info["data_offsets"]
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(d) for d in info["shape"])
            if not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name!r} has an invalid byte range")
            arrays[name] = (
                np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
            )
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"actor file {path} is corrupt: {exc}") from exc
    return arrays, meta


def load_actor(path: str | os.PathLike) -> Actor:
    """Load an actor saved by ``save_actor`` (CPU, eval mode)."""
    arrays, meta = load_arrays(path)
    return actor_from_arrays(arrays, meta)
