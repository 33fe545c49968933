"""Shared-memory block between the built-in game process and its ``Game``: header, controls, frame.

Layout (native endianness, one block per game):
  int64 header[32]  (indices below)
  float64 controls[4]  gas, brake, steer (env values in [-1, 1]), spare
  uint8 frame[height * width * 3]  RGB

Two seqlocks keep readers from tearing: ``CTRL_SEQ`` (written by the Game, read by the game each physics frame)
and ``FRAME_SEQ`` (written by the game when it renders, read by ``grab``): the writer makes it odd, writes, makes it
even again; a reader retries while it is odd or changed during the copy.
"""

from __future__ import annotations

import time
from multiprocessing import shared_memory

import numpy as np

from tmrl.errors import GameError

MAGIC = 0x746D726C_63617231  # "tmrlcar1"

# header indices
H_MAGIC = 0
H_STATE = 1  # 0 starting, 1 ready, 2 exited, -1 failed
H_TELEMETRY_PORT = 2
H_COMMAND_PORT = 3
H_CTRL_SEQ = 4
H_CTRL_COUNT = 5
H_HEARTBEAT = 6
H_FRAME_SEQ = 7
H_FRAME_COUNT = 8
H_WIDTH = 9
H_HEIGHT = 10
H_PID = 11
H_TICKS = 12
H_RESPAWNS = 13
H_RESPAWN_TILE = 14  # the track tile the next respawn puts the car on (0 = the start line)
H_RESPAWN_SPEED = 15  # the speed the next respawn gives the car, in thousandths of a km/h (0 = standing)
H_RESPAWN_TRACK = 16  # the track seed of the next respawn (the game builds that track when it changes)
H_HEADER_LEN = 32

STATE_STARTING = 0
STATE_READY = 1
STATE_EXITED = 2
STATE_FAILED = -1

_HEADER_BYTES = H_HEADER_LEN * 8
_CTRL_BYTES = 4 * 8


def block_size(width: int, height: int) -> int:
    """Bytes needed for a game rendering (height, width) RGB frames."""
    return _HEADER_BYTES + _CTRL_BYTES + width * height * 3


class SharedState:
    """Numpy views over one game's shared-memory block (either side)."""

    def __init__(self, shm: shared_memory.SharedMemory, width: int, height: int, *, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.closed = False
        self.width = width
        self.height = height
        buf = shm.buf
        self.header = np.ndarray((H_HEADER_LEN,), dtype=np.int64, buffer=buf, offset=0)
        self.controls = np.ndarray((4,), dtype=np.float64, buffer=buf, offset=_HEADER_BYTES)
        self.frame = np.ndarray(
            (height, width, 3), dtype=np.uint8, buffer=buf, offset=_HEADER_BYTES + _CTRL_BYTES
        )

    @classmethod
    def create(cls, name: str, width: int, height: int) -> SharedState:
        """Create a new zeroed block (the Game's side; it unlinks it on close)."""
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=block_size(width, height))
        except FileExistsError as e:
            raise GameError(
                f"shared memory block {name!r} already exists: another game uses it; "
                "set a different shm_name (or None for a unique one)"
            ) from e
        state = cls(shm, width, height, owner=True)
        state.header[:] = 0
        state.controls[:] = 0.0
        state.header[H_WIDTH] = width
        state.header[H_HEIGHT] = height
        state.header[H_MAGIC] = MAGIC
        return state

    @classmethod
    def attach(cls, name: str, width: int, height: int) -> SharedState:
        """Attach to an existing block (the game process's side; it never unlinks it)."""
        shm = shared_memory.SharedMemory(name=name, create=False)
        _untrack(shm)
        state = cls(shm, width, height, owner=False)
        if int(state.header[H_MAGIC]) != MAGIC:
            state.close()
            raise GameError(f"shared memory block {name!r} is not a tmrl built-in game block")
        return state

    # ---------------------------------------------------------------------------------------------- controls
    def write_controls(self, gas: float, brake: float, steer: float) -> None:
        """Writer side of the control seqlock (single writer: the Game object in the agent's process)."""
        if self.closed:
            raise GameError("the built-in game is closed; open it again")
        h = self.header
        h[H_CTRL_SEQ] += 1
        self.controls[0] = gas
        self.controls[1] = brake
        self.controls[2] = steer
        h[H_CTRL_SEQ] += 1
        h[H_CTRL_COUNT] += 1

    def read_controls(self) -> tuple[float, float, float] | None:
        """Consistent (gas, brake, steer), or None if the writer kept it busy for several attempts."""
        h = self.header
        c = self.controls
        for _ in range(16):
            s1 = int(h[H_CTRL_SEQ])
            if s1 & 1:
                continue
            gas, brake, steer = float(c[0]), float(c[1]), float(c[2])
            if int(h[H_CTRL_SEQ]) == s1:
                return gas, brake, steer
        return None

    # ------------------------------------------------------------------------------------------------- frame
    def write_frame(self, rgb: np.ndarray) -> None:
        """Publish a frame under the frame seqlock (single writer: the game process)."""
        h = self.header
        h[H_FRAME_SEQ] += 1
        self.frame[...] = rgb
        h[H_FRAME_SEQ] += 1
        h[H_FRAME_COUNT] += 1

    def read_frame(self, timeout: float = 1.0) -> np.ndarray:
        """Copy the latest complete frame; never returns a torn one."""
        if self.closed:
            raise GameError("the built-in game is closed; open it again")
        h = self.header
        out = np.empty_like(self.frame)
        deadline = time.monotonic() + timeout
        while True:
            s1 = int(h[H_FRAME_SEQ])
            if not s1 & 1:
                np.copyto(out, self.frame)
                if int(h[H_FRAME_SEQ]) == s1:
                    return out
            if time.monotonic() > deadline:
                raise GameError("the built-in game kept its frame busy: no consistent frame could be read")
            time.sleep(0.0002)

    def close(self) -> None:
        """Drop the views and close (and unlink, on the owner's side) the block (idempotent)."""
        if self.closed:
            return
        self.closed = True
        del self.header, self.controls, self.frame
        try:
            self.shm.close()
        except BufferError:
            pass  # a view is still referenced somewhere; the mapping goes with it, the name goes below
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


def _untrack(shm: shared_memory.SharedMemory) -> None:
    """Python < 3.13 registers attached blocks with the resource tracker, which would unlink them at exit."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except (ImportError, KeyError, AttributeError, OSError):  # no tracker (Windows): nothing to undo
        pass
