"""Anchor for bench/relay.py: tlspyo 0.3.0 (TMRL 0.7.1's transport), measured the way TMRL uses it.

Runs in the anchors venv (never imports our tmrl). Workers ``produce`` batches to the "trainers" group; the trainer
``notify``s for all consumables and ``receive_all``s them (TMRL's loop); weights are ``broadcast`` to "workers".
TLS off, as in TMRL's default config. Prints one JSON line.

    python relay_tlspyo.py throughput --workers 8 --kind lidar --batches 200 --deadline 20
    python relay_tlspyo.py weights --workers 32 --mb 2 --reps 5
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time

import numpy as np
from tlspyo import Endpoint, Relay

PASSWORD = "bench-password"


def make_batch(kind: str, n: int = 100) -> dict[str, np.ndarray]:
    """The same batch layout bench/relay.py sends with our relay."""
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


def rss_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Ports:
    """Free TCP ports chosen by the kernel (tlspyo needs fixed port numbers for its relay and local links)."""

    def next(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def throughput(args: argparse.Namespace) -> dict:
    ports = Ports()
    port = ports.next()
    relay = Relay(port=port, password=PASSWORD, local_com_port=ports.next(), security=None)
    trainer = Endpoint(
        "127.0.0.1", port, PASSWORD, groups="trainers", local_com_port=ports.next(), security=None,
        recon_initial_delay=0.1, deserializer_mode="synchronous",
    )  # fmt: skip
    workers = [
        Endpoint(
            "127.0.0.1",
            port,
            PASSWORD,
            groups="workers",
            local_com_port=ports.next(),
            security=None,
            recon_initial_delay=0.1,
        )  # fmt: skip
        for _ in range(args.workers)
    ]
    batch = make_batch(args.kind)
    nbytes = sum(a.nbytes for a in batch.values())
    n = len(batch["reward"])
    # warm-up: one tiny consumable per worker, so every endpoint is connected before timing starts
    for w in workers:
        w.produce({"warm": 1}, "trainers")
    warm, deadline = 0, time.monotonic() + 60
    while warm < args.workers and time.monotonic() < deadline:
        trainer.notify(groups={"trainers": -1})
        warm += len(trainer.receive_all(blocking=False))
        time.sleep(0.01)

    total = args.workers * args.batches
    received = 0
    t_last = t0 = time.monotonic()

    def produce() -> None:
        for _ in range(args.batches):
            for w in workers:
                w.produce(batch, "trainers")

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    end = t0 + args.deadline
    while received < total and time.monotonic() < end:
        trainer.notify(groups={"trainers": -1})
        got = trainer.receive_all(blocking=False)
        if got:
            received += len(got)
            t_last = time.monotonic()
        else:
            time.sleep(0.0005)
    elapsed = max(t_last - t0, 1e-9)
    relay_rss = rss_peak_mb(relay._p.pid)
    for e in [trainer, *workers]:
        e.stop()
    relay.stop()
    return {
        "workers": args.workers,
        "kind": args.kind,
        "batches_sent": total,
        "batches_received": received,
        "samples_per_s": received * n / elapsed,
        "mb_per_s": received * nbytes / elapsed / 1e6,
        "elapsed_s": elapsed,
        "warm_connected": warm,
        "relay_rss_peak_mb": relay_rss,
    }


def weights(args: argparse.Namespace) -> dict:
    ports = Ports()
    port = ports.next()
    relay = Relay(port=port, password=PASSWORD, local_com_port=ports.next(), security=None)
    trainer = Endpoint(
        "127.0.0.1", port, PASSWORD, groups="trainers", local_com_port=ports.next(), security=None,
        recon_initial_delay=0.1,
    )  # fmt: skip
    workers = [
        Endpoint(
            "127.0.0.1",
            port,
            PASSWORD,
            groups="workers",
            local_com_port=ports.next(),
            security=None,
            recon_initial_delay=0.1,
        )  # fmt: skip
        for _ in range(args.workers)
    ]
    n_floats = int(args.mb * 1e6 / 4)
    got: dict[int, list[float]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def listen(w: Endpoint) -> None:
        while not stop.is_set():
            for obj in w.receive_all(blocking=False):  # TMRL's worker: receive_all, keep the newest
                with lock:
                    got.setdefault(int(obj["version"]), []).append(time.monotonic())
            time.sleep(0.0005)

    threads = [threading.Thread(target=listen, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    # warm-up broadcast (version 0) until every worker got one: all connected
    trainer.broadcast({"version": 0, "w": np.zeros(4, np.float32)}, "workers")
    deadline = time.monotonic() + 60
    while len(got.get(0, [])) < args.workers and time.monotonic() < deadline:
        time.sleep(0.01)
    lat = []
    for v in range(1, args.reps + 1):
        w = {"version": v, "pi.w": np.full(n_floats, v, np.float32)}
        t0 = time.monotonic()
        trainer.broadcast(w, "workers")
        deadline = t0 + 30
        while time.monotonic() < deadline:
            with lock:
                ts = list(got.get(v, []))
            if len(ts) >= args.workers:
                break
            time.sleep(0.001)
        lat.append((max(ts) - t0) * 1e3 if len(ts) >= args.workers else float("nan"))
    stop.set()
    for t in threads:
        t.join(2)
    for e in [trainer, *workers]:
        e.stop()
    relay.stop()
    return {"workers": args.workers, "mb": args.mb, "latency_ms": lat, "median_ms": float(np.nanmedian(lat))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["throughput", "weights"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--kind", default="lidar")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--deadline", type=float, default=20.0)
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    signal.alarm(
        300
    )  # tlspyo blocks forever in accept() if one of its processes dies: fail instead of hanging
    out = throughput(args) if args.mode == "throughput" else weights(args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
