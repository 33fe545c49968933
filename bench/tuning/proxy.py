"""A synchronous stand-in for the built-in game's real-time env, for fast tuning and cheap evaluation.

``ProxyEnv`` steps the built-in game's own world (``RaceSim``: CarRacing-v3 physics, the same tracks) and
renders it with the same ``Renderer`` in this process, builds observations with the env's
``ObservationBuilder`` (the same LIDAR through ``tmrl._core.Lidar``, speed, extra telemetry, rtgym's action
buffer) and rewards with the env's ``CarRacingReward`` on a trajectory made of the track's centre line. Only
the clock differs: instead of wall time, each step advances the physics by the frames the env's time step
spans at 50 frames/s (one at the built-in game's 50 Hz default, 2 at 25 Hz, 2 or 3 at TrackMania's 20 Hz), as
fast as the machine allows. The timing is rtgym's: ``step(a)`` returns the observation captured
``start_obs_capture_s`` into the time step under way (its end on the built-in game), which applies the previous
action, and ``a`` is applied during the next time step. An action therefore acts on the game one time step after
the observation it was computed from (measured in real time: the game's steering telemetry at the observation
returned by ``step(a_t)`` is ``a_{t-1}``; at 50 Hz sometimes still ``a_{t-2}``, which the proxy does not model).
No jitter, no lost time steps.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from tmrl.envs.config import EnvConfig, resolved_rtgym
from tmrl.envs.observations import ObservationBuilder, action_space, dict_space, observation_spec
from tmrl.envs.reward import centerline_trajectory, reward_on
from tmrl.spaces import ObservationSpec

PHYSICS_HZ = 50.0


class ProxyEnv(gym.Env):
    """Synchronous built-in game with the real-time env's observations and reward (see module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        config: EnvConfig,
        seeds: int | list[int] = 0,
        *,
        supersample: int = 2,
        jitter_seed: int | None = None,
    ) -> None:
        from tmrl.games.carracing.sim import RaceSim, Renderer

        self.config = config
        self.seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        self._seed_i = 0
        self.spec_: ObservationSpec = observation_spec(config)
        self.observation_space = dict_space(self.spec_)
        self.action_space = action_space()
        self.sims = {}
        self.rewards = {}
        self._renderers = {}
        for s in self.seeds:
            sim = RaceSim(s)
            self.sims[s] = sim
            self._renderers[s] = Renderer(sim, 96, 96, supersample)
            self.rewards[s] = reward_on(config, centerline_trajectory(s))
        self.timing = resolved_rtgym(config)
        self.builder = ObservationBuilder(config, (96, 96, 3), "rgb", self.timing.time_step_s)
        self.frames_per_step = self.timing.time_step_s * PHYSICS_HZ
        self.capture_frames = int(self.timing.start_obs_capture_s * PHYSICS_HZ + 1e-9)
        self.act_buf: deque[np.ndarray] = deque(maxlen=config.rtgym.act_buf_len)
        self.seed = self.seeds[0]
        self.steps = 0
        self._clock = 0.0  # physics frames owed to the time steps so far
        self._ticked = 0
        self._obs_tick = 0
        self._action = np.zeros(3, np.float32)
        # Real time starts each episode at an arbitrary phase of the game's clock: with a jitter seed, every reset
        # starts the 2/3-frame alternation at either end (without, one episode is one fixed trajectory).
        self._jitter = np.random.default_rng(jitter_seed) if jitter_seed is not None else None
        self._phase = 0.0

    @property
    def sim(self):
        return self.sims[self.seed]

    def _obs(self, parts: list[np.ndarray]) -> dict[str, np.ndarray]:
        names = [c.name for c in self.spec_.components if c.name != "prev_actions"]
        out = dict(zip(names, parts, strict=True))
        out["prev_actions"] = np.array(self.act_buf, dtype=np.float32)
        return out

    def _tick(self, n: int):
        tel = None
        a = self._action
        for _ in range(n):
            tel = self.sim.tick(float(a[0]), float(a[1]), float(a[2]))
            self._ticked += 1
        return tel if tel is not None else self.sim.telemetry()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "track" in options:
            self.seed = int(options["track"])
        else:
            self.seed = self.seeds[self._seed_i % len(self.seeds)]
            self._seed_i += 1
        self.sim.reset()
        self.reward = self.rewards[self.seed]
        self.reward.reset()
        self.act_buf.clear()
        for _ in range(self.config.rtgym.act_buf_len):
            self.act_buf.append(np.zeros(3, np.float32))
        self._action = np.zeros(3, np.float32)
        self.steps = 0
        self._clock = 0.0
        self._ticked = 0
        self._obs_tick = 0
        self._phase = 0.0
        if options and "phase" in options:  # 0 or 0.5: where the 2/3-frame alternation starts
            self._phase = float(options["phase"])
        elif self._jitter is not None:
            self._phase = 0.5 * int(self._jitter.integers(0, 2))
        frame = self._renderers[self.seed].render()
        return self._obs(self.builder.reset(frame, self.sim.telemetry(), 0.0)), {}

    def step(self, action):
        """rtgym's timing: ``step(a)`` finishes the time step under way (it applies the previous action), returns
        the observation captured ``start_obs_capture_s`` into it, and applies ``a`` during the next time step."""
        a = np.clip(np.asarray(action, np.float32).reshape(3), -1.0, 1.0)
        k = self.steps
        self._tick(int(round(k * self.frames_per_step + self._phase)) - self._ticked)
        tel = self._tick(self.capture_frames)
        frame = self._renderers[self.seed].render()
        pos = np.array((tel.x, tel.y, tel.z))
        finished = tel.finished >= 0.5
        elapsed, self._obs_tick = self._ticked - self._obs_tick, self._ticked  # frames between observations
        reward, terminated = self.reward.step(pos, finished, elapsed)
        tracker = self.reward.tracker
        progress = tracker.index / max(1, tracker.last_index)
        parts = self.builder.build(frame, tel, progress)
        # the rest of the time step, still under the previous action; then ``a`` takes over
        self._tick(int(round((k + 1) * self.frames_per_step + self._phase)) - self._ticked)
        self._action = a
        self.act_buf.append(a.copy())
        self.steps += 1
        truncated = self.steps >= self.timing.ep_max_length and not terminated
        return (
            self._obs(parts),
            float(reward),
            bool(terminated),
            bool(truncated),
            {"progress": progress, "finished": finished},
        )

    def close(self) -> None:
        for sim in self.sims.values():
            sim.env.close()
