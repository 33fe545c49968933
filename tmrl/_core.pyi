"""Type stubs for ``tmrl._core``, the Rust hot path (LIDAR, frame post-processing, replay ring).

Every function borrows numpy arrays read-only without copying, releases the GIL while it works, and raises
``TypeError`` for a wrong dtype and ``ValueError`` for a wrong shape, a non-contiguous array or a bad argument.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Literal, final

import numpy as np
from numpy.typing import NDArray

__version__: str
__all__ = ["__version__", "Lidar", "resize_frame", "FrameHistory", "ReplayRing"]

_ChannelOrder = Literal["bgr", "bgra", "rgb", "rgba"]

@final
class Lidar:
    """Raycasting LIDAR over captured frames (H x W x C uint8, C-contiguous; C = 3 for ``"bgr"``/``"rgb"``,
    4 for ``"bgra"``/``"rgba"``). Immutable; ``scan`` may run from several threads at once.

    Beams are precomputed pixel paths: beam ``b`` at angle ``a`` (degrees, 90 = right, 180 = up, 270 = left on
    screen) visits ``(int(r0 + d*cos a), int(c0 + d*sin a))`` for ``d = start, start+1, ...`` until the pixel
    leaves the image interior (row <= 0, column <= 0, row >= h-1 or column >= w-1), exactly like TMRL 0.7.1
    (same f64 arithmetic as Python's ``math.radians``/``math.cos``/``int``). The distance of a beam is the index
    along its path of the first border pixel, or ``len(path) - 1`` if none.

    Border tests on the colour channels (alpha ignored): ``"dark"`` (TMRL): every colour channel < ``threshold``;
    ``"not_road"`` (built-in game): the pixel is not road, road meaning gray:
    ``max(r,g,b) - min(r,g,b) <= road_tolerance`` and ``road_min <= each channel <= road_max``. Neither test
    depends on the order of R, G and B; ``channel_order`` fixes the channel count (3 or 4).

    ValueError when the origin lies outside the frame or a beam has no pixel inside it (lower ``start``).
    """

    def __new__(
        cls,
        height: int,
        width: int,
        *,
        angles_deg: Sequence[float] | None = None,
        origin: tuple[int, int] | None = None,
        start: int = 20,
        channel_order: _ChannelOrder = "bgr",
        border: Literal["dark", "not_road"] = "dark",
        threshold: int = 55,
        road_min: int = 90,
        road_max: int = 120,
        road_tolerance: int = 12,
    ) -> Lidar:
        """Precompute the beams for ``height`` x ``width`` frames. Defaults: 19 beams from 90 to 270 degrees in
        10 degree steps, origin (row, column) ``(44 * height // 49, width // 2)``, start 20 px."""
    @property
    def n_beams(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def origin(self) -> tuple[int, int]:
        """(row, column) of the origin."""
    @property
    def angles_deg(self) -> list[float]: ...
    def beam_lengths(self) -> NDArray[np.int64]:
        """Number of pixels on each beam's path (the largest distance of a beam is its length - 1)."""
    def beam_paths(self) -> list[NDArray[np.int64]]:
        """Each beam's path as an (n, 2) array of (row, column), for drawing and for reference checks."""
    def scan(self, frame: NDArray[np.uint8], out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """Distances (n_beams,) float32 for one (height, width, C) frame; written into ``out`` (float32,
        (n_beams,), C-contiguous) and returned when given."""
    def scan_batch(self, frames: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Distances (N, n_beams) float32 for a stack of frames (N, height, width, C)."""

def resize_frame(
    frame: NDArray[np.uint8],
    height: int,
    width: int,
    *,
    channel_order: _ChannelOrder = "bgra",
    grayscale: bool = True,
    interpolation: Literal["area", "bilinear"] = "area",
) -> NDArray[np.uint8]:
    """Resize a captured (H, W, C) frame to (height, width) grayscale or (height, width, 3) RGB, as a new array.

    Matches OpenCV's ``cv2.resize`` (``"area"`` = INTER_AREA, ``"bilinear"`` = INTER_LINEAR, same sampling
    geometry and weights) combined with ``cv2.cvtColor`` (gray = 0.299 R + 0.587 G + 0.114 B) within one level,
    in either order: colour conversion and resampling are fused and rounded once."""

@final
class FrameHistory:
    """The last ``history`` post-processed frames (see ``resize_frame``), written in place into a ring that
    stores each frame twice, so that ``push`` returns a zero-copy view ordered oldest -> newest: shape
    (history, height, width) for grayscale or (history, height, width, 3) for RGB.

    Views are read-only numpy arrays whose base is this object. A view's contents change at the next
    ``push``/``reset``: copy it (``np.array(view)``) to keep it longer. The captured frame may change size between
    calls. Use one FrameHistory per thread."""

    def __new__(
        cls,
        height: int = 64,
        width: int = 64,
        *,
        history: int = 4,
        channel_order: _ChannelOrder = "bgra",
        grayscale: bool = True,
        interpolation: Literal["area", "bilinear"] = "area",
    ) -> FrameHistory:
        """An empty history (all zeros until the first ``reset``/``push``)."""
    @property
    def history(self) -> int: ...
    def push(self, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Post-process ``frame`` into the newest slot and return the history view."""
    def reset(self, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Fill every slot with ``frame`` post-processed (start of an episode) and return the view."""
    def view(self) -> NDArray[np.uint8]:
        """The current history view."""

@final
class ReplayRing:
    """Fixed-capacity columnar replay memory for off-policy RL.

    A row is one step of one stream (a worker's episode sequence): the observation components at time t, the
    action taken, then the reward, ``terminated`` and ``truncated`` that followed it, and ``first`` (t is the first
    step of an episode). Rows of different streams may interleave; each row links to its predecessor and successor
    in its stream, so K-step histories are rebuilt at sampling time from single stored frames / scans and never
    cross an episode boundary (the episode's first frame is repeated instead; so is the oldest stored frame when
    older ones were overwritten). A row is a valid transition start when its successor is stored and is not the
    first step of a new episode: an episode's last row (its final observation) is never a start, so store the
    final observation as one more row after the terminal step.

    ``components`` lists each observation component as (name, shape, dtype, history): dtype ``"uint8"`` or
    ``"float32"``; history K >= 1. Sampled observation arrays have shape (B, K, *shape) when K > 1, else (B, *shape).
    Storage is one preallocated buffer per component and field (zero pages until written), history components
    stored once per step.

    One thread may append while others sample; all release the GIL. An append holds the write lock only while it
    copies its batch; samples hold the read lock while they gather, so no sample ever sees a half-written row.
    """

    def __new__(
        cls,
        capacity: int,
        components: Sequence[tuple[str, Sequence[int], str, int]],
        action_dim: int,
        *,
        seed: int | None = None,
    ) -> ReplayRing:
        """An empty ring. ``seed`` makes sampling reproducible (None: seeded from the OS)."""
    @property
    def capacity(self) -> int: ...
    @property
    def action_dim(self) -> int: ...
    def __len__(self) -> int:
        """Rows currently stored (<= capacity)."""
    @property
    def total_appended(self) -> int:
        """Rows appended since creation (monotonic, survives save/load)."""
    def num_transitions(self) -> int:
        """Rows that are currently valid transition starts."""
    def append_batch(
        self,
        stream: int,
        obs: Mapping[str, NDArray[np.generic]],
        action: NDArray[np.float32],
        reward: NDArray[np.float32],
        terminated: NDArray[np.bool_],
        truncated: NDArray[np.bool_],
        first: NDArray[np.bool_],
    ) -> None:
        """Append n consecutive steps of ``stream`` (an integer in [0, 2**64)): obs[name] (n, *shape) with exactly
        the ring's component names, action (n, action_dim) float32, reward float32, terminated, truncated, first
        bool (n,); all C-contiguous. O(n) copies, O(1) per row. A row with ``first`` False is linked to the
        stream's previous row if that row is still stored. Nothing is written when an argument is rejected."""
    def sample(
        self,
        batch_size: int,
        out: Mapping[str, NDArray[np.generic]] | None = None,
        *,
        n_step: int = 1,
        gamma: float | None = None,
    ) -> dict[str, NDArray[np.generic]]:
        """Uniformly sample ``batch_size`` valid transitions (with replacement). Returns (or fills ``out``,
        preallocated by ``alloc_batch``, and returns it) the keys ``obs.<name>``, ``next_obs.<name>``, ``action``,
        ``reward``, ``terminated``, ``truncated``. ``out`` may also hold plain C-contiguous arrays of the same
        shapes and dtypes. Raises ValueError when no valid transition is stored.

        With ``gamma`` (in (0, 1]; required when ``n_step`` > 1) the transitions carry multi-step returns:
        ``reward`` is the sum of up to ``n_step`` rewards discounted by ``gamma``, stopped early at a terminated
        or truncated step or at the newest stored row of an episode; ``next_obs`` is the observation after the
        last of them, ``terminated`` / ``truncated`` are that step's flags, and the extra key ``discount``
        (float32 (B,)) is gamma^m for the m rewards summed. The same rows are picked as without ``gamma``."""
    def alloc_batch(self, batch_size: int, *, n_step: int = 1) -> dict[str, NDArray[np.generic]]:
        """Preallocated (zeroed) output arrays for ``sample(batch_size, out=..., n_step=n_step)``. With
        ``n_step`` = 1, for a component with history K > 1, ``obs.<name>`` and ``next_obs.<name>`` are the views
        ``w[:, :K]`` and ``w[:, 1:]`` of one (B, K+1, *shape) array ``w`` (they share K-1 steps, so each step is
        copied once); they are not C-contiguous (``torch.from_numpy`` accepts them; use ``reshape``/``flatten``,
        not ``view``). With ``n_step`` > 1 they are separate C-contiguous arrays and ``discount`` is added."""
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write raw little-endian arrays + a versioned JSON header (with checksums) to ``directory`` atomically:
        written under ``<directory>.tmp-<pid>``, then renamed into place; an existing save there is replaced
        (a directory holding anything else is refused). Appends wait while it runs."""
    @staticmethod
    def load(directory: str | os.PathLike[str], *, seed: int | None = None) -> ReplayRing:
        """Load a ring written by ``save`` (same contents, counters, streams and RNG state unless ``seed`` is
        given); ValueError naming the path on a missing, corrupt or incompatible directory."""
