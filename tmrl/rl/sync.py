"""The synchronous loop: the trainer's code (``Learner``, ``TransitionRecorder``) without relay or real time.

For Gymnasium environments such as Pendulum-v1: one environment step, its row into the replay ring, then the
updates the throttle allows, and so on. Used by the tests (the proof that SAC learns) and the benchmarks.
Box observations become a one-component dict (``"state"``) and actions in [-1, 1] are rescaled to the env's bounds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from tmrl.rl.config import RLConfig
from tmrl.rl.learner import Learner
from tmrl.rl.models import Actor
from tmrl.rl.transitions import TransitionRecorder
from tmrl.spaces import Component, ObservationSpec


class DictActionAdapter(gym.Wrapper):
    """Box observations -> {"state": float32 array}; actions in [-1, 1] -> the env's Box bounds."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError("the synchronous loop needs a continuous (Box) action space")
        self._low = env.action_space.low.astype(np.float32)
        self._high = env.action_space.high.astype(np.float32)
        self._box_obs = isinstance(env.observation_space, gym.spaces.Box)

    def _obs(self, obs):
        return {"state": np.asarray(obs, dtype=np.float32)} if self._box_obs else obs

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._obs(obs), info

    def step(self, action):
        a = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        obs, reward, terminated, truncated, info = self.env.step(a)
        return self._obs(obs), reward, terminated, truncated, info


def box_spec(env: gym.Env) -> ObservationSpec:
    """The ObservationSpec of a Box-observation, Box-action env seen through ``DictActionAdapter``."""
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    if obs_shape is None or act_shape is None:
        raise ValueError("box_spec needs Box observation and action spaces")
    return ObservationSpec((Component("state", tuple(int(d) for d in obs_shape)),), int(np.prod(act_shape)))


@dataclass
class SyncResult:
    env_steps: int
    updates: int
    train_returns: list[float] = field(default_factory=list)


def evaluate(actor: Actor, env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` deterministic episodes (env already wrapped by ``DictActionAdapter``)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(actor.act(obs, deterministic=True))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def train_sync(
    make_env: Callable[[], gym.Env],
    config: RLConfig,
    total_steps: int,
    *,
    run_dir: str | os.PathLike | None = None,
    learner: Learner | None = None,
    on_episode: Callable[[Learner, dict], None] | None = None,
) -> tuple[Learner, SyncResult]:
    """Train for ``total_steps`` environment steps; random actions during warm-up, then the stochastic actor."""
    env = DictActionAdapter(make_env())
    spec = box_spec(env.env) if isinstance(env.env.observation_space, gym.spaces.Box) else None
    if learner is None:
        if spec is None:
            raise ValueError("pass a Learner for environments with dict observations")
        learner = Learner(spec, config, run_dir)
    seed = config.trainer.seed
    rng = np.random.default_rng(seed)
    recorder = TransitionRecorder(learner.spec)
    result = SyncResult(0, 0)
    obs, _ = env.reset(seed=seed)
    recorder.reset(obs)
    for _ in range(total_steps):
        if learner.env_steps < config.trainer.warmup_steps:
            action = rng.uniform(-1.0, 1.0, learner.spec.action_dim).astype(np.float32)
        else:
            action = learner.actor.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        recorder.step(action, float(reward), terminated, truncated, next_obs)
        episodes = recorder.pop_episodes()
        rows = recorder.take()
        if rows is not None:
            learner.add_batch(0, rows, episodes)
        for ep in episodes:
            result.train_returns.append(ep["return"])
            if on_episode is not None:
                on_episode(learner, ep)
        if terminated or truncated:
            obs, _ = env.reset()
            recorder.reset(obs)
        else:
            obs = next_obs
        learner.train()
    result.env_steps, result.updates = learner.env_steps, learner.updates
    env.close()
    return learner, result
