"""Finding, placing and measuring the TrackMania window; the capture region is its client area, never hand-tuned.

Backends: ``Win32Windows`` (pywin32) on Windows, ``X11Windows`` (the ``xdotool`` program) on Linux/X11.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Protocol

from tmrl.errors import GameError


@dataclass(frozen=True)
class Rect:
    """A screen rectangle in pixels."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


class WindowBackend(Protocol):
    """What placing and measuring a window needs from the platform."""

    def find(self, title: str) -> int | None:
        """Handle of the top-level window with exactly this title, or None."""
        ...

    def outer_rect(self, handle: int) -> Rect:
        """The window including its frame, in screen coordinates."""
        ...

    def client_rect(self, handle: int) -> Rect:
        """The drawable client area, in screen coordinates."""
        ...

    def move_resize(self, handle: int, outer: Rect) -> None:
        """Move and size the window (frame included) to ``outer``."""
        ...


def outer_for_client(outer: Rect, client: Rect, x: int, y: int, width: int, height: int) -> Rect:
    """The frame rectangle to request so that the client area becomes ``width`` x ``height`` with the frame's
    top-left corner at (x, y), given the window's current frame and client rectangles (the frame's thickness
    is their difference)."""
    extra_w = outer.width - client.width
    extra_h = outer.height - client.height
    if extra_w < 0 or extra_h < 0:
        raise GameError(f"the window's client area {client} is larger than its frame {outer}; cannot size it")
    return Rect(x, y, width + extra_w, height + extra_h)


def locate_window(
    backend: WindowBackend, title: str, *, width: int, height: int, x: int = 0, y: int = 0, place: bool = True
) -> Rect:
    """Find the window titled ``title``, optionally move/size it, and return its client area on screen."""
    handle = backend.find(title)
    if handle is None:
        raise GameError(
            f"no window titled {title!r}: start TrackMania 2020 in windowed mode (or set window_title to its "
            "exact title)"
        )
    if place:
        target = outer_for_client(
            backend.outer_rect(handle), backend.client_rect(handle), x, y, width, height
        )
        backend.move_resize(handle, target)
    client = backend.client_rect(handle)
    if place and (client.width, client.height) != (width, height):
        raise GameError(
            f"the window {title!r} could not be sized to a {width}x{height} client area (it is "
            f"{client.width}x{client.height}); switch TrackMania to windowed mode, un-maximise it, and check "
            "that the screen is large enough"
        )
    if client.width <= 0 or client.height <= 0:
        raise GameError(f"the window {title!r} has an empty client area (minimised?); restore it")
    return client


class Win32Windows:
    """Windows backend through pywin32 (``win32gui``)."""

    def __init__(self) -> None:
        try:
            import win32con
            import win32gui
        except ImportError as e:
            raise GameError("window handling on Windows needs pywin32: pip install pywin32") from e
        self._gui = win32gui
        self._con = win32con

    def find(self, title: str) -> int | None:
        handle = self._gui.FindWindow(None, title)
        return int(handle) if handle else None

    def outer_rect(self, handle: int) -> Rect:
        left, top, right, bottom = self._gui.GetWindowRect(handle)
        return Rect(left, top, right - left, bottom - top)

    def client_rect(self, handle: int) -> Rect:
        _, _, w, h = self._gui.GetClientRect(handle)
        left, top = self._gui.ClientToScreen(handle, (0, 0))
        return Rect(left, top, w, h)

    def move_resize(self, handle: int, outer: Rect) -> None:
        self._gui.ShowWindow(handle, self._con.SW_RESTORE)
        self._gui.MoveWindow(handle, outer.left, outer.top, outer.width, outer.height, True)
        try:
            self._gui.SetForegroundWindow(handle)
        except Exception:  # pywintypes.error: Windows refuses focus changes in some states; placement holds
            pass


class X11Windows:
    """Linux/X11 backend through the ``xdotool`` program (the X11 client area is the window itself)."""

    def __init__(self) -> None:
        exe = shutil.which("xdotool")
        if exe is None:
            raise GameError("window handling on Linux needs xdotool: sudo apt install xdotool")
        self._exe = exe

    def _run(self, *args: str) -> str:
        try:
            out = subprocess.run([self._exe, *args], capture_output=True, text=True, timeout=5.0, check=False)
        except subprocess.TimeoutExpired as e:
            raise GameError(f"xdotool {' '.join(args)} did not answer; is an X11 display available?") from e
        return out.stdout

    def find(self, title: str) -> int | None:
        import re

        ids = self._run("search", "--onlyvisible", "--name", f"^{re.escape(title)}$").split()
        return int(ids[0]) if ids else None

    def _geometry(self, handle: int) -> Rect:
        values: dict[str, int] = {}
        for line in self._run("getwindowgeometry", "--shell", str(handle)).splitlines():
            key, _, value = line.partition("=")
            if value.strip().lstrip("-").isdigit():
                values[key.strip()] = int(value)
        try:
            return Rect(values["X"], values["Y"], values["WIDTH"], values["HEIGHT"])
        except KeyError as e:
            raise GameError(f"xdotool could not measure window {handle}; is it still open?") from e

    def outer_rect(self, handle: int) -> Rect:
        return self._geometry(handle)

    def client_rect(self, handle: int) -> Rect:
        return self._geometry(handle)

    def move_resize(self, handle: int, outer: Rect) -> None:
        self._run("windowsize", "--sync", str(handle), str(outer.width), str(outer.height))
        self._run("windowmove", "--sync", str(handle), str(outer.left), str(outer.top))


def default_window_backend() -> WindowBackend:
    """The platform's window backend (imports its packages lazily)."""
    if sys.platform == "win32":
        return Win32Windows()
    return X11Windows()
