"""The rollout worker: weight swaps, timeout counting, and its batches through a real relay from the real game."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_e2e_run import write_track_reward

from tmrl.assets import carracing_actor_path
from tmrl.cli.main import main
from tmrl.config import WorkerConfig, load_config
from tmrl.envs.observations import observation_spec
from tmrl.errors import ConfigError
from tmrl.net.client import TrainerClient
from tmrl.net.config import RelayConfig
from tmrl.net.testing import RelayThread
from tmrl.rl.config import ModelConfig
from tmrl.rl.export import (
    actor_meta,
    actor_to_arrays,
    published_arrays,
    save_actor,
    save_arrays,
    split_published,
)
from tmrl.rl.models import Actor
from tmrl.rl.transitions import TransitionRecorder
from tmrl.traces import read_trace
from tmrl.trainer import ACTOR_FILE, BEST_ACTOR_FILE
from tmrl.worker import (
    Policy,
    RolloutWorker,
    Start,
    StartPlanner,
    TestSchedule,
    TimeoutCounter,
    VersionScorer,
    default_weights_path,
    recorded_end,
)


def _spec(tmp_path: Path):
    return observation_spec(load_config(data_dir=tmp_path, environ={}).env)


def _collect(trainer: TrainerClient, rows: int, episodes: int = 0) -> list[tuple[dict, dict]]:
    """Poll batches until ``rows`` rows and ``episodes`` episode stats have arrived (30 s at most)."""
    got: list[tuple[dict, dict]] = []
    deadline = time.monotonic() + 30
    while (
        sum(m["n"] for m, _ in got) < rows or sum(len(m["episodes"]) for m, _ in got) < episodes
    ) and time.monotonic() < deadline:
        got += trainer.poll_batches(64, 0.5)
    return got


def _episodes(batches: list[tuple[dict, dict]]) -> list[dict]:
    return [e for m, _ in batches for e in m["episodes"]]


def _rows(batches: list[tuple[dict, dict]]) -> int:
    return sum(m["n"] for m, _ in batches)


def test_policy_random_then_swapped_in_place(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    obs = {c.name: np.zeros(c.policy_shape, dtype=c.dtype) for c in spec.components}
    policy = Policy(spec.action_dim, seed=0)
    a = policy.act(obs)
    assert a.shape == (3,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)

    torch.manual_seed(0)
    first = Actor(spec, ModelConfig(hidden=(32, 32)))
    policy.load(1, actor_to_arrays(first), actor_meta(first))
    actor = policy.actor
    expected = first.act(obs, deterministic=True)
    np.testing.assert_allclose(policy.act(obs, deterministic=True), expected, rtol=1e-6)

    second = Actor(spec, ModelConfig(hidden=(32, 32)))  # same architecture, other weights
    policy.load(2, actor_to_arrays(second), actor_meta(second))
    assert policy.actor is actor and policy.version == 2  # loaded in place, no new module
    np.testing.assert_allclose(
        policy.act(obs, deterministic=True), second.act(obs, deterministic=True), rtol=1e-6
    )

    third = Actor(spec, ModelConfig(hidden=(16,)))  # another architecture: a new actor
    policy.load(3, actor_to_arrays(third), actor_meta(third))
    assert policy.actor is not actor and policy.version == 3


def test_policy_tests_with_the_averaged_actor_and_explores_with_the_live_one(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    obs = {c.name: np.zeros(c.policy_shape, dtype=c.dtype) for c in spec.components}
    torch.manual_seed(0)
    live, average = (Actor(spec, ModelConfig(hidden=(32, 32))) for _ in range(2))
    policy = Policy(spec.action_dim, seed=0)
    policy.load(1, published_arrays(live, average), actor_meta(live))
    assert policy.test_actor is not policy.actor
    np.testing.assert_allclose(
        policy.act(obs, deterministic=True), average.act(obs, deterministic=True), rtol=1e-6
    )
    zero = np.zeros(spec.action_dim, dtype=np.float32)  # the live actor's mean action, through its noise
    policy._noise = lambda: zero  # type: ignore[method-assign]
    np.testing.assert_allclose(policy.act(obs), live.act(obs, deterministic=False, noise=zero), rtol=1e-6)
    modules = (policy.actor, policy.test_actor)
    policy.load(2, published_arrays(average, live), actor_meta(live))  # both swapped in place
    assert (policy.actor, policy.test_actor) == modules and policy.version == 2
    np.testing.assert_allclose(
        policy.act(obs, deterministic=True), live.act(obs, deterministic=True), rtol=1e-6
    )
    policy.load(3, actor_to_arrays(live), actor_meta(live))  # weights without an average: one actor does both
    assert policy.test_actor is policy.actor
    live_arrays, none = split_published(actor_to_arrays(live))
    assert none is None and live_arrays.keys() == actor_to_arrays(live).keys()


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_policy_noise_is_standard_normal_at_each_step_and_correlated_as_configured(rho: float) -> None:
    policy = Policy(3, seed=0, noise_correlation=rho)
    steps = np.array([policy._noise() for _ in range(40_000)])
    assert steps.dtype == np.float32 and steps.shape == (40_000, 3)
    np.testing.assert_allclose(
        steps.mean(0), 0.0, atol=0.1
    )  # the AR(1) mean wanders: sd ~ 0.02 / sqrt(1 - rho)
    np.testing.assert_allclose(steps.std(0), 1.0, atol=0.05)
    lag1 = [np.corrcoef(steps[1:, i], steps[:-1, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(lag1, rho, atol=0.03)
    # an episode start forgets the past: the draws after each reset are independent of the draws before it
    before, after = [], []
    for _ in range(4000):
        before.append(policy._noise())
        policy.reset_noise()
        after.append(policy._noise())
    assert abs(np.corrcoef(np.array(before)[:, 0], np.array(after)[:, 0])[0, 1]) < 0.05


def test_policy_acts_with_its_noise_and_refuses_a_correlation_of_one(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    obs = {c.name: np.zeros(c.policy_shape, dtype=c.dtype) for c in spec.components}
    actor = Actor(spec, ModelConfig(hidden=(32, 32)))
    policy = Policy(spec.action_dim, seed=3, noise_correlation=0.5)
    policy.load(1, actor_to_arrays(actor), actor_meta(actor))
    a = policy.act(obs)
    assert policy._eps is not None
    np.testing.assert_allclose(a, policy.actor.act(obs, noise=policy._eps), rtol=1e-6)
    with pytest.raises(ValueError, match="noise_correlation"):
        Policy(3, noise_correlation=1.0)


def test_noise_correlation_follows_the_time_step(tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path, environ={})
    assert config.noise_correlation() == 0.0
    config = load_config(data_dir=tmp_path, environ={}, overrides=["worker.noise_correlation_s=0.2"])
    assert config.noise_correlation() == pytest.approx(np.exp(-0.02 / 0.2))  # the built-in game's 50 Hz
    config = load_config(
        data_dir=tmp_path,
        environ={},
        overrides=["worker.noise_correlation_s=0.2", "env.rtgym.time_step_s=0.04"],
    )
    assert config.noise_correlation() == pytest.approx(np.exp(-0.04 / 0.2))


def test_policy_pulses_hold_random_values_on_the_chosen_dimensions(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    obs = {c.name: np.zeros(c.policy_shape, dtype=c.dtype) for c in spec.components}
    actor = Actor(spec, ModelConfig(hidden=(32, 32)))
    zero = np.zeros(spec.action_dim, dtype=np.float32)
    mean = actor.act(obs, deterministic=False, noise=zero)
    start, end = 0.05, 0.2
    policy = Policy(spec.action_dim, seed=1, pulse_start=start, pulse_end=end, pulse_dims=(True, True, False))
    policy.load(1, actor_to_arrays(actor), actor_meta(actor))
    policy._noise = lambda: zero  # type: ignore[method-assign]
    actions = np.array([policy.act(obs) for _ in range(20_000)])
    pulsing = ~np.isclose(actions, mean, atol=1e-6)
    assert not pulsing[:, 2].any()  # steering is not in pulse_dims: the policy's action throughout
    # each step ends a pulse with chance `end`, then starts one with chance `start`: the stationary share pulsing
    share = start / (1 - (1 - start) * (1 - end))
    np.testing.assert_allclose(pulsing[:, :2].mean(0), share, atol=0.03)
    for d in (0, 1):
        values = actions[pulsing[:, d], d]
        # uniform in [-1, 1]; a pulse holds its value: runs of equal actions, of mean length 1 / end steps
        assert values.min() >= -1.0 and values.max() <= 1.0 and abs(values.mean()) < 0.15
        held = np.diff(actions[:, d]) == 0
        runs = np.flatnonzero(np.diff(np.concatenate(([0], pulsing[:, d].astype(int), [0]))))
        lengths = runs[1::2] - runs[::2]
        assert held.sum() > 0.8 * pulsing[:, d].sum()
        assert 0.7 / end < lengths.mean() < 1.3 / end
    # test episodes never pulse
    assert np.array_equal(policy.act(obs, deterministic=True), actor.act(obs, deterministic=True))
    policy.pulse_start = 0.0  # no new pulses; an episode start ends the open ones
    policy._pulsing[:] = True
    policy.reset_noise()
    np.testing.assert_allclose(policy.act(obs), mean, atol=1e-6)
    with pytest.raises(ValueError, match="pulse_dims"):
        Policy(3, pulse_start=0.1, pulse_dims=(True, False))
    with pytest.raises(ValueError, match="pulse chances"):
        Policy(3, pulse_start=0.1, pulse_end=0.0)


def test_action_pulses_follow_the_time_step_and_name_their_dimensions(tmp_path: Path) -> None:
    assert load_config(data_dir=tmp_path, environ={}).action_pulses() == (0.0, 0.08, (True, True, True))
    config = load_config(
        data_dir=tmp_path,
        environ={},
        overrides=["worker.pulse_rate_hz=0.2", "worker.pulse_s=0.1", 'worker.pulse_actions=["brake"]'],
    )
    start, end, dims = config.action_pulses()
    assert start == pytest.approx(1 - np.exp(-0.2 * 0.02)) and end == pytest.approx(0.2)  # at 50 Hz
    assert dims == (False, True, False)
    with pytest.raises(ConfigError, match="worker.pulse_actions"):
        load_config(data_dir=tmp_path, environ={}, overrides=['worker.pulse_actions=["clutch"]'])


def test_version_scorer_confirms_a_new_best_before_it_counts() -> None:
    scorer = VersionScorer(confirm=2)
    assert scorer.add(300.0) is None and scorer.open  # beats nothing yet: a series opens
    assert scorer.add(200.0) is None and scorer.open
    assert scorer.add(250.0) == (250.0, 3) and not scorer.open
    assert scorer.add(240.0) is None and not scorer.open  # below the best score: no series
    assert scorer.add(600.0) is None and scorer.add(0.0) is None
    assert scorer.add(0.0) is None and not scorer.open  # a lucky episode: its mean (200) is no better
    assert scorer.add(280.0) is None and scorer.open  # still above the best score (250)
    scorer.cancel()
    assert not scorer.open and scorer.best == 250.0
    alone = VersionScorer(confirm=0)
    assert alone.add(5.0) == (5.0, 1) and alone.add(4.0) is None and alone.add(6.0) == (6.0, 1)


def test_version_scorer_retests_the_holder_and_lets_its_score_fall() -> None:
    scorer = VersionScorer(confirm=1, retest_every=2)
    assert scorer.begin("v1") is None  # slot 1: no holder yet, the latest weights
    assert scorer.add(900.0) is None and scorer.add(800.0) == (850.0, 2)
    assert scorer.holder is not None and scorer.holder.weights == "v1"
    assert scorer.begin("v2") == "v1"  # slot 2: a re-test of the holder
    assert scorer.add_retest(250.0) == (650.0, 3) and scorer.best == 650.0  # a lucky score falls back
    assert scorer.begin("v3") is None and scorer.add(600.0) is None and not scorer.open  # below 650
    assert scorer.begin("v4") == "v1" and scorer.add_retest(100.0) == (512.5, 4)
    assert scorer.begin("v5") is None and scorer.add(700.0) is None and scorer.open
    assert scorer.add(500.0) == (600.0, 2) and scorer.holder.weights == "v5"  # beats the fallen holder
    assert scorer.begin("v6") == "v5" and scorer.add_retest(660.0) == (620.0, 3)
    never = VersionScorer(confirm=0)  # retest_every = 0: no holder is kept, no slot is a re-test
    assert never.begin("v1") is None and never.add(5.0) == (5.0, 1) and never.holder is None
    assert never.begin("v2") is None and never.begin("v3") is None


@given(
    st.integers(0, 4),
    st.lists(st.floats(-100.0, 1000.0, allow_nan=False), max_size=60),
)
def test_version_scorer_scores_are_rising_means_of_whole_series(confirm: int, returns: list[float]) -> None:
    scorer = VersionScorer(confirm)
    scores: list[tuple[int, float, int]] = []
    for i, r in enumerate(returns):
        was_open = scorer.open
        best = scorer.best
        got = scorer.add(r)
        if not was_open and r <= best:
            assert got is None and not scorer.open  # only a return above the best opens a series
        if got is not None:
            scores.append((i, *got))
    for a, b in zip(scores, scores[1:], strict=False):
        assert b[1] > a[1]  # each score beats the one before
    for i, score, n in scores:
        assert n == confirm + 1
        assert score == pytest.approx(float(np.mean(returns[i - confirm : i + 1])))
        assert returns[i - confirm] > max((s for j, s, _n in scores if j < i), default=float("-inf"))


@given(
    st.integers(1, 6),
    st.integers(0, 3),
    st.integers(0, 8),
    st.lists(st.floats(0.0, 1000.0, allow_nan=False), min_size=1, max_size=200),
)
def test_test_schedule_keeps_the_share_of_test_episodes(
    test_every: int, confirm: int, no_weights: int, returns: list[float]
) -> None:
    """Confirming series or not, test episodes stay at most one in ``test_every + 1`` (plus one open series), a
    series runs to its end, and episodes before the first weights do not pile up test episodes."""
    scorer = VersionScorer(confirm)
    schedule = TestSchedule(test_every, scorer)
    for _ in range(no_weights):  # no actor yet: whatever is due is driven as a training episode
        schedule.done(False)
    kinds = []
    for r in returns:
        test = schedule.due()
        in_series = scorer.open
        kinds.append(test)
        if in_series:
            assert test  # an open series goes on at once
        if test:
            scorer.add(r)
        schedule.done(test)
    assert sum(kinds) <= len(kinds) / (test_every + 1) + 1 + confirm
    assert kinds[: test_every + 1].count(True) <= 1 + confirm
    if (
        no_weights == 0 and len(kinds) > test_every
    ):  # a fresh worker: test_every training episodes, then a test
        assert kinds[: test_every + 1] == [False] * test_every + [True]


@pytest.mark.parametrize("finish_bootstraps", [False, True])
@pytest.mark.parametrize("failure_bootstraps", [False, True])
def test_episode_ends_are_recorded_as_truncations_only_when_asked(
    tmp_path: Path, finish_bootstraps: bool, failure_bootstraps: bool
) -> None:
    """A lap ending at the finish, then one ending at the failure countdown: rows recorded through the worker's
    rule, each end a truncation only when its option asks."""
    spec = _spec(tmp_path)
    obs = {c.name: np.zeros(c.policy_shape, np.float32) for c in spec.components}
    recorder = TransitionRecorder(spec)
    worker = WorkerConfig(finish_bootstraps=finish_bootstraps, failure_bootstraps=failure_bootstraps)
    ends = [
        (False, False, {"finished": False}),
        (True, False, {"finished": True}),  # the finish line
    ]
    for _episode in range(2):
        recorder.reset(obs)
        for terminated, truncated, info in ends:
            flags = recorded_end(terminated, truncated, info, worker)
            recorder.step(np.zeros(3, np.float32), 1.0, *flags, obs)
        ends[-1] = (True, False, {"finished": False})  # second episode: a crash (failure countdown)
    rows = recorder.take()
    assert rows is not None
    # Each episode: 2 steps and its final observation row.
    fin, fail = finish_bootstraps, failure_bootstraps
    assert rows["terminated"].tolist() == [False, not fin, not fin, False, not fail, not fail]
    assert rows["truncated"].tolist() == [False, fin, fin, False, fail, fail]
    assert [e["terminated"] for e in recorder.pop_episodes()] == [not fin, not fail]
    # A time limit stays a truncation either way.
    assert recorded_end(False, True, {"finished": False}, worker) == (False, True)


def test_timeout_counter_counts_rtgym_warnings_from_threads(recwarn: pytest.WarningsRecorder) -> None:
    with TimeoutCounter() as counter:

        def rtgym_like() -> None:
            for _ in range(3):
                warnings.warn("Time-step timed out. Elapsed since last time-step: 0.07", stacklevel=1)

        t = threading.Thread(target=rtgym_like)
        t.start()
        t.join()
        rtgym_like()
    assert counter.count == 6


@pytest.mark.timeout(240)
def test_worker_batches_reach_the_trainer_side(tmp_path: Path) -> None:
    write_track_reward(tmp_path)
    config = load_config(
        data_dir=tmp_path,
        environ={},
        overrides=["env.rtgym.ep_max_length=30", "worker.max_episodes=2", "relay.flush_steps=8"],
    )
    with RelayThread(RelayConfig(port=0)) as relay:
        config = config.model_copy(
            update={"relay": config.relay.model_copy(update={"port": relay.config.port})}
        )
        trainer = TrainerClient(config.relay)
        try:
            stats = RolloutWorker(config, "w7").run()
            assert stats.episodes == 2 and stats.steps == 60
            batches = _collect(trainer, stats.samples, 2)
        finally:
            trainer.close()
    episodes = _episodes(batches)
    # Each episode: 30 steps plus its final observation row.
    assert _rows(batches) == stats.samples == 62
    assert [e["length"] for e in episodes] == [30, 30] and all(not e["test"] for e in episodes)
    first = np.concatenate([a["first"] for _, a in batches])
    truncated = np.concatenate([a["truncated"] for _, a in batches])
    assert first.nonzero()[0].tolist() == [0, 31]
    assert truncated.nonzero()[0].tolist() == [29, 30, 60, 61]  # last step and final row of each episode
    for meta, arrays in batches:
        assert meta["worker_id"] == "w7" and arrays["reward"].shape == (meta["n"],)
        assert arrays["obs.lidar"].shape == (meta["n"], 19) and arrays["action"].shape == (meta["n"], 3)
    status = tmp_path / "runs" / "default" / "status" / "worker-w7.json"
    assert status.is_file()


@pytest.mark.timeout(240)
def test_the_last_episode_is_reported_when_a_flush_would_have_taken_all_its_rows(tmp_path: Path) -> None:
    """21 rows, flushes of 7: the step that ends the episode must not flush its rows without its stats."""
    write_track_reward(tmp_path)
    config = load_config(
        data_dir=tmp_path,
        environ={},
        overrides=["env.rtgym.ep_max_length=20", "worker.max_episodes=1", "relay.flush_steps=7"],
    )
    with RelayThread(RelayConfig(port=0)) as relay:
        config = config.model_copy(
            update={"relay": config.relay.model_copy(update={"port": relay.config.port})}
        )
        trainer = TrainerClient(config.relay)
        try:
            stats = RolloutWorker(config, "w6").run()
            batches = _collect(trainer, stats.samples, 1)
        finally:
            trainer.close()
    assert _rows(batches) == stats.samples == 21
    assert [e["length"] for e in _episodes(batches)] == [20]


def _test_episode_config(
    tmp_path: Path, relay: RelayThread, train_on_test: bool, confirm: int = 0, extra: tuple[str, ...] = ()
):
    """Two training episodes of 20 steps with a test episode between them (and ``confirm`` more to score its
    weights), streamed to ``relay``; ``extra`` overrides on top."""
    write_track_reward(tmp_path)
    config = load_config(
        data_dir=tmp_path,
        environ={},
        overrides=[
            "env.rtgym.ep_max_length=20",
            "worker.max_episodes=2",
            "worker.test_every=1",
            f"worker.train_on_test={str(train_on_test).lower()}",
            f"worker.confirm_episodes={confirm}",
            "relay.flush_steps=8",
            *extra,
        ],
    )
    return config.model_copy(update={"relay": config.relay.model_copy(update={"port": relay.config.port})})


def _drive_with(config, actor: Actor, worker_id: str, episodes: int):
    """Publish ``actor``'s weights on the config's relay, run a worker to its end, and collect what it streamed
    (``episodes`` episode reports): the worker's stats and the batches."""
    trainer = TrainerClient(config.relay)
    try:
        trainer.publish_weights(1, actor_to_arrays(actor), actor_meta(actor))
        stats = RolloutWorker(config, worker_id).run()
        return stats, _collect(trainer, stats.samples, episodes)
    finally:
        trainer.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("train_on_test", [True, False])
