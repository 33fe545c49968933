"""The real-time env against the real built-in game (a real game process, real telemetry, real frames)."""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from tmrl.config import load_config
from tmrl.envs.config import EnvConfig, RewardConfig, RtgymConfig, resolved_reward, resolved_rtgym
from tmrl.envs.env import RealTimeEnv, make_env
from tmrl.envs.observations import observation_spec
from tmrl.envs.reward import Trajectory, save_trajectory
from tmrl.errors import ConfigError, GameError, RewardError, TmrlError
from tmrl.games import open_game
from tmrl.games.carracing.pilot import Pilot, track_centerline
from tmrl.games.config import CarRacingConfig, TM2020Config

SEED = 0


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trajectory along the track's centre line (what the pilot records, without driving a real-time lap)."""
    xz = track_centerline(SEED)
    points = np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1)
    return save_trajectory(
        tmp_path_factory.mktemp("reward") / "reward.json", Trajectory(points, "carracing", SEED)
    )


@pytest.fixture(scope="module")
def game():
    g = open_game(CarRacingConfig(seed=SEED))
    yield g
    g.close()


def env_config(reward_file: Path, **kw) -> EnvConfig:
    rtgym = kw.pop("rtgym", RtgymConfig())
    reward = kw.pop("reward", RewardConfig(path=reward_file))
    return EnvConfig(rtgym=rtgym, reward=reward, **kw)


