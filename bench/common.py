"""Shared plumbing for the benchmarks: the anchors virtualenv, figures, the results table and JSON.

TMRL 0.7.1's import package is also called ``tmrl``, so the anchors (TMRL 0.7.1, tlspyo, cpprb,
stable-baselines3) live in their own virtualenv, ``bench/.venv-anchors``, created on first use and measured in a
subprocess. That venv sees the packages of our ``.venv`` (torch, numpy, gymnasium, ...) through a ``.pth`` line, so
torch is not downloaded twice; its own site-packages come first, so ``import tmrl`` there is TMRL 0.7.1.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ANCHORS_VENV = ROOT / "bench" / ".venv-anchors"
ANCHOR_PACKAGES = {
    # TMRL's wheel lists pywin32; its real dependencies come from our venv or the list below.
    "tmrl": ["--no-deps", "tmrl==0.7.1"],
    "others": ["tlspyo==0.3.0", "cpprb", "stable-baselines3", "pandas", "pyyaml", "requests", "chardet"],
}

# TMRL 0.7.1 reads ~/TmrlData/config/config.json at import; the anchors run with HOME pointing at a temporary
# folder holding this file (TMRL's documented keys and defaults), so nothing is downloaded and nothing of the
# user's is touched.
TMRL_CONFIG: dict = {
    "RUN_NAME": "bench",
    "RESET_TRAINING": True,
    "BUFFERS_MAXLEN": 500000,
    "RW_MAX_SAMPLES_PER_EPISODE": 1000,
    "CUDA_TRAINING": False,
    "CUDA_INFERENCE": False,
    "VIRTUAL_GAMEPAD": False,
    "DCAC": False,
    "LOCALHOST_WORKER": True,
    "LOCALHOST_TRAINER": True,
    "PUBLIC_IP_SERVER": "0.0.0.0",
    "PASSWORD": "bench-password",
    "TLS": False,
    "TLS_HOSTNAME": "default",
    "TLS_CREDENTIALS_DIRECTORY": "",
    "NB_WORKERS": -1,
    "WANDB_PROJECT": "tmrl",
    "WANDB_ENTITY": "tmrl",
    "WANDB_KEY": "none",
    "PORT": 55555,
    "LOCAL_PORT_SERVER": 55556,
    "LOCAL_PORT_TRAINER": 55557,
    "LOCAL_PORT_WORKER": 55558,
    "BUFFER_SIZE": 536870912,
    "HEADER_SIZE": 12,
    "SOCKET_TIMEOUT_CONNECT_TRAINER": 300.0,
    "SOCKET_TIMEOUT_ACCEPT_TRAINER": 300.0,
    "SOCKET_TIMEOUT_CONNECT_ROLLOUT": 300.0,
    "SOCKET_TIMEOUT_ACCEPT_ROLLOUT": 300.0,
    "SOCKET_TIMEOUT_COMMUNICATE": 30.0,
    "SELECT_TIMEOUT_OUTBOUND": 30.0,
    "ACK_TIMEOUT_WORKER_TO_SERVER": 300.0,
    "ACK_TIMEOUT_TRAINER_TO_SERVER": 300.0,
    "ACK_TIMEOUT_SERVER_TO_WORKER": 300.0,
    "ACK_TIMEOUT_SERVER_TO_TRAINER": 7200.0,
    "RECV_TIMEOUT_TRAINER_FROM_SERVER": 7200.0,
    "RECV_TIMEOUT_WORKER_FROM_SERVER": 600.0,
    "WAIT_BEFORE_RECONNECTION": 10.0,
    "LOOP_SLEEP_TIME": 1.0,
    "MAX_EPOCHS": 10000,
    "ROUNDS_PER_EPOCH": 100,
    "TRAINING_STEPS_PER_ROUND": 200,
    "MAX_TRAINING_STEPS_PER_ENVIRONMENT_STEP": 4.0,
    "ENVIRONMENT_STEPS_BEFORE_TRAINING": 1000,
    "UPDATE_MODEL_INTERVAL": 200,
    "UPDATE_BUFFER_INTERVAL": 200,
    "SAVE_MODEL_EVERY": 0,
    "MEMORY_SIZE": 1000000,
    "BATCH_SIZE": 256,
    "ALG": {
        "ALGORITHM": "SAC",
        "LEARN_ENTROPY_COEF": False,
        "LR_ACTOR": 0.00001,
        "LR_CRITIC": 0.00005,
        "LR_ENTROPY": 0.0003,
        "GAMMA": 0.995,
        "POLYAK": 0.995,
        "TARGET_ENTROPY": -0.5,
        "ALPHA": 0.01,
        "REDQ_N": 10,
        "REDQ_M": 2,
        "REDQ_Q_UPDATES_PER_POLICY_UPDATE": 20,
        "OPTIMIZER_ACTOR": "adam",
        "OPTIMIZER_CRITIC": "adam",
        "BETAS_ACTOR": [0.997, 0.997],
        "BETAS_CRITIC": [0.997, 0.997],
        "L2_ACTOR": 0.0,
        "L2_CRITIC": 0.0,
    },
    "ENV": {
        "RTGYM_INTERFACE": "TM20LIDAR",
        "WINDOW_WIDTH": 958,
        "WINDOW_HEIGHT": 488,
        "SLEEP_TIME_AT_RESET": 1.5,
        "IMG_HIST_LEN": 4,
        "RTGYM_CONFIG": {
            "time_step_duration": 0.05,
            "start_obs_capture": 0.04,
            "time_step_timeout_factor": 1.0,
            "act_buf_len": 2,
            "benchmark": False,
            "wait_on_done": True,
            "ep_max_length": 1000,
        },
        "REWARD_CONFIG": {
            "END_OF_TRACK": 100.0,
            "CONSTANT_PENALTY": 0.0,
            "CHECK_FORWARD": 500,
            "CHECK_BACKWARD": 10,
            "FAILURE_COUNTDOWN": 10,
            "MIN_STEPS": 70,
            "MAX_STRAY": 100.0,
        },
    },
    "__VERSION__": "0.6.0",
}


@dataclass
class Figure:
    """One benchmark figure against its anchor. ``higher_is_better`` decides how ``ratio`` reads."""

    name: str
    unit: str
    ours: float
    anchor: float | None
    anchor_name: str
    target: str
    met: bool
    ratio: float | None = None
    note: str = ""


def speedup(
    name: str,
    unit: str,
    ours: float,
    anchor: float,
    anchor_name: str,
    min_ratio: float,
    *,
    higher_is_better: bool = True,
    note: str = "",
) -> Figure:
    """A figure whose target is 'ours is at least ``min_ratio`` times better than the anchor'."""
    ratio = ours / anchor if higher_is_better else anchor / ours
    return Figure(
        name,
        unit,
        ours,
        anchor,
        anchor_name,
        f">= {min_ratio:g}x {anchor_name}",
        ratio >= min_ratio,
        ratio,
        note,
    )


def absolute(
    name: str,
    unit: str,
    ours: float,
    limit: float,
    *,
    at_most: bool,
    anchor: float | None = None,
    anchor_name: str = "",
    note: str = "",
) -> Figure:
    """A figure whose target is an absolute bound (``<= limit`` when ``at_most``, else ``>= limit``)."""
    met = ours <= limit if at_most else ours >= limit
    ratio = None if anchor is None or ours == 0 else anchor / ours if at_most else ours / anchor
    return Figure(
        name,
        unit,
        ours,
        anchor,
        anchor_name,
        f"{'<=' if at_most else '>='} {limit:g} {unit}",
        met,
        ratio,
        note,
    )


def write_results(bench: str, figures: Sequence[Figure], extra: dict | None = None) -> Path:
    """Print the table and write ``bench/results/<bench>.json``."""
    print_table(bench, figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{bench}.json"
    doc = {
        "bench": bench,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "figures": [asdict(f) for f in figures],
        **(extra or {}),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def print_table(title: str, figures: Sequence[Figure]) -> None:
    rows = [("figure", "ours", "anchor", "ratio", "target", "met")]
    for f in figures:
        rows.append(
            (
                f"{f.name} [{f.unit}]",
                f"{f.ours:.4g}",
                "-" if f.anchor is None else f"{f.anchor:.4g} ({f.anchor_name})",
                "-" if f.ratio is None else f"{f.ratio:.1f}x",
                f.target,
                "yes" if f.met else "NO",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n== {title} ==")
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def anchors_python() -> Path:
    """The anchors venv's interpreter, creating and filling the venv on first use (idempotent)."""
    py = ANCHORS_VENV / "bin" / "python"
    stamp = ANCHORS_VENV / ".installed"
    if stamp.exists():
        return py
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANCHORS_VENV)], check=True)
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Reuse our venv's heavy packages (torch, numpy, gymnasium...) after the anchors' own site-packages.
    Path(site, "zz_tmrl_bench_shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *ANCHOR_PACKAGES["others"]], check=True)
    subprocess.run([*pip, *ANCHOR_PACKAGES["tmrl"]], check=True)
    stamp.write_text("ok\n")
    return py


def run_anchor(script: str, *args: str, timeout: float = 1800) -> dict:
    """Run ``script`` (a path under bench/anchors/) in the anchors venv and return the JSON it prints last.

    HOME points at a fresh temporary folder holding TMRL's config.json, so TMRL 0.7.1 imports offline.
    """
    py = anchors_python()
    with tempfile.TemporaryDirectory(prefix="tmrl-anchor-home-") as home:
        cfg_dir = Path(home, "TmrlData", "config")
        cfg_dir.mkdir(parents=True)
        (cfg_dir / "config.json").write_text(json.dumps(TMRL_CONFIG, indent=2))
        for sub in ("weights", "checkpoints", "dataset", "reward"):
            Path(home, "TmrlData", sub).mkdir()
        env = {**os.environ, "HOME": home, "PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}
        env.pop("VIRTUAL_ENV", None)
        proc = subprocess.run(
            [str(py), str(ROOT / "bench" / "anchors" / script), *args],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"anchor {script} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timeit(fn, *, min_time: float = 1.0, min_reps: int = 5) -> float:
    """Median-free simple timer: seconds per call of ``fn`` over at least ``min_time`` seconds."""
    fn()  # warm-up
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and reps >= min_reps:
            return elapsed / reps
