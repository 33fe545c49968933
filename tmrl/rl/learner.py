"""``Learner``: the trainer code shared by the relay-connected ``Trainer`` and the synchronous loop.

It owns the algorithm (SAC or REDQ), the replay memory, the counters, the throttle (warm-up, at most
``max_updates_per_step`` updates per environment step), metrics, actor export and checkpoints. Whoever drives it
feeds batches with ``add_batch`` and calls ``train`` whenever it can spare time.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import torch

from tmrl.errors import CheckpointError
from tmrl.rl import checkpoint as ckpt
from tmrl.rl.config import RLConfig
from tmrl.rl.export import actor_meta, published_arrays
from tmrl.rl.memory import ReplayMemory
from tmrl.rl.metrics import MetricsWriter
from tmrl.rl.redq import REDQ
from tmrl.rl.sac import SAC, resolve_device
from tmrl.spaces import ObservationSpec

CHECKPOINT_DIR = "checkpoints"
EPISODE_END = ("progress", "end_speed_kmh", "end_off_trajectory", "end_heading")
"""Episode stats a worker reports about the episode's last step, logged as ``episodes/<train|test>_<key>``:
the fraction of the lap reached, the car's speed, its distance from the trajectory point it had reached and
the cosine between its motion and the trajectory's direction (-1: the wrong way)."""


def build_algorithm(spec: ObservationSpec, config: RLConfig, device: torch.device) -> SAC:
    """SAC or REDQ from the configuration."""
    if config.algorithm.name == "redq":
        return REDQ(spec, config.algorithm, config.model, device)
    return SAC(spec, config.algorithm, config.model, device)


