"""Time-step jitter: the full real-time pipeline on the built-in game vs rtgym's own env, quiet and loaded.

(a) full pipeline: ``tmrl.envs.make_env`` on the built-in game (capture -> LIDAR -> reward) with a torch MLP
    256x256 policy forward in the loop, controls sent to the game;
(a') the same with ``EnvConfig.priority`` = "high" (nice -10) and = "realtime" (SCHED_FIFO for this process's
    threads and the game); Linux, needs root or CAP_SYS_NICE;
(b) rtgym's own env (``real-time-gym-ts-v1``, the same class our env uses) around a trivial interface, with
    default scheduling and with its time-step thread SCHED_FIFO (the floor this machine allows).

All at 20, 50 and 200 Hz, quiet and with both cores loaded by busy subprocesses this benchmark starts and stops
(bounded by a deadline). The interval measured is between consecutive control sends (what the game feels).
Reported: mean / std / p50 / p99 / max of the interval, p99 of |interval - nominal|, time-step timeouts (rtgym's
"time-step timed out" warnings), and CPU share (CPU seconds per wall second of this process, and of the game).

Run: ``.venv/bin/python -m bench.jitter`` (about four minutes). Writes bench/results/jitter.json and jitter.png.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.common import RESULTS, Figure, absolute, write_results
from tmrl.envs.priority import set_priority

RATES_HZ = (20, 50, 200)
BUSY_WORKERS = 2
VARIANTS = ("pipeline", "pipeline_high", "pipeline_realtime", "rtgym_trivial", "rtgym_trivial_realtime")


def capture_offset(time_step: float) -> float:
    """When the observation is captured: rtgym's 0.04 s at 20 Hz (DESIGN.md), else leave ~10 ms for the render."""
    return 0.04 if time_step >= 0.05 else max(0.0, time_step - 0.010)


def steps_for(rate: int, seconds: float) -> int:
    return max(100, int(rate * seconds))


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Busy:
    """Processes spinning on every core until stopped or until their own deadline (never orphaned long)."""

    def __init__(self, workers: int, max_seconds: float) -> None:
        code = (
            "import time\n"
            f"end = time.monotonic() + {max_seconds}\n"
            "x = 0\n"
            "while time.monotonic() < end:\n"
            "    x += 1\n"
        )
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(workers)]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=10)


def stats(times: list[float], nominal: float) -> dict:
    iv = np.diff(np.asarray(times[2:])) * 1e3  # the first steps after a reset race with the timer start
    dev = np.abs(iv - nominal * 1e3)
    return {
        "n": int(iv.size),
        "mean_ms": float(iv.mean()),
        "std_ms": float(iv.std()),
        "p50_ms": float(np.percentile(iv, 50)),
        "p99_ms": float(np.percentile(iv, 99)),
        "max_ms": float(iv.max()),
        "p99_dev_ms": float(np.percentile(dev, 99)),
        "intervals_ms": iv.round(4).tolist(),
    }


class Timed:
    """Counts rtgym's time-step timeouts and CPU time over a block."""

    def __init__(self, game_pid: int | None = None) -> None:
        self.game_pid = game_pid

    def __enter__(self) -> Timed:
        self._warn = warnings.catch_warnings(record=True)
        self.caught = self._warn.__enter__()
        warnings.simplefilter("always")
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.game0 = proc_cpu_seconds(self.game_pid) if self.game_pid else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        self.cpu_share = (time.process_time() - self.cpu0) / wall
        self.game_cpu_share = (proc_cpu_seconds(self.game_pid) - self.game0) / wall if self.game_pid else None
        self._warn.__exit__(*exc)
        self.timeouts = sum("timed out" in str(w.message) for w in self.caught)
        self.loadavg = os.getloadavg()[0]


def run_pipeline(env, policy, rate: int, steps: int) -> dict:
    import torch

    time_step = 1.0 / rate
    env._rt.set_time_step_duration(time_step, 1.0)
    env._rt.set_start_obs_capture(capture_offset(time_step))
    env.interface.control_times = times = []
    names = [c.name for c in env.observation_spec.components]
    gc.collect()  # now, not in the middle of the measured steps
    obs, _ = env.reset()
    times.clear()
    with Timed(env.game.pid) as t:
        for _ in range(steps):
            x = np.concatenate([obs[n].ravel() for n in names]).astype(np.float32)
            with torch.no_grad():
                action = policy(torch.from_numpy(x)).numpy()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.pause()
    env.interface.control_times = None
    return {
        **stats(times, time_step),
        "timeouts": t.timeouts,
        "cpu_share": t.cpu_share,
        "game_cpu_share": t.game_cpu_share,
        "loadavg_1min": t.loadavg,
    }


