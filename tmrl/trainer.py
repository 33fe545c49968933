"""The ``Trainer`` role: batches from the relay into the replay ring, SAC / REDQ updates, weights back to workers.

The loop alternates: poll the relay for batches (waiting only when no update is allowed), append them to the
ring (one stream per worker), run a bounded chunk of the updates the throttle allows (warm-up, at most
``max_updates_per_step`` updates per environment step), publish the actor every ``publish_every`` updates,
checkpoint every ``checkpoint_every`` updates and on the way out. ``--resume`` (the default when a checkpoint
exists) continues with the same counters, optimiser moments, entropy coefficient and replay contents.

Worker batch meta understood here, besides the relay's ``worker_id`` / ``seq`` / ``n`` / ``policy_version``:
``episodes``, a list of ``{"return": float, "length": int, "test": bool}`` for episodes the batch completed, with
where they ended (``tmrl.rl.learner.EPISODE_END``: progress, speed, distance from and heading against the
trajectory) when known.

Keep the best: a test episode drives one weight version from start to end (the worker takes the latest weights
when the test episode starts, not at every step as in training episodes) and reports it as ``policy_version``.
A worker scores a version by the mean return of a series of test episodes with it (``worker.confirm_episodes``
more after one that beats its best) and puts the ``score`` and ``score_episodes`` on the series' last episode.
The trainer keeps the most recent published actors (up to ``KEEP_BYTES``: about 370 of the default LIDAR actor)
and, when a score beats every earlier one, writes that version's actor to ``weights/best-actor.safetensors``
with the score in its metadata (``best_test``). ``tmrl test`` drives that actor when the run has one. With
``worker.retest_every`` a worker re-drives its best-scored version now and then and reports the mean of all its
test episodes as a new score of that version; a new score of the kept version replaces the old one even when
lower, so a later version can beat it.

With ``algorithm.actor_average`` the run delivers a Polyak average of the actor: every publication carries it
beside the live actor, workers drive their test episodes with it (so scores, the best actor and the exported
``weights/actor.safetensors`` are all of the average) and explore with the live one, which checkpoints also
write to ``weights/live-actor.safetensors``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmrl.rl.checkpoint import has_checkpoint
from tmrl.rl.config import RLConfig
from tmrl.rl.export import load_arrays, save_actor, save_arrays, split_published
from tmrl.rl.learner import CHECKPOINT_DIR, Learner
from tmrl.run import write_json_atomic
from tmrl.spaces import ObservationSpec

if TYPE_CHECKING:
    from tmrl.config import TmrlConfig
    from tmrl.net.client import TrainerClient

ACTOR_FILE = "weights/actor.safetensors"
BEST_ACTOR_FILE = "weights/best-actor.safetensors"
LIVE_ACTOR_FILE = "weights/live-actor.safetensors"  # with algorithm.actor_average: the actor that explores
# published actors kept for keep-the-best (a LIDAR test episode outlives about 30 publications)
KEEP_BYTES = 128 << 20
STATUS_FILE = "status/trainer.json"


class Trainer:
    """One trainer: a ``Learner`` fed by a ``TrainerClient``."""

    def __init__(
        self,
        spec: ObservationSpec,
        config: RLConfig,
        client: TrainerClient,
        run_dir: str | os.PathLike,
        *,
        resume: bool = False,
        chunk: int = 20,
        status_every_s: float = 1.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.learner = Learner(spec, config, self.run_dir, resume=resume)
        self.client = client
        self.chunk = chunk
        self.status_every_s = status_every_s
        self.streams: dict[str, int] = self.learner.extra.setdefault("streams", {})
        self.batches = 0
        self._status_t = 0.0
        self._rate = (time.perf_counter(), self.learner.updates, self.learner.env_steps)
        self._speeds = (0.0, 0.0)
        self._published: OrderedDict[int, tuple[dict, dict]] = OrderedDict()
        self._published_bytes = 0

    def stream_of(self, worker_id: str) -> int:
        """The replay stream of a worker (stable across restarts: saved in the checkpoint)."""
        if worker_id not in self.streams:
            self.streams[worker_id] = len(self.streams)
        return self.streams[worker_id]

    def ingest(self, batches: list[tuple[dict[str, Any], dict]]) -> int:
        """Append polled batches to the ring; returns rows added."""
        rows = 0
        for meta, arrays in batches:
            stream = self.stream_of(str(meta.get("worker_id", "worker")))
            rows += self.learner.add_batch(stream, arrays, meta.get("episodes"))
            for ep in meta.get("episodes") or ():
                if ep.get("test") and "score" in ep and "policy_version" in ep:
                    self.consider_best(
                        int(ep["policy_version"]), float(ep["score"]), int(ep.get("score_episodes", 1))
                    )
            self.batches += 1
            if "policy_version" in meta:  # staleness: how many publications behind the acting policy was
                self.learner.gauges["charts/policy_lag"] = self.learner.weight_version - int(
                    meta["policy_version"]
                )
        return rows

    def publish(self) -> int:
        version, arrays, meta = self.learner.export_actor()
        self.client.publish_weights(version, arrays, meta)
        self._published[version] = (arrays, meta)
        self._published_bytes += sum(a.nbytes for a in arrays.values())
        while self._published_bytes > KEEP_BYTES and len(self._published) > 1:
            old, _ = self._published.popitem(last=False)[1]
            self._published_bytes -= sum(a.nbytes for a in old.values())
        return version

    def consider_best(self, version: int, score: float, episodes: int = 1) -> bool:
        """Save the actor of ``version`` as the best one if its ``score`` (mean return of ``episodes`` test
        episodes) beats every earlier score. A new score of the version already kept (a worker's re-test,
        ``worker.retest_every``) replaces its old one, up or down."""
        best = self.learner.extra.get("best_test")
        rescore = best is not None and int(best["weight_version"]) == version
        if best is not None and not rescore and score <= float(best["return"]):
            return False
        kept = self._published.get(version)
        if kept is None and rescore and (self.run_dir / BEST_ACTOR_FILE).exists():
            arrays, meta = load_arrays(self.run_dir / BEST_ACTOR_FILE)  # kept before a restart
            meta.pop("best_test", None)
            kept = (arrays, meta)
        if kept is None:  # published before a restart or too long ago: nothing to save
            return False
        arrays, meta = kept
        live, average = split_published(arrays)  # the delivered actor: the average when there is one
        arrays = live if average is None else average
        record = {
            "return": score,
            "episodes": episodes,
            "weight_version": version,
            "updates": meta.get("updates"),
        }
        save_arrays(self.run_dir / BEST_ACTOR_FILE, arrays, {**meta, "best_test": record})
        self.learner.extra["best_test"] = record
        return True

    def step(self, max_updates: int | None = None) -> int:
        """One iteration of the loop; returns the number of updates it ran (at most ``max_updates``)."""
        learner = self.learner
        tc = learner.config.trainer
        can_train = learner.updates_available() > 0
        self.ingest(self.client.poll_batches(64, 0.0 if can_train else 0.05))
        # a bounded chunk that stops exactly at the next publication / checkpoint
        limit = min(
            self.chunk,
            tc.publish_every - (learner.updates - learner.last_published),
            tc.checkpoint_every - (learner.updates - learner.last_checkpoint),
        )
        if max_updates is not None:
            limit = min(limit, max_updates)
        n = learner.train(max(limit, 1))
        if learner.publish_due():
            self.publish()
        if learner.checkpoint_due():
            self.checkpoint()
        self._status()
        return n

    def checkpoint(self) -> Path:
        learner = self.learner
        path = learner.checkpoint()
        save_actor(self.run_dir / ACTOR_FILE, learner.delivered_actor, weight_version=learner.weight_version)
        if learner.delivered_actor is not learner.actor:
            save_actor(self.run_dir / LIVE_ACTOR_FILE, learner.actor, weight_version=learner.weight_version)
        return path

    def _status(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._status_t < self.status_every_s:
            return
        t0, u0, s0 = self._rate
        dt = max(now - t0, 1e-9)
        if dt >= 1.0 or force:
            self._speeds = ((self.learner.updates - u0) / dt, (self.learner.env_steps - s0) / dt)
            self._rate = (now, self.learner.updates, self.learner.env_steps)
        self._status_t = now
        learner = self.learner
        path = self.run_dir / STATUS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            path,
            {
                "time": time.time(),
                "updates": learner.updates,
                "updates_per_s": round(self._speeds[0], 2),
                "samples_per_s": round(self._speeds[1], 2),
                "env_steps": learner.env_steps,
                "episodes": learner.episodes,
                "batches": self.batches,
                "buffer_fill": len(learner.memory),
                "buffer_capacity": learner.memory.ring.capacity,
                "weight_version": learner.weight_version,
                "best_test": learner.extra.get("best_test"),
            },
        )

    def run(self, stop: threading.Event, *, max_updates: int | None = None) -> None:
        """Train until ``stop`` is set (or ``max_updates`` is reached); checkpoint on the way out."""
        try:
            self.publish()  # workers act with the current actor from the start
            while not stop.is_set() and (max_updates is None or self.learner.updates < max_updates):
                self.step(None if max_updates is None else max_updates - self.learner.updates)
        finally:
            try:
                self.checkpoint()
                self._status(force=True)
            finally:
                self.learner.close()


def run_trainer(config: TmrlConfig, *, fresh: bool = False, stop: threading.Event | None = None) -> None:
    """``tmrl-trainer``: connect to the relay and train until SIGINT / SIGTERM (or ``stop``)."""
    from tmrl.envs.observations import observation_spec
    from tmrl.net.client import TrainerClient

    rl = config.rl()
    run_dir = config.run_dir
    resume = not fresh and has_checkpoint(run_dir / CHECKPOINT_DIR)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    client = TrainerClient(config.relay)
    try:
        trainer = Trainer(observation_spec(config.env), rl, client, run_dir, resume=resume)
        learner = trainer.learner
        how = (
            f"resumed at {learner.updates} updates, {learner.env_steps} steps" if resume else "started fresh"
        )
        print(f"tmrl-trainer: {how}; run directory {run_dir}", flush=True)
        trainer.run(stop)
        print(f"tmrl-trainer: stopped at {learner.updates} updates; checkpoint in {run_dir / CHECKPOINT_DIR}")
    finally:
        client.close()
