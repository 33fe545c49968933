"""Relay benchmark: ours vs tlspyo 0.3.0 (TMRL 0.7.1's transport) on loopback, in one run.

* samples/s and MB/s relayed from 1, 8 and 32 workers to one trainer, LIDAR batches and image batches
  (100 steps per batch, the worker's default flush; image = 64x64 grayscale frames);
* latency to deliver 2 MB of weights to 32 workers (publish call -> the last worker holds the decoded arrays);
* relay memory bounded: workers push twice the queue budget while no trainer is connected.

Our relay runs as its own process, the trainer in this process, workers in 2 processes (2 cores: keep the load
where it belongs); tlspyo runs in the anchors venv the way TMRL uses it. ``--quick`` runs a smaller grid.

    .venv/bin/python -m bench.relay [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, Figure, absolute, run_anchor, speedup, write_results
from tmrl.net.client import ObserverClient, TrainerClient, WorkerClient
from tmrl.net.config import RelayConfig

SECRET = "bench-relay-secret"
WORKER_PROCS = 2
WEIGHT_PROCS = 4  # the 32 weight listeners run in 4 processes (a real worker is one process, one client)
QUEUE_MB = 256


def make_batch(kind: str, n: int = 100) -> dict[str, np.ndarray]:
    """The batch layout of a worker (ReplayRing.append_batch columns); identical in the tlspyo anchor."""
    rng = np.random.default_rng(0)
    out = {
        "obs.speed": rng.random((n, 1), dtype=np.float32),
        "action": rng.random((n, 3), dtype=np.float32),
        "reward": rng.random(n, dtype=np.float32),
        "terminated": np.zeros(n, bool),
        "truncated": np.zeros(n, bool),
        "first": np.zeros(n, bool),
    }
    if kind == "lidar":
        out["obs.lidar"] = rng.random((n, 19), dtype=np.float32)
        out["obs.prev_act"] = rng.random((n, 6), dtype=np.float32)
    else:
        out["obs.gear"] = rng.random((n, 1), dtype=np.float32)
        out["obs.rpm"] = rng.random((n, 1), dtype=np.float32)
        out["obs.img"] = rng.integers(0, 255, (n, 64, 64), dtype=np.uint8)
    return out


# -- child processes ------------------------------------------------------------------------------------------


def _child_send(args: argparse.Namespace) -> None:
    """Worker process: connect ``ids``, print READY, wait for GO on stdin, send round-robin, flush, print DONE."""
    cfg = RelayConfig(port=args.port, secret=SECRET, max_unacked_batches=1 << 20, max_unacked_bytes=2**30)
    clients = [WorkerClient(cfg, i) for i in args.ids.split(",")]
    for c in clients:
        assert c.wait_connected(30), "worker could not connect"
    batch = make_batch(args.kind)
    meta = {"n": 100, "policy_version": 0}
    print("READY", flush=True)
    sys.stdin.readline()
    for _ in range(args.batches):
        for c in clients:
            c.send_batch(batch, meta)
    ok = all(c.flush(120) for c in clients)
    print(f"DONE {int(ok)}", flush=True)
    for c in clients:
        c.close()


def _child_weights(args: argparse.Namespace) -> None:
    """Weights listeners: one thread per worker client; prints ``GOT v t`` once all of them hold version v."""
    cfg = RelayConfig(port=args.port, secret=SECRET)
    clients = [WorkerClient(cfg, i) for i in args.ids.split(",")]
    for c in clients:
        assert c.wait_connected(30)
    got: dict[int, list[float]] = {}
    lock = threading.Lock()

    def listen(c: WorkerClient) -> None:
        while True:
            if not c.wait_weights(60):
                return
            lw = c.latest_weights()
            if lw is None:
                continue
            t = time.monotonic()
            with lock:
                ts = got.setdefault(lw[0], [])
                ts.append(t)
                if len(ts) == len(clients):
                    print(f"GOT {lw[0]} {max(ts)!r}", flush=True)
                    if lw[0] == args.last:
                        return

    threads = [threading.Thread(target=listen, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    print("READY", flush=True)
    for t in threads:
        t.join(120)
    for c in clients:
        c.close()


# -- parent side ------------------------------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.relay", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _line(proc: subprocess.Popen[str], prefix: str, timeout: float = 120) -> str:
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
    raise RuntimeError(f"{proc.args} did not print {prefix!r}")


class Relay:
    """Our relay as a separate process (its RSS is measured from /proc)."""

    def __init__(self, queue_mb: int = QUEUE_MB) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tmrl.net.testing", "relay", "--port", "0", "--secret", SECRET,
             "--queue-mb", str(queue_mb)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        self.port = int(_line(self.proc, "LISTENING", 30).split()[1])
        self.config = RelayConfig(port=self.port, secret=SECRET)

    def rss_mb(self, key: str = "VmHWM") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _split(ids: list[str], parts: int) -> list[list[str]]:
    return [ids[i::parts] for i in range(parts) if ids[i::parts]]


def ours_throughput(relay: Relay, kind: str, workers: int, batches_per_worker: int) -> dict:
    trainer = TrainerClient(relay.config, "bench-trainer")
    assert trainer.wait_connected(10)
    ids = [f"{kind}-{workers}-{i}" for i in range(workers)]
    procs = [
        _spawn("_send", "--port", str(relay.port), "--ids", ",".join(g), "--kind", kind,
               "--batches", str(batches_per_worker))
        for g in _split(ids, WORKER_PROCS)
    ]  # fmt: skip
    try:
        for p in procs:
            _line(p, "READY")
        total = workers * batches_per_worker
        received = samples = nbytes = 0
        dropped0 = ObserverClient(relay.config).status()["dropped_batches"]
        t0 = t_last = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("GO\n")
            p.stdin.flush()
        deadline = t0 + 300
        dropped = 0
        while received + dropped < total and time.monotonic() < deadline:
            got = trainer.poll_batches(4096, 0.05)
            for meta, arrays in got:
                received += 1
                samples += meta["n"]
                nbytes += sum(a.nbytes for a in arrays.values())
                t_last = time.monotonic()
            if not got:  # idle: did the relay drop some (queue budget full)? they will never arrive
                dropped = ObserverClient(relay.config).status()["dropped_batches"] - dropped0
        for p in procs:
            _line(p, "DONE")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        trainer.close()
    elapsed = max(t_last - t0, 1e-9)
    return {
        "workers": workers,
        "kind": kind,
        "batches_sent": total,
        "batches_received": received,
        "batches_dropped_by_relay": dropped,
        "samples_per_s": samples / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
        "elapsed_s": elapsed,
    }


def ours_weights(relay: Relay, workers: int, mb: float, reps: int) -> dict:
    trainer = TrainerClient(relay.config, "bench-trainer")
    assert trainer.wait_connected(10)
    ids = [f"wl-{i}" for i in range(workers)]
    groups = _split(ids, WEIGHT_PROCS)
    procs = [
        _spawn(
            "_weights", "--port", str(relay.port), "--ids", ",".join(g), "--last", str(reps + 1)
        )  # version 1: untimed warm-up
        for g in groups
    ]
    lat = []
    try:
        for p in procs:
            _line(p, "READY")
        n_floats = int(mb * 1e6 / 4)
        # a 2 MB policy as several tensors, like a real state dict
        shapes = {
            "pi.l1.w": n_floats // 2,
            "pi.l2.w": n_floats // 4,
            "pi.l3.w": n_floats - 3 * (n_floats // 4),
        }
        for v in range(1, reps + 2):
            arrays = {k: np.full(n, v, np.float32) for k, n in shapes.items()}
            t0 = time.monotonic()
            trainer.publish_weights(v, arrays, {"step": v})
            t_all = max(float(_line(p, f"GOT {v} ").split()[2]) for p in procs)
            if v > 1:  # version 1 is a warm-up, as the anchor's version 0
                lat.append((t_all - t0) * 1e3)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        trainer.close()
    return {"workers": workers, "mb": mb, "latency_ms": lat, "median_ms": statistics.median(lat)}


def ours_memory(relay: Relay) -> dict:
    """No trainer: 2x the queue budget of image batches; the relay must drop (counted) and stay bounded."""
    batch_bytes = sum(a.nbytes for a in make_batch("image").values())
    batches = int(2 * QUEUE_MB * 2**20 / batch_bytes)
    procs = [
        _spawn("_send", "--port", str(relay.port), "--ids", f"mem-{i}", "--kind", "image",
               "--batches", str(batches // WORKER_PROCS))
        for i in range(WORKER_PROCS)
    ]  # fmt: skip
    try:
        for p in procs:
            _line(p, "READY")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("GO\n")
            p.stdin.flush()
        for p in procs:
            _line(p, "DONE")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    st = ObserverClient(relay.config).status()
    return {
        "sent_mb": batches * batch_bytes / 2**20,
        "queue_budget_mb": QUEUE_MB,
        "queue_mb": st["queue_bytes"] / 2**20,
        "dropped_batches": st["dropped_batches"],
        "relay_rss_peak_mb": relay.rss_mb("VmHWM"),
    }


def anchor(*args: str) -> dict:
    """Run the tlspyo anchor (one retry: its fixed-port processes occasionally fail to start)."""
    try:
        return run_anchor("relay_tlspyo.py", *args, timeout=400)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"anchor failed once ({str(exc)[-300:]}); retrying", flush=True)
        return run_anchor("relay_tlspyo.py", *args, timeout=400)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller grid (1 and 8 workers)")
    sub = ap.add_subparsers(dest="child")
    s = sub.add_parser("_send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ids", required=True)
    s.add_argument("--kind", default="lidar")
    s.add_argument("--batches", type=int, default=100)
    w = sub.add_parser("_weights")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--ids", required=True)
    w.add_argument("--last", type=int, required=True)
    args = ap.parse_args(argv)
    if args.child == "_send":
        return _child_send(args)
    if args.child == "_weights":
        return _child_weights(args)

    counts = [1, 8] if args.quick else [1, 8, 32]
    # total batches per configuration (split between workers): ~250 MB of LIDAR, ~830 MB of images for ours;
    # tlspyo gets fewer (it is slower) and a deadline.
    ours_total = {"lidar": 20000, "image": 2000}
    anchor_total = {"lidar": 2000, "image": 240}
    figures: list[Figure] = []
    # the machine is shared: record its load (1-minute average) around the run, next to the figures
    extra: dict = {"ours": [], "tlspyo": [], "load_average_1min": {"start": os.getloadavg()[0]}}
    relay = Relay(
        queue_mb=1024
    )  # big enough that the throughput runs drop nothing (drops are counted anyway)
    try:
        for kind in ("lidar", "image"):
            for n in counts:
                ours = ours_throughput(relay, kind, n, max(ours_total[kind] // n, 1))
                extra["ours"].append(ours)
                anc = anchor(
                    "throughput", "--workers", str(n), "--kind", kind,
                    "--batches", str(max(anchor_total[kind] // n, 1)), "--deadline", "30",
                )  # fmt: skip
                extra["tlspyo"].append(anc)
                print(json.dumps({"ours": ours, "tlspyo": anc}), flush=True)
                figures.append(
                    speedup(f"{kind} samples/s, {n} workers -> trainer", "samples/s", ours["samples_per_s"],
                            anc["samples_per_s"], "tlspyo 0.3.0", 20,
                            note=f"ours {ours['mb_per_s']:.0f} MB/s, tlspyo {anc['mb_per_s']:.1f} MB/s")
                )  # fmt: skip
        best_mb = max(r["mb_per_s"] for r in extra["ours"])
        best_anchor_mb = max(r["mb_per_s"] for r in extra["tlspyo"])
        figures.append(
            absolute("MB/s relayed (best configuration)", "MB/s", best_mb, 500, at_most=False,
                     anchor=best_anchor_mb, anchor_name="tlspyo 0.3.0")
        )  # fmt: skip
        wts = ours_weights(relay, 32, 2.0, 10)
        extra["ours_weights"] = wts
        anc_w = run_anchor(
            "relay_tlspyo.py", "weights", "--workers", "32", "--mb", "2", "--reps", "5", timeout=600
        )
        extra["tlspyo_weights"] = anc_w
        figures.append(
            absolute("2 MB weights -> 32 workers (median)", "ms", wts["median_ms"], 50, at_most=True,
                     anchor=anc_w["median_ms"], anchor_name="tlspyo 0.3.0",
                     note=f"ours max {max(wts['latency_ms']):.1f} ms over {len(wts['latency_ms'])} publishes")
        )  # fmt: skip
    finally:
        relay.stop()
    relay = Relay()
    try:
        mem = ours_memory(relay)
    finally:
        relay.stop()
    extra["ours_memory"] = mem
    bound = QUEUE_MB * 1.5 + 150
    figures.append(
        absolute("relay peak RSS after 2x queue budget, no trainer", "MB", mem["relay_rss_peak_mb"], bound,
                 at_most=True, note=f"budget {QUEUE_MB} MB, sent {mem['sent_mb']:.0f} MB, "
                 f"dropped {mem['dropped_batches']} batches (counted); tlspyo queues without bound")
    )  # fmt: skip
    extra["load_average_1min"]["end"] = os.getloadavg()[0]
    write_results("relay", figures, extra)


if __name__ == "__main__":
    main()
