"""The relay with real processes: kill -9 of a worker mid-batch, and a relay restart mid-run (nothing lost)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tmrl.net.client import ObserverClient, TrainerClient, WorkerClient
from tmrl.net.config import RelayConfig
from tmrl.net.testing import RelayThread

SECRET = "proc-secret-0123456789"
FAST = dict(secret=SECRET, backoff_initial=0.01, backoff_max=0.2, connect_timeout=2.0)
ROOT = Path(__file__).resolve().parent.parent


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tmrl.net.testing", *args, "--secret", SECRET],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 20.0) -> str:
    """Read the child's stdout until a line starting with ``prefix`` (readiness without sleeping)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"{proc.args} never printed {prefix!r}")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def drain(trainer: TrainerClient, samples: int, timeout: float = 30.0) -> list[tuple[dict, dict]]:
    got: list[tuple[dict, dict]] = []
    deadline = time.monotonic() + timeout
    while sum(m["n"] for m, _ in got) < samples and time.monotonic() < deadline:
        got += trainer.poll_batches(64, 0.2)
    return got


def test_kill_9_of_a_worker_mid_batch(procs: list[subprocess.Popen[str]]) -> None:
    with RelayThread(RelayConfig(port=0, **FAST)) as relay:  # type: ignore[arg-type]
        trainer = TrainerClient(relay.config)
        try:
            assert trainer.wait_connected(5)
            # 1500 rows of 64x64 frames: ~6 MB frames, so the kill lands while a batch is on the wire
            victim = spawn("worker", "--port", str(relay.config.port), "--id", "victim", "--rows", "1500")
            procs.append(victim)
            wait_line(victim, "SENT 3")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)

            # a new process with the same worker id is a new incarnation: its batches are not taken as duplicates
            after = spawn(
                "worker", "--port", str(relay.config.port), "--id", "victim", "--rows", "10", "--batches", "5"
            )  # fmt: skip
            procs.append(after)
            done = wait_line(after, "DONE", timeout=30)
            assert int(done.split()[1]) == 50
            after.wait(10)

            st = relay.status()
            got = drain(trainer, st["samples_in"])
            assert sum(m["n"] for m, _ in got) == st["samples_in"] - st["dropped_samples"]
            assert st["protocol_errors"] == 0  # a connection cut mid-frame is a disconnection, not an attack
            keys = [(m["incarnation"], m["seq"]) for m, _ in got]
            assert len(keys) == len(set(keys)) and len({inc for inc, _ in keys}) == 2
            for m, a in got:  # every delivered batch is complete and intact
                assert a["obs.img"].shape == (m["n"], 64, 64)
                assert (a["obs.img"] == m["seq"] % 251).all() and (a["reward"] == m["seq"]).all()
            assert sum(m["n"] for m, _ in got if m["n"] == 10) == 50
            assert ObserverClient(relay.config).status()["workers"] == []
        finally:
            trainer.close()


def test_relay_restart_mid_run_loses_nothing(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    spool = tmp_path / "relay.spool"
    relay = spawn("relay", "--port", "0", "--spool", str(spool))
    procs.append(relay)
    port = int(wait_line(relay, "LISTENING").split()[1])
    cfg = RelayConfig(port=port, **FAST)  # type: ignore[arg-type]
    trainer = TrainerClient(cfg)
    worker = WorkerClient(cfg, "w")
    rows = 20
    try:
        assert trainer.wait_connected(5) and worker.wait_connected(5)
        trainer.publish_weights(1, {"w": np.arange(10, dtype=np.float32)}, {})
        for seq in range(100):
            worker.send_batch({"reward": np.full(rows, seq, np.float32)}, {"n": rows})
        assert worker.flush(10)
        first = drain(trainer, 30 * rows)  # the trainer takes 30+, the relay holds the rest

        relay.send_signal(signal.SIGTERM)
        wait_line(relay, "STOPPED")
        assert relay.wait(10) == 0 and spool.exists()
        for seq in range(100, 150):  # the relay is down: these wait in the worker, unacknowledged
            worker.send_batch({"reward": np.full(rows, seq, np.float32)}, {"n": rows})

        relay2 = spawn("relay", "--port", str(port), "--spool", str(spool))
        procs.append(relay2)
        wait_line(relay2, "LISTENING")
        assert worker.flush(20)
        rest = drain(trainer, 150 * rows - sum(m["n"] for m, _ in first))
        seqs = sorted(m["seq"] for m, _ in first + rest)
        assert seqs == list(range(150)), "every batch exactly once across the restart"
        assert sum(m["n"] for m, _ in first + rest) == worker.stats()["sent_samples"] == 150 * rows

        late = WorkerClient(cfg, "late")  # the restarted relay still knows the latest weights
        try:
            assert late.wait_connected(5)
            deadline = time.monotonic() + 5
            lw = None
            while lw is None and time.monotonic() < deadline:
                lw = late.latest_weights()
                time.sleep(0.01)
            assert lw is not None and lw[0] == 1
        finally:
            late.close()
        st = ObserverClient(cfg).status()
        assert st["dropped_samples"] == 0
    finally:
        worker.close()
        trainer.close()
