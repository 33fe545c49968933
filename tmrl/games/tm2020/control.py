"""Control backends for TrackMania: a virtual Xbox 360 gamepad (vgamepad + ViGEmBus) and a keyboard fallback.

Gamepad: right trigger = gas, left trigger = brake, left stick X = steer (analog); B held ~0.1 s = respawn;
A closes the finish pop-up. Keyboard (binary, TMRL 0.7.1's mapping): W when gas > 0, S when brake > 0, D when
steer > dead zone, A when steer < -dead zone; respawn key Delete (Windows) or BackSpace (Linux); Enter closes the
finish pop-up. Platform packages are imported lazily, with a clear ``GameError`` when missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from tmrl.errors import GameError
from tmrl.games.base import clip_unit


class ControlBackend(Protocol):
    """Drives the game's car."""

    def set(self, gas: float, brake: float, steer: float) -> None:
        """Apply env values in [-1, 1] (gas/brake pressed when > 0)."""
        ...

    def respawn(self, hold_s: float) -> None:
        """Press the respawn input for ``hold_s`` seconds."""
        ...

    def confirm(self) -> None:
        """Close the finish pop-up."""
        ...

    def release(self) -> None:
        """Release every input."""
        ...

    def close(self) -> None:
        """Release everything and free the device."""
        ...


_VIGEM_HELP = (
    "install vgamepad and its ViGEmBus driver: pip install vgamepad (its installer offers ViGEmBus; otherwise "
    "get it from https://github.com/nefarius/ViGEmBus/releases), then restart; or use control='keyboard'"
)


class GamepadControl:
    """Virtual Xbox 360 gamepad through vgamepad (Windows: ViGEmBus driver; Linux: uinput)."""

    def __init__(self) -> None:
        try:
            import vgamepad
        except ImportError as e:
            raise GameError(f"the virtual gamepad is unavailable: {_VIGEM_HELP}") from e
        except Exception as e:  # vgamepad raises at import when the driver / uinput is missing
            raise GameError(f"the virtual gamepad could not start ({e}): {_VIGEM_HELP}") from e
        try:
            self._pad = vgamepad.VX360Gamepad()
        except Exception as e:
            raise GameError(f"the virtual gamepad could not be created ({e}): {_VIGEM_HELP}") from e
        self._buttons = vgamepad.XUSB_BUTTON
        self._lock = threading.Lock()

    def set(self, gas: float, brake: float, steer: float) -> None:
        with self._lock:
            self._pad.right_trigger_float(value_float=max(0.0, clip_unit(gas)))
            self._pad.left_trigger_float(value_float=max(0.0, clip_unit(brake)))
            self._pad.left_joystick_float(x_value_float=clip_unit(steer), y_value_float=0.0)
            self._pad.update()

    def _tap(self, button: object, hold_s: float) -> None:
        with self._lock:
            self._pad.press_button(button=button)
            self._pad.update()
        time.sleep(hold_s)
        with self._lock:
            self._pad.release_button(button=button)
            self._pad.update()

    def respawn(self, hold_s: float) -> None:
        self._tap(self._buttons.XUSB_GAMEPAD_B, hold_s)

    def confirm(self) -> None:
        self._tap(self._buttons.XUSB_GAMEPAD_A, 0.05)

    def release(self) -> None:
        with self._lock:
            self._pad.reset()
            self._pad.update()

    def close(self) -> None:
        self.release()


class KeySender(Protocol):
    """Presses and releases keys by name ("w", "a", "s", "d", "respawn", "confirm")."""

    def send(self, down: Sequence[str], up: Sequence[str]) -> None:
        """Release ``up`` then press ``down``."""
        ...


