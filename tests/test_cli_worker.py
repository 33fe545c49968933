"""The rollout worker: weight swaps, timeout counting, and its batches through a real relay from the real game."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_e2e_run import write_track_reward

from tmrl.config import load_config
from tmrl.envs.observations import observation_spec
from tmrl.net.client import TrainerClient
from tmrl.net.config import RelayConfig
from tmrl.net.testing import RelayThread
from tmrl.rl.config import ModelConfig
from tmrl.rl.export import actor_meta, actor_to_arrays
from tmrl.rl.models import Actor
from tmrl.worker import Policy, RolloutWorker, TimeoutCounter


def _spec(tmp_path: Path):
    return observation_spec(load_config(data_dir=tmp_path, environ={}).env)


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
            rows, episodes, batches = 0, [], []
            deadline = time.monotonic() + 30
            while rows < stats.samples and time.monotonic() < deadline:
                for meta, arrays in trainer.poll_batches(64, 0.5):
                    batches.append((meta, arrays))
                    rows += meta["n"]
                    episodes += meta["episodes"]
        finally:
            trainer.close()
    # Each episode: 30 steps plus its final observation row.
    assert rows == stats.samples == 62
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
            rows, episodes = 0, []
            deadline = time.monotonic() + 30
            while (rows < stats.samples or not episodes) and time.monotonic() < deadline:
                for meta, _ in trainer.poll_batches(64, 0.5):
                    rows += meta["n"]
                    episodes += meta["episodes"]
        finally:
            trainer.close()
    assert rows == stats.samples == 21
    assert [e["length"] for e in episodes] == [20]


def _test_episode_config(tmp_path: Path, relay: RelayThread, train_on_test: bool):
    """Two training episodes of 20 steps with a test episode between them, streamed to ``relay``."""
    write_track_reward(tmp_path)
    config = load_config(
        data_dir=tmp_path,
        environ={},
        overrides=[
            "env.rtgym.ep_max_length=20",
            "worker.max_episodes=2",
            "worker.test_every=1",
            f"worker.train_on_test={str(train_on_test).lower()}",
            "relay.flush_steps=8",
        ],
    )
    return config.model_copy(update={"relay": config.relay.model_copy(update={"port": relay.config.port})})


@pytest.mark.timeout(240)
@pytest.mark.parametrize("train_on_test", [True, False])
def test_test_episodes_are_streamed_only_when_asked(tmp_path: Path, train_on_test: bool) -> None:
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test)
        trainer = TrainerClient(config.relay)
        try:
            trainer.publish_weights(1, actor_to_arrays(actor), actor_meta(actor))
            stats = RolloutWorker(config, "w8").run()
            assert stats.episodes == 2 and stats.test_episodes == 1 and stats.steps == 60
            rows, episodes = 0, []
            deadline = time.monotonic() + 30
            while (rows < stats.samples or len(episodes) < 3) and time.monotonic() < deadline:
                for meta, _ in trainer.poll_batches(64, 0.5):
                    rows += meta["n"]
                    episodes += meta["episodes"]
        finally:
            trainer.close()
    assert [e["test"] for e in episodes] == [False, True, False]  # every episode is reported
    assert rows == stats.samples == (63 if train_on_test else 42)  # 21 rows per recorded episode


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
            rows, episodes = 0, []
            deadline = time.monotonic() + 30
            while (rows < stats.samples or len(episodes) < 2) and time.monotonic() < deadline:
                for meta, _ in trainer.poll_batches(64, 0.5):
                    rows += meta["n"]
                    episodes += meta["episodes"]
        finally:
            trainer.close()
    assert [e["test"] for e in episodes] == [False, True]
    assert rows == stats.samples == 21  # the training episode's rows only


@pytest.mark.timeout(240)
def test_a_test_episode_keeps_one_weight_version(tmp_path: Path) -> None:
    """New weights every 20 ms: training episodes pick them up as they come, a test episode keeps its first."""
    actor = Actor(_spec(tmp_path), ModelConfig(hidden=(32, 32)))
    arrays, meta = actor_to_arrays(actor), actor_meta(actor)
    with RelayThread(RelayConfig(port=0)) as relay:
        config = _test_episode_config(tmp_path, relay, train_on_test=True)
        trainer = TrainerClient(config.relay)
        stop = threading.Event()

        def publish() -> None:
            version = 1
            while not stop.is_set():
                trainer.publish_weights(version, arrays, meta)
                version += 1
                stop.wait(0.02)

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            stats = RolloutWorker(config, "w9").run()
            assert stats.episodes == 2 and stats.test_episodes == 1
            batches: list[dict] = []
            rows = 0
            deadline = time.monotonic() + 30
            while (rows < stats.samples or sum(len(m["episodes"]) for m in batches) < 3) and (
                time.monotonic() < deadline
            ):
                for m, _ in trainer.poll_batches(64, 0.5):
                    rows += m["n"]
                    batches.append(m)
        finally:
            stop.set()
            publisher.join(10)
            trainer.close()
    episodes = [e for m in batches for e in m["episodes"]]
    assert [e["test"] for e in episodes] == [False, True, False]
    # batches in stream order: each episode's rows end with the batch that reports it
    spans, start = [], 0
    for i, m in enumerate(batches):
        if m["episodes"]:
            spans.append([b["policy_version"] for b in batches[start : i + 1]])
            start = i + 1
    train_versions, test_versions, _ = spans
    assert len(set(test_versions)) == 1 and test_versions[0] == episodes[1]["policy_version"]
    assert len(set(train_versions)) > 1  # the training episode did swap while it drove