class Learner:
    """Algorithm + replay memory + counters + throttle + metrics + checkpoints."""

    def __init__(
        self,
        spec: ObservationSpec,
        config: RLConfig,
        run_dir: str | os.PathLike | None = None,
        *,
        resume: bool = False,
        tensorboard: bool = True,
    ) -> None:
        tc = config.trainer
        self.spec, self.config = spec, config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        self.device = resolve_device(tc.device)
        self.algo = build_algorithm(spec, config, self.device)
        self.env_steps = 0  # rows received (one per environment step, plus each episode's final observation)
        self.episodes = 0
        self.weight_version = 0
        self.last_published = 0
        self.last_checkpoint = 0
        self.extra: dict = {}  # JSON-able state of the driver (e.g. the trainer's worker -> stream map)
        ring = None
        ready: list = []
        if resume:
            if self.run_dir is None:
                raise CheckpointError("resume needs a run directory")
            loaded = ckpt.load_checkpoint(self.run_dir / CHECKPOINT_DIR)
            ring = loaded.ring
            ready = self._restore(loaded)
        self.memory = ReplayMemory(
            spec,
            tc.replay_capacity,
            tc.batch_size,
            device=self.device,
            seed=tc.seed,
            prefetch=tc.prefetch,
            ring=ring,
            n_step=config.algorithm.n_step,
            gamma=self.algo.gamma,
        )
        if ready:
            try:
                self.memory.restore_ready(ready)
            except ValueError as exc:
                raise CheckpointError(f"checkpoint in {self.run_dir}: {exc}; use another run name") from exc
        self.metrics = (
            MetricsWriter(self.run_dir, tensorboard=tensorboard) if self.run_dir is not None else None
        )
        self._pending: dict[str, torch.Tensor] = {}
        # the factor last set on the optimisers (algorithm.lr_decay_steps); None: not set yet
        self._lr_scale: float | None = None
        self.gauges: dict[str, float] = {}  # extra scalars the driver sets, logged with the training metrics
        self._returns: deque[float] = deque(maxlen=100)
        self._rate_t = time.perf_counter()
        self._rate_updates = self.updates
        self._rate_steps = self.env_steps

    @property
    def updates(self) -> int:
        return self.algo.updates

    @property
    def actor(self):
        return self.algo.actor

    @property
    def delivered_actor(self):
        """The actor the run delivers (``algorithm.actor_average``: the average, else the live actor)."""
        return self.algo.delivered_actor

    # -- data -----------------------------------------------------------------------------------------------
    def add_batch(self, stream: int, arrays: dict, episodes: list[dict] | None = None) -> int:
        """Append a batch of rows of ``stream``; ``episodes`` are stats of episodes it completed."""
        n = self.memory.append(stream, arrays)
        self.env_steps += n
        for ep in episodes or ():
            end = {k: float(ep[k]) for k in EPISODE_END if isinstance(ep.get(k), (int, float))}
            self.log_episode(
                float(ep["return"]),
                int(ep["length"]),
                test=bool(ep.get("test", False)),
                retest=bool(ep.get("retest", False)),
                other_track=ep.get("other_track") is not None,
                end=end,
            )
        return n

    def log_episode(
        self,
        ret: float,
        length: int,
        *,
        test: bool = False,
        retest: bool = False,
        other_track: bool = False,
        end: Mapping[str, float] | None = None,
    ) -> None:
        """Log an episode's return and length, and ``end``: where and how it ended (keys of ``EPISODE_END``).
        A ``retest`` (a test episode of an older, best-scored version: ``worker.retest_every``) is logged apart
        from the test episodes of the latest weights, whose curve it would blur; so is a training episode on
        another track (``worker.other_tracks``: ``episodes/other_*``) from those on the game's own track."""
        kind = "retest" if retest else "test" if test else "other" if other_track else "train"
        if not test:
            self.episodes += 1
            self._returns.append(ret)
        if self.metrics is not None:
            values = {f"episodes/{kind}_return": ret, f"episodes/{kind}_length": length}
            values.update({f"episodes/{kind}_{k}": v for k, v in (end or {}).items()})
            self.metrics.scalars(values, env_steps=self.env_steps, updates=self.updates)

    # -- training -------------------------------------------------------------------------------------------
    def updates_available(self) -> int:
        """Updates allowed now: 0 during warm-up, else up to max_updates_per_step * env_steps in total."""
        tc = self.config.trainer
        if self.env_steps < tc.warmup_steps or self.memory.num_transitions() == 0:
            return 0
        return max(0, int(tc.max_updates_per_step * self.env_steps) - self.updates)

    def train(self, max_updates: int | None = None) -> int:
        """Run the updates the throttle allows (at most ``max_updates``); returns how many ran."""
        n = self.updates_available()
        if max_updates is not None:
            n = min(n, max_updates)
        for _ in range(n):
            self.update()
        return n

    def update(self) -> dict[str, torch.Tensor]:
        """One update on a fresh minibatch (ignores the throttle)."""
        if self.config.algorithm.lr_decay_steps is not None:
            self._apply_lr_scale()
        info = self.algo.update(self.memory.sample())
        self._pending = info
        if self.updates % self.config.trainer.log_every == 0:
            self.log_training()
        return info

    def _apply_lr_scale(self) -> None:
        # Set on every change, and once after a resume (the optimisers' saved rates are then overwritten).
        scale = self.config.algorithm.lr_scale(self.env_steps)
        if scale != self._lr_scale:
            self.algo.set_lr_scale(scale)
            self._lr_scale = scale
            self.gauges["charts/lr_scale"] = scale

    def log_training(self) -> None:
        if self.metrics is None:
            return
        now = time.perf_counter()
        dt = max(now - self._rate_t, 1e-9)
        values = {k: float(v) for k, v in self._pending.items()}
        values.update(self.gauges)
        values["speed/updates_per_s"] = (self.updates - self._rate_updates) / dt
        values["speed/samples_per_s"] = (self.env_steps - self._rate_steps) / dt
        values["charts/buffer_fill"] = len(self.memory) / self.memory.ring.capacity
        values["charts/weight_version"] = self.weight_version
        if self._returns:
            values["episodes/mean_return_100"] = sum(self._returns) / len(self._returns)
        self._rate_t, self._rate_updates, self._rate_steps = now, self.updates, self.env_steps
        self.metrics.scalars(values, env_steps=self.env_steps, updates=self.updates)

    # -- publishing -----------------------------------------------------------------------------------------
    def publish_due(self) -> bool:
        return self.updates - self.last_published >= self.config.trainer.publish_every

    def export_actor(self) -> tuple[int, dict, dict]:
        """A new weight version: (version, arrays, meta) for ``TrainerClient.publish_weights``; the arrays carry
        the averaged actor too when ``algorithm.actor_average`` is on (``tmrl.rl.export.published_arrays``)."""
        self.weight_version += 1
        self.last_published = self.updates
        meta = actor_meta(self.algo.actor, weight_version=self.weight_version, updates=self.updates)
        return self.weight_version, published_arrays(self.algo.actor, self.algo.actor_average), meta

    # -- checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        return self.updates - self.last_checkpoint >= self.config.trainer.checkpoint_every

    def checkpoint(self) -> Path:
        """Write a checkpoint of everything (networks, optimisers, alpha, RNG states, counters, replay)."""
        if self.run_dir is None:
            raise CheckpointError("checkpoints need a run directory")
        ready = self.memory.pause()  # the sampler stops, so the ring's RNG state matches what was sampled
        tensors = {
            "algo": self.algo.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "prefetched": ready,
        }
        if torch.cuda.is_available():
            tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
        state = {
            "counters": {
                "updates": self.updates,
                "env_steps": self.env_steps,
                "episodes": self.episodes,
                "weight_version": self.weight_version,
                "last_published": self.last_published,
            },
            "config": self.config.model_dump(mode="json"),
            "spec": self.spec.to_dict(),
            "extra": self.extra,
        }
        self.last_checkpoint = self.updates
        return ckpt.save_checkpoint(
            self.run_dir / CHECKPOINT_DIR, f"ckpt-{self.updates:09d}", state, tensors, self.memory.ring
        )

    def _restore(self, loaded: ckpt.Checkpoint) -> list:
        state, tensors = loaded.state, loaded.tensors
        if ObservationSpec.from_dict(state["spec"]) != self.spec:
            raise CheckpointError(
                f"checkpoint {loaded.path} was made for another observation layout; use another run name"
            )
        try:
            self.algo.load_state_dict(tensors["algo"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {loaded.path} does not match the configured networks ({exc}); "
                "use the configuration it was made with or another run name"
            ) from exc
        c = state["counters"]
        self.env_steps, self.episodes = int(c["env_steps"]), int(c["episodes"])
        self.weight_version, self.last_published = int(c["weight_version"]), int(c["last_published"])
        self.last_checkpoint = self.updates
        self.extra = dict(state.get("extra", {}))
        torch.set_rng_state(tensors["torch_rng"])
        if "cuda_rng" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(tensors["cuda_rng"])
        return list(tensors.get("prefetched", []))

    def close(self) -> None:
        self.memory.close()
        if self.metrics is not None:
            self.metrics.close()
