"""`tmrl run` end to end: relay + trainer + a worker with the real built-in game, twice (the second resumes).

Small settings (warm-up 100 steps, publish every 20 updates) so that within about half a minute samples reach the
trainer, the worker receives new weights and a checkpoint is written. The supervisor is started in its own
session; afterwards no process of that session may remain. Also: the one-line errors of `tmrl run`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SMALL = [
    "--set", "trainer.warmup_steps=100",
    "--set", "trainer.publish_every=20",
    "--set", "trainer.checkpoint_every=300",
    "--set", "trainer.batch_size=64",
    "--set", "trainer.replay_capacity=20000",
    "--set", "trainer.threads=1",
    "--set", "relay.flush_steps=20",
    "--set", "relay.flush_seconds=0.5",
    "--set", "run.status_interval_s=0.5",
    "--set", "run.stop_timeout_s=60",
    "--set", "env.rtgym.ep_max_length=150",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_track_reward(data_dir: Path, seed: int = 0) -> Path:
    """The built-in game's track centre line as its reward trajectory (instead of a minute-long pilot lap)."""
    from tmrl.envs.reward import Trajectory, save_trajectory
    from tmrl.games.carracing.pilot import track_centerline

    xz = track_centerline(seed)
    xz = np.concatenate([xz, xz[:1]])
    points = np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1)
    return save_trajectory(
        data_dir / "rewards" / f"carracing-seed{seed}.json", Trajectory(points, "carracing", seed)
    )


def session_processes(sid: int) -> list[str]:
    """Processes still alive in session ``sid`` (zombies excluded), as "pid cmd" strings."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            alive.append(f"{entry.name} {cmd}")
    return alive


def wait_no_session(sid: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = session_processes(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes(sid)
    return left


def tmrl(data_dir: Path, *args: str, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    return subprocess.run(
        [sys.executable, "-m", "tmrl.cli.main", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kw,
    )


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_until(
    data_dir: Path, port: int, ready, sig: int, timeout: float = 180.0
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`tmrl run` in its own session until ``ready(run_dir)`` holds, then ``sig`` (Ctrl-C or SIGTERM) stops it.

    Returns its result and the processes of its session still alive afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    cmd = [sys.executable, "-m", "tmrl.cli.main", "run", "--data-dir", str(data_dir), "--name", "e2e"]
    cmd += ["--port", str(port), "--workers", "1", "--no-live", *SMALL]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    run_dir = data_dir / "runs" / "e2e"
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and not ready(run_dir):
        time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"tmrl run did not stop after {signal.Signals(sig).name}:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wait_no_session(proc.pid)


def logs_of(run_dir: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((run_dir / "logs").glob("*.log"))
    )


@pytest.mark.timeout(500)
def test_run_trains_checkpoints_and_resumes(tmp_path: Path) -> None:
    write_track_reward(tmp_path)
    run_dir = tmp_path / "runs" / "e2e"

    killed: list[int] = []

    def trained(run_dir: Path) -> bool:
        trainer, worker = (
            read(run_dir / "status" / "trainer.json"),
            read(run_dir / "status" / "worker-0.json"),
        )
        version = worker.get("weight_version") or 0
        if not killed:
            # Once trained, the worker is killed with SIGKILL: the supervisor restarts it.
            if trainer.get("updates", 0) > 0 and worker.get("episodes", 0) >= 1 and version >= 3:
                killed.append(worker["pid"])
                os.kill(worker["pid"], signal.SIGKILL)
            return False
        return worker.get("pid") not in (None, killed[0]) and version >= 3

    first, left = run_until(tmp_path, free_port(), trained, signal.SIGINT)
    assert killed and "worker-0 crashed (exit code -9)" in first.stderr, first.stderr
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr}\n{logs_of(run_dir)}"
    assert not left, f"processes left behind: {left}"
    assert "Traceback" not in first.stderr
    trainer = read(run_dir / "status" / "trainer.json")
    worker = read(run_dir / "status" / "worker-0.json")
    assert trainer["env_steps"] > 100, trainer  # samples reached the trainer
    assert trainer["updates"] > 0, trainer
    assert worker["pid"] != killed[0] and worker["samples"] > 0, worker  # the restarted worker
    assert worker["weight_version"] >= 3, worker  # new weights reached the worker while it ran
    assert (run_dir / "checkpoints" / "LATEST").is_file()  # written on Ctrl-C
    assert (run_dir / "weights" / "actor.safetensors").is_file()
    assert (run_dir / "config.toml").is_file()
    assert "stopped;" in first.stdout

    def progressed(run_dir: Path) -> bool:
        again = read(run_dir / "status" / "trainer.json")
        fresh_samples = again.get("env_steps", 0) > trainer["env_steps"] + 20
        resumed = "resumed" in (run_dir / "logs" / "trainer.log").read_text()
        return resumed and fresh_samples and again.get("updates", 0) > trainer["updates"] + 20

    # Second run: resumes; then the supervisor is killed with SIGKILL. Its children notice their parent is gone
    # (parent-death signal / watch), stop in order by themselves (the trainer still checkpoints), and the games
    # started by the worker follow: nothing is left behind.
    second, left = run_until(tmp_path, free_port(), progressed, signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL
    assert not left, f"processes left behind after kill -9 of tmrl run: {left}"
    trainer_log = (run_dir / "logs" / "trainer.log").read_text()
    assert f"resumed at {trainer['updates']} updates" in trainer_log, logs_of(run_dir)
    assert trainer_log.count("stopped at") == 2, logs_of(run_dir)  # the checkpoint on the way out
    again = read(run_dir / "status" / "trainer.json")
    assert again["updates"] > trainer["updates"], (again, trainer, logs_of(run_dir))
    assert again["env_steps"] > trainer["env_steps"], (again, trainer, logs_of(run_dir))
    assert again["weight_version"] > trainer["weight_version"]


def test_run_reports_a_failing_role_in_one_line(tmp_path: Path) -> None:
    write_track_reward(tmp_path)
    ckpt = tmp_path / "runs" / "e2e" / "checkpoints"
    (ckpt / "ckpt-7").mkdir(parents=True)
    (ckpt / "ckpt-7" / "state.json").write_text("{corrupt")
    (ckpt / "LATEST").write_text("ckpt-7")
    res, left = run_until(tmp_path, free_port(), lambda _: False, signal.SIGINT, timeout=120)
    assert res.returncode == 2, res.stderr
    assert not left, f"processes left behind: {left}"
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("tmrl: error: the trainer failed (exit code 2): checkpoint "), res.stderr
    assert "ckpt-7" in last and "trainer.log" in last


def test_run_port_in_use_is_one_line(tmp_path: Path) -> None:
    write_track_reward(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmrl(tmp_path, "run", "--port", str(port), "--no-live")
        server = tmrl(tmp_path, "server", "--port", str(port))
    for res in (out, server):
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
        assert "already in use" in res.stderr and str(port) in res.stderr


def test_run_missing_reward_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    out = tmrl(
        tmp_path, "run", "--port", str(free_port()), "--no-live", "--set", f'env.reward.path="{missing}"'
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert str(missing) in out.stderr and "record-reward" in out.stderr
