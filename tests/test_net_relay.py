"""The relay with real sockets on 127.0.0.1: flow, weights, roles, bad inputs, reconnection, budget, TLS."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tmrl.errors import AuthError
from tmrl.net import protocol as P
from tmrl.net.client import ObserverClient, TrainerClient, WorkerClient
from tmrl.net.config import RelayConfig
from tmrl.net.testing import RelayThread
from tmrl.net.tls import create_self_signed

SECRET = "test-secret-0123456789"
FAST = dict(secret=SECRET, backoff_initial=0.01, backoff_max=0.2, connect_timeout=2.0, handshake_timeout=2.0)


@pytest.fixture
def relay() -> Iterator[RelayThread]:
    with RelayThread(RelayConfig(port=0, **FAST)) as r:  # type: ignore[arg-type]
        yield r


def batch(seq: int, rows: int = 10, img: int = 0) -> dict[str, np.ndarray]:
    out = {
        "obs.lidar": np.full((rows, 19), seq, np.float32),
        "action": np.zeros((rows, 3), np.float32),
        "reward": np.full(rows, seq, np.float32),
        "terminated": np.zeros(rows, bool),
        "truncated": np.zeros(rows, bool),
        "first": np.zeros(rows, bool),
    }
    if img:
        out["obs.img"] = np.full((rows, img, img), seq % 256, np.uint8)
    return out


def drain(trainer: TrainerClient, samples: int, timeout: float = 20.0) -> list[tuple[dict, dict]]:
    """Poll until ``samples`` samples arrived (bounded by ``timeout``)."""
    got: list[tuple[dict, dict]] = []
    deadline = time.monotonic() + timeout
    while sum(m["n"] for m, _ in got) < samples and time.monotonic() < deadline:
        got += trainer.poll_batches(64, 0.2)
    return got


def serves_a_good_client(cfg: RelayConfig) -> None:
    """The relay still authenticates a fresh worker, acknowledges its batch and answers an observer."""
    w = WorkerClient(cfg, f"good-{secrets.token_hex(3)}")
    try:
        assert w.wait_connected(5)
        w.send_batch(batch(0, rows=2), {"n": 2, "policy_version": 0})
        assert w.flush(5)
    finally:
        w.close()
    assert isinstance(ObserverClient(cfg).status()["workers"], list)


# -- raw sockets for hostile inputs ---------------------------------------------------------------------------


def raw(cfg: RelayConfig) -> socket.socket:
    s = socket.create_connection((cfg.host, cfg.port), timeout=5)
    return s


def send(s: socket.socket, header: dict[str, Any], body: bytes = b"") -> None:
    s.sendall(P.encode_frame(header, body))


def recv(s: socket.socket) -> tuple[dict[str, Any], bytes] | None:
    """One frame, or None when the server closed the connection."""

    def exact(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    prefix = exact(P.PREFIX_SIZE)
    if prefix is None:
        return None
    rest, hlen = P.parse_prefix(prefix, 1 << 30)
    data = exact(rest)
    if data is None:
        return None
    header, body = P.split_frame(data, hlen)
    return header, bytes(body)


def closed(s: socket.socket) -> bool:
    """Read until the server closes (frames before that are skipped); True if it did."""
    try:
        for _ in range(100):
            if recv(s) is None:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def handshake(s: socket.socket, role: str, cid: str, secret: str = SECRET) -> dict[str, Any]:
    cn = secrets.token_bytes(32)
    send(s, P.hello(role, cid, cn, 1))
    got = recv(s)
    assert got is not None and got[0]["t"] == "challenge"
    sn = got[0]["sn"]
    send(s, {"t": "auth", "mac": P.client_proof(secret.encode(), cn, sn, role, cid)})
    got = recv(s)
    assert got is not None
    return got[0]


# -- tests ----------------------------------------------------------------------------------------------------


def test_batches_flow_and_weights_reach_every_worker(relay: RelayThread) -> None:
    cfg = relay.config
    trainer = TrainerClient(cfg)
    workers = [WorkerClient(cfg, f"w{i}") for i in range(3)]
    try:
        assert trainer.wait_connected(5) and all(w.wait_connected(5) for w in workers)
        for seq in range(20):
            for w in workers:
                w.send_batch(batch(seq, img=8), {"n": 10, "policy_version": 4, "returns": [1.0]})
        got = drain(trainer, 3 * 20 * 10)
        assert len(got) == 60
        keys = {(m["worker_id"], m["seq"]) for m, _ in got}
        assert len(keys) == 60 and {m["policy_version"] for m, _ in got} == {4}
        for m, a in got:  # bodies arrive intact and in order per worker
            assert a["reward"][0] == m["seq"] and a["obs.img"].shape == (10, 8, 8) and m["returns"] == [1.0]
        for w in workers:
            seqs = [m["seq"] for m, _ in got if m["worker_id"] == w.worker_id]
            assert seqs == sorted(seqs)

        weights = {"pi.w": np.arange(1000, dtype=np.float32), "pi.b": np.ones(3, np.float32)}
        trainer.publish_weights(7, weights, {"step": 70})
        for w in workers:
            lw = None
            deadline = time.monotonic() + 5
            while lw is None and time.monotonic() < deadline:
                lw = w.latest_weights()
                if lw is None:
                    w._core.connected.wait(0.01)  # noqa: SLF001 - a short bounded wait, not a synchronisation
            assert lw is not None and lw[0] == 7 and lw[2] == {"step": 70}
            np.testing.assert_array_equal(lw[1]["pi.w"], weights["pi.w"])
            assert w.latest_weights() is None  # unchanged since the last call

        late = WorkerClient(cfg, "late")  # a worker joining late gets the latest weights at once
        try:
            assert late.wait_connected(5)
            deadline = time.monotonic() + 5
            lw = None
            while lw is None and time.monotonic() < deadline:
                lw = late.latest_weights()
                time.sleep(0.01)
            assert lw is not None and lw[0] == 7
        finally:
            late.close()
        st = ObserverClient(cfg).status()
        assert st["trainer"] == "trainer" and set(st["workers"]) >= {"w0", "w1", "w2"}
        assert st["samples_in"] == st["samples_out"] == 600 and st["weights_version"] == 7
        assert st["dropped_samples"] == 0 and st["queue_bytes"] == 0
    finally:
        trainer.close()
        for w in workers:
            w.close()


def test_hostile_inputs_leave_the_relay_serving(relay: RelayThread) -> None:
    cfg = relay.config
    attacks = {
        "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + secrets.token_bytes(200),
        "oversize frame": P.PREFIX.pack(cfg.max_frame_bytes + 1, 10) + b"x" * 100,
        "truncated frame": P.encode_frame(P.hello("worker", "t", b"n" * 32))[:-5],
        "huge declared msgpack": P.PREFIX.pack(2 + 5, 5) + b"\xdb\xff\xff\xff\xff",
        "deep nesting": P.PREFIX.pack(2 + 10001, 10001) + b"\x91" * 10000 + b"\x00",
        "ext type": P.frame_prefix(b"\x81\xa1t\xd4\x05\x00", 0),
        "not a hello": P.encode_frame({"t": "batch", "seq": 0, "n": 1}),
    }
    for name, data in attacks.items():
        s = raw(cfg)
        try:
            s.sendall(data)
            if name == "truncated frame":
                s.shutdown(socket.SHUT_WR)
            assert closed(s), name
        finally:
            s.close()
        serves_a_good_client(cfg)
    assert relay.status()["protocol_errors"] >= 5
    s = raw(cfg)  # connects and says nothing: dropped after handshake_timeout
    try:
        assert closed(s)
    finally:
        s.close()
    serves_a_good_client(cfg)


def test_wrong_secret_is_refused_clearly(relay: RelayThread) -> None:
    cfg = relay.config
    s = raw(cfg)
    try:
        reply = handshake(s, "worker", "intruder", secret="wrong")
        assert reply["t"] == "refuse" and reply["code"] == "auth" and "secret" in reply["msg"]
        assert closed(s)
    finally:
        s.close()
    assert relay.status()["auth_failures"] == 1
    bad = WorkerClient(cfg.with_(secret="not-the-secret"), "w-bad")
    try:
        with pytest.raises(AuthError, match="secret"):
            bad.wait_connected(5)
        with pytest.raises(AuthError):
            bad.send_batch(batch(0), {"n": 10})
    finally:
        bad.close()
    serves_a_good_client(cfg)


def test_roles_are_enforced(relay: RelayThread) -> None:
    cfg = relay.config
    s = raw(cfg)
    try:
        assert handshake(s, "worker", "sneaky")["t"] == "welcome"
        send(s, {"t": "weights", "v": 99}, b"\x80")
        frames = []
        while (f := recv(s)) is not None:
            frames.append(f[0])
        assert frames and frames[-1]["t"] == "error" and frames[-1]["code"] == "role"
    finally:
        s.close()
    assert relay.status()["weights_version"] is None
    s = raw(cfg)
    try:
        assert handshake(s, "observer", "obs")["t"] == "welcome"
        send(s, {"t": "batch", "seq": 0, "n": 5}, b"\x80")
        assert closed(s)
    finally:
        s.close()
    assert relay.status()["samples_in"] == 0

    first = TrainerClient(cfg, "first")
    try:
        assert first.wait_connected(5)
        second = TrainerClient(cfg, "second")
        try:
            with pytest.raises(AuthError, match="already has a trainer"):
                second.wait_connected(10)
        finally:
            second.close()
        assert relay.status()["trainer"] == "first"
        serves_a_good_client(cfg)
    finally:
        first.close()


class CuttingProxy:
    """A TCP proxy whose ``cut()`` aborts every connection through it (bytes in flight are lost)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.loop = asyncio.new_event_loop()
        self.transports: list[asyncio.StreamWriter] = []
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self.transports += [w, uw]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def cut(self) -> None:
        async def go() -> None:
            for t in self.transports:
                t.transport.abort()
            self.transports.clear()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_reconnection_resends_and_nothing_is_lost_or_doubled(relay: RelayThread) -> None:
    proxy = CuttingProxy(relay.config.port)
    via_proxy = relay.config.with_(port=proxy.port)
    trainer = TrainerClient(relay.config)
    worker = WorkerClient(via_proxy, "flaky")
    try:
        assert trainer.wait_connected(5) and worker.wait_connected(5)
        total = 0
        for seq in range(300):
            worker.send_batch(batch(seq, rows=5, img=16), {"n": 5, "policy_version": 0})
            total += 5
            if seq % 60 == 30:
                proxy.cut()
        assert worker.flush(20)
        got = drain(trainer, total)
        keys = [(m["worker_id"], m["incarnation"], m["seq"]) for m, _ in got]
        assert len(keys) == len(set(keys)) == 300  # every batch exactly once, none lost
        assert sum(m["n"] for m, _ in got) == total == worker.stats()["sent_samples"]
        assert worker.stats()["connections"] >= 2
        st = relay.status()
        assert st["dropped_samples"] == 0 and st["samples_in"] == total
    finally:
        worker.close()
        trainer.close()
        proxy.close()


