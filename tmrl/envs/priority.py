"""Scheduling priority of the real-time path (Linux only; needs root or CAP_SYS_NICE).

On busy cores (the trainer, other workers, other jobs) the time-step thread, the thread calling ``step`` and the
built-in game compete with everything else, and every millisecond they wait shows up as jitter or a time-step
timeout. Two remedies, chosen by ``EnvConfig.priority``:

- ``"high"``: nice -10 for every thread of this process and of the game (threads started later inherit it);
- ``"realtime"``: ``SCHED_FIFO`` (they preempt every normal task at once): rtgym's time-step thread at 30, the
  game at 20, every other thread of this process at 10 (all of them: a normal thread preempted while holding the
  GIL would stall the real-time ones). Threads and processes they start later inherit it. The kernel's real-time
  throttling (95 % by default) keeps the machine responsive even if one of them spun.

On Linux a nice value or policy belongs to each thread (task), so tasks are listed from ``/proc/<pid>/task``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Literal

from tmrl.errors import ConfigError, GameError

Priority = Literal["normal", "high", "realtime"]
HIGH_NICE = -10
FIFO_TIMESTEP, FIFO_GAME, FIFO_CALLER = 30, 20, 10  # rtgym's time-step thread, the game, the rest

_DENIED = (
    "env.priority = {mode!r} needs root or CAP_SYS_NICE (e.g. `sudo setcap cap_sys_nice+ep` on the Python "
    "binary); or set env.priority = 'normal'"
)


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _set(tid: int, policy: int, rt_priority: int, nice: int, mode: str) -> None:
    try:
        os.sched_setscheduler(tid, policy, os.sched_param(rt_priority))
        if policy == os.SCHED_OTHER:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except ProcessLookupError:
        pass  # the thread ended meanwhile
    except PermissionError:
        raise GameError(_DENIED.format(mode=mode)) from None


def set_priority(mode: Priority, *, pids: Iterable[int], timestep_tid: int | None) -> None:
    """Apply ``mode`` to every thread of ``pids`` (this process first, then the game's).

    ``"normal"`` puts them all back to the default policy and nice 0."""
    if sys.platform != "linux":
        if mode == "normal":
            return
        raise ConfigError(f"env.priority = {mode!r} is supported on Linux only; set it to 'normal'")
    pids = list(pids)
    if mode == "realtime":
        own, *games = pids
        for pid in games:
            for tid in _tasks(pid):
                _set(tid, os.SCHED_FIFO, FIFO_GAME, 0, mode)
        # Every thread of this process, not only the two that matter: a normal thread preempted while it holds
        # the GIL (the telemetry reader, a network client) would stall the real-time ones behind it.
        for tid in _tasks(own):
            _set(tid, os.SCHED_FIFO, FIFO_CALLER, 0, mode)
        if timestep_tid is not None:
            _set(timestep_tid, os.SCHED_FIFO, FIFO_TIMESTEP, 0, mode)
        return
    nice = HIGH_NICE if mode == "high" else 0
    for pid in pids:
        for tid in _tasks(pid):
            _set(tid, os.SCHED_OTHER, 0, nice, mode)
