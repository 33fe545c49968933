"""The Trainer role against a real relay and a real worker client; metrics files and ``plot_run``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tmrl.errors import RunError
from tmrl.net.client import TrainerClient, WorkerClient
from tmrl.net.config import RelayConfig
from tmrl.net.testing import RelayThread
from tmrl.rl.config import AlgorithmConfig, ModelConfig, RLConfig, TrainerConfig
from tmrl.rl.export import actor_from_arrays, load_actor, load_arrays, split_published
from tmrl.rl.learner import CHECKPOINT_DIR
from tmrl.rl.metrics import CSV_NAME, TB_DIR, plot_run, read_metrics
from tmrl.rl.transitions import TransitionRecorder
from tmrl.spaces import Component, ObservationSpec
from tmrl.trainer import ACTOR_FILE, BEST_ACTOR_FILE, LIVE_ACTOR_FILE, STATUS_FILE, Trainer

SPEC = ObservationSpec((Component("speed", (1,)), Component("lidar", (19,), history=4)), 3)
FAST = dict(secret="test-secret-0123456789", backoff_initial=0.01, backoff_max=0.2, connect_timeout=2.0)


def rl_config() -> RLConfig:
    return RLConfig(
        algorithm=AlgorithmConfig(lr_actor=1e-3, lr_critic=1e-3),
        model=ModelConfig(hidden=(32, 32)),
        trainer=TrainerConfig(
            batch_size=32,
            replay_capacity=10_000,
            warmup_steps=100,
            max_updates_per_step=0.5,
            publish_every=10,
            checkpoint_every=40,
            log_every=10,
        ),
    )


def episode_batch(
    ep: int, length: int = 50, other_track: int | None = None
) -> tuple[dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(ep)
    rec = TransitionRecorder(SPEC)
    rec.reset({"speed": rng.random(1, np.float32), "lidar": rng.random((4, 19), np.float32)})
    for t in range(length):
        rec.step(
            rng.uniform(-1, 1, 3).astype(np.float32),
            1.0,
            False,
            t == length - 1,
            {"speed": rng.random(1, np.float32), "lidar": rng.random((4, 19), np.float32)},
        )
    arrays = rec.take()
    assert arrays is not None
    end = {
        "progress": 0.1 * ep,
        "end_speed_kmh": 20.0,
        "end_off_trajectory": 11.5,
    }  # where a worker's episode ended
    eps = [dict(e, test=False, other_track=other_track, **end) for e in rec.pop_episodes()]
    return arrays, {"n": len(arrays["reward"]), "policy_version": 0, "episodes": eps}


def test_trainer_learns_from_relayed_batches_publishes_and_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RelayThread(RelayConfig(port=0, **FAST)) as relay:  # type: ignore[arg-type]
        worker = WorkerClient(relay.config, worker_id="w0")
        client = TrainerClient(relay.config)
        trainer = Trainer(SPEC, rl_config(), client, run_dir)
        stop = threading.Event()
        thread = threading.Thread(target=trainer.run, args=(stop,), kwargs={"max_updates": 100})
        thread.start()
        try:
            assert worker.wait_connected(10)
            for ep in range(6):  # 306 rows: throttle allows 0.5 * 306 = 153 >= 100 updates
                worker.send_batch(*episode_batch(ep, other_track=1234 if ep == 5 else None))
            versions = []
            deadline = time.monotonic() + 120
            while thread.is_alive() and time.monotonic() < deadline:
                got = worker.latest_weights()
                if got is not None:
                    versions.append(got[0])
                thread.join(0.05)
            assert not thread.is_alive(), "trainer did not reach 100 updates"
            got = worker.latest_weights()
            if got is not None:
                versions.append(got[0])
        finally:
            stop.set()
            thread.join(30)
            worker.close()
            client.close()
    learner = trainer.learner
    assert learner.updates == 100 and learner.env_steps == 306 and learner.episodes == 6
    assert trainer.streams == {"w0": 0}
    # weights: version 1 at start, then every 10 updates; the worker saw them grow and can build the actor
    assert learner.weight_version == 11
    assert versions and versions == sorted(versions) and versions[-1] >= 2
    actor = actor_from_arrays(*worker_arrays_and_meta(learner))
    assert actor is not None
    # a checkpoint at 40 and 80 updates, and a final one on the way out; the actor file next to it
    ckpts = [p.name for p in (run_dir / CHECKPOINT_DIR).iterdir()]
    assert "ckpt-000000100" in ckpts
    assert load_actor(run_dir / ACTOR_FILE) is not None
    status = (run_dir / STATUS_FILE).read_text()
    assert '"updates": 100' in status and '"buffer_capacity": 10000' in status
    # metrics
    assert (run_dir / TB_DIR).is_dir() and any((run_dir / TB_DIR).iterdir())
    series = read_metrics(run_dir)
    # the last episode drove another track (worker.other_tracks): logged apart from the own track's
    assert len(series["episodes/train_return"]) == 5 and len(series["episodes/other_return"]) == 1
    assert [round(v, 6) for _, _, v in series["episodes/train_progress"]] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert [round(v, 6) for _, _, v in series["episodes/other_progress"]] == [0.5]
    assert {v for _, _, v in series["episodes/train_end_off_trajectory"]} == {11.5}
    assert {"losses/critic", "losses/actor", "charts/alpha", "charts/q", "speed/updates_per_s"} <= set(series)
    assert series["charts/policy_lag"][-1][2] >= 1  # the batches were made by version 0
    assert [u for _, u, _ in series["losses/critic"]] == list(range(10, 101, 10))
    png = plot_run(run_dir, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trainer_keeps_the_actor_of_the_best_test_score(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RelayThread(RelayConfig(port=0, **FAST)) as relay:  # type: ignore[arg-type]
        worker = WorkerClient(relay.config, worker_id="w0")
        client = TrainerClient(relay.config)
        try:
            assert worker.wait_connected(10)
            trainer = Trainer(SPEC, rl_config(), client, run_dir)

            def relay_episode(
                seed: int, version: int, ret: float, test: bool = True, rows: bool = True, scored: bool = True
            ) -> None:
                arrays, meta = episode_batch(seed, length=10)
                meta["episodes"][0].update(test=test, policy_version=version, **{"return": ret})
                if scored:  # the worker's score of the version, from 3 test episodes
                    meta["episodes"][0].update(score=ret, score_episodes=3)
                if not rows:  # stats alone, as a worker's last flush sends them
                    arrays, meta = {k: a[:0] for k, a in arrays.items()}, {**meta, "n": 0}
                worker.send_batch(arrays, meta)
                deadline = time.monotonic() + 10
                got: list = []
                while not got and time.monotonic() < deadline:
                    got = client.poll_batches(64, 0.1)
                assert len(got) == 1
                trainer.ingest(got)

            v1 = trainer.publish()
            with torch.no_grad():
                for p in trainer.learner.actor.parameters():
                    p.add_(1.0)  # version 2 differs from version 1
            v2 = trainer.publish()
            relay_episode(0, v2, 300.0)
            best_arrays, best_meta = load_arrays(run_dir / BEST_ACTOR_FILE)
            assert best_meta["weight_version"] == v2 and best_meta["best_test"]["return"] == 300.0
            assert best_meta["best_test"]["episodes"] == 3
            relay_episode(6, v1, 400.0, scored=False)  # a test episode without a score does not count
            assert load_arrays(run_dir / BEST_ACTOR_FILE)[1]["weight_version"] == v2
            relay_episode(1, v1, 250.0)  # worse: the file keeps version 2
            assert load_arrays(run_dir / BEST_ACTOR_FILE)[1]["weight_version"] == v2
            relay_episode(2, v1, 500.0)  # better, and version 1 is still kept
            arrays, meta = load_arrays(run_dir / BEST_ACTOR_FILE)
            assert meta["weight_version"] == v1 and meta["best_test"]["return"] == 500.0
            assert not all(np.array_equal(arrays[k], best_arrays[k]) for k in arrays)
            assert actor_from_arrays(arrays, meta) is not None
            relay_episode(3, v2, 10_000.0, test=False)  # training episodes never count
            relay_episode(4, 999, 900.0)  # a version the trainer no longer holds: nothing saved
            assert load_arrays(run_dir / BEST_ACTOR_FILE)[1]["weight_version"] == v1
            assert trainer.learner.extra["best_test"]["weight_version"] == v1
            steps = trainer.learner.env_steps
            relay_episode(5, v2, 950.0, rows=False)  # a batch of 0 rows: no rows added, the episode counts
            assert trainer.learner.env_steps == steps
            assert load_arrays(run_dir / BEST_ACTOR_FILE)[1]["best_test"]["return"] == 950.0
            # a re-test of the kept version: its new score replaces the old one, lower
            relay_episode(7, v2, 100.0)
            assert load_arrays(run_dir / BEST_ACTOR_FILE)[1]["best_test"]["return"] == 100.0
            relay_episode(8, v1, 200.0)  # and a version that beats the new score takes its place
            assert load_arrays(run_dir / BEST_ACTOR_FILE)[1]["weight_version"] == v1
            trainer._published.clear()  # as after a restart: the kept actor is re-read from its file
            relay_episode(9, v1, 150.0)
            arrays, meta = load_arrays(run_dir / BEST_ACTOR_FILE)
            assert meta["weight_version"] == v1 and meta["best_test"]["return"] == 150.0
            assert actor_from_arrays(arrays, meta) is not None
            trainer.learner.close()
        finally:
            worker.close()
            client.close()


def test_trainer_with_an_averaged_actor_delivers_the_average(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = rl_config()
    config = config.model_copy(
        update={"algorithm": config.algorithm.model_copy(update={"actor_average": 0.9})}
    )
    with RelayThread(RelayConfig(port=0, **FAST)) as relay:  # type: ignore[arg-type]
        worker = WorkerClient(relay.config, worker_id="w0")
        client = TrainerClient(relay.config)
        try:
            assert worker.wait_connected(10)
            trainer = Trainer(SPEC, config, client, run_dir)
            learner = trainer.learner
            with torch.no_grad():
                for p in learner.actor.parameters():
                    p.add_(1.0)  # the live actor moves away from its average
            average = {k: v.numpy() for k, v in learner.delivered_actor.state_dict().items()}
            version = trainer.publish()
            assert worker.wait_weights(10)
            got = worker.latest_weights()
            assert got is not None and got[0] == version
            live, sent_average = split_published(got[1])
            assert sent_average is not None
            assert all(np.array_equal(sent_average[k], average[k]) for k in average)
            assert not all(np.array_equal(live[k], average[k]) for k in average)
            assert trainer.consider_best(version, 500.0, 3)
            trainer.checkpoint()
            for path in (run_dir / BEST_ACTOR_FILE, run_dir / ACTOR_FILE):
                arrays, _ = load_arrays(path)
                assert arrays.keys() == average.keys()
                assert all(np.array_equal(arrays[k], average[k]) for k in average), path
            arrays, _ = load_arrays(run_dir / LIVE_ACTOR_FILE)
            assert all(np.array_equal(arrays[k], live[k]) for k in live)
            learner.close()
        finally:
            worker.close()
            client.close()


def worker_arrays_and_meta(learner) -> tuple[dict, dict]:
    _, arrays, meta = learner.export_actor()
    return arrays, meta


def test_plot_run_without_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=CSV_NAME):
        plot_run(tmp_path / "nothing", tmp_path / "x.png")