def test_trainer_restart_gets_unacknowledged_batches_again(relay: RelayThread) -> None:
    cfg = relay.config
    worker = WorkerClient(cfg, "w")
    first = TrainerClient(cfg, "t1")
    try:
        assert first.wait_connected(5) and worker.wait_connected(5)
        for seq in range(50):
            worker.send_batch(batch(seq), {"n": 10})
        assert worker.flush(10)
        early = drain(first, 10 * 10)  # take some; the rest sits unpolled in the client or in flight
        first.close()
        second = TrainerClient(cfg, "t2")
        try:
            assert second.wait_connected(10)
            late = drain(second, 500 - sum(m["n"] for m, _ in early))
        finally:
            second.close()
        seqs = [m["seq"] for m, _ in early + late]
        assert sorted(seqs) == list(range(50))
    finally:
        worker.close()


def test_queue_budget_drops_oldest_and_accounts_exactly() -> None:
    cfg = RelayConfig(port=0, queue_bytes=1 << 20, max_frame_bytes=1 << 16, **FAST)  # type: ignore[arg-type]
    with RelayThread(cfg) as relay:
        worker = WorkerClient(relay.config, "w")
        try:
            assert worker.wait_connected(5)
            for seq in range(120):  # ~26 kB each, 3 MB in total for a 1 MB budget, no trainer yet
                worker.send_batch(batch(seq, rows=25, img=32), {"n": 25})
            assert worker.flush(10)
            st = relay.status()
            assert st["queue_bytes"] <= cfg.queue_bytes and st["dropped_batches"] > 0
            trainer = TrainerClient(relay.config)
            try:
                sent = worker.stats()["sent_samples"]
                got = drain(trainer, sent - st["dropped_samples"])
                received = sum(m["n"] for m, _ in got)
                assert received + relay.status()["dropped_samples"] == sent == 3000
                seqs = [m["seq"] for m, _ in got]
                assert seqs == list(range(120 - len(seqs), 120))  # the oldest were dropped
            finally:
                trainer.close()
        finally:
            worker.close()


