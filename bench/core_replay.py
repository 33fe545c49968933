"""Replay ring benchmarks (issue 2): sampling against TMRL 0.7.1's memories and cpprb, appending, memory.

``figures()`` is called by ``bench/core.py`` (which writes ``bench/results/core.json``); run alone with
``.venv/bin/python -m bench.core_replay`` it writes ``bench/results/core_replay.json``.

Method: the anchors (TMRL 0.7.1's ``MemoryTMLidar`` / ``MemoryTMFull``, cpprb's ``ReplayBuffer``) run in the
anchors venv (``bench/anchors/core_replay.py``) on the same number of stored transitions as ours, right before
ours. Every rate is the best of 5 windows (same code on both sides) because this 2-core machine is shared;
each note adds the rates per CPU second of the measuring process (time spent preempted excluded).
Our sampling fills the preallocated arrays of ``alloc_batch`` (what the trainer's sampler thread does; those
arrays are wrapped once by ``torch.from_numpy``), TMRL's returns torch tensors it collated, cpprb returns numpy.
Our layouts are the env's: LIDAR = speed (1) + lidar (19) x 4 + prev_actions (2, 3); images = speed, gear, rpm +
frames (64, 64) uint8 x 4 + prev_actions (2, 3). TMRL's image memory returns float32 frames, ours uint8.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

import numpy as np

from bench.common import Figure, absolute, run_anchor, speedup, write_results
from tmrl._core import ReplayRing

BATCH = 256
EPISODE = 1000
LIDAR = [
    ("speed", (1,), "float32", 1),
    ("lidar", (19,), "float32", 4),
    ("prev_actions", (2, 3), "float32", 1),
]
IMAGES = [
    ("speed", (1,), "float32", 1),
    ("gear", (1,), "float32", 1),
    ("rpm", (1,), "float32", 1),
    ("frames", (64, 64), "uint8", 4),
    ("prev_actions", (2, 3), "float32", 1),
]


def rate(fn: Callable[[], object], min_time: float, trials: int = 5) -> tuple[float, float]:
    """(wall, cpu): the best calls per wall-clock second over ``trials`` windows of ``min_time / trials`` seconds
    (the window least disturbed by other processes on this shared machine), and calls per CPU second of this
    process over all windows (time spent preempted does not count). Same code on both sides of a comparison."""
    fn()
    best, calls, cpu0 = 0.0, 0, time.process_time()
    for _ in range(trials):
        reps, start = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time / trials and reps >= 2:
                break
        best, calls = max(best, reps / elapsed), calls + reps
    return best, calls / max(time.process_time() - cpu0, 1e-9)


def batch_of(
    comps: list, n: int, start: int, rng: np.random.Generator, frames: np.ndarray | None = None
) -> tuple:
    """Arguments of ``append_batch`` for n steps starting at global step ``start`` (episodes of 1000 steps)."""
    obs = {}
    for name, shape, dtype, _k in comps:
        if dtype == "uint8":
            assert frames is not None and len(frames) >= n
            obs[name] = frames[:n]
        else:
            obs[name] = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    steps = np.arange(start, start + n)
    return (
        obs,
        rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rng.standard_normal(n).astype(np.float32),
        np.zeros(n, bool),
        (steps + 1) % EPISODE == 0,
        steps % EPISODE == 0,
    )


def filled(comps: list, capacity: int, n: int, chunk: int = 1000) -> ReplayRing:
    """A ring holding n transitions of one stream in 1000-step episodes."""
    ring = ReplayRing(capacity, comps, 3, seed=0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (chunk, 64, 64), dtype=np.uint8)
    for start in range(0, n, chunk):
        ring.append_batch(0, *batch_of(comps, min(chunk, n - start), start, rng, frames))
    return ring


def sampling_rate(comps: list, n: int, min_time: float, n_step: int = 1) -> tuple[float, float]:
    """Minibatches per second; with ``n_step`` > 1 of n-step returns (gamma 0.9975, the built-in game's)."""
    ring = filled(comps, 1_000_000, n)
    out = ring.alloc_batch(BATCH, n_step=n_step)
    if n_step == 1:
        return rate(lambda: ring.sample(BATCH, out=out), min_time)
    return rate(lambda: ring.sample(BATCH, out=out, n_step=n_step, gamma=0.9975), min_time)


def append_rate(capacity: int, min_time: float) -> tuple[float, float]:
    """Transitions per second appended in batches of 100 to a full ring (steady state, evicting as it goes)."""
    ring = filled(LIDAR, capacity, capacity + 1000)
    rng = np.random.default_rng(1)
    batches = [batch_of(LIDAR, 100, capacity + 1000 + 100 * j, rng) for j in range(50)]
    state = {"j": 0}

    def append_one() -> None:
        ring.append_batch(1, *batches[state["j"] % len(batches)])
        state["j"] += 1

    wall, cpu = rate(append_one, min_time)
    return 100 * wall, 100 * cpu


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def resident_memory() -> tuple[float, float]:
    """(measured GiB, expected GiB) of a 10^6 LIDAR ring plus a 10^6 image ring, both full."""
    gc.collect()
    before = rss_bytes()
    rings = [
        filled(LIDAR, 1_000_000, 1_000_000, chunk=10_000),
        filled(IMAGES, 1_000_000, 1_000_000, chunk=1000),
    ]
    measured = (rss_bytes() - before) / 2**30
    # per row: components once per step + action (3 floats) + a 24-byte metadata record
    row = sum(
        int(np.prod(s)) * (1 if d == "uint8" else 4) for comps in (LIDAR, IMAGES) for _, s, d, _ in comps
    )
    expected = (row + 2 * (12 + 24)) * 1_000_000 / 2**30
    del rings
    gc.collect()
    return measured, expected


def figures(min_time: float = 2.0, n: int = 100_000) -> list[Figure]:
    """Replay ring figures vs TMRL 0.7.1 and cpprb, measured in this run."""
    a = run_anchor("core_replay.py", str(n), str(n), str(n), str(min_time))
    lidar, lidar_cpu = sampling_rate(LIDAR, n, min_time)
    nstep, nstep_cpu = sampling_rate(LIDAR, n, min_time, n_step=3)
    images, images_cpu = sampling_rate(IMAGES, n, min_time)
    append, append_cpu = append_rate(n, min_time)
    rss, expected = resident_memory()

    def cpu(ours: float, key: str) -> str:
        return (
            f"per CPU second: ours {ours:.4g}, anchor {a[key + '_cpu']:.4g} ({ours / a[key + '_cpu']:.1f}x)"
        )

    stored = f"{n} transitions stored"
    return [
        speedup(
            "replay: sample 256 LIDAR transitions (4-step history)",
            "batches/s",
            lidar,
            a["tmrl_lidar_batches_per_s"],
            "TMRL 0.7.1 MemoryTMLidar",
            100,
            note=f"{stored}; {cpu(lidar_cpu, 'tmrl_lidar_batches_per_s')}",
        ),
        speedup(
            "replay: sample 256 LIDAR transitions (4-step history)",
            "batches/s",
            lidar,
            a["cpprb_lidar_batches_per_s"],
            "cpprb ReplayBuffer (flattened)",
            3,
            note=f"{stored}; cpprb stores obs and next_obs flattened; {cpu(lidar_cpu, 'cpprb_lidar_batches_per_s')}",
        ),
        speedup(
            "replay: sample 256 LIDAR transitions, 3-step returns",
            "batches/s",
            nstep,
            a["cpprb_nstep_lidar_batches_per_s"],
            "cpprb ReplayBuffer Nstep (flattened)",
            2,
            note=f"{stored}; ours sums the rewards when sampling, cpprb when storing; "
            f"{cpu(nstep_cpu, 'cpprb_nstep_lidar_batches_per_s')}",
        ),
        speedup(
            "replay: sample 256 image transitions (4x64x64 history)",
            "batches/s",
            images,
            a["tmrl_full_batches_per_s"],
            "TMRL 0.7.1 MemoryTMFull",
            50,
            note=f"{stored}; TMRL returns float32 frames, ours uint8; {cpu(images_cpu, 'tmrl_full_batches_per_s')}",
        ),
        absolute(
            "replay: append LIDAR transitions in batches of 100 (full ring)",
            "transitions/s",
            append,
            1e6,
            at_most=False,
            anchor=a["tmrl_lidar_append_transitions_per_s"],
            anchor_name="TMRL 0.7.1 MemoryTMLidar",
            note=f"capacity {n}, evicting; {cpu(append_cpu, 'tmrl_lidar_append_transitions_per_s')}",
        ),
        absolute(
            "replay: resident memory of 1e6 LIDAR + 1e6 image transitions",
            "GiB",
            rss,
            24,
            at_most=True,
            note=f"expected {expected:.2f} GiB (each frame / scan stored once)",
        ),
    ]


if __name__ == "__main__":
    write_results("core_replay", figures())