def test_test_episodes_are_streamed_only_when_asked(
    tmp_path: Path, train_on_test: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test)
        stats, batches = _drive_with(config, actor, "w8", 3)
    assert stats.episodes == 2 and stats.test_episodes == 1 and stats.steps == 60
    assert [e["test"] for e in _episodes(batches)] == [False, True, False]  # every episode is reported
    assert _rows(batches) == stats.samples == (63 if train_on_test else 42)  # 21 rows per recorded episode
    # the test episode is traced step by step, and `tmrl trace` finds it as the run's newest
    (path,) = (config.run_dir / "traces" / "w8").iterdir()
    assert path.name == "test-000001.csv"
    trace = read_trace(path)
    assert len(trace["step"]) == 20 and np.all(np.abs(trace["steer"]) <= 1.0)
    assert main(["trace", "--data-dir", str(tmp_path), "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}:" and "20 steps" in out[-1]


@pytest.mark.timeout(240)
def test_pulses_reach_the_samples_of_training_episodes(tmp_path: Path) -> None:
    """Brake pulses about every other step, held for about a second: the recorded brake repeats its value from
    step to step, while gas and steering, under the policy's fresh Gaussian noise, never do."""
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    pulses = ("worker.pulse_rate_hz=50", "worker.pulse_s=1", 'worker.pulse_actions=["brake"]')
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test=False, extra=pulses)
        stats, batches = _drive_with(config, actor, "w9", 3)
    assert _rows(batches) == stats.samples == 42  # the two training episodes only
    first = np.concatenate([a["first"] for _, a in batches])
    action = np.concatenate([a["action"] for _, a in batches])
    episodes = np.split(action, first.nonzero()[0][1:])
    for steps in (e[:20] for e in episodes):  # the 20 actions of each episode, without its final row
        repeats = (np.diff(steps, axis=0) == 0).sum(0)
        assert repeats[0] == repeats[2] == 0 and repeats[1] >= 10
        assert np.all(np.abs(steps) <= 1.0)


@given(
    failures=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    top_speed=st.sampled_from([0.0, 300.0]),
    seed=st.integers(0, 2**16),
)
def test_failure_starts_are_placed_shortly_before_recent_failures_from_the_line(
    failures: list[float], top_speed: float, seed: int
) -> None:
    planner = StartPlanner(1.0, top_speed, failure_share=1.0, seed=seed)
    assert planner.plan(test=False).progress is None  # nothing failed yet: anywhere on the track
    # a random start's failure, a finished lap and a time limit are not failures from the line
    planner.ended(Start(True, 100.0), terminated=True, finished=False, progress=0.5)
    planner.ended(Start(), terminated=True, finished=True, progress=1.0)
    planner.ended(Start(), terminated=False, finished=False, progress=0.4)
    assert not planner.failures
    for f in failures:
        planner.ended(Start(), terminated=True, finished=False, progress=f)
    recent = failures[-StartPlanner.MEMORY :]
    assert list(planner.failures) == recent
    lo, hi = StartPlanner.BACKOFF
    for _ in range(20):
        start = planner.plan(test=False)
        assert start.random and start.before_failure and (0.0 <= start.speed_kmh <= top_speed)
        assert start.options() == {
            "random_start": True,
            "start_speed_kmh": start.speed_kmh,
            "start_progress": start.progress,
        }
        assert any(max(0.0, f - hi) <= start.progress <= max(0.0, f - lo) for f in recent)
        assert planner.plan(test=True) == Start() and Start().options() == {}


def test_failure_starts_take_their_share_of_the_random_starts_only() -> None:
    planner = StartPlanner(0.5, 0.0, failure_share=0.5, seed=1)
    planner.ended(Start(), terminated=True, finished=False, progress=0.3)
    starts = [planner.plan(test=False) for _ in range(4000)]
    random = [s for s in starts if s.random]
    placed = [s for s in random if s.before_failure]
    assert 0.45 < len(random) / 4000 < 0.55 and 0.45 < len(placed) / len(random) < 0.55
    assert all(s.speed_kmh == 0.0 for s in random)
    off = StartPlanner(1.0, 0.0, failure_share=0.0, seed=1)
    off.ended(Start(), terminated=True, finished=False, progress=0.3)
    assert not any(off.plan(test=False).before_failure for _ in range(200))


@given(share=st.sampled_from([0.0, 0.3, 1.0]), first=st.integers(0, 5000), span=st.integers(0, 50))
def test_other_tracks_take_their_share_of_the_training_episodes(share: float, first: int, span: int) -> None:
    planner = StartPlanner(
        0.5, 100.0, failure_share=1.0, seed=first, other_share=share, other_seeds=(first, first + span)
    )
    planner.ended(Start(), terminated=True, finished=False, progress=0.3)
    starts = [planner.plan(test=False) for _ in range(600)]
    others = [s for s in starts if s.track is not None]
    assert abs(len(others) / len(starts) - share) < 0.1
    assert all(first <= s.track <= first + span and not s.before_failure for s in others)
    assert all(s.options()["track_seed"] == s.track for s in others)
    assert all("track_seed" not in s.options() for s in starts if s.track is None)
    if share == 1.0:  # the own track's failures are the only ones remembered
        assert not any(s.before_failure for s in starts)
        planner.ended(others[0], terminated=True, finished=False, progress=0.6)
        assert list(planner.failures) == [0.3]
    assert all(planner.plan(test=True) == Start() for _ in range(20))


def test_other_tracks_need_the_built_in_game_and_a_seed_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="worker.other_tracks needs the built-in game"):
        load_config(data_dir=tmp_path, environ={}, overrides=["env.game=tm2020", "worker.other_tracks=0.5"])
    with pytest.raises(ConfigError, match=r"worker.other_track_seeds = \[9, 3\] must be"):
        load_config(data_dir=tmp_path, environ={}, overrides=["worker.other_track_seeds=[9, 3]"])
    config = load_config(data_dir=tmp_path, environ={}, overrides=["worker.other_tracks=0.25"])
    assert config.worker.other_tracks == 0.25 and config.worker.other_track_seeds == (1000, 1999)