def test_worker_bounds_unacknowledged_batches_and_counts_drops() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = RelayConfig(port=port, max_unacked_batches=5, **FAST)  # type: ignore[arg-type]
    worker = WorkerClient(cfg, "w")
    try:
        for seq in range(12):
            worker.send_batch(batch(seq), {"n": 10})
        assert worker.flush(0.5) is False
        st = worker.stats()
        assert st["sent_samples"] == 120 and st["dropped_samples"] == 70 and st["unacked_batches"] == 5
    finally:
        worker.close()


def test_slow_trainer_does_not_stall_workers(relay: RelayThread) -> None:
    cfg = relay.config
    trainer = TrainerClient(cfg)  # never polls: its window fills, the relay queues the rest
    workers = [WorkerClient(cfg, f"w{i}") for i in range(2)]
    try:
        assert trainer.wait_connected(5) and all(w.wait_connected(5) for w in workers)
        for seq in range(100):
            for w in workers:
                w.send_batch(batch(seq, img=64), {"n": 10})
        assert all(w.flush(10) for w in workers)  # acknowledged although the trainer takes nothing
        assert relay.status()["samples_in"] == 2000
    finally:
        trainer.close()
        for w in workers:
            w.close()


def test_tls_with_pinned_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    create_self_signed(cert, key)
    cfg = RelayConfig(port=0, tls=True, tls_cert=cert, tls_key=key, **FAST)  # type: ignore[arg-type]
    with RelayThread(cfg) as relay:
        trainer = TrainerClient(relay.config)
        worker = WorkerClient(relay.config, "w")
        try:
            assert trainer.wait_connected(5) and worker.wait_connected(5)
            worker.send_batch(batch(1), {"n": 10})
            assert sum(m["n"] for m, _ in drain(trainer, 10)) == 10
        finally:
            worker.close()
            trainer.close()
        other_cert = tmp_path / "other.pem"
        create_self_signed(other_cert, tmp_path / "other.key")
        wrong = WorkerClient(relay.config.with_(tls_cert=other_cert), "w2")
        try:
            with pytest.raises(AuthError, match="certificate"):
                wrong.wait_connected(5)
        finally:
            wrong.close()
        plain = WorkerClient(relay.config.with_(tls=False), "w3")  # no TLS: never gets in
        try:
            assert not plain.wait_connected(0.5)
        finally:
            plain.close()


