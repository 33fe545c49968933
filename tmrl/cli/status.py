"""``tmrl status``: the relay's status (connected workers, trainer, throughput, queue, drops, weight version)."""

from __future__ import annotations

import json
import time
from typing import Any

from tmrl.errors import RoleError


def fetch_status(config: Any) -> dict[str, Any]:
    """One status snapshot from the relay; RoleError (one line) when it cannot be reached."""
    from tmrl.net.client import ObserverClient

    relay = config.relay
    try:
        return ObserverClient(relay).status()
    except (OSError, TimeoutError) as exc:
        raise RoleError(
            f"cannot reach the relay at {relay.host}:{relay.port} ({exc or type(exc).__name__}); start it with "
            "`tmrl run` or `tmrl-server`, or point --host / --port at it"
        ) from None


def format_status(doc: dict[str, Any]) -> str:
    """The status as a few aligned lines."""
    rates = doc.get("rates") or {}
    workers = doc.get("workers") or []
    rows = [
        ("uptime", f"{doc.get('uptime_s', 0):.0f} s"),
        ("trainer", str(doc.get("trainer") or "not connected")),
        ("workers", f"{len(workers)}: {', '.join(map(str, workers))}" if workers else "0"),
        ("weights version", str(doc.get("weights_version"))),
        ("samples in / out", f"{doc.get('samples_in', 0)} / {doc.get('samples_out', 0)}"),
        (
            "samples/s in / out",
            f"{rates.get('samples_in_per_s', 0):.0f} / {rates.get('samples_out_per_s', 0):.0f} "
            f"({rates.get('mb_in_per_s', 0):.1f} / {rates.get('mb_out_per_s', 0):.1f} MB/s)",
        ),
        (
            "queue",
            f"{doc.get('queue_batches', 0)} batches, {doc.get('queue_bytes', 0) / 1e6:.1f} of "
            f"{doc.get('queue_budget_bytes', 0) / 1e6:.0f} MB",
        ),
        ("dropped", f"{doc.get('dropped_batches', 0)} batches, {doc.get('dropped_samples', 0)} samples"),
        ("refused", f"{doc.get('auth_failures', 0)} auth, {doc.get('protocol_errors', 0)} protocol errors"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def status_command(config: Any, *, as_json: bool = False, watch: float = 0.0) -> int:
    """Print the status once, or every ``watch`` seconds until Ctrl-C."""
    while True:
        doc = fetch_status(config)
        if as_json:
            print(json.dumps(doc, sort_keys=True, default=str), flush=True)
        else:
            print(format_status(doc), flush=True)
        if watch <= 0:
            return 0
        time.sleep(watch)
        if not as_json:
            print()