class Win32Keys:
    """SendInput with hardware scan codes (games read scan codes), through ctypes."""

    _SCAN = {"w": (0x11, False), "a": (0x1E, False), "s": (0x1F, False), "d": (0x20, False)}
    _SCAN.update({"respawn": (0x53, True), "confirm": (0x1C, False)})  # Delete (E0 53), Enter

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        class KEYBDINPUT(ctypes.Structure):
            _fields_ = [
                ("wVk", wintypes.WORD),
                ("wScan", wintypes.WORD),
                ("dwFlags", wintypes.DWORD),
                ("time", wintypes.DWORD),
                ("dwExtraInfo", ctypes.c_size_t),
            ]

        class MOUSEINPUT(ctypes.Structure):
            _fields_ = [
                ("dx", wintypes.LONG),
                ("dy", wintypes.LONG),
                ("mouseData", wintypes.DWORD),
                ("dwFlags", wintypes.DWORD),
                ("time", wintypes.DWORD),
                ("dwExtraInfo", ctypes.c_size_t),
            ]

        class _U(ctypes.Union):
            _fields_ = [("ki", KEYBDINPUT), ("mi", MOUSEINPUT)]

        class INPUT(ctypes.Structure):
            _fields_ = [("type", wintypes.DWORD), ("u", _U)]

        self._ctypes = ctypes
        self._INPUT = INPUT
        self._KEYBDINPUT = KEYBDINPUT
        self._send_input = ctypes.windll.user32.SendInput  # type: ignore[attr-defined]

    def _key(self, name: str, down: bool) -> None:
        scan, extended = self._SCAN[name]
        flags = 0x0008 | (0 if down else 0x0002) | (0x0001 if extended else 0)  # SCANCODE, KEYUP, EXTENDED
        inp = self._INPUT(type=1)
        inp.u.ki = self._KEYBDINPUT(0, scan, flags, 0, 0)
        if self._send_input(1, self._ctypes.byref(inp), self._ctypes.sizeof(inp)) != 1:
            raise GameError("SendInput refused the key press; run the worker in the same session as the game")

    def send(self, down: Sequence[str], up: Sequence[str]) -> None:
        for name in up:
            self._key(name, False)
        for name in down:
            self._key(name, True)


class XdotoolKeys:
    """Key presses through the ``xdotool`` program (Linux/X11); one process per change of key state."""

    _KEYSYM = {"w": "w", "a": "a", "s": "s", "d": "d", "respawn": "BackSpace", "confirm": "Return"}

    def __init__(self) -> None:
        exe = shutil.which("xdotool")
        if exe is None:
            raise GameError("keyboard control on Linux needs xdotool: sudo apt install xdotool")
        self._exe = exe

    def send(self, down: Sequence[str], up: Sequence[str]) -> None:
        args: list[str] = []
        if up:
            args += ["keyup", *(self._KEYSYM[k] for k in up)]
        if down:
            args += ["keydown", *(self._KEYSYM[k] for k in down)]
        if args:
            subprocess.run([self._exe, *args], check=False, timeout=5.0)


def default_key_sender() -> KeySender:
    """The platform's key sender."""
    if sys.platform == "win32":
        return Win32Keys()
    return XdotoolKeys()


class KeyboardControl:
    """Binary keyboard control (TMRL 0.7.1 mapping); sends only changes of key state."""

    def __init__(self, sender: KeySender | None = None, *, steer_deadzone: float = 0.5) -> None:
        self._sender = sender if sender is not None else default_key_sender()
        self._deadzone = steer_deadzone
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def _apply(self, wanted: set[str]) -> None:
        with self._lock:
            down = sorted(wanted - self._held)
            up = sorted(self._held - wanted)
            if down or up:
                self._sender.send(down, up)
            self._held = wanted

    def set(self, gas: float, brake: float, steer: float) -> None:
        wanted: set[str] = set()
        if clip_unit(gas) > 0.0:
            wanted.add("w")
        if clip_unit(brake) > 0.0:
            wanted.add("s")
        s = clip_unit(steer)
        if s > self._deadzone:
            wanted.add("d")
        elif s < -self._deadzone:
            wanted.add("a")
        self._apply(wanted)

    def _tap(self, key: str, hold_s: float) -> None:
        self._apply(set())
        with self._lock:
            self._sender.send([key], [])
        time.sleep(hold_s)
        with self._lock:
            self._sender.send([], [key])

    def respawn(self, hold_s: float) -> None:
        self._tap("respawn", hold_s)

    def confirm(self) -> None:
        self._tap("confirm", 0.05)

    def release(self) -> None:
        self._apply(set())

    def close(self) -> None:
        self.release()


def make_control(kind: str, *, steer_deadzone: float = 0.5) -> ControlBackend:
    """The control backend for ``kind`` ("gamepad" or "keyboard")."""
    if kind == "gamepad":
        return GamepadControl()
    if kind == "keyboard":
        return KeyboardControl(steer_deadzone=steer_deadzone)
    raise GameError(f"unknown control backend {kind!r}; use 'gamepad' or 'keyboard'")