def test_a_worker_that_does_not_read_only_gets_the_newest_weights(relay: RelayThread) -> None:
    cfg = relay.config
    trainer = TrainerClient(cfg)
    good = WorkerClient(cfg, "good")
    s = raw(cfg)
    try:
        assert handshake(s, "worker", "sleepy")["t"] == "welcome"
        assert trainer.wait_connected(5) and good.wait_connected(5)
        for v in range(1, 31):  # 30 x 2 MB while "sleepy" reads nothing
            trainer.publish_weights(v, {"w": np.full(500_000, v, np.float32)}, {})
        deadline = time.monotonic() + 20
        version = 0
        while version < 30 and time.monotonic() < deadline:
            if good.wait_weights(1.0):
                lw = good.latest_weights()
                version = lw[0] if lw else version
        assert version == 30
        versions = []
        s.settimeout(2.0)
        try:
            while (f := recv(s)) is not None:
                versions.append(f[0].get("v"))
                if f[0].get("v") == 30:
                    break
        except TimeoutError:
            pass
        assert versions and versions[-1] == 30 and len(versions) < 30  # coalesced, newest last
    finally:
        s.close()
        good.close()
        trainer.close()


def test_large_batches_recycle_buffers_without_corrupting_any(relay: RelayThread) -> None:
    """Image-sized batches go through pooled buffers (worker encode, relay receive): once acknowledged a buffer
    is reused, and every batch still arrives with its own content; poll_batches hands them out one by one."""
    cfg = relay.config
    trainer = TrainerClient(cfg)
    worker = WorkerClient(cfg, "big")
    try:
        assert trainer.wait_connected(5) and worker.wait_connected(5)
        got: list[tuple[dict, dict]] = []
        for rnd in range(4):
            for seq in range(rnd * 8, rnd * 8 + 8):
                worker.send_batch(batch(seq, rows=20, img=64), {"n": 20, "policy_version": 1})
            deadline = time.monotonic() + 10
            while len(got) < rnd * 8 + 8 and time.monotonic() < deadline:
                one = trainer.poll_batches(1, 0.2)
                assert len(one) <= 1
                got += one
            assert worker.flush(10)
        assert [m["seq"] for m, _ in got] == list(range(32))
        for m, a in got:
            assert (a["obs.img"] == m["seq"] % 256).all() and (a["reward"] == m["seq"]).all()
            assert not any(v.flags.owndata for v in a.values())  # aligned bodies: views, never copies
        assert worker._core.pool.reused > 0  # noqa: SLF001
        assert relay.server is not None and relay.server.pool.reused > 0
        deadline = time.monotonic() + 5  # the last acknowledgement from the trainer is on its way
        while relay.status()["samples_out"] < 32 * 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # bounded poll: no event marks the relay processing a trainer ack
        st = relay.status()
        assert st["samples_in"] == st["samples_out"] == 32 * 20 and st["queue_bytes"] == 0
    finally:
        trainer.close()
        worker.close()
