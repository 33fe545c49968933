"""``tmrl run``: the all-in-one supervisor (relay + trainer + N workers on this machine) and the role mains.

The supervisor writes the effective configuration to ``<run dir>/config.toml`` and starts each role as a child
process (``python -m tmrl.cli.main <role> --config <snapshot> --parent-pid <pid>``) with its output in
``<run dir>/logs/<role>.log``. All children share one process group of their own, so Ctrl-C in the terminal
reaches only the supervisor, which then stops them in order: workers (they flush their last batch), the trainer
(it writes its checkpoint), the relay; whatever is left (a game process, say) is killed with the group. Each child
also watches its parent and stops by itself when the supervisor disappears, so nothing is left behind even after
a ``kill -9`` of the supervisor. Running again resumes from the run's checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tmrl.config import TmrlConfig, write_snapshot
from tmrl.errors import RoleError, TmrlError

WORKER_STOP_TIMEOUT_S = 15.0
RELAY_STOP_TIMEOUT_S = 15.0
RELAY_READY_TIMEOUT_S = 30.0
RELAY_POLL_S = 2.0
MAX_WORKER_RESTARTS = 3
TRAINER_READY_TIMEOUT_S = 120.0  # then the workers start anyway (a large replay may take long to load)
EXIT_USER_ERROR = 2


# --------------------------------------------------------------------------------------------------------------
# Child side: parent-death watch and the role mains


def watch_parent(parent_pid: int, grace_s: float = 120.0) -> None:
    """Stop this process (SIGTERM to itself, then a hard exit after ``grace_s``) when ``parent_pid`` is gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG: the kernel tells us at once

    def orphaned() -> bool:
        return os.getppid() != parent_pid

    def watch() -> None:
        while not orphaned():
            time.sleep(0.5)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(3)

    if orphaned():
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="tmrl-parent-watch", daemon=True).start()


def check_port_free(host: str, port: int) -> None:
    """RoleError when ``host:port`` cannot be bound (the relay would fail the same way)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
                raise RoleError(
                    f"relay port {host}:{port} is already in use (another `tmrl run` or tmrl-server?); stop it "
                    "or choose another port with --port / --set relay.port=N"
                ) from None
            raise RoleError(
                f"cannot bind the relay to {host}:{port}: {exc.strerror}; check relay.host"
            ) from None


def free_port(host: str) -> int:
    """A TCP port free right now on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def local_relay(config: TmrlConfig) -> Any:
    """The relay configuration as seen from this machine (a wildcard bind address becomes loopback)."""
    relay = config.relay
    if relay.host in ("0.0.0.0", "", "::"):
        return relay.model_copy(update={"host": "::1" if relay.host == "::" else "127.0.0.1"})
    return relay


def relay_main(config: TmrlConfig) -> int:
    """``tmrl-server``: run the relay until SIGINT / SIGTERM."""
    import logging

    from tmrl.net.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if config.relay.port != 0:
        check_port_free(config.relay.host, config.relay.port)
    relay = config.relay
    if relay.spool_path is None:  # keep held batches across a relay restart by default
        config.run_dir.mkdir(parents=True, exist_ok=True)
        relay = relay.with_(spool_path=config.run_dir / "relay.spool")
    try:
        serve(relay)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise RoleError(
                f"relay port {config.relay.host}:{config.relay.port} is already in use; stop the other relay or "
                "choose another port with --port / --set relay.port=N"
            ) from None
        raise RoleError(
            f"the relay cannot listen on {config.relay.host}:{config.relay.port}: {exc}"
        ) from None
    return 0


def trainer_main(config: TmrlConfig, *, fresh: bool = False) -> int:
    """``tmrl-trainer``: train from the relay's batches until SIGINT / SIGTERM, checkpoint on the way out."""
    from tmrl.trainer import run_trainer

    run_trainer(config, fresh=fresh)
    return 0


# --------------------------------------------------------------------------------------------------------------
# Supervisor side


@dataclass
class Child:
    """One role process started by the supervisor."""

    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    extra: tuple[str, ...] = ()
    stopping: bool = False
    finished: bool = False

    def last_line(self) -> str:
        """The last non-empty line of the child's log (its one-line error, usually)."""
        with contextlib.suppress(OSError):
            self.log.flush()
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, self.log_path.stat().st_size - 8192))
                lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
                if lines:
                    return re.sub(r"^tmrl[\w-]*: error: ", "", lines[-1])
        return "(no output)"


