"""Helpers to run a real relay in tests and benchmarks: in a background thread, or as a process.

``RelayThread`` starts a ``RelayServer`` on port 0 in a thread and exposes a client config with the bound port::

    with RelayThread(RelayConfig(port=0)) as relay:
        trainer = TrainerClient(relay.config)

``python -m tmrl.net.testing relay --port 0 [--spool FILE]`` runs a relay process that prints
``LISTENING <port>`` once it accepts connections (readiness without sleeps); SIGTERM stops it cleanly.
``python -m tmrl.net.testing worker --port P --id W --rows R`` sends numbered batches until killed, printing
``SENT <seq>`` after each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

from tmrl.net.config import RelayConfig
from tmrl.net.server import RelayServer, serve


class RelayThread:
    """A real relay in a background thread (context manager). ``config`` carries the bound port."""

    def __init__(self, config: RelayConfig, *, timeout: float = 10.0) -> None:
        self._base = config
        self._timeout = timeout
        self._ready = threading.Event()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.server: RelayServer | None = None
        self.config = config
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tmrl-relay-test", daemon=True)

    def _on_listen(self, server: RelayServer) -> None:
        self.server = server
        self._loop = asyncio.get_running_loop()
        self.config = self._base.with_(port=server.port)

    def _run(self) -> None:
        try:
            serve(self._base, ready=self._ready, stop=self._stop, on_listen=self._on_listen)
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    def start(self) -> RelayThread:
        self._thread.start()
        if not self._ready.wait(self._timeout) or self._error is not None:
            raise RuntimeError(f"relay did not start: {self._error!r}")
        return self

    def status(self) -> dict[str, Any]:
        """The server's status, read on its own loop (thread-safe)."""
        return self.run(self._status())

    async def _status(self) -> dict[str, Any]:
        assert self.server is not None
        return self.server.status()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the relay's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self._timeout + self._base.shutdown_timeout)

    def __enter__(self) -> RelayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _relay_main(args: argparse.Namespace) -> None:
    cfg = RelayConfig(
        host="127.0.0.1",
        port=args.port,
        spool_path=Path(args.spool) if args.spool else None,
        secret=args.secret,
        status_interval=args.status_interval,
        queue_bytes=args.queue_mb * 2**20,
        max_frame_bytes=min(64, args.queue_mb) * 2**20,
    )

    def on_listen(server: RelayServer) -> None:
        print(f"LISTENING {server.port}", flush=True)

    serve(cfg, on_listen=on_listen)
    print("STOPPED", flush=True)


def _worker_main(args: argparse.Namespace) -> None:
    import numpy as np

    from tmrl.net.client import WorkerClient

    cfg = RelayConfig(port=args.port, secret=args.secret)
    client = WorkerClient(cfg, args.id)
    rows = args.rows
    seq = 0
    while args.batches < 0 or seq < args.batches:
        arrays = {
            "obs.img": np.full((rows, 64, 64), seq % 251, np.uint8),
            "reward": np.full(rows, seq, np.float32),
        }
        seq = client.send_batch(arrays, {"n": rows, "policy_version": 0}) + 1
        print(f"SENT {seq - 1}", flush=True)
        if args.flush:
            client.flush(30.0)
    client.close(flush_timeout=30.0)
    print(f"DONE {client.stats()['acked_samples']}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tmrl.net.testing")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--spool", default="")
    r.add_argument("--secret", default="tmrl-local-secret")
    r.add_argument("--status-interval", type=float, default=10.0)
    r.add_argument("--queue-mb", type=int, default=512)
    w = sub.add_parser("worker")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--id", default="w")
    w.add_argument("--rows", type=int, default=50)
    w.add_argument("--batches", type=int, default=-1)
    w.add_argument("--flush", action="store_true", help="wait for each batch's acknowledgement")
    w.add_argument("--secret", default="tmrl-local-secret")
    args = ap.parse_args(argv)
    {"relay": _relay_main, "worker": _worker_main}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
