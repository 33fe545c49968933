"""rtgym ``RealTimeGymInterface`` implementations: one per game, sharing the capture -> observation -> reward path.

rtgym calls these methods from its own time-step thread. An exception escaping there would kill that thread and
leave ``step``/``reset`` waiting forever, so every method catches errors, stores the first one in ``error`` and
hands rtgym a placeholder; the env wrapper (``tmrl.envs.env``) re-raises it in the caller's thread right after.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast

import gymnasium.spaces as gspaces
import numpy as np
from rtgym import RealTimeGymInterface

from tmrl.envs.config import EnvConfig, resolved_reset_settle, resolved_rtgym
from tmrl.envs.observations import ObservationBuilder, action_space, component_space
from tmrl.envs.reward import CarRacingReward, TrajectoryReward, centerline_trajectory, reward_on
from tmrl.errors import ConfigError, GameError, TmrlError
from tmrl.spaces import pedal_values

if TYPE_CHECKING:
    from tmrl.games.base import Game
    from tmrl.games.carracing.game import CarRacingGame
    from tmrl.games.telemetry import TelemetryFrame


class GameInterface(RealTimeGymInterface):
    """Shared real-time loop body: apply [gas, brake, steer], capture, build the observation, compute reward."""

    respawn_radius = 5.0  # a respawn is seen when the car is this close to the trajectory's first point

    def __init__(self, config: EnvConfig, game: Game, reward: TrajectoryReward | CarRacingReward) -> None:
        self.config = config
        self.game = game
        self.reward = reward
        frame = game.screen.grab()
        self.builder = ObservationBuilder(
            config, frame.shape, game.screen.channel_order, resolved_rtgym(config).time_step_s
        )
        self.spec = self.builder.spec
        self.error: BaseException | None = None
        self.settle_s = resolved_reset_settle(config)
        self._counter = 0
        self._placeholder = [np.zeros(component_space(c).shape, c.dtype) for c in self.spec.components][:-1]
        self.control_times: list[float] | None = None  # set to a list to record when each control is sent
        self.rng = np.random.default_rng()  # random starts; reseeded by reset(seed=...)
        self._pos = np.zeros(3)  # the car's position at the previous observation
        self._heading = 0.0  # the last heading measured (kept over steps without a new telemetry frame)

    # ---------------------------------------------------------------------------------------------- rtgym API
    def get_observation_space(self) -> gspaces.Tuple:
        return gspaces.Tuple([component_space(c) for c in self.spec.components if c.name != "prev_actions"])

    def get_action_space(self) -> gspaces.Box:
        return action_space()

    def get_default_action(self) -> np.ndarray:
        """Released pedals, wheel straight (what ``prev_actions`` holds after a reset)."""
        released = -1.0 if self.config.pedals == "linear" else 0.0
        return np.array([released, released, 0.0], np.float32)

    def send_control(self, control: Any) -> None:
        if control is None or self.error is not None:
            return
        try:
            gas, brake = pedal_values(float(control[0]), float(control[1]), self.config.pedals)
            self.game.controller.act(gas, brake, float(control[2]))
            if self.control_times is not None:
                self.control_times.append(time.perf_counter())
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread by the wrapper
            self._fail(exc)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[list, dict]:
        if self.error is not None:
            return list(self._placeholder), {}
        try:
            if seed is not None:
                self.rng = np.random.default_rng(seed)
            options = options or {}
            track = options.get("track_seed")
            self._select_track(None if track is None else int(track))
            at = options.get("start_progress")
            tile, start_index, start_pos = self._start(
                bool(options.get("random_start", False)), None if at is None else float(at)
            )
            speed_kmh = float(options.get("start_speed_kmh", 0.0))
            self.game.controller.neutral()
            tel = self._respawn(tile, start_pos, speed_kmh)
            if self.settle_s > 0:
                time.sleep(self.settle_s)
                self._counter, tel = self.game.telemetry.latest()
            frame = self.game.screen.grab()
            self.reward.reset(start_index)
            self._pos = np.array((tel.x, tel.y, tel.z))
            self._heading = 0.0
            return self.builder.reset(frame, tel, 0.0), {}
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return list(self._placeholder), {}

    def get_obs_rew_terminated_info(self) -> tuple[list, float, bool, dict]:
        if self.error is not None:
            return list(self._placeholder), 0.0, True, {}
        try:
            frame = self.game.screen.grab()
            counter, tel = self.game.telemetry.latest()
            elapsed, self._counter = counter - self._counter, counter
            pos = np.array((tel.x, tel.y, tel.z))
            finished = tel.finished >= 0.5
            reward, terminated = self.reward.step(pos, finished, elapsed)
            tracker = self.reward.tracker
            progress = tracker.index / max(1, tracker.last_index)
            obs = self.builder.build(frame, tel, progress)
            # a step without a new telemetry frame (a loaded machine) has no motion to measure: keep the last one
            if elapsed > 0:
                self._heading = tracker.heading(pos - self._pos)
            info = {
                "progress": progress,
                "finished": finished,
                "speed_kmh": float(tel.speed),
                "off_trajectory": float(np.linalg.norm(tracker.points[tracker.index] - pos)),
                "heading": self._heading,
            }
            self._pos = pos
            return obs, float(reward), bool(terminated), info
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return list(self._placeholder), 0.0, True, {}

    def wait(self) -> None:
        try:
            self.game.controller.neutral()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    # ------------------------------------------------------------------------------------------------ helpers
    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    def raise_error(self) -> None:
        """Re-raise the error stored by the time-step thread, if any (called by the env wrapper)."""
        exc = self.error
        if exc is None:
            return
        if isinstance(exc, TmrlError):
            raise exc
        raise GameError(f"the {self.game.name} environment failed: {type(exc).__name__}: {exc}") from exc

    def _select_track(self, seed: int | None) -> None:
        """Drive the next episode on the track of ``seed`` (``reset`` option ``track_seed``); None: the game's
        own track. Only games that can change track override this."""
        if seed is not None:
            raise ConfigError(
                f"training on other tracks needs a game that can change track; set worker.other_tracks = 0 for "
                f"{self.game.name}"
            )

    def _start(self, random_start: bool, at: float | None = None) -> tuple[int, int, np.ndarray]:
        """(track tile, trajectory index, car position) of the episode's start: the start line, or a random
        place on the track when ``random_start`` (at lap fraction ``at`` when given; games that can put the car
        anywhere override this)."""
        if random_start:
            raise ConfigError(
                f"random starts need a game that can put the car anywhere on the track; set "
                f"worker.random_start = 0 for {self.game.name}"
            )
        return 0, 0, self.reward.tracker.points[0]

    def _respawn_command(self, tile: int, speed_kmh: float) -> None:
        if speed_kmh > 0.0:
            raise ConfigError(
                f"rolling starts need a game that can start the car moving; set worker.random_start_speed_kmh = 0 "
                f"for {self.game.name}"
            )
        self.game.controller.respawn()

    def _respawn(self, tile: int, start: np.ndarray, speed_kmh: float = 0.0) -> TelemetryFrame:
        """Send the respawn command and wait until telemetry shows the car at ``start`` (a rolling car may have
        moved on by up to a tenth of a second of its speed)."""
        telemetry = self.game.telemetry
        counter, _ = telemetry.latest()
        self._respawn_command(tile, speed_kmh)
        radius = self.respawn_radius + 0.1 * speed_kmh / 3.6
        deadline = time.monotonic() + self.config.respawn_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = "back at the start line" if tile == 0 else f"on track tile {tile}"
                raise GameError(
                    f"the {self.game.name} car was not seen {where} within "
                    f"{self.config.respawn_timeout_s:g} s after a respawn; check that the game runs the track "
                    "the reward trajectory was recorded on"
                )
            counter, tel = telemetry.wait_newer(counter, max(1.0, remaining))
            if float(np.linalg.norm(np.array((tel.x, tel.y, tel.z)) - start)) <= radius:
                # One more game frame, so that the screen (rendered after the physics) shows the respawn too.
                self._counter, tel = telemetry.wait_newer(counter, max(1.0, remaining))
                return tel


class CarRacingInterface(GameInterface):
    """The built-in game: respawn is instant and puts the car exactly on the trajectory's first point, or
    anywhere on the track: a random start stands the car on a tile drawn uniformly from the first
    ``RANDOM_START_SPAN`` of the lap (the rest is too close to the finish to teach much), or on the tile at
    ``reset`` option ``start_progress`` (a lap fraction, capped to that span), facing the driving
    direction, and the reward's progress starts from the trajectory point nearest that tile. ``reset`` option
    ``start_speed_kmh`` starts the car rolling along its heading at that speed. ``reset`` option ``track_seed``
    moves the game onto the track of that seed, rewarded along its centre line (the configured trajectory
    belongs to the game's own track, which the episodes without the option drive)."""

    respawn_radius = 2.0
    RANDOM_START_SPAN = 0.9
    KEEP_REWARDS = 16  # centre-line rewards of other tracks kept built

    def __init__(self, config: EnvConfig, game: Game, reward: TrajectoryReward | CarRacingReward) -> None:
        super().__init__(config, game, reward)
        self._home = (cast("CarRacingGame", game).track_seed, reward)
        self._track_seed = self._home[0]
        self._others: OrderedDict[int, TrajectoryReward | CarRacingReward] = OrderedDict()

    def _select_track(self, seed: int | None) -> None:
        home_seed, home_reward = self._home
        seed = home_seed if seed is None else seed
        if seed < 0:
            raise ConfigError(f"track seed {seed} must be >= 0")
        if seed == self._track_seed:
            return
        if seed == home_seed:
            self.reward = home_reward
        else:
            reward = self._others.pop(seed, None)
            self.reward = reward_on(self.config, centerline_trajectory(seed)) if reward is None else reward
            self._others[seed] = self.reward
            while len(self._others) > self.KEEP_REWARDS:
                self._others.popitem(last=False)
        self._track_seed = seed

    def _start(self, random_start: bool, at: float | None = None) -> tuple[int, int, np.ndarray]:
        if not random_start:
            return super()._start(False)
        from tmrl.games.carracing.pilot import track_centerline

        track = track_centerline(self._track_seed)  # the game moves onto this track at the respawn
        span = int(len(track) * self.RANDOM_START_SPAN)
        if at is None:
            tile = int(self.rng.integers(0, span))
        else:  # tiles are of one length: a lap fraction is a tile index in proportion
            tile = min(max(0, int(at * len(track))), span - 1)
        tracker = self.reward.tracker
        pos = np.array((track[tile, 0], 0.0, track[tile, 1]))
        # Never the end of the trajectory, which loops back next to the start line.
        index = tracker.nearest(pos, last=int(tracker.last_index * (self.RANDOM_START_SPAN + 0.05)))
        return tile, index, pos

    def _respawn_command(self, tile: int, speed_kmh: float) -> None:
        cast("CarRacingGame", self.game).controller.respawn(tile, speed_kmh, self._track_seed)


class TM2020Interface(GameInterface):
    """TrackMania 2020: the game's controller closes the finish pop-up before respawning; the start countdown
    is waited out by ``EnvConfig.reset_settle_s`` (1.5 s by default)."""

    respawn_radius = 5.0


def interface_class(game: str) -> type[GameInterface]:
    return CarRacingInterface if game == "carracing" else TM2020Interface