def test_failure_starts_need_random_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="worker.failure_starts places some of the random starts"):
        load_config(
            data_dir=tmp_path, environ={}, overrides=["worker.random_start=0", "worker.failure_starts=0.5"]
        )
    config = load_config(data_dir=tmp_path, environ={}, overrides=["worker.failure_starts=0.5"])
    assert config.worker.failure_starts == 0.5


@pytest.mark.timeout(240)
def test_training_episodes_drive_other_tracks_and_test_episodes_the_own(tmp_path: Path) -> None:
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test=True)
        worker = config.worker.model_copy(update={"other_tracks": 1.0, "other_track_seeds": (1000, 1003)})
        config = config.model_copy(update={"worker": worker})
        _, batches = _drive_with(config, actor, "w10", 3)
    episodes = _episodes(batches)
    assert [e["test"] for e in episodes] == [False, True, False]
    assert episodes[1]["other_track"] is None
    assert all(1000 <= e["other_track"] <= 1003 for e in episodes[::2])
    assert all(e["length"] > 0 for e in episodes)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("top_speed", [0.0, 200.0])
def test_only_training_episodes_start_at_random_places(tmp_path: Path, top_speed: float) -> None:
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test=True)
        worker = config.worker.model_copy(update={"random_start": 1.0, "random_start_speed_kmh": top_speed})
        config = config.model_copy(update={"worker": worker})
        _, batches = _drive_with(config, actor, "w9", 3)
    episodes = _episodes(batches)
    assert [(e["test"], e["random_start"]) for e in episodes] == [(False, True), (True, False), (False, True)]
    assert not any(e["failure_start"] for e in episodes)
    speeds = [e["start_speed_kmh"] for e in episodes]
    assert speeds[1] == 0.0 and all((0.0 < s <= top_speed) if top_speed else s == 0.0 for s in speeds[::2])


