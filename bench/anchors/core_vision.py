"""Anchor for bench/core.py, run in the anchors venv: TMRL 0.7.1's LIDAR and OpenCV's resize + cvtColor.

Reads the benchmark frames from the .npy files bench/core.py wrote (``np.load`` without pickle), so both sides see
identical pixels, and prints one JSON line of seconds per call (best round). Does not import our ``tmrl``: here
``tmrl`` is TMRL 0.7.1.

usage: core_vision.py FRAMES_DIR MIN_TIME
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def best_time(fn, min_time: float, rounds: int = 5) -> float:
    """Seconds per call: the best of ``rounds`` rounds of about ``min_time / rounds`` seconds each."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        reps, start = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time / rounds and reps >= 3:
                break
        best = min(best, elapsed / reps)
    return best


def main() -> None:
    frames_dir, min_time = Path(sys.argv[1]), float(sys.argv[2])
    from tmrl.custom.tm.utils.tools import Lidar  # TMRL 0.7.1

    out: dict[str, float | list[float]] = {}
    for name in ("tm_like", "no_hit"):
        bgr = np.load(
            frames_dir / f"lidar_{name}.npy", allow_pickle=False
        )  # 488 x 958 x 3 (TMRL: 3 channels)
        lidar = Lidar(bgr)
        out[f"lidar_{name}_distances"] = [float(x) for x in lidar.lidar_20(bgr)]
        out[f"lidar_{name}_s"] = best_time(lambda lidar=lidar, bgr=bgr: lidar.lidar_20(bgr), min_time)

    capture = np.load(frames_dir / "capture.npy", allow_pickle=False)  # 128 x 256 x 4 BGRA
    ring = np.zeros((4, 64, 64), np.uint8)
    for interp, flag in (("area", cv2.INTER_AREA), ("bilinear", cv2.INTER_LINEAR)):

        def resize_then_gray(flag=flag) -> None:
            ring[0] = cv2.cvtColor(cv2.resize(capture, (64, 64), interpolation=flag), cv2.COLOR_BGRA2GRAY)

        def gray_then_resize(flag=flag) -> None:
            ring[0] = cv2.resize(cv2.cvtColor(capture, cv2.COLOR_BGRA2GRAY), (64, 64), interpolation=flag)

        out[f"cv_{interp}_resize_gray_s"] = best_time(resize_then_gray, min_time)
        out[f"cv_{interp}_gray_resize_s"] = best_time(gray_then_resize, min_time)
    out["cv_threads"] = float(cv2.getNumThreads())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
