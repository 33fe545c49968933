"""Screen capture backends for TrackMania: dxcam (Windows, Desktop Duplication) and mss (everywhere else).

Both capture exactly the window's client area (``Rect`` from ``tmrl.games.tm2020.window``) and return BGRA frames.
Platform packages are imported lazily, with a clear ``GameError`` when missing.
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol

import numpy as np

from tmrl.errors import GameError
from tmrl.games.tm2020.window import Rect


class CaptureBackend(Protocol):
    """Grabs the game's client area."""

    channel_order: str

    def grab(self) -> np.ndarray:
        """(H, W, C) uint8 C-contiguous frame owned by the caller."""
        ...

    def close(self) -> None:
        """Release the capture resources."""
        ...


class MssCapture:
    """mss capture of a screen region (one mss instance per thread: its handles are thread-bound)."""

    channel_order = "bgra"

    def __init__(self, region: Rect) -> None:
        try:
            import mss  # noqa: F401
        except ImportError as e:
            raise GameError("screen capture needs mss: pip install mss") from e
        self.region = region
        self._monitor = {
            "left": region.left,
            "top": region.top,
            "width": region.width,
            "height": region.height,
        }
        self._local = threading.local()
        self._all: list[object] = []
        self._lock = threading.Lock()
        self.grab()  # fail now, with a clear message, if the screen cannot be captured

    def _sct(self) -> object:
        sct = getattr(self._local, "sct", None)
        if sct is None:
            import mss

            factory = getattr(mss, "MSS", None) or mss.mss  # mss >= 10 renamed the class
            try:
                sct = factory()
            except Exception as e:  # mss.exception.ScreenShotError and platform errors
                raise GameError(f"cannot open the screen for capture ({e}); is a display available?") from e
            self._local.sct = sct
            with self._lock:
                self._all.append(sct)
        return sct

    def grab(self) -> np.ndarray:
        sct = self._sct()
        try:
            shot = sct.grab(self._monitor)  # type: ignore[attr-defined]
        except Exception as e:  # mss.exception.ScreenShotError
            raise GameError(f"screen capture of {self.region} failed ({e}); is the window on screen?") from e
        h, w = shot.height, shot.width
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(h, w, 4).copy()

    def close(self) -> None:
        with self._lock:
            scts, self._all = self._all, []
        for sct in scts:
            try:
                sct.close()  # type: ignore[attr-defined]
            except Exception:  # closing a half-open capture handle: nothing left to release
                continue


class DxcamCapture:
    """dxcam (DXGI Desktop Duplication) capture of a region of one monitor; Windows only."""

    channel_order = "bgra"

    def __init__(self, region: Rect, output_idx: int = 0) -> None:
        try:
            import dxcam
        except ImportError as e:
            raise GameError("screen capture on Windows needs dxcam: pip install dxcam") from e
        self.region = region
        self._box = (region.left, region.top, region.right, region.bottom)
        try:
            self._camera = dxcam.create(output_idx=output_idx, output_color="BGRA")
        except Exception as e:
            raise GameError(f"dxcam could not open monitor {output_idx} ({e}); try capture='mss'") from e
        if self._camera is None:
            raise GameError("dxcam is already capturing in this process; close the other capture first")
        self._last: np.ndarray | None = None
        self._lock = threading.Lock()
        self.grab()  # fail now, with a clear message, if the region cannot be captured

    def grab(self) -> np.ndarray:
        with self._lock:
            frame = self._camera.grab(region=self._box)
            if frame is not None:
                self._last = np.ascontiguousarray(frame)
            elif self._last is None:
                # nothing changed on screen since dxcam started: ask again until the first frame exists
                for _ in range(100):
                    frame = self._camera.grab(region=self._box)
                    if frame is not None:
                        self._last = np.ascontiguousarray(frame)
                        break
                else:
                    raise GameError(f"dxcam returned no frame for {self.region}; is the window visible?")
            assert self._last is not None
            return self._last.copy()

    def close(self) -> None:
        camera = getattr(self, "_camera", None)
        if camera is not None:
            try:
                camera.release()
            except Exception:  # already released
                pass
            self._camera = None


def make_capture(backend: str, region: Rect) -> CaptureBackend:
    """The capture backend for ``backend`` ("auto" = dxcam on Windows, mss elsewhere)."""
    if backend == "auto":
        backend = "dxcam" if sys.platform == "win32" else "mss"
    if backend == "dxcam":
        if sys.platform != "win32":
            raise GameError("capture='dxcam' works on Windows only; use capture='mss' (or 'auto')")
        return DxcamCapture(region)
    if backend == "mss":
        return MssCapture(region)
    raise GameError(f"unknown capture backend {backend!r}; use 'auto', 'dxcam' or 'mss'")
