"""``RolloutWorker``: plays the game in real time with the latest actor and streams batches to the relay.

The loop is lean on purpose (it shares the time step with the game): act, ``env.step`` (which blocks until the
time step ends), record the row into the preallocated ``TransitionRecorder``, and every ``relay.flush_steps``
steps / ``relay.flush_seconds`` seconds / episode end hand the rows to the ``WorkerClient``, which sends them from
its own thread. New weights are decoded by the client off this thread; the worker swaps them in between two steps
(``load_state_dict`` into the existing actor, no new module). Until the first weights arrive the worker acts
uniformly at random (warm-up exploration). Every ``worker.test_every`` training episodes it drives one test
episode with the deterministic policy; its return is reported as a test return, and its samples are streamed
for training too unless ``worker.train_on_test`` is off. A test episode drives one weight version from start to
end. One that beats the worker's best test score is confirmed by ``worker.confirm_episodes`` more test episodes
with the same weights (``VersionScorer``); the last of them carries the version's score (their mean return), by
which the trainer keeps the best actor. The confirming episodes count against ``worker.test_every``
(``TestSchedule``). On the built-in game, a share ``worker.random_start`` of the training episodes start
standing at a random place on the track, so the policy practises every part of it from the start (rolling, at
up to ``worker.random_start_speed_kmh``, when that is set); a share ``worker.failure_starts`` of those start
shortly before where a recent lap from the line failed, and a share ``worker.other_tracks`` drive another
track of the game (``StartPlanner``). Training episodes explore with the
policy's Gaussian noise, optionally correlated in time (``worker.noise_correlation_s``) and interrupted by
pulses that hold an action dimension at a random value for a while (``worker.pulse_rate_hz``). Each test
episode is traced step by step into ``<run dir>/traces/<worker id>/`` (``worker.trace_tests``,
``tmrl.traces``).

Episode statistics travel in the batch metadata (``episodes``: return, length, terminated, test, random_start,
start_speed_kmh, failure_start, other_track (its seed, or None), timeouts) and in
``<run dir>/status/worker-<id>.json`` (read by the live view of ``tmrl run``). Time-step timeouts are rtgym's
"Time-step timed out" warnings, counted (never printed per step).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmrl.config import TmrlConfig, WorkerConfig
from tmrl.envs.config import resolved_rtgym
from tmrl.errors import CheckpointError, ConfigError
from tmrl.traces import EpisodeTrace, TraceDirectory

STATUS_EVERY_S = 1.0
FLUSH_ON_STOP_S = 5.0
RECENT_EPISODES = 10


@dataclass
class WorkerStats:
    """Counters of one worker, also written to its status file."""

    worker_id: str
    episodes: int = 0
    test_episodes: int = 0
    steps: int = 0
    timeouts: int = 0
    batches: int = 0
    samples: int = 0
    weight_version: int | None = None
    last_return: float | None = None
    last_test_return: float | None = None
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_EPISODES))

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "episodes": self.episodes,
            "test_episodes": self.test_episodes,
            "steps": self.steps,
            "timeouts": self.timeouts,
            "batches": self.batches,
            "samples": self.samples,
            "weight_version": self.weight_version,
            "last_return": self.last_return,
            "last_test_return": self.last_test_return,
            "recent_returns": list(self.recent_returns),
            "time": time.time(),
        }


class TimeoutCounter:
    """Counts rtgym's "Time-step timed out" warnings (from any thread) without printing them."""

    MESSAGE = "Time-step timed out"

    def __init__(self) -> None:
        self.count = 0
        self._previous: Any = None
        self._catcher: Any = None

    def __enter__(self) -> TimeoutCounter:
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.filterwarnings("always", message=self.MESSAGE)
        self._previous = warnings.showwarning

        def show(
            message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
        ) -> None:
            if str(message).startswith(self.MESSAGE):
                self.count += 1
            else:
                self._previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc: object) -> None:
        self._catcher.__exit__(*exc)