@pytest.mark.timeout(240)
def test_an_unrecorded_test_episode_just_before_the_stop_is_reported(tmp_path: Path) -> None:
    """No rows carry its stats (``train_on_test`` off) and none follow: the worker's last flush sends them alone."""
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test=False)
        trainer = TrainerClient(config.relay)
        stop = threading.Event()
        try:
            trainer.publish_weights(1, actor_to_arrays(actor), actor_meta(actor))
            worker = RolloutWorker(config, "w5")

            def stop_after_the_test_episode() -> None:
                while worker.stats.test_episodes == 0 and not stop.is_set():
                    time.sleep(0.001)
                stop.set()

            watcher = threading.Thread(target=stop_after_the_test_episode)
            watcher.start()
            try:
                stats = worker.run(stop)
            finally:
                stop.set()
                watcher.join(10)
            assert stats.episodes == 1 and stats.test_episodes == 1
            batches = _collect(trainer, stats.samples, 2)
        finally:
            trainer.close()
    assert [e["test"] for e in _episodes(batches)] == [False, True]
    assert _rows(batches) == stats.samples == 21  # the training episode's rows only


def _publish_every_20ms(trainer: TrainerClient, arrays: dict, meta: dict) -> Callable[[], None]:
    """Publish the same weights as versions 1, 2, ... every 20 ms from a thread; returns the function that stops
    it."""
    stop = threading.Event()

    def publish() -> None:
        version = 1
        while not stop.is_set():
            trainer.publish_weights(version, arrays, meta)
            version += 1
            stop.wait(0.02)

    publisher = threading.Thread(target=publish)
    publisher.start()

    def halt() -> None:
        stop.set()
        publisher.join(10)

    return halt


