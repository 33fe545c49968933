"""Anchor for bench/core_replay.py, run in the anchors venv (TMRL 0.7.1, cpprb): replay memory throughput.

Measures TMRL 0.7.1's ``MemoryTMLidar`` and ``MemoryTMFull`` (filled with synthetic samples in their own format:
``(act, obs, rew, terminated, truncated, info)`` with the per-step observation TMRL's sample compressors keep) and
cpprb's ``ReplayBuffer`` holding the same LIDAR transitions flattened (obs and next_obs of 1 + 4*19 + 2*3 floats),
once with one-step transitions and once with its ``Nstep`` option (3 steps: cpprb sums the rewards as it stores).
Prints one JSON line. Does not import our ``tmrl``: here ``tmrl`` is TMRL 0.7.1.

usage: core_replay.py N_LIDAR N_IMAGES N_APPEND_CAPACITY MIN_TIME
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

BATCH = 256
EPISODE = 1000


def rate(fn, min_time: float, trials: int = 5) -> tuple[float, float]:
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


def lidar_samples(rng: np.random.Generator, n: int, start: int = 0) -> list[tuple]:
    """TMRL LIDAR samples as stored by MemoryTMLidar: (act, (speed, lidar), rew, terminated, truncated, info)."""
    out = []
    for i in range(start, start + n):
        end = (i + 1) % EPISODE == 0
        out.append(
            (
                rng.uniform(-1, 1, 3).astype(np.float32),
                (np.array([rng.uniform(0, 300)], np.float32), rng.uniform(0, 400, 19).astype(np.float32)),
                np.float32(rng.standard_normal()),
                False,
                end,
                {},
            )
        )
    return out


def image_samples(rng: np.random.Generator, n: int) -> list[tuple]:
    """MemoryTMFull samples: (act, (speed, gear, rpm, frame uint8 64x64), rew, terminated, truncated, info)."""
    frames = rng.integers(0, 256, size=(256, 64, 64), dtype=np.uint8)
    out = []
    for i in range(n):
        end = (i + 1) % EPISODE == 0
        out.append(
            (
                rng.uniform(-1, 1, 3).astype(np.float32),
                (
                    np.array([rng.uniform(0, 300)], np.float32),
                    np.array([rng.integers(0, 6)], np.float32),
                    np.array([rng.uniform(0, 10000)], np.float32),
                    frames[i % 256].copy(),
                ),
                np.float32(rng.standard_normal()),
                False,
                end,
                {},
            )
        )
    return out


def fill(memory, samples: list[tuple], chunk: int = 1000) -> None:
    from tmrl.networking import Buffer

    for i in range(0, len(samples), chunk):
        buf = Buffer(maxlen=10**9)
        buf.memory = samples[i : i + chunk]
        memory.append(buf)


def tmrl_memory(kind, memory_size: int):
    return kind(
        memory_size=memory_size, batch_size=BATCH, imgs_obs=4, act_buf_len=2, nb_steps=1, device="cpu"
    )


def tmrl_sampling(kind, samples: list[tuple], min_time: float) -> tuple[float, float]:
    """Batches of 256 per second (4-step history + 2 previous actions, collated to torch like TMRL's trainer)."""
    mem = tmrl_memory(kind, 10**6)
    fill(mem, samples)
    return rate(mem.sample, min_time)


def tmrl_append(samples: list[tuple], capacity: int, min_time: float) -> tuple[float, float]:
    """Transitions per second appended to a full MemoryTMLidar in batches of 100 (each append trims its lists)."""
    from tmrl.custom.custom_memories import MemoryTMLidar
    from tmrl.networking import Buffer

    mem = tmrl_memory(MemoryTMLidar, capacity)
    fill(mem, samples[: capacity + 10])
    chunks = []
    for j in range(50):
        buf = Buffer(maxlen=10**9)
        buf.memory = samples[j * 100 : (j + 1) * 100]
        chunks.append(buf)
    state = {"j": 0}

    def append_one() -> None:
        mem.append(chunks[state["j"] % len(chunks)])
        state["j"] += 1

    wall, cpu = rate(append_one, min_time)
    return 100 * wall, 100 * cpu


def cpprb_sampling(rng: np.random.Generator, n: int, min_time: float, n_step: int = 1) -> tuple[float, float]:
    """cpprb holding the same LIDAR transitions flattened: obs = speed + 4x19 LIDAR + 2 previous actions; with
    ``n_step`` > 1 its n-step buffer (rewards summed with gamma 0.9975 when stored)."""
    from cpprb import ReplayBuffer

    dim = 1 + 4 * 19 + 2 * 3
    nstep = (
        {"Nstep": {"size": n_step, "gamma": 0.9975, "rew": "rew", "next": "next_obs"}} if n_step > 1 else {}
    )
    rb = ReplayBuffer(
        n,
        env_dict={
            "obs": {"shape": dim, "dtype": np.float32},
            "act": {"shape": 3, "dtype": np.float32},
            "rew": {"dtype": np.float32},
            "next_obs": {"shape": dim, "dtype": np.float32},
            "done": {"dtype": np.float32},
        },
        **nstep,
    )
    chunk = 10_000
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        rb.add(
            obs=rng.standard_normal((m, dim), dtype=np.float32),
            act=rng.standard_normal((m, 3), dtype=np.float32),
            rew=rng.standard_normal(m, dtype=np.float32),
            next_obs=rng.standard_normal((m, dim), dtype=np.float32),
            done=np.zeros(m, np.float32),
        )
    return rate(lambda: rb.sample(BATCH), min_time)


def main() -> None:
    n_lidar, n_images, n_append, min_time = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    from tmrl.custom.custom_memories import MemoryTMFull, MemoryTMLidar

    rng = np.random.default_rng(0)
    lidar = lidar_samples(rng, max(n_lidar, n_append + 5000))
    measured = {
        "tmrl_lidar_batches_per_s": tmrl_sampling(MemoryTMLidar, lidar[:n_lidar], min_time),
        "tmrl_full_batches_per_s": tmrl_sampling(MemoryTMFull, image_samples(rng, n_images), min_time),
        "tmrl_lidar_append_transitions_per_s": tmrl_append(lidar, n_append, min_time),
        "cpprb_lidar_batches_per_s": cpprb_sampling(rng, n_lidar, min_time),
        "cpprb_nstep_lidar_batches_per_s": cpprb_sampling(rng, n_lidar, min_time, n_step=3),
    }
    res = {k: v[0] for k, v in measured.items()} | {f"{k}_cpu": v[1] for k, v in measured.items()}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