def test_lidar_env_drives_and_respawns(game, reward_file: Path) -> None:
    env = RealTimeEnv(env_config(reward_file), game, track_seed=SEED, owns_game=False)
    try:
        assert [c.name for c in env.observation_spec.components] == ["speed", "lidar", "prev_actions"]
        obs, _ = env.reset()
        first_scan = obs["lidar"][-1].copy()
        assert env.observation_space.contains(obs)
        assert obs["lidar"].shape == (4, 19) and obs["prev_actions"].shape == (2, 3)
        assert np.allclose(obs["lidar"][0], obs["lidar"][-1])  # history filled with the first scan
        assert 0.2 < float(obs["lidar"][-1, 9]) <= 1.0  # straight ahead: road for a while
        rewards = []
        for i in range(40):
            action = np.array([1.0, 0.0, 0.0], np.float32)
            obs, r, terminated, truncated, info = env.step(action)
            assert env.observation_space.contains(obs), i
            assert 0.0 <= info["progress"] < 0.5 and info["finished"] is False
            assert math.isfinite(r)
            assert not truncated
            rewards.append(r)
            if terminated:
                break
        assert np.allclose(obs["prev_actions"], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        assert obs["speed"][0] > 0.05
        assert info["heading"] > 0.9 and info["off_trajectory"] < 3.0  # along the track, on the road
        assert sum(rewards) > 0.0  # it drove forward along the track on CarRacing's scale
        _, tel = game.telemetry.latest()
        assert tel.distance > 5.0
        obs, _ = env.reset()
        _, tel = game.telemetry.latest()
        start = track_centerline(SEED)[0]
        assert math.hypot(tel.x - start[0], tel.z - start[1]) < 2.0
        assert obs["speed"][0] < 0.05
        assert np.allclose(obs["prev_actions"], 0.0)
        assert np.allclose(obs["lidar"][-1], first_scan, atol=0.05)  # the screen shows the start line again
    finally:
        env.close()


def test_random_start_stands_the_car_on_the_track(game, reward_file: Path) -> None:
    """A random start puts the car, still, on a track tile; the reward's progress starts at the trajectory
    point next to it and pays for driving on from there; seeded resets repeat the tile; a plain reset goes back
    to the start line."""
    env = RealTimeEnv(env_config(reward_file), game, track_seed=SEED, owns_game=False)
    track = track_centerline(SEED)
    tracker = env.interface.reward.tracker
    pilot = Pilot(track)
    try:
        starts = []
        for seed in (1, 2, 3, 1):
            obs, _ = env.reset(seed=seed, options={"random_start": True})
            _, tel = game.telemetry.latest()
            start = tracker.index
            starts.append(start)
            assert float(np.hypot(track[:, 0] - tel.x, track[:, 1] - tel.z).min()) < 0.5
            assert math.hypot(tracker.points[start][0] - tel.x, tracker.points[start][2] - tel.z) < 0.5
            assert 0 < start < tracker.last_index * 0.95
            assert obs["speed"][0] < 0.05
            pilot.reset()
            ret = 0.0
            for _ in range(40):
                _, tel = game.telemetry.latest()
                gas, brake, steer = pilot.action(tel)
                _, r, terminated, _, info = env.step(np.array([gas, brake, steer], np.float32))
                ret += r
                assert not terminated
            assert tracker.index > start and ret > 0.0
            assert info["progress"] == pytest.approx(tracker.index / tracker.last_index)
        assert starts[3] == starts[0] and len(set(starts)) == 3
        env.reset()
        _, tel = game.telemetry.latest()
        assert tracker.index == 0 and math.hypot(tel.x - track[0, 0], tel.z - track[0, 1]) < 2.0
    finally:
        env.close()


def test_rolling_start_puts_the_car_on_the_track_at_speed(game, reward_file: Path) -> None:
    """``start_speed_kmh`` starts the car moving along the track at that speed: the first observation reports it,
    and coasting carries the car (and the reward's progress) forward; the next plain reset stands still again."""
    env = RealTimeEnv(env_config(reward_file), game, track_seed=SEED, owns_game=False)
    track = track_centerline(SEED)
    tracker = env.interface.reward.tracker
    try:
        obs, _ = env.reset(seed=4, options={"random_start": True, "start_speed_kmh": 150.0})
        _, tel = game.telemetry.latest()
        start = tracker.index
        assert 120.0 < tel.speed <= 150.0
        assert float(np.hypot(track[:, 0] - tel.x, track[:, 1] - tel.z).min()) < 3.0
        standing, _ = env.reset(seed=4, options={"random_start": True})
        assert tracker.index == start and standing["speed"][0] < 0.05 < obs["speed"][0]
        env.reset(seed=4, options={"random_start": True, "start_speed_kmh": 150.0})
        ret = 0.0
        for _ in range(10):  # a fifth of a second, coasting
            _, r, terminated, _, info = env.step(np.zeros(3, np.float32))
            ret += r
            assert not terminated
        assert info["speed_kmh"] > 100.0 and info["heading"] > 0.9
        assert tracker.index > start + 3 and ret > 0.0
        env.reset()
        _, tel = game.telemetry.latest()
        assert tel.speed < 1.0 and tracker.index == 0
    finally:
        env.close()


def test_a_random_start_can_be_placed_at_a_lap_fraction(game, reward_file: Path) -> None:
    """``start_progress`` stands the car on the tile at that fraction of the lap (capped to the random starts'
    span), and the reward's progress starts from there."""
    env = RealTimeEnv(env_config(reward_file), game, track_seed=SEED, owns_game=False)
    track = track_centerline(SEED)
    tracker = env.interface.reward.tracker
    try:
        for at, tile in ((0.5, len(track) // 2), (0.0, 0), (0.99, int(len(track) * 0.9) - 1)):
            env.reset(options={"random_start": True, "start_progress": at})
            _, tel = game.telemetry.latest()
            assert math.hypot(tel.x - track[tile, 0], tel.z - track[tile, 1]) < 2.0
            assert abs(tracker.index / tracker.last_index - tile / len(track)) < 0.02
    finally:
        env.close()


def test_an_episode_on_another_track_drives_that_track_and_the_next_comes_back(
    game, reward_file: Path
) -> None:
    """``track_seed`` moves the game onto the track of that seed (the car at its start line, or at a random place
    on it) and rewards progress along its centre line; a reset without it comes back to the own track and its
    configured reward."""
    env = RealTimeEnv(env_config(reward_file), game, track_seed=SEED, owns_game=False)
    home = env.interface.reward
    other = track_centerline(7)
    try:
        home_frame = env.reset()[0]["lidar"]
        for options in ({"track_seed": 7}, {"track_seed": 7, "random_start": True}):
            obs, _ = env.reset(seed=3, options=options)
            _, tel = game.telemetry.latest()
            reward = env.interface.reward
            assert reward is not home and game.track_seed == 7
            assert float(np.hypot(other[:, 0] - tel.x, other[:, 1] - tel.z).min()) < 0.5
            assert np.allclose(reward.tracker.points[0][[0, 2]], other[0], atol=1e-6)
            assert np.allclose(game.track, other)
            start = reward.tracker.index
            pilot = Pilot(other)
            ret = 0.0
            for _ in range(40):
                _, tel = game.telemetry.latest()
                _, r, terminated, _, _ = env.step(np.array(pilot.action(tel), np.float32))
                ret += r
                assert not terminated
            assert reward.tracker.index > start and ret > 0.0
        assert not np.array_equal(obs["lidar"], home_frame)
        env.reset()
        _, tel = game.telemetry.latest()
        track = track_centerline(SEED)
        assert env.interface.reward is home and game.track_seed == SEED and home.tracker.index == 0
        assert math.hypot(tel.x - track[0, 0], tel.z - track[0, 1]) < 2.0
    finally:
        env.reset()  # the module's game back on its own track whatever happened
        env.close()


def test_random_start_needs_the_built_in_game(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="worker.random_start needs the built-in game"):
        load_config(data_dir=tmp_path, environ={}, overrides=["env.game=tm2020", "worker.random_start=0.5"])
    assert load_config(data_dir=tmp_path, environ={}, overrides=["env.game=tm2020"]).random_start() == 0.0
    assert load_config(data_dir=tmp_path, environ={}).random_start() == 0.5
    assert (
        load_config(data_dir=tmp_path, environ={}, overrides=["worker.random_start=0"]).random_start() == 0.0
    )
    with pytest.raises(ConfigError, match="worker.random_start_speed_kmh needs the built-in game"):
        load_config(
            data_dir=tmp_path, environ={}, overrides=["env.game=tm2020", "worker.random_start_speed_kmh=100"]
        )


@pytest.mark.parametrize("implementation", ["real-time-gym-ts-v1", "real-time-gym-v1"])
def test_truncation_at_step_limit(game, reward_file: Path, implementation: str) -> None:
    cfg = env_config(reward_file, rtgym=RtgymConfig(ep_max_length=5, implementation=implementation))
    env = RealTimeEnv(cfg, game, track_seed=SEED, owns_game=False)
    try:
        env.reset()
        flags = [env.step(np.zeros(3))[2:4] for _ in range(5)]
        assert flags[-1] == (False, True)
        assert all(f == (False, False) for f in flags[:-1])
        with pytest.raises(RuntimeError):  # rtgym: reset before stepping a finished episode
            env.step(np.zeros(3))
    finally:
        env.close()


def test_timing_defaults_per_game() -> None:
    built_in, tm = resolved_rtgym(EnvConfig()), resolved_rtgym(EnvConfig(game="tm2020"))
    # The built-in game: 50 Hz (one physics frame a step), capture at the end of the step, 50 s episodes.
    assert (built_in.time_step_s, built_in.start_obs_capture_s, built_in.ep_max_length) == (0.02, 0.02, 2500)
    assert (tm.time_step_s, tm.start_obs_capture_s, tm.ep_max_length) == (0.05, 0.04, 1000)  # TMRL's
    rules = {g: resolved_reward(EnvConfig(game=g)) for g in ("carracing", "tm2020")}
    assert (rules["carracing"].min_steps, rules["carracing"].failure_countdown) == (175, 25)
    assert (rules["tm2020"].min_steps, rules["tm2020"].failure_countdown) == (70, 10)
    # Set values win; the built-in game's capture follows a changed time step to its end, and the step-counted
    # limits keep their durations in seconds (3.5 s, 0.5 s, 50 s: at 25 Hz 87.5 and 12.5 steps, ties to even).
    mine = resolved_rtgym(EnvConfig(rtgym=RtgymConfig(time_step_s=0.05, ep_max_length=7)))
    assert (mine.time_step_s, mine.start_obs_capture_s, mine.ep_max_length) == (0.05, 0.05, 7)
    at25 = EnvConfig(rtgym=RtgymConfig(time_step_s=0.04))
    assert resolved_rtgym(at25).ep_max_length == 1250
    assert (resolved_reward(at25).min_steps, resolved_reward(at25).failure_countdown) == (88, 12)
    mine = resolved_rtgym(EnvConfig(game="tm2020", rtgym=RtgymConfig(time_step_s=0.03)))
    assert mine.start_obs_capture_s == 0.03
    assert resolved_reward(EnvConfig(reward=RewardConfig(min_steps=0))).min_steps == 0


def steering_seen(game, reward_file: Path, time_step_s: float) -> tuple[list[float], list[float]]:
    """Steer along a ramp and return the steering angle each observation shows, with the ramp."""
    rtgym = RtgymConfig(time_step_s=time_step_s)
    env = RealTimeEnv(
        env_config(reward_file, rtgym=rtgym, extra_telemetry=("steer",)),
        game,
        track_seed=SEED,
        owns_game=False,
    )
    try:
        env.reset()
        ramp = [float(np.float32(round(-0.9 + 0.06 * i, 2))) for i in range(30)]
        seen = []
        for steer in ramp:
            obs, _, terminated, truncated, _ = env.step(np.array([0.3, -1.0, steer], np.float32))
            seen.append(float(obs["steer"][0]))
            if terminated or truncated:
                break
        return seen, ramp
    finally:
        env.close()


def test_action_acts_one_time_step_after_its_observation(game, reward_file: Path) -> None:
    """rtgym's timing: ``step(a_t)`` returns an observation captured while ``a_{t-1}`` drives.

    At 25 Hz (two physics frames a step) the game has always applied ``a_{t-1}`` by the capture at the end of the
    step. At the 50 Hz default a step is one physics frame, so the capture and the game's tick race: an
    observation shows ``a_{t-1}`` or ``a_{t-2}`` (never a newer one, which would break causality, nor an older
    one), in shares that depend on the phase of the steps against the game's tick: most runs see ``a_{t-1}``
    more than half the time, one clean-clone run saw it in 6 of 28 steps. The observation's ``prev_actions``
    carry both, so the policy is not misled either way.
    """
    seen, ramp = steering_seen(game, reward_file, 0.04)
    exact = sum(abs(s - a) < 1e-3 for s, a in zip(seen[1:], ramp, strict=False))
    assert exact >= 0.9 * (len(seen) - 1), (seen, ramp)

    seen, ramp = steering_seen(game, reward_file, 0.02)
    previous = [abs(s - a) < 1e-3 for s, a in zip(seen[2:], ramp[1:], strict=False)]
    before = [abs(s - a) < 1e-3 for s, a in zip(seen[2:], ramp, strict=False)]
    assert any(previous), (seen, ramp)
    assert sum(p or b for p, b in zip(previous, before, strict=True)) >= 0.9 * len(previous), (seen, ramp)


@pytest.mark.parametrize(("pedals", "gas", "brake"), [("clip", 0.0, 0.0), ("linear", 0.25, 0.05)])
def test_pedal_mapping_reaches_the_game(
    game, reward_file: Path, pedals: str, gas: float, brake: float
) -> None:
    """Gas -0.5 and brake -0.9 as actions: released with TMRL's clipping, pressed a quarter and a twentieth with
    the linear mapping, as the game reports its inputs; the actor's spec records the mapping."""
    env = RealTimeEnv(
        env_config(reward_file, pedals=pedals, extra_telemetry=("gas", "brake")),
        game,
        track_seed=SEED,
        owns_game=False,
    )
    try:
        assert env.observation_spec.pedals == pedals
        obs, _ = env.reset()
        released = -1.0 if pedals == "linear" else 0.0  # prev_actions after a reset: pedals released
        assert np.allclose(obs["prev_actions"], [[released, released, 0.0]] * 2)
        for _ in range(30):
            obs, *_ = env.step(np.array([-0.5, -0.9, 0.0], np.float32))
        assert float(obs["gas"][0]) == pytest.approx(gas, abs=1e-4)
        assert float(obs["brake"][0]) == pytest.approx(brake, abs=1e-4)
        assert (float(obs["speed"][0]) > 0.01) == (gas > 0)  # a quarter of the gas moves the car within 0.6 s
    finally:
        env.close()


def test_failure_countdown_terminates(game, reward_file: Path) -> None:
    cfg = env_config(
        reward_file,
        observation="lidar_progress",
        extra_telemetry=("yaw_rate", "steer"),
        reward=RewardConfig(path=reward_file, min_steps=2, failure_countdown=3),
    )
    env = RealTimeEnv(cfg, game, track_seed=SEED, owns_game=False)
    try:
        obs, _ = env.reset()
        assert list(obs) == ["speed", "lidar", "progress", "yaw_rate", "steer", "prev_actions"]
        assert obs["progress"][0] == 0.0
        steps, terminated, truncated, total = 0, False, False, 0
        while not (terminated or truncated) and steps < 20:
            obs, r, terminated, truncated, info = env.step(np.zeros(3))  # standing still: no progress
            steps += 1
            assert env.observation_space.contains(obs)
            if steps > 1:  # only CarRacing's frame penalty: 0.1 per physics frame (1 a step at 50 Hz)
                frames = round(r / -0.1)
                # the game runs on its own clock: a late step may span 2 frames and the next none
                assert r == pytest.approx(-0.1 * frames) and 0 <= frames <= 10
                total += frames
        assert terminated and not truncated and steps == 2 + 3 + 1
        assert info["speed_kmh"] < 1.0 and info["off_trajectory"] < 1.0  # stopped on the start line
        assert total >= 2, f"{total} physics frames in {steps - 1} steps of 20 ms"
    finally:
        env.close()


def test_image_observations(game, reward_file: Path) -> None:
    cfg = env_config(reward_file, observation="images")
    env = RealTimeEnv(cfg, game, track_seed=SEED, owns_game=False)
    try:
        spec = observation_spec(cfg)
        assert [c.name for c in spec.components] == ["speed", "gear", "rpm", "frames", "prev_actions"]
        obs, _ = env.reset()
        assert obs["frames"].shape == (4, 64, 64) and obs["frames"].dtype == np.uint8
        for _ in range(5):
            obs, *_ = env.step(np.array([1.0, 0.0, 0.0]))
            assert env.observation_space.contains(obs)
        assert obs["frames"].std() > 5  # a picture, not a blank
        assert 0.0 < obs["gear"][0] <= 1.0
    finally:
        env.close()


def test_errors_in_the_time_step_thread_reach_the_caller(reward_file: Path) -> None:
    env = make_env(env_config(reward_file), CarRacingConfig(seed=SEED, telemetry_timeout_s=1.0))
    try:
        env.reset()
        env.step(np.zeros(3))
        os.kill(env.game.pid, signal.SIGKILL)  # the game process dies under a running env
        with pytest.raises(TmrlError):
            for _ in range(5):
                env.step(np.zeros(3))
    finally:
        env.close()


def test_config_errors_before_any_game_starts(tmp_path: Path, reward_file: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(
        RewardError, match=r"missing\.json does not exist.*tmrl record-reward --game carracing"
    ):
        make_env(EnvConfig(reward=RewardConfig(path=missing)))
    with pytest.raises(RewardError, match="track seed 0 but the game uses seed 5"):
        make_env(env_config(reward_file), CarRacingConfig(seed=5))
    with pytest.raises(ConfigError, match="game 'carracing'.*'tm2020'"):
        make_env(env_config(reward_file), TM2020Config())
    late = RtgymConfig(time_step_s=0.05, start_obs_capture_s=0.06)
    with pytest.raises(
        ConfigError, match=r"start_obs_capture_s = 0\.06 is later than the end of the time step"
    ):
        make_env(env_config(reward_file, rtgym=late))


def test_respawn_timeout_is_a_game_error(game, tmp_path: Path) -> None:
    """A trajectory that does not start where the car spawns: reset cannot see the respawn."""
    xz = track_centerline(SEED)[40:]
    points = np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1)
    path = save_trajectory(tmp_path / "elsewhere.json", Trajectory(points, "carracing", SEED))
    cfg = EnvConfig(reward=RewardConfig(path=path), respawn_timeout_s=0.5)
    env = RealTimeEnv(cfg, game, track_seed=SEED, owns_game=False)
    try:
        with pytest.raises(GameError, match="not seen back at the start line"):
            env.reset()
    finally:
        env.close()


def _policy_of(tid: int) -> int:
    return os.sched_getscheduler(tid)


def test_realtime_priority(game, reward_file: Path) -> None:
    """priority='realtime': SCHED_FIFO for every thread of this process (time-step thread first) and the game."""
    env = RealTimeEnv(env_config(reward_file), game, track_seed=SEED, owns_game=False)
    seen: list[int] = []
    try:
        try:
            env.set_priority("realtime")
        except GameError as exc:  # without root / CAP_SYS_NICE: one clear line
            assert "needs root or CAP_SYS_NICE" in str(exc)
            return
        timestep = env._rt._at_thread.native_id
        assert _policy_of(timestep) == os.SCHED_FIFO
        assert _policy_of(threading.get_native_id()) == os.SCHED_FIFO
        assert all(_policy_of(int(t)) == os.SCHED_FIFO for t in os.listdir(f"/proc/{game.pid}/task"))
        child = threading.Thread(target=lambda: seen.append(_policy_of(threading.get_native_id())))
        child.start()
        child.join()
        assert seen == [os.SCHED_FIFO]  # threads started later inherit it (none may hold the GIL at normal)
        me = threading.get_native_id()
        assert os.sched_getparam(timestep).sched_priority > os.sched_getparam(me).sched_priority
        env.reset()
        for _ in range(3):
            env.step(np.zeros(3))
    finally:
        env.close()  # gives the priority back
    assert _policy_of(threading.get_native_id()) == os.SCHED_OTHER
    assert all(_policy_of(int(t)) == os.SCHED_OTHER for t in os.listdir(f"/proc/{game.pid}/task"))
