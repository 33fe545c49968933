"""Checkpoints without pickle, written atomically.

Layout under a checkpoint root (``<run>/checkpoints``)::

    LATEST                 name of the newest complete checkpoint directory (replaced atomically)
    ckpt-<updates>/        one checkpoint
        state.json         format version, counters, configuration, observation spec (JSON)
        model.pt           networks, optimiser moments, entropy coefficient, RNG states, prefetched minibatches:
                           tensors and plain containers only, read back with torch.load(weights_only=True)
        replay/            the replay ring, via ReplayRing.save (raw arrays + JSON header, sampler RNG state)

A checkpoint is written in a temporary directory, fsynced, renamed to ``ckpt-<updates>``, and only then does
``LATEST`` (written to a temporary file and ``os.replace``d) point at it; older checkpoints are removed after that.
A crash at any point leaves the previous checkpoint intact and pointed to.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tmrl._core import ReplayRing
from tmrl.errors import CheckpointError

FORMAT_VERSION = 1
LATEST = "LATEST"


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns."""

    path: Path
    state: dict  # the JSON part
    tensors: dict  # the torch part
    ring: ReplayRing | None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    root: str | os.PathLike, name: str, state: dict, tensors: dict, ring: ReplayRing | None = None
) -> Path:
    """Write a checkpoint called ``name`` under ``root`` atomically and point ``LATEST`` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(tensors, tmp / "model.pt")
    if ring is not None:
        ring.save(str(tmp / "replay"))
    with open(tmp / "state.json", "w") as f:
        json.dump({"format_version": FORMAT_VERSION, **state}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    with open(tmp / "model.pt", "rb+") as f:
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    pointer = root / f".{LATEST}.tmp-{os.getpid()}"
    pointer.write_text(name + "\n")
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    for old in root.iterdir():  # previous checkpoints and leftovers of crashed writes
        if old.name not in (name, LATEST) and (old.name.startswith("ckpt-") or ".tmp-" in old.name):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return final


def has_checkpoint(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a ``LATEST`` pointer."""
    return (Path(root) / LATEST).is_file()


def load_checkpoint(root: str | os.PathLike, *, load_ring: bool = True) -> Checkpoint:
    """Read the checkpoint ``LATEST`` points at. CheckpointError (naming the path) if missing or corrupt."""
    root = Path(root)
    pointer = root / LATEST
    try:
        name = pointer.read_text().strip()
    except OSError as exc:
        raise CheckpointError(
            f"no checkpoint at {root} ({pointer.name} missing); start without --resume to train from scratch"
        ) from exc
    path = root / name
    if not name or "/" in name or not path.is_dir():
        raise CheckpointError(f"checkpoint {path} (named in {pointer}) is missing")
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: state.json is missing or corrupt ({exc})") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {state.get('format_version') if isinstance(state, dict) else None}"
            f" is not {FORMAT_VERSION}"
        )
    try:
        tensors = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path}: model.pt is missing") from exc
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError... on damaged files
        raise CheckpointError(
            f"checkpoint {path}: model.pt is corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    ring = None
    if load_ring and (path / "replay").exists():
        try:
            ring = ReplayRing.load(str(path / "replay"))
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"checkpoint {path}: replay ring cannot be loaded ({exc})") from exc
    elif load_ring:
        raise CheckpointError(f"checkpoint {path}: replay/ is missing")
    return Checkpoint(path, state, tensors, ring)