@pytest.mark.timeout(240)
@pytest.mark.parametrize("confirm", [0, 2])
def test_a_test_episode_keeps_one_weight_version(tmp_path: Path, confirm: int) -> None:
    """New weights every 20 ms: training episodes pick them up as they come, a test episode keeps its first, and
    the episodes that confirm its score keep the same."""
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    arrays, meta = actor_to_arrays(actor), actor_meta(actor)
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test=True, confirm=confirm)
        trainer = TrainerClient(config.relay)
        stop = _publish_every_20ms(trainer, arrays, meta)
        try:
            stats = RolloutWorker(config, "w9").run()
            assert stats.episodes == 2 and stats.test_episodes == 1 + confirm
            batches = [m for m, _ in _collect(trainer, stats.samples, 3 + confirm)]
        finally:
            stop()
            trainer.close()
    episodes = [e for m in batches for e in m["episodes"]]
    assert [e["test"] for e in episodes] == [False] + [True] * (1 + confirm) + [False]
    # batches in stream order: each episode's rows end with the batch that reports it
    spans, start = [], 0
    for i, m in enumerate(batches):
        if m["episodes"]:
            spans.append([b["policy_version"] for b in batches[start : i + 1]])
            start = i + 1
    train_versions, *test_spans, _ = spans
    test_versions = [v for span in test_spans for v in span]
    assert len(set(test_versions)) == 1 and test_versions[0] == episodes[1]["policy_version"]
    assert len(set(train_versions)) > 1  # the training episode did swap while it drove
    # the series' last episode scores the version with the mean of its returns; the others carry no score
    tests = episodes[1:-1]
    assert all("score" not in e for e in tests[:-1])
    assert tests[-1]["score"] == pytest.approx(np.mean([e["return"] for e in tests]))
    assert tests[-1]["score_episodes"] == 1 + confirm