@dataclass
class RunStatus:
    """What the live view shows; every field may be unknown (None)."""

    elapsed_s: float = 0.0
    episodes: int = 0
    last_return: float | None = None
    mean_return: float | None = None
    test_return: float | None = None
    env_steps: int = 0
    timeouts: int = 0
    samples_per_s: float | None = None
    updates_per_s: float | None = None
    updates: int | None = None
    buffer_fill: int | None = None
    buffer_capacity: int | None = None
    weight_version: int | None = None
    worker_weight_version: int | None = None
    best_test: float | None = None
    workers_connected: int | None = None
    workers_expected: int = 0
    trainer_present: bool | None = None
    dropped: int | None = None
    relay: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One human-readable status line (the non-live view and the final summary)."""

        def fmt(v: float | int | None, spec: str = "") -> str:
            return "-" if v is None else format(v, spec)

        return (
            f"t={self.elapsed_s:.0f}s episodes={self.episodes} return last={fmt(self.last_return, '.1f')} "
            f"mean={fmt(self.mean_return, '.1f')} test={fmt(self.test_return, '.1f')} "
            f"best={fmt(self.best_test, '.1f')} "
            f"samples/s={fmt(self.samples_per_s, '.0f')} updates={fmt(self.updates)} "
            f"updates/s={fmt(self.updates_per_s, '.1f')} buffer={fmt(self.buffer_fill)} "
            f"weights=v{fmt(self.weight_version)} worker_weights=v{fmt(self.worker_weight_version)} "
            f"workers={fmt(self.workers_connected)}/{self.workers_expected} timeouts={self.timeouts}"
        )


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON status file written atomically by a role; None when missing or unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


class StatusCollector:
    """Gathers the run's status from the relay (observer client) and the roles' status files."""

    def __init__(self, config: TmrlConfig) -> None:
        self.config = config
        self.status_dir = config.run_dir / "status"
        self._observer: Any = None
        self._t0 = time.monotonic()
        self._last_samples: tuple[float, float] | None = None
        self._last_rate: float | None = None
        self._relay_t = -RELAY_POLL_S
        self._rate_t = self._relay_t
        self._relay_cache: dict[str, Any] = {}

    def _relay_status(self) -> dict[str, Any]:
        # The relay is asked at most every RELAY_POLL_S (each ask is a short observer connection).
        now = time.monotonic()
        if now - self._relay_t < RELAY_POLL_S:
            return self._relay_cache
        self._relay_t = now
        self._relay_cache = self._ask_relay()
        return self._relay_cache

    def _ask_relay(self) -> dict[str, Any]:
        try:
            if self._observer is None:
                from tmrl.net.client import ObserverClient

                self._observer = ObserverClient(local_relay(self.config), "tmrl-run")
            status = self._observer.status()
        except (TmrlError, OSError, TimeoutError):
            return {}
        return status if isinstance(status, dict) else {}

    def collect(self) -> RunStatus:
        st = RunStatus(elapsed_s=time.monotonic() - self._t0, workers_expected=self.config.run.workers)
        returns: list[float] = []
        versions: list[int] = []
        for path in sorted(self.status_dir.glob("worker-*.json")):
            doc = read_json(path)
            if doc is None:
                continue
            st.episodes += int(doc.get("episodes", 0))
            st.env_steps += int(doc.get("steps", 0))
            st.timeouts += int(doc.get("timeouts", 0))
            returns.extend(float(r) for r in doc.get("recent_returns", []))
            if doc.get("last_return") is not None:
                st.last_return = float(doc["last_return"])
            if doc.get("last_test_return") is not None:
                st.test_return = float(doc["last_test_return"])
            if doc.get("weight_version") is not None:
                versions.append(int(doc["weight_version"]))
        if returns:
            st.mean_return = sum(returns) / len(returns)
        if versions:
            st.worker_weight_version = min(versions)
        trainer = read_json(self.status_dir / "trainer.json")
        if trainer:
            st.updates = trainer.get("updates")
            st.updates_per_s = trainer.get("updates_per_s")
            st.buffer_fill = trainer.get("buffer_fill")
            st.buffer_capacity = trainer.get("buffer_capacity")
            st.weight_version = trainer.get("weight_version")
            best = trainer.get("best_test")
            if isinstance(best, dict) and best.get("return") is not None:
                st.best_test = float(best["return"])
        relay = self._relay_status()
        st.relay = relay
        if relay:
            workers = relay.get("workers")
            st.workers_connected = len(workers) if isinstance(workers, list) else None
            st.trainer_present = bool(relay.get("trainer"))
            st.dropped = relay.get("dropped_samples")
            if st.weight_version is None:
                st.weight_version = relay.get("weights_version")
            samples_in = relay.get("samples_in")
            if isinstance(samples_in, int) and self._relay_t != self._rate_t:
                if self._last_samples is not None and self._relay_t > self._last_samples[0]:
                    dt = self._relay_t - self._last_samples[0]
                    self._last_rate = (samples_in - self._last_samples[1]) / dt
                self._last_samples = (self._relay_t, samples_in)
                self._rate_t = self._relay_t
            st.samples_per_s = self._last_rate
        return st

    def close(self) -> None:
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.close()


def render_status(st: RunStatus, config: TmrlConfig) -> Any:
    """The rich renderable of the live view."""
    from rich.table import Table

    def fmt(v: float | int | None, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    table = Table(
        title=f"tmrl run '{config.run.name}' on {config.env.game} - {st.elapsed_s:.0f} s - Ctrl-C to stop",
        show_header=False,
        min_width=60,
    )
    table.add_column("what", style="bold")
    table.add_column("value")
    fill = fmt(st.buffer_fill)
    if st.buffer_fill is not None and st.buffer_capacity:
        fill = f"{st.buffer_fill} / {st.buffer_capacity} ({100 * st.buffer_fill / st.buffer_capacity:.1f} %)"
    rows = [
        ("episodes", str(st.episodes)),
        ("return (last / mean of recent)", f"{fmt(st.last_return, '.1f')} / {fmt(st.mean_return, '.1f')}"),
        ("test return (deterministic)", fmt(st.test_return, ".1f")),
        ("best test score (the kept best actor)", fmt(st.best_test, ".1f")),
        ("environment steps", str(st.env_steps)),
        ("samples/s (into the relay)", fmt(st.samples_per_s, ".0f")),
        ("updates (total, per second)", f"{fmt(st.updates)}  ({fmt(st.updates_per_s, '.1f')}/s)"),
        ("replay buffer", fill),
        ("weight version (trainer / workers)", f"{fmt(st.weight_version)} / {fmt(st.worker_weight_version)}"),
        ("workers connected", f"{fmt(st.workers_connected)} / {st.workers_expected}"),
        ("trainer connected", "-" if st.trainer_present is None else ("yes" if st.trainer_present else "no")),
        ("time-step timeouts", str(st.timeouts)),
        ("samples dropped by the relay", fmt(st.dropped)),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


class Supervisor:
    """Starts and watches relay, trainer and workers; stops them in order on Ctrl-C / SIGTERM / a failure."""

    def __init__(
        self, config: TmrlConfig, *, fresh: bool = False, duration: float = 0.0, live: bool | None = None
    ) -> None:
        self.config = config
        self.fresh = fresh
        self.duration = duration
        self.live = sys.stdout.isatty() if live is None else live
        self.children: list[Child] = []
        self._stop = threading.Event()
        self._stop_reason = ""
        self._pgid: int | None = None
        self._restarts: dict[str, int] = {}

    # -- preparation -------------------------------------------------------------------------------------------

    def _prepare_run_dir(self) -> Path:
        run_dir = self.config.run_dir
        if self.fresh and run_dir.exists():
            aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(aside)
            print(f"previous run moved to {aside}")
        for sub in ("logs", "status"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "status").glob("*.json"):
            stale.unlink(missing_ok=True)
        return run_dir

    def _resolve_port(self) -> None:
        relay = self.config.relay
        if relay.port == 0:
            port = free_port(relay.host)
            self.config = self.config.model_copy(update={"relay": relay.model_copy(update={"port": port})})
        else:
            check_port_free(relay.host, relay.port)

    # -- children ----------------------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        # The snapshot holds every value: drop TMRL_* overrides so the children see exactly the snapshot.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TMRL_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
        # Idle OpenMP threads sleep instead of spinning: the roles share the cores with the real-time games.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def _start(self, role: str, *extra: str) -> Child:
        run_dir = self.config.run_dir
        log_path = run_dir / "logs" / f"{role}.log"
        log = log_path.open("ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} tmrl run: starting {role}\n".encode())
        log.flush()
        cmd = [
            sys.executable,
            "-m",
            "tmrl.cli.main",
            {"relay": "server"}.get(role, role.split("-")[0]),
            "--data-dir",
            str(self.config.data_dir),
            "--config",
            str(run_dir / "config.toml"),
            "--parent-pid",
            str(os.getpid()),
            *extra,
        ]
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["process_group"] = 0 if self._pgid is None else self._pgid
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._child_env(),
            **kwargs,
        )
        if self._pgid is None and os.name != "nt":
            self._pgid = proc.pid
        child = Child(role, proc, log_path, log, extra)
        self.children.append(child)
        return child

    def _wait_relay_ready(self, relay: Child) -> None:
        """Until the relay answers a status request (a full handshake: secret and TLS as the roles use them)."""
        from tmrl.net.client import ObserverClient

        observer = ObserverClient(local_relay(self.config), "tmrl-run")
        deadline = time.monotonic() + RELAY_READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline and not self._stop.is_set():
            if relay.proc.poll() is not None:
                raise RoleError(f"the relay could not start: {relay.last_line()} (log: {relay.log_path})")
            try:
                observer.status()
                return
            except (OSError, TimeoutError, TmrlError) as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.3)
        if not self._stop.is_set():
            raise RoleError(
                f"the relay did not answer within {RELAY_READY_TIMEOUT_S:.0f} s ({last}; log: {relay.log_path})"
            )

    def _wait_trainer_ready(self) -> None:
        """Workers start once the trainer is training (its status file appears: checkpoint loaded, connected),
        or not at all when it fails: no game is started for nothing."""
        ready = self.config.run_dir / "status" / "trainer.json"
        deadline = time.monotonic() + TRAINER_READY_TIMEOUT_S
        while time.monotonic() < deadline and not self._stop.is_set() and not ready.exists():
            self._check_children()
            time.sleep(0.2)

    def _check_children(self) -> bool:
        """Raise RoleError for a failed role; restart a crashed worker (a few times); True when every worker
        finished by itself (``worker.max_episodes``), which ends the run in order."""
        for child in list(self.children):
            code = child.proc.poll()
            if code is None or child.stopping or child.finished:
                continue
            worker = child.role.startswith("worker")
            if worker and code == 0:
                child.finished = True
                continue
            if worker and code != EXIT_USER_ERROR and self._restarts.get(child.role, 0) < MAX_WORKER_RESTARTS:
                self._restarts[child.role] = self._restarts.get(child.role, 0) + 1
                print(
                    f"tmrl run: the {child.role} crashed (exit code {code}): {child.last_line()}; restarting it "
                    f"({self._restarts[child.role]}/{MAX_WORKER_RESTARTS}, log: {child.log_path})",
                    file=sys.stderr,
                    flush=True,
                )
                with contextlib.suppress(OSError):
                    child.log.close()
                self.children.remove(child)
                self._start(child.role, *child.extra)
                continue
            what = "stopped" if code == 0 else f"failed (exit code {code})"
            raise RoleError(f"the {child.role} {what}: {child.last_line()} (log: {child.log_path})")
        workers = [c for c in self.children if c.role.startswith("worker")]
        return bool(workers) and all(c.finished for c in workers)

    def _terminate(self, children: list[Child], timeout: float) -> None:
        for child in children:
            child.stopping = True
            if child.proc.poll() is None:
                with contextlib.suppress(OSError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            if child.proc.poll() is None:
                print(
                    f"tmrl run: the {child.role} did not stop within {timeout:.0f} s; killing it",
                    file=sys.stderr,
                )
                with contextlib.suppress(OSError):
                    child.proc.kill()
                child.proc.wait()

    def shutdown(self) -> None:
        """Stop every child in order, then sweep the process group (games started by workers)."""
        workers = [c for c in self.children if c.role.startswith("worker")]
        trainer = [c for c in self.children if c.role == "trainer"]
        relay = [c for c in self.children if c.role == "relay"]
        self._terminate(workers, WORKER_STOP_TIMEOUT_S)
        self._terminate(trainer, self.config.run.stop_timeout_s)
        self._terminate(relay, RELAY_STOP_TIMEOUT_S)
        if self._pgid is not None and os.name != "nt":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, signal.SIGKILL)
        for child in self.children:
            with contextlib.suppress(OSError):
                child.log.close()

    # -- main loop ---------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._stop.is_set():
            return
        self._stop_reason = signal.Signals(signum).name
        self._stop.set()

    def _ensure_reward(self) -> None:
        """Check the reward trajectory up front; the built-in game's default one is recorded once when missing."""
        from tmrl.envs.reward import load_trajectory

        path = Path(self.config.env.reward.path or self.config.default_reward_path())
        if (
            not path.exists()
            and self.config.env.game == "carracing"
            and path == self.config.default_reward_path()
        ):
            from tmrl.envs import record_reward

            print(
                f"recording the built-in game's reward trajectory once (the scripted pilot drives a lap): {path}"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            record_reward(self.config.game_config(), path)
        load_trajectory(path, self.config.env.game)

    def run(self) -> int:
        """Run until Ctrl-C, SIGTERM, ``duration`` or a child failure; 0 on an orderly stop."""
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # the game process started to record a lap
        self._prepare_run_dir()
        self._resolve_port()
        self._ensure_reward()
        write_snapshot(self.config, self.config.run_dir / "config.toml")
        previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
        for s in _STOP_SIGNALS:
            signal.signal(s, self._on_signal)
        collector = StatusCollector(self.config)
        error: TmrlError | None = None
        status = RunStatus()
        try:
            relay = self._start("relay")
            self._wait_relay_ready(relay)
            if not self._stop.is_set():  # Ctrl-C during the start: start nothing more
                self._start("trainer")
                self._wait_trainer_ready()
            for i in range(self.config.run.workers):
                if not self._stop.is_set():
                    self._start(f"worker-{i}", "--id", f"worker-{i}")
            if not self._stop.is_set():
                print(
                    f"tmrl run '{self.config.run.name}': relay on {self.config.relay.host}:{self.config.relay.port}, "
                    f"1 trainer, {self.config.run.workers} worker(s); run directory {self.config.run_dir}",
                    flush=True,
                )
            status = self._watch(collector)
        except TmrlError as exc:
            error = exc
        finally:
            if self.children:
                print(f"tmrl run: stopping ({self._stop_reason or 'error'}) ...", file=sys.stderr, flush=True)
            try:
                self.shutdown()
            finally:
                collector.close()
                for s, handler in previous.items():
                    signal.signal(s, handler)
        if error is not None:
            raise error
        print(f"tmrl run: stopped; {status.line()}", flush=True)
        return 0

    def _watch(self, collector: StatusCollector) -> RunStatus:
        interval = self.config.run.status_interval_s
        deadline = time.monotonic() + self.duration if self.duration > 0 else None
        status = collector.collect()
        live_ctx: Any = contextlib.nullcontext()
        if self.live:
            from rich.live import Live

            live_ctx = Live(render_status(status, self.config), auto_refresh=False, transient=False)
        with live_ctx as live:
            last_line = 0.0
            while not self._stop.is_set():
                all_done = self._check_children()
                status = collector.collect()
                if live is not None:
                    live.update(render_status(status, self.config), refresh=True)
                elif time.monotonic() - last_line >= max(interval, 5.0):
                    print(status.line(), flush=True)
                    last_line = time.monotonic()
                if all_done:
                    self._stop_reason = "every worker finished its episodes"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self._stop_reason = f"--duration {self.duration:g} s elapsed"
                    break
                self._stop.wait(interval)
        return status


_STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])

__all__ = [
    "Child",
    "RunStatus",
    "StatusCollector",
    "Supervisor",
    "check_port_free",
    "relay_main",
    "trainer_main",
    "watch_parent",
    "write_json_atomic",
]