def run_trivial(rate: int, steps: int, *, realtime: bool = False) -> dict:
    from gymnasium import spaces
    from rtgym import DEFAULT_CONFIG_DICT, RealTimeGymInterface
    from rtgym.envs.real_time_env import RealTimeEnvTS

    times: list[float] = []

    class Trivial(RealTimeGymInterface):
        def send_control(self, control):
            if control is not None:
                times.append(time.perf_counter())

        def reset(self, seed=None, options=None):
            return [np.zeros(1, np.float32)], {}

        def get_obs_rew_terminated_info(self):
            return [np.zeros(1, np.float32)], 0.0, False, {}

        def get_observation_space(self):
            return spaces.Tuple((spaces.Box(-1.0, 1.0, (1,), np.float32),))

        def get_action_space(self):
            return spaces.Box(-1.0, 1.0, (3,), np.float32)

        def get_default_action(self):
            return np.zeros(3, np.float32)

    time_step = 1.0 / rate
    cfg = dict(DEFAULT_CONFIG_DICT)
    cfg.update(
        interface=Trivial,
        time_step_duration=time_step,
        start_obs_capture=capture_offset(time_step),
        time_step_timeout_factor=1.0,
        act_buf_len=2,
        ep_max_length=steps + 10,
        wait_on_done=True,
    )
    env = RealTimeEnvTS(cfg)
    tids = dict(pids=[os.getpid()], timestep_tid=env._at_thread.native_id)
    if realtime:
        set_priority("realtime", **tids)
    try:
        gc.collect()
        env.reset()
        times.clear()
        with Timed() as t:
            for _ in range(steps):
                env.step(np.zeros(3, np.float32))
        env.wait()
    finally:
        if realtime:
            set_priority("normal", **tids)
        env.__del__()  # ends rtgym's time-step thread
    return {
        **stats(times, time_step),
        "timeouts": t.timeouts,
        "cpu_share": t.cpu_share,
        "loadavg_1min": t.loadavg,
    }


def make_policy(in_dim: int):
    import torch

    torch.set_num_threads(1)
    return torch.nn.Sequential(
        torch.nn.Linear(in_dim, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 3),
        torch.nn.Tanh(),
    ).eval()