@pytest.mark.timeout(240)
def test_a_retest_drives_the_kept_version_again(tmp_path: Path) -> None:
    """With ``worker.retest_every = 2`` the second test episode re-drives the version the first one scored, while
    new weights keep coming, and reports the mean of both returns as that version's new score."""
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    arrays, meta = actor_to_arrays(actor), actor_meta(actor)
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(
            tmp_path, relay, train_on_test=False, extra=("worker.max_episodes=3", "worker.retest_every=2")
        )
        trainer = TrainerClient(config.relay)
        stop = _publish_every_20ms(trainer, arrays, meta)
        try:
            stats = RolloutWorker(config, "w10").run()
            assert stats.episodes == 3 and stats.test_episodes == 2
            batches = [m for m, _ in _collect(trainer, stats.samples, 5)]
        finally:
            stop()
            trainer.close()
    episodes = [e for m in batches for e in m["episodes"]]
    assert [e["test"] for e in episodes] == [False, True, False, True, False]
    first, retest = episodes[1], episodes[3]
    assert "retest" not in first and first["score"] == first["return"] and first["score_episodes"] == 1
    assert retest["retest"] and retest["policy_version"] == first["policy_version"]
    assert episodes[2]["policy_version"] > first["policy_version"]  # newer weights in between
    assert retest["score"] == pytest.approx((first["return"] + retest["return"]) / 2)
    assert retest["score_episodes"] == 2


def test_tmrl_test_drives_the_runs_best_actor_then_its_latest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(data_dir=tmp_path, environ={})
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(8, 8)))
    assert config.env.game == "carracing"
    assert default_weights_path(config) == carracing_actor_path()  # nothing in the run yet: the shipped actor
    assert "shipped actor" in capsys.readouterr().out
    latest = save_actor(config.run_dir / ACTOR_FILE, actor, weight_version=9)
    assert default_weights_path(config) == latest
    record = {"return": 871.5, "episodes": 3, "weight_version": 7, "updates": 700}
    best = save_arrays(
        config.run_dir / BEST_ACTOR_FILE, actor_to_arrays(actor), {**actor_meta(actor), "best_test": record}
    )
    assert default_weights_path(config) == best
    out = capsys.readouterr().out
    assert "best actor" in out and "871.5 over 3 episodes" in out and str(latest) in out