class Policy:
    """The worker's actor: random until the first weights, then the exported actor, swapped in place.

    Deterministic actions (test episodes) come from ``test_actor``: the averaged actor when the weights carry one
    (``algorithm.actor_average``), else the same actor that explores.

    Stochastic actions draw the policy's standard normal noise here: fresh every step, or with
    ``noise_correlation`` rho > 0 an AR(1) process, eps_t = rho eps_{t-1} + sqrt(1 - rho^2) w_t, which stays
    standard normal at every step; ``reset_noise`` starts it afresh (at each episode). With ``pulse_start`` > 0
    each action dimension of a stochastic action starts, with that chance per step, a pulse: a uniform random
    value in [-1, 1] that replaces the policy's action until the pulse ends (chance ``pulse_end`` per step, so a
    geometric duration), on the dimensions flagged in ``pulse_dims`` (all by default); ``reset_noise`` ends the
    pulses too."""

    def __init__(
        self,
        action_dim: int,
        seed: int | None = None,
        random_until_weights: bool = True,
        noise_correlation: float = 0.0,
        pulse_start: float = 0.0,
        pulse_end: float = 1.0,
        pulse_dims: Sequence[bool] | None = None,
    ) -> None:
        if not 0.0 <= noise_correlation < 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1), got {noise_correlation}")
        if not (0.0 <= pulse_start <= 1.0 and 0.0 < pulse_end <= 1.0):
            raise ValueError(f"pulse chances must be in [0, 1] (end > 0), got {pulse_start}, {pulse_end}")
        self.action_dim = action_dim
        self.rng = np.random.default_rng(seed)
        self.random_until_weights = random_until_weights
        self.noise_correlation = noise_correlation
        self._eps: np.ndarray | None = None
        self.pulse_start = pulse_start
        self.pulse_end = pulse_end
        self._pulse_dims = (
            np.ones(action_dim, dtype=bool) if pulse_dims is None else np.array(pulse_dims, bool)
        )
        if self._pulse_dims.shape != (action_dim,):
            raise ValueError(
                f"pulse_dims needs one flag per action dimension ({action_dim}), got {pulse_dims}"
            )
        self._pulsing = np.zeros(action_dim, dtype=bool)
        self._pulse_value = np.zeros(action_dim, dtype=np.float32)
        self.actor: Any = None
        self.test_actor: Any = None
        self.version = 0
        self._meta_key: str | None = None

    def load(self, version: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Install weights: into the current actor when the architecture is unchanged, else a new actor."""
        import json

        import torch

        from tmrl.rl.export import actor_from_arrays, split_published

        key = json.dumps({"spec": meta.get("spec"), "model": meta.get("model")}, sort_keys=True)
        same = key == self._meta_key  # same architecture: load into the existing modules

        def install(actor: Any, part: Mapping[str, np.ndarray]) -> Any:
            if actor is None or not same:
                return actor_from_arrays(part, meta)
            state = {k: torch.from_numpy(np.asarray(v)) for k, v in part.items()}
            try:
                actor.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"weights version {version} do not fit the actor: {exc}") from None
            return actor

        live, average = split_published(arrays)
        self.actor = install(self.actor, live)
        if average is None:
            self.test_actor = self.actor
        else:
            self.test_actor = install(None if self.test_actor is self.actor else self.test_actor, average)
        self._meta_key = key
        self.version = int(version)

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        if self.actor is None:
            if not self.random_until_weights and deterministic:
                return np.zeros(self.action_dim, dtype=np.float32)
            return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
        if deterministic:
            action: np.ndarray = self.test_actor.act(obs, deterministic=True)
            return action
        action = self.actor.act(obs, deterministic=False, noise=self._noise())
        if self.pulse_start > 0.0:
            action = self._pulse(action)
        return action

    def reset_noise(self) -> None:
        """Forget the correlated noise's past and end the pulses: the next stochastic action draws afresh."""
        self._eps = None
        self._pulsing[:] = False

    def _pulse(self, action: np.ndarray) -> np.ndarray:
        """The action with the dimensions in a pulse replaced by their pulse's value (ending and starting pulses
        first: each pulse lasts at least the step it starts on)."""
        n = self.action_dim
        self._pulsing &= self.rng.random(n) >= self.pulse_end
        starting = self._pulse_dims & ~self._pulsing & (self.rng.random(n) < self.pulse_start)
        if starting.any():
            self._pulse_value[starting] = self.rng.uniform(-1.0, 1.0, int(starting.sum()))
            self._pulsing |= starting
        if not self._pulsing.any():
            return action
        return np.where(self._pulsing, self._pulse_value, action).astype(np.float32)

    def _noise(self) -> np.ndarray:
        w = self.rng.standard_normal(self.action_dim).astype(np.float32)
        rho = self.noise_correlation
        if rho > 0.0 and self._eps is not None:
            w = (rho * self._eps + math.sqrt(1.0 - rho * rho) * w).astype(np.float32)
        self._eps = w
        return w


@dataclass
class ScoredWeights:
    """The weights of the best-scored version and the returns of all its test episodes."""

    weights: Any
    returns: list[float]


class VersionScorer:
    """Scores weight versions by their test episodes, for the trainer's keep-the-best.

    A test episode that beats the best score so far opens a series: the next ``confirm`` test episodes drive the
    same weights, and the series' mean return is the version's score. A series that ends below the best score is
    not a score. With ``confirm = 0`` a test episode that beats the best is a score alone.

    With ``retest_every = k > 0`` the scorer keeps the weights of the best version (the holder) and every k-th
    test episode that opens no series re-drives them: the return joins the holder's series and its score becomes
    the mean of all its episodes, up or down. A score of 3 episodes picked as the highest of many is lucky more
    often than not; re-testing lets it fall back to what the actor drives, so a later, better version can take
    its place.
    """

    def __init__(self, confirm: int, retest_every: int = 0) -> None:
        self.confirm = confirm
        self.retest_every = retest_every
        self.best = float("-inf")
        self.series: list[float] = []
        self.holder: ScoredWeights | None = None
        self._candidate: Any = None  # the weights of the open series (kept if it wins)
        self._slots = 0  # test episodes that opened no series so far

    @property
    def open(self) -> bool:
        """A series is under way: the next episode is a test episode with the same weights."""
        return bool(self.series)

    def begin(self, weights: Any) -> Any:
        """A test episode starts with no series open and ``weights`` (any object: they are handed back) loaded.
        Returns the holder's weights when this one is a re-test (drive those instead), else None."""
        self._slots += 1
        if self.retest_every > 0 and self.holder is not None and self._slots % self.retest_every == 0:
            return self.holder.weights
        self._candidate = weights
        return None

    def add(self, test_return: float) -> tuple[float, int] | None:
        """Record a test return; returns ``(score, episodes)`` when it completes a series that beats the best."""
        if not self.series and test_return <= self.best:
            return None
        self.series.append(test_return)
        if len(self.series) <= self.confirm:
            return None
        score, n = float(np.mean(self.series)), len(self.series)
        series, self.series = self.series, []
        if score <= self.best:
            return None
        self.best = score
        if self.retest_every > 0:
            self.holder = ScoredWeights(self._candidate, series)
        return score, n

    def add_retest(self, test_return: float) -> tuple[float, int]:
        """Record the return of a re-test of the holder; returns its new ``(score, episodes)``."""
        assert self.holder is not None, "a re-test needs a holder"
        self.holder.returns.append(test_return)
        self.best = float(np.mean(self.holder.returns))
        return self.best, len(self.holder.returns)

    def cancel(self) -> None:
        """The weights of the series are gone (a stop): the series cannot finish."""
        self.series = []


@dataclass(frozen=True)
class Start:
    """Where an episode starts: the start line, or a random place (``random``), standing or rolling at
    ``speed_kmh``; ``progress`` (a lap fraction) puts a random start at that place rather than one drawn;
    ``track``: the seed of another track to drive (None: the game's own)."""

    random: bool = False
    speed_kmh: float = 0.0
    progress: float | None = None
    track: int | None = None

    @property
    def before_failure(self) -> bool:
        return self.progress is not None

    def options(self) -> dict[str, Any]:
        """The ``env.reset`` options (an episode without a track option drives the game's own track)."""
        options: dict[str, Any] = {} if self.track is None else {"track_seed": self.track}
        if self.random:
            options.update(random_start=True, start_speed_kmh=self.speed_kmh)
        if self.progress is not None:
            options["start_progress"] = self.progress
        return options


class StartPlanner:
    """Plans each episode's start. Test episodes start at the line. A share ``random_share`` of the training
    episodes start at a random place, rolling at a speed drawn uniformly up to ``top_speed_kmh`` (0: standing).
    A share ``failure_share`` of those random starts are placed shortly before where one of the last
    ``MEMORY`` episodes from the line ended short of the finish (drawn uniformly, then ``BACKOFF`` of a lap
    back), so a corner the policy keeps failing on is practised as often as the policy fails on it, not once
    in the track's length. A share ``other_share`` of the training episodes drive another track, of a seed drawn
    uniformly from ``other_seeds`` (first, last), starting as the others do but never before a failure (those
    are places on the own track)."""

    MEMORY = 20
    BACKOFF = (0.02, 0.10)  # lap fractions before the failure (the straight before the corner)

    def __init__(
        self,
        random_share: float,
        top_speed_kmh: float,
        failure_share: float,
        seed: int | None = None,
        *,
        other_share: float = 0.0,
        other_seeds: tuple[int, int] = (0, 0),
    ) -> None:
        self.random_share = random_share
        self.top_speed_kmh = top_speed_kmh
        self.failure_share = failure_share
        self.other_share = other_share
        self.other_seeds = other_seeds
        self.failures: deque[float] = deque(maxlen=self.MEMORY)
        self.rng = np.random.default_rng(seed)

    def plan(self, test: bool) -> Start:
        if test:
            return Start()
        track = None
        if self.other_share > 0 and self.rng.random() < self.other_share:
            track = int(self.rng.integers(self.other_seeds[0], self.other_seeds[1] + 1))
        if self.random_share <= 0 or self.rng.random() >= self.random_share:
            return Start(track=track)
        speed = float(self.rng.uniform(0.0, self.top_speed_kmh)) if self.top_speed_kmh else 0.0
        progress = None
        if (
            track is None
            and self.failures
            and self.failure_share > 0
            and self.rng.random() < self.failure_share
        ):
            failure = self.failures[int(self.rng.integers(len(self.failures)))]
            progress = max(0.0, failure - float(self.rng.uniform(*self.BACKOFF)))
        return Start(True, speed, progress, track)

    def ended(self, start: Start, terminated: bool, finished: bool, progress: float) -> None:
        """An episode ended at lap fraction ``progress``: remember it when it started at the line of the own track
        and failed."""
        if not start.random and start.track is None and terminated and not finished:
            self.failures.append(progress)


def recorded_end(
    terminated: bool, truncated: bool, info: Mapping[str, Any], worker: WorkerConfig
) -> tuple[bool, bool]:
    """(terminated, truncated) as recorded for training. An episode terminates at the finish line or at the end
    of the failure countdown; ``worker.finish_bootstraps`` records the first, ``worker.failure_bootstraps`` the
    second as a truncation (the critics bootstrap past it). Time limits stay truncations."""
    if terminated and (
        worker.finish_bootstraps if info.get("finished", False) else worker.failure_bootstraps
    ):
        return False, True
    return terminated, truncated


class TestSchedule:
    """When the next episode is a test episode: every ``test_every`` training episodes, and at once while a
    ``VersionScorer`` series is open. The episodes of a series count against ``test_every``: after a series of 3
    the next test episode comes after 3 x ``test_every`` training episodes, so confirming a score does not take
    more of the time from exploration than one test episode every ``test_every`` does."""

    def __init__(self, test_every: int, scorer: VersionScorer) -> None:
        self.test_every = test_every
        self.scorer = scorer
        self.credit = 0

    def due(self) -> bool:
        return self.test_every > 0 and (self.scorer.open or self.credit >= self.test_every)

    def done(self, test: bool) -> None:
        """An episode ended (or was skipped: a test episode without weights counts as a training one)."""
        if test:
            self.credit -= self.test_every
        else:  # capped: training episodes before the first weights do not pile up test episodes
            self.credit = min(self.credit + 1, self.test_every)


class RolloutWorker:
    """One worker: its env (and game), its relay client, its actor. ``run`` until ``stop`` is set."""

    def __init__(self, config: TmrlConfig, worker_id: str, *, env: Any = None, client: Any = None) -> None:
        self.config = config
        self.worker_id = worker_id
        self.stats = WorkerStats(worker_id)
        self._env = env
        self._client = client
        self.status_path = config.run_dir / "status" / f"{_safe(worker_id)}.json"
        if not worker_id.startswith("worker-"):
            self.status_path = self.status_path.with_name(f"worker-{_safe(worker_id)}.json")
        self._pending_episodes: list[dict[str, Any]] = []
        self.scorer = VersionScorer(config.worker.confirm_episodes, config.worker.retest_every)
        # the latest weights loaded: (version, arrays, meta)
        self._weights: tuple[int, Any, Any] | None = None
        self.starts = StartPlanner(
            config.random_start(),
            config.worker.random_start_speed_kmh,
            config.worker.failure_starts,
            other_share=config.worker.other_tracks,
            other_seeds=config.worker.other_track_seeds,
        )
        self._last_flush = time.monotonic()
        self._last_status = 0.0
        self.traces: TraceDirectory | None = None
        if config.worker.trace_tests:
            folder = config.run_dir / "traces" / _safe(worker_id)
            self.traces = TraceDirectory(folder, config.worker.trace_tests)
        self._time_step_s = resolved_rtgym(config.env).time_step_s

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _open_env(self) -> Any:
        import torch

        torch.set_num_threads(self.config.worker.threads)
        if self._env is None:
            from tmrl.envs import make_env

            self._env = make_env(self.config.env, self.config.game_config())
        return self._env

    def _open_client(self) -> Any:
        if self._client is None:
            from tmrl.net.client import WorkerClient

            self._client = WorkerClient(self.config.relay, worker_id=self.worker_id)
        return self._client

    def _swap_weights(self, policy: Policy) -> None:
        latest = self._client.latest_weights()
        if latest is not None:
            version, arrays, meta = latest
            if version != policy.version or policy.actor is None:
                policy.load(version, arrays, meta)
                self.stats.weight_version = policy.version
                self._weights = latest

    def _flush(self, recorder: Any, policy: Policy, last: bool = False) -> None:
        # Stats of an unrecorded test episode ride on the next batch; the ``last`` flush sends them alone.
        batch = recorder.take(allow_empty=last and bool(self._pending_episodes))
        if batch is None:
            return
        n = int(batch["reward"].shape[0])
        meta = {
            "n": n,
            "policy_version": policy.version,
            "worker_id": self.worker_id,
            "episodes": self._pending_episodes,
            "timeouts": self.stats.timeouts,
        }
        self._pending_episodes = []
        self._client.send_batch(batch, meta)
        self.stats.batches += 1
        self.stats.samples += n
        self._last_flush = time.monotonic()

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < STATUS_EVERY_S:
            return
        self._last_status = now
        from tmrl.run import write_json_atomic

        with contextlib.suppress(OSError):
            self.status_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.status_path, self.stats.to_dict())

    # -- the loop ----------------------------------------------------------------------------------------------

    def run_episode(self, env: Any, recorder: Any, policy: Policy, stop: threading.Event, test: bool) -> None:
        """One episode, recorded and streamed (a test episode only when ``worker.train_on_test``)."""
        flush_steps = self.config.relay.flush_steps
        flush_s = self.config.relay.flush_seconds
        timeouts_before = self._timeouts.count
        record = not test or self.config.worker.train_on_test
        start = self.starts.plan(test)
        trace = EpisodeTrace(self._time_step_s, self.config.env.pedals) if test and self.traces else None
        obs, _ = env.reset(options=start.options())
        policy.reset_noise()
        if record:
            recorder.reset(obs)
        ret, length, terminated, truncated, info = 0.0, 0, False, False, {}
        retest = False
        if test and not self.scorer.open:  # a test episode (and its series) scores one weight version
            self._swap_weights(policy)
            holder = self.scorer.begin(self._weights)
            if holder is not None:  # re-drive the best-scored version (``worker.retest_every``)
                policy.load(*holder)
                retest = True
        while not stop.is_set():
            if not test:
                self._swap_weights(policy)
            action = policy.act(obs, deterministic=test)
            obs, reward, terminated, truncated, info = env.step(action)
            ret += reward
            length += 1
            self.stats.steps += 1
            if trace is not None:
                trace.add(action, reward, info)
            if record:
                recorder.step(
                    action,
                    reward,
                    *recorded_end(terminated, truncated, info, self.config.worker),
                    obs,
                )
            if terminated or truncated:
                break  # the episode's last rows go with its stats, below
            if record and (len(recorder) >= flush_steps or time.monotonic() - self._last_flush >= flush_s):
                self._flush(recorder, policy)
            self.stats.timeouts = self._timeouts.count
            self._write_status()
        self.stats.timeouts = self._timeouts.count
        if not (terminated or truncated):
            # Stopped mid-episode: send what is complete; the open episode is cut there.
            if test:
                self.scorer.cancel()
            if record:
                self._flush(recorder, policy)
            return
        episode = {
            "return": ret,
            "length": length,
            "terminated": terminated,
            "test": test,
            "random_start": start.random,
            "start_speed_kmh": start.speed_kmh,
            "failure_start": start.before_failure,
            "other_track": start.track,
            "timeouts": self._timeouts.count - timeouts_before,
            "policy_version": policy.version,
            "progress": float(info.get("progress", 0.0)),
            "finished": bool(info.get("finished", False)),
            "end_speed_kmh": float(info.get("speed_kmh", 0.0)),
            "end_off_trajectory": float(info.get("off_trajectory", 0.0)),
            "end_heading": float(info.get("heading", 0.0)),
        }
        self.starts.ended(start, terminated, episode["finished"], episode["progress"])
        if trace is not None and self.traces is not None:
            try:
                self.traces.save(trace)
            except OSError as exc:  # a full disk costs the trace, not the run
                print(
                    f"worker {self.worker_id}: test episode trace not written: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
        if retest:
            episode["retest"] = True
            episode["score"], episode["score_episodes"] = self.scorer.add_retest(ret)
        elif test and (scored := self.scorer.add(ret)) is not None:
            episode["score"], episode["score_episodes"] = scored
        self._pending_episodes.append(episode)
        if test:
            self.stats.test_episodes += 1
            if not retest:  # the live view shows the latest version's test returns
                self.stats.last_test_return = ret
        else:
            self.stats.episodes += 1
            self.stats.last_return = ret
            self.stats.recent_returns.append(ret)
        if record:
            recorder.pop_episodes()
            self._flush(recorder, policy)
        self._write_status(force=True)

    def run(self, stop: threading.Event | None = None) -> WorkerStats:
        """Play episodes until ``stop`` is set or ``worker.max_episodes`` is reached; returns the counters."""
        from tmrl.rl.transitions import TransitionRecorder

        stop = stop or threading.Event()
        cfg = self.config.worker
        with TimeoutCounter() as self._timeouts:
            env = self._open_env()
            client = None
            try:
                client = self._open_client()
                spec = env.observation_spec
                recorder = TransitionRecorder(spec, initial_rows=max(256, 2 * self.config.relay.flush_steps))
                pulse_start, pulse_end, pulse_dims = self.config.action_pulses()
                policy = Policy(
                    spec.action_dim,
                    random_until_weights=cfg.random_until_weights,
                    noise_correlation=self.config.noise_correlation(),
                    pulse_start=pulse_start,
                    pulse_end=pulse_end,
                    pulse_dims=pulse_dims,
                )
                schedule = TestSchedule(cfg.test_every, self.scorer)
                while not stop.is_set():
                    if cfg.max_episodes and self.stats.episodes >= cfg.max_episodes:
                        break
                    test = schedule.due() and policy.actor is not None
                    self.run_episode(env, recorder, policy, stop, test=test)
                    schedule.done(test)
                self._flush(recorder, policy, last=True)
                self._write_status(force=True)
            finally:
                try:
                    if client is not None:
                        # Give the last batches a moment to be acknowledged (they are resent otherwise).
                        client.close(flush_timeout=FLUSH_ON_STOP_S)
                finally:
                    env.close()
        return self.stats


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT / SIGTERM (the worker finishes its step, flushes and closes)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def worker_main(config: TmrlConfig, *, worker_id: str) -> int:
    """``tmrl-worker``: run a ``RolloutWorker`` until SIGINT / SIGTERM."""
    stop = _stop_on_signals()
    stats = RolloutWorker(config, worker_id).run(stop)
    print(
        f"worker {worker_id}: {stats.episodes} episodes, {stats.steps} steps, {stats.samples} samples sent, "
        f"{stats.timeouts} time-step timeouts, weights v{stats.weight_version}",
        flush=True,
    )
    return 0


def default_weights_path(config: TmrlConfig) -> Path:
    """The actor ``tmrl test`` drives: the run's best one (the trainer's keep-the-best), else its latest; on the
    built-in game, when the run has none yet, the actor shipped with tmrl."""
    from tmrl.rl.export import load_arrays
    from tmrl.trainer import ACTOR_FILE, BEST_ACTOR_FILE

    best = config.run_dir / BEST_ACTOR_FILE
    if best.exists():
        record = load_arrays(best)[1].get("best_test") or {}
        print(
            f"driving the run's best actor {best} (test score {record.get('return', float('nan')):.1f} over "
            f"{record.get('episodes', 1)} episodes, weight version {record.get('weight_version')}); "
            f"--weights {config.run_dir / ACTOR_FILE} drives the latest",
            flush=True,
        )
        return best
    for name in (ACTOR_FILE, "actor.safetensors"):
        path = config.run_dir / name
        if path.exists():
            return path
    if config.env.game == "carracing":
        from tmrl.assets import carracing_actor_path

        path = carracing_actor_path()
        print(
            f"no actor exported in {config.run_dir} yet: driving with the shipped actor {path.name}",
            flush=True,
        )
        return path
    raise CheckpointError(
        f"no exported actor in {config.run_dir}; train first (`tmrl run --name {config.run.name}`) or pass "
        "--weights FILE"
    )


def test_main(config: TmrlConfig, *, weights: Path | None, episodes: int, trace: Path | None = None) -> int:
    """``tmrl test``: drive ``episodes`` episodes with the deterministic policy; print returns and lap times
    (with ``trace``, a step-by-step trace of each episode into that folder)."""
    from tmrl.envs import make_env
    from tmrl.rl.export import load_actor

    path = weights if weights is not None else default_weights_path(config)
    if not Path(path).exists():
        raise CheckpointError(f"weights file {path} does not exist")
    actor = load_actor(path)
    traces = None
    if trace is not None:  # before the game starts: a bad folder costs nothing
        try:
            trace.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"--trace {trace}: cannot use it as a folder for traces ({exc.strerror})"
            ) from None
        traces = TraceDirectory(trace, keep=None, prefix="episode")
    stop = _stop_on_signals()
    env = make_env(config.env, config.game_config())
    dt = resolved_rtgym(config.env).time_step_s
    results = []
    try:
        if actor.spec.pedals != env.observation_spec.pedals:
            raise CheckpointError(
                f"the actor in {path} was trained with env.pedals = {actor.spec.pedals!r} but this env uses "
                f"{env.observation_spec.pedals!r}; pass --set env.pedals={actor.spec.pedals} or the run's "
                "configuration (--config <run dir>/config.toml)"
            )
        if actor.spec != env.observation_spec:
            raise CheckpointError(
                f"the actor in {path} was trained on other observations ({actor.spec.to_dict()}) than this "
                f"env produces; use the run's configuration (--config <run dir>/config.toml)"
            )
        with TimeoutCounter() as timeouts:
            for i in range(episodes):
                if stop.is_set():
                    break
                obs, _ = env.reset()
                ret, steps, terminated, truncated = 0.0, 0, False, False
                info: dict[str, Any] = {}
                steps_trace = EpisodeTrace(dt, config.env.pedals) if traces is not None else None
                while not (terminated or truncated or stop.is_set()):
                    action = actor.act(obs, deterministic=True)
                    obs, reward, terminated, truncated, info = env.step(action)
                    ret += reward
                    steps += 1
                    if steps_trace is not None:
                        steps_trace.add(action, reward, info)
                finished = bool(info.get("finished", False))
                lap = f"lap {steps * dt:.2f} s" if finished else ("time limit" if truncated else "no finish")
                if not finished and "speed_kmh" in info:
                    lap += (
                        f" (ended at {info['speed_kmh']:.0f} km/h, {info['off_trajectory']:.1f} units from the "
                        f"trajectory{', the wrong way' if info['heading'] < -0.5 else ''})"
                    )
                progress = 100.0 * float(info.get("progress", 0.0))
                print(
                    f"episode {i + 1}: return {ret:.1f}, {steps} steps, {progress:.0f} % of the track, {lap}"
                )
                if traces is not None and steps_trace is not None:
                    print(f"  trace: {traces.save(steps_trace)} (`tmrl trace` shows how it ended)")
                results.append(ret)
            if results:
                print(
                    f"{len(results)} episodes: mean return {np.mean(results):.1f} (min {min(results):.1f}, max "
                    f"{max(results):.1f}); {timeouts.count} time-step timeouts",
                    flush=True,
                )
    finally:
        env.close()
    return 0