def can_raise_priority() -> bool:
    """Whether this process may lower its nice value (root or CAP_SYS_NICE)."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice - 1)
    except PermissionError:
        return False
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    return True


def histogram(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(RATES_HZ), 2, figsize=(11, 3.2 * len(RATES_HZ)), squeeze=False)
    for row, rate in enumerate(RATES_HZ):
        for col, load in enumerate(("quiet", "loaded")):
            ax = axes[row][col]
            nominal = 1e3 / rate
            for which, color in zip(
                VARIANTS, ("tab:blue", "tab:green", "tab:red", "tab:orange", "tab:gray"), strict=True
            ):
                r = results[load][str(rate)].get(which)
                if r is None:
                    continue
                dev = np.asarray(r["intervals_ms"]) - nominal
                lim = max(1.0, float(np.percentile(np.abs(dev), 99.5)))
                ax.hist(
                    np.clip(dev, -lim, lim),
                    bins=60,
                    alpha=0.6,
                    color=color,
                    log=True,
                    label=f"{which}: p99 |dev| {r['p99_dev_ms']:.2f} ms, timeouts {r['timeouts']}",
                )
            ax.set_title(f"{rate} Hz, {load}")
            ax.set_xlabel(f"interval - {nominal:.1f} ms [ms]")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--seconds", type=float, default=12.0, help="seconds per (rate, load, env) run (>=100 steps)"
    )
    args = ap.parse_args(argv)
    privileged = can_raise_priority()
    if not privileged:
        print("no root / CAP_SYS_NICE: the priority 'high' and 'realtime' variants are skipped", flush=True)

    from tmrl.envs.config import EnvConfig, RewardConfig
    from tmrl.envs.env import make_env
    from tmrl.envs.reward import Trajectory, save_trajectory
    from tmrl.games.carracing.pilot import track_centerline
    from tmrl.games.config import CarRacingConfig

    seed = 0
    with tempfile.TemporaryDirectory(prefix="tmrl-jitter-") as tmp:
        # The reward trajectory: the track's centre line (what the pilot records), to skip a real-time lap.
        xz = track_centerline(seed)
        pts = np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1)
        reward_path = save_trajectory(Path(tmp, "reward.json"), Trajectory(pts, "carracing", seed))
        # Episodes long enough for every run; the failure countdown is off (the random policy stands still).
        cfg = EnvConfig(reward=RewardConfig(path=reward_path, min_steps=10**9))
        cfg = cfg.model_copy(update={"rtgym": cfg.rtgym.model_copy(update={"ep_max_length": 10**9})})
        env = make_env(cfg, CarRacingConfig(seed=seed))
        results: dict = {"quiet": {}, "loaded": {}}
        try:
            in_dim = sum(int(np.prod(c.policy_shape)) for c in env.observation_spec.components)
            policy = make_policy(in_dim)
            budget = 2 * len(RATES_HZ) * (args.seconds + 5) + 60
            for load in ("quiet", "loaded"):
                busy = Busy(BUSY_WORKERS, budget) if load == "loaded" else None
                try:
                    for rate in RATES_HZ:
                        steps = steps_for(rate, args.seconds)
                        pair = {"rtgym_trivial": run_trivial(rate, steps)}
                        pair["pipeline"] = run_pipeline(env, policy, rate, steps)
                        if privileged:
                            pair["rtgym_trivial_realtime"] = run_trivial(rate, steps, realtime=True)
                            for mode in ("high", "realtime"):
                                env.set_priority(mode)
                                try:
                                    pair[f"pipeline_{mode}"] = run_pipeline(env, policy, rate, steps)
                                finally:
                                    env.set_priority("normal")
                        pair = {k: pair[k] for k in VARIANTS if k in pair}
                        results[load][str(rate)] = pair
                        for which, r in pair.items():
                            print(
                                f"{load:6s} {rate:3d} Hz {which:22s} mean {r['mean_ms']:7.3f} std {r['std_ms']:6.3f} "
                                f"p50 {r['p50_ms']:7.3f} p99 {r['p99_ms']:7.3f} max {r['max_ms']:7.3f} "
                                f"p99|dev| {r['p99_dev_ms']:6.3f} ms  timeouts {r['timeouts']:3d}  "
                                f"cpu {r['cpu_share']:.2f}"
                                + (f" game cpu {r['game_cpu_share']:.2f}" if r.get("game_cpu_share") else ""),
                                flush=True,
                            )
                finally:
                    if busy is not None:
                        busy.stop()
        finally:
            env.close()

    figures: list[Figure] = []
    q20, l50 = results["quiet"]["20"], results["loaded"]["50"]
    for which, label, base in (
        ("pipeline", "pipeline", "rtgym_trivial"),
        ("pipeline_realtime", "pipeline (priority=realtime)", "rtgym_trivial_realtime"),
    ):
        if which not in q20:
            continue
        figures.append(
            absolute(
                f"{label} 20 Hz quiet: p99 |interval - 50 ms|",
                "ms",
                q20[which]["p99_dev_ms"],
                0.5,
                at_most=True,
                anchor=q20[base]["p99_dev_ms"],
                anchor_name=base.replace("_", " "),
                note=f"1-min load average {q20[which]['loadavg_1min']:.1f} on {os.cpu_count()} cores",
            )
        )
        figures.append(
            absolute(
                f"{label} 50 Hz loaded: time-step timeouts",
                "timeouts",
                l50[which]["timeouts"],
                0,
                at_most=True,
                anchor=l50[base]["timeouts"],
                anchor_name=base.replace("_", " "),
                note=f"{l50[which]['n'] + 1} steps; 1-min load average {l50[which]['loadavg_1min']:.1f}",
            )
        )
    summary = {
        load: {
            rate: {which: {k: v for k, v in r.items() if k != "intervals_ms"} for which, r in pair.items()}
            for rate, pair in per_rate.items()
        }
        for load, per_rate in results.items()
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    histogram(results, RESULTS / "jitter.png")
    write_results(
        "jitter",
        figures,
        {
            "conditions": summary,
            "settings": {
                "rates_hz": list(RATES_HZ),
                "seconds_per_run": args.seconds,
                "busy_workers": BUSY_WORKERS,
                "capture_offset_s": {str(r): capture_offset(1.0 / r) for r in RATES_HZ},
                "policy": "torch MLP 256x256, 1 thread",
                "rtgym": "real-time-gym-ts-v1, timeout factor 1.0, action buffer 2",
            },
            "histogram": "bench/results/jitter.png",
        },
    )


if __name__ == "__main__":
    main()
