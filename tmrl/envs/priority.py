"""Scheduling priority of the real-time path (Linux): every thread of the worker process and of the game.

On a machine whose cores are busy (the trainer, other workers), the time-step thread and the game process compete
with everything else; a lower nice value lets them run first. On Linux a nice value belongs to each thread (task),
so every task listed in ``/proc/<pid>/task`` is adjusted; threads started later inherit it from their creator.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tmrl.errors import ConfigError, GameError


def adjust_priority(pids: Iterable[int], boost: int) -> None:
    """Lower the nice value of every thread of ``pids`` by ``boost`` (negative: give the priority back).

    Raising priority needs root or CAP_SYS_NICE; without it, a ``GameError`` says so."""
    if boost == 0:
        return
    if sys.platform != "linux":
        raise ConfigError("env.priority_boost is supported on Linux only; set it to 0")
    for pid in pids:
        try:
            tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                nice = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, max(-20, min(19, nice - boost)))
            except ProcessLookupError:
                continue  # the thread ended meanwhile
            except PermissionError:
                raise GameError(
                    f"raising the scheduling priority by {boost} (env.priority_boost) needs root or "
                    "CAP_SYS_NICE (e.g. `sudo setcap cap_sys_nice+ep` on the Python binary); or set it to 0"
                ) from None
