"""The three entry points as separate processes against one relay on 127.0.0.1, with a secret and TLS on.

Configuration travels the way users set it: TMRL_* environment variables (secret, TLS, small trainer settings)
and flags (--port, --id). Also the one-line error of a wrong secret (a corrupt checkpoint and a missing reward
file are in test_e2e_run.py, through `tmrl run`).
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

import pytest
from test_e2e_run import free_port, read, wait_no_session, write_track_reward

BIN = Path(sys.executable).parent


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update(
        {
            "TMRL_DATA_DIR": str(data_dir),
            "TMRL_RELAY__SECRET": "e2e-secret-4242",
            "TMRL_RELAY__TLS": "true",
            "TMRL_RELAY__TLS_CERT": str(data_dir / "tls" / "cert.pem"),
            "TMRL_TRAINER__WARMUP_STEPS": "60",
            "TMRL_TRAINER__PUBLISH_EVERY": "10",
            "TMRL_TRAINER__BATCH_SIZE": "32",
            "TMRL_TRAINER__REPLAY_CAPACITY": "10000",
            "TMRL_TRAINER__THREADS": "1",
            "TMRL_RELAY__FLUSH_STEPS": "20",
            "TMRL_ENV__RTGYM__EP_MAX_LENGTH": "100",
            "PYGAME_HIDE_SUPPORT_PROMPT": "1",
        }
    )
    env.update(extra)
    return env


def start(exe: str, env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [str(BIN / exe), *args], stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the relay exited"
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the relay did not listen")


@pytest.mark.timeout(400)
def test_three_entry_points_with_secret_and_tls(tmp_path: Path) -> None:
    write_track_reward(tmp_path)
    port = free_port()
    env = base_env(tmp_path)
    cert = subprocess.run(
        [str(BIN / "tmrl"), "cert", "--dir", str(tmp_path / "tls")], env=env, capture_output=True
    )
    assert cert.returncode == 0, cert.stderr
    server_env = {**env, "TMRL_RELAY__TLS_KEY": str(tmp_path / "tls" / "key.pem")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = start("tmrl-server", server_env, "--port", str(port), log=tmp_path / "server.log")
        procs.append(server)
        wait_port(port, server)
        # One update per sample: the default cap (4) keeps a core busy, which slows the other processes here.
        light = ("--set", "trainer.max_updates_per_step=1")
        procs.append(start("tmrl-trainer", env, "--port", str(port), *light, log=tmp_path / "trainer.log"))
        procs.append(
            start("tmrl-worker", env, "--port", str(port), "--id", "w1", log=tmp_path / "worker.log")
        )
        status_dir = tmp_path / "runs" / "default" / "status"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            trainer, worker = read(status_dir / "trainer.json"), read(status_dir / "worker-w1.json")
            if trainer.get("updates", 0) > 0 and (worker.get("weight_version") or 0) >= 2:
                break
            time.sleep(0.5)
        logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
        assert all(p.poll() is None for p in procs), logs
        assert read(status_dir / "trainer.json")["env_steps"] > 0, logs
        assert read(status_dir / "worker-w1.json")["weight_version"] >= 2, logs

        status = subprocess.run(
            [str(BIN / "tmrl"), "status", "--json", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["workers"] == ["w1"] and doc["trainer"], doc
        assert doc["samples_in"] > 0

        wrong = {**env, "TMRL_RELAY__SECRET": "not-the-secret"}
        res = subprocess.run(
            [str(BIN / "tmrl"), "status", "--port", str(port)], env=wrong, capture_output=True, text=True
        )
        one_line_error(res)
        res = subprocess.run(
            [str(BIN / "tmrl-trainer"), "--port", str(port), "--set", "run.name=other"],
            env=wrong,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # The relay client also logs the refusal as it happens (a log line); the error itself is one line.
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("tmrl-trainer: error: ") and "secret" in last, res.stderr
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in reversed(procs):
            try:
                codes.append(p.wait(90))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                codes.append(p.wait())
    assert codes == [0, 0, 0], {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    for p in procs:
        assert not wait_no_session(p.pid), "processes left behind"
    assert (tmp_path / "runs" / "default" / "checkpoints" / "LATEST").is_file()
