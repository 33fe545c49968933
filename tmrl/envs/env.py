"""``make_env``: a standard ``gymnasium.Env`` over rtgym's real-time env, with dict observations.

rtgym returns tuples (the interface's components followed by the action buffer); ``RealTimeEnv`` turns them into
a dict matching ``observation_spec(config)`` (``prev_actions`` stacks the buffer, oldest first), clips actions
into the action space, re-raises errors from rtgym's time-step thread, and owns the game it closes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
from rtgym import DEFAULT_CONFIG_DICT
from rtgym.envs.real_time_env import RealTimeEnv as _RtgymV1
from rtgym.envs.real_time_env import RealTimeEnvTS as _RtgymTS

from tmrl.envs.config import EnvConfig, resolved_rtgym
from tmrl.envs.interface import GameInterface, interface_class
from tmrl.envs.observations import action_space, dict_space
from tmrl.envs.priority import Priority, set_priority
from tmrl.envs.reward import make_reward
from tmrl.errors import ConfigError
from tmrl.spaces import ObservationSpec

if TYPE_CHECKING:
    from tmrl.games.base import Game
    from tmrl.games.config import CarRacingConfig, TM2020Config


def rtgym_config(config: EnvConfig, interface: Any) -> dict:
    """rtgym's configuration dict around an already built ``interface`` instance."""
    rc = resolved_rtgym(config)
    cfg = dict(DEFAULT_CONFIG_DICT)
    cfg.update(
        {
            # rtgym calls config["interface"](); hand it the instance already built in this thread, so that
            # construction errors surface here rather than in rtgym's thread (where they would hang it).
            "interface": lambda: interface,
            "time_step_duration": rc.time_step_s,
            "start_obs_capture": rc.start_obs_capture_s,
            "time_step_timeout_factor": rc.timeout_factor,
            "ep_max_length": rc.ep_max_length,
            "act_in_obs": True,
            "act_buf_len": rc.act_buf_len,
            "reset_act_buf": True,
            "wait_on_done": rc.wait_on_done,
            "benchmark": False,
        }
    )
    return cfg


def make_rtgym_env(config: EnvConfig, interface: Any) -> _RtgymTS | _RtgymV1:
    """rtgym's env (the class named by ``config.rtgym.implementation``) around ``interface``."""
    cls = _RtgymTS if config.rtgym.implementation == "real-time-gym-ts-v1" else _RtgymV1
    return cls(rtgym_config(config, interface))


class RealTimeEnv(gymnasium.Env):
    """A real-time game as a Gymnasium env: Dict observations, Box(-1, 1, (3,)) actions [gas, brake, steer].

    ``step`` blocks until the current time step ends (rtgym's elastic clock): call it again within one time step.
    ``truncated`` is True at ``ep_max_length`` steps; ``terminated`` on the failure countdown or the finish.
    ``info`` holds ``progress`` (fraction of the reward trajectory reached), ``finished`` (the finish line),
    ``speed_kmh`` (telemetry speed), ``off_trajectory`` (distance from the trajectory point reached) and
    ``heading`` (cosine between the car's last motion and the trajectory's direction; -1 the wrong way; the
    previous step's value when the game sent no new telemetry frame during the step)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, config: EnvConfig, game: Game, *, track_seed: int | None = None, owns_game: bool = True
    ) -> None:
        self.config = config
        self.game = game
        self._owns_game = owns_game
        self._closed = False
        reward = make_reward(config, track_seed=track_seed)
        self.interface: GameInterface = interface_class(config.game)(config, game, reward)
        self.spec_: ObservationSpec = self.interface.spec
        self.observation_space = dict_space(self.spec_)
        self.action_space = action_space()
        self._names = [c.name for c in self.spec_.components if c.name != "prev_actions"]
        self._rt = make_rtgym_env(config, self.interface)
        self._priority: Priority = "normal"
        try:
            if config.priority != "normal":
                self.set_priority(config.priority)
        except BaseException:
            self.close()
            raise

    def set_priority(self, mode: Priority) -> None:
        """Scheduling of the real-time path (``EnvConfig.priority``) for every thread of this process and of the
        game; ``"normal"`` puts them all back to the default."""
        pids = [os.getpid()]
        game_pid = getattr(self.game, "pid", None)
        if isinstance(game_pid, int):
            pids.append(game_pid)
        thread = getattr(self._rt, "_at_thread", None) if isinstance(self._rt, _RtgymTS) else None
        set_priority(mode, pids=pids, timestep_tid=getattr(thread, "native_id", None))
        self._priority = mode

    @property
    def observation_spec(self) -> ObservationSpec:
        return self.spec_

    def _to_dict(self, obs: tuple) -> dict[str, np.ndarray]:
        n = len(self._names)
        out = dict(zip(self._names, obs[:n], strict=True))
        out["prev_actions"] = np.asarray(obs[n:], dtype=np.float32)
        return out

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if self._rt.running:  # reset in mid-episode: pause first so rtgym does not count the respawn as late
            self._rt.wait()
        obs, info = self._rt.reset(seed=seed, options=options)
        self.interface.raise_error()
        return self._to_dict(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        act = np.clip(np.asarray(action, dtype=np.float32).reshape(3), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self._rt.step(act)
        self.interface.raise_error()
        return self._to_dict(obs), float(reward), bool(terminated), bool(truncated), info

    def pause(self) -> None:
        """Release the controls and break the real-time clock until the next reset (rtgym's ``wait``)."""
        self._rt.wait()
        self.interface.raise_error()

    def close(self) -> None:
        """Stop rtgym's thread, then close the game if this env opened it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        rt = self._rt
        try:
            if self._priority != "normal":  # give the priority back (always allowed)
                self.set_priority("normal")
            if isinstance(rt, _RtgymTS):
                rt.stop()
                rt.__del__()  # rtgym's only way to end its time-step thread
            else:
                rt._join_thread()
        finally:
            if self._owns_game:
                self.game.close()


def make_env(config: EnvConfig, game_config: CarRacingConfig | TM2020Config | None = None) -> RealTimeEnv:
    """Open the configured game and return it as a real-time ``gymnasium.Env`` (close it when done).

    ``game_config`` defaults to the game's default configuration. Raises ``RewardError`` when the reward
    trajectory file is missing or invalid, ``GameError`` when the game cannot be started."""
    from tmrl.games import open_game
    from tmrl.games.config import CarRacingConfig, TM2020Config

    if game_config is None:
        game_config = CarRacingConfig() if config.game == "carracing" else TM2020Config()
    if game_config.game != config.game:
        raise ConfigError(
            f"the env is configured for game {config.game!r} but the game configuration is for "
            f"{game_config.game!r}; make them agree"
        )
    track_seed = game_config.seed if isinstance(game_config, CarRacingConfig) else None
    resolved_rtgym(config)  # check the timing and the reward file before starting a game process
    make_reward(config, track_seed=track_seed)
    game = open_game(game_config)
    try:
        return RealTimeEnv(config, game, track_seed=track_seed, owns_game=True)
    except BaseException:
        game.close()
        raise
