"""Training speed: SAC updates per second on this CPU, batch 256, sampling included, ours vs TMRL 0.7.1 and SB3.

Ours: the trainer's ``Learner`` (replay ring + sampler thread + SAC with TMRL's defaults) on synthetic rows, for
the LIDAR MLP (speed + 4 x 19 LIDAR + the last 2 actions, 256 x 256) and the image CNN (TMRL's conv stack on
4 x 64 x 64 uint8 frames + speed, gear, rpm + the last 2 actions). Anchors, in the same run (bench/anchors/
train_sac.py in the anchors venv): TMRL 0.7.1's ``SpinupSacAgent`` sampling from ``MemoryTMLidar`` /
``MemoryTMFull``, and Stable-Baselines3's ``SAC`` with the same network sizes. Everyone runs with the same number of
torch threads (``--threads``, default 1: on this 2-core machine shared with the game, workers and relay, more
OpenMP threads spin and slow everyone down). Targets: >= 2x TMRL and >= 1.5x SB3.

Run: ``.venv/bin/python -m bench.train [--seconds S] [--threads T]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from bench.common import Figure, run_anchor, speedup, write_results
from tmrl.rl.config import ModelConfig, RLConfig, TrainerConfig, preset
from tmrl.rl.learner import Learner
from tmrl.spaces import Component, ObservationSpec

ROWS = 20_000
LIDAR = ObservationSpec(
    (Component("speed", (1,)), Component("lidar", (19,), history=4), Component("prev_actions", (2, 3))), 3
)
IMAGES = ObservationSpec(
    (
        Component("telemetry", (3,)),
        Component("frames", (64, 64), "uint8", history=4),
        Component("prev_actions", (2, 3)),
    ),
    3,
)


def synthetic_rows(spec: ObservationSpec, n: int, episode: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for c in spec.components:
        if c.dtype == "uint8":
            out[f"obs.{c.name}"] = rng.integers(0, 256, (n, *c.shape), dtype=np.uint8)
        else:
            out[f"obs.{c.name}"] = rng.random((n, *c.shape), dtype=np.float32)
    out["action"] = rng.uniform(-1, 1, (n, spec.action_dim)).astype(np.float32)
    out["reward"] = rng.random(n, dtype=np.float32)
    idx = np.arange(n)
    out["first"] = idx % episode == 0
    out["truncated"] = idx % episode == episode - 1
    out["terminated"] = np.zeros(n, dtype=bool)
    return out


def ours(spec: ObservationSpec, seconds: float, threads: int) -> float:
    config = RLConfig(
        algorithm=preset("tmrl-sac"),
        model=ModelConfig(hidden=(256, 256)),  # TMRL's sizes (also our default)
        trainer=TrainerConfig(batch_size=256, replay_capacity=100_000, warmup_steps=0, threads=threads),
    )
    with tempfile.TemporaryDirectory() as tmp:
        learner = Learner(spec, config, tmp, tensorboard=False)
        learner.add_batch(0, synthetic_rows(spec, ROWS))
        for _ in range(5):  # warm-up
            learner.update()
        n, t0 = 0, time.perf_counter()
        while True:
            learner.update()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds and n >= 3:
                break
        learner.close()
    return n / dt


def figures(seconds: float, threads: int) -> list[Figure]:
    # Each anchor measurement is framed by two of ours (same kind) and ours is their mean, so a change of the
    # machine's load during the run (other jobs on the 2 cores) biases the ratios as little as possible.
    spec = {"lidar": LIDAR, "image": IMAGES}
    measured: dict[str, float] = {}
    anchors: dict[str, float] = {}
    for kind in ("lidar", "image"):
        before = ours(spec[kind], seconds, threads)
        anchors.update(run_anchor("train_sac.py", str(seconds), str(threads), kind, timeout=3600))
        after = ours(spec[kind], seconds, threads)
        measured[kind] = (before + after) / 2
        print(
            f"{kind}: ours {before:.2f} / {after:.2f}, anchors {anchors}, load {os.getloadavg()}", flush=True
        )
    figs = []
    for kind, label in (("lidar", "LIDAR MLP"), ("image", "image CNN")):
        note = f"batch 256, sampling included, {threads} torch thread(s)"
        figs.append(
            speedup(f"SAC updates/s, {label}", "updates/s", measured[kind], anchors[f"tmrl_{kind}"],
                    "TMRL 0.7.1", 2.0, note=note)
        )  # fmt: skip
        figs.append(
            speedup(f"SAC updates/s, {label}", "updates/s", measured[kind], anchors[f"sb3_{kind}"],
                    "SB3", 1.5, note=note)
        )  # fmt: skip
    return figs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for ours and the anchors")
    args = parser.parse_args()
    write_results(
        "train", figures(args.seconds, args.threads), {"threads": args.threads, "load": os.getloadavg()}
    )


if __name__ == "__main__":
    main()
