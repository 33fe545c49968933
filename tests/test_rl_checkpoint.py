"""Checkpoints: resuming gives exactly the next update of an uninterrupted run; damage gives CheckpointError."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tmrl.errors import CheckpointError
from tmrl.rl.checkpoint import LATEST, has_checkpoint, load_checkpoint
from tmrl.rl.config import AlgorithmConfig, ModelConfig, RLConfig, TrainerConfig
from tmrl.rl.learner import CHECKPOINT_DIR, Learner
from tmrl.rl.transitions import TransitionRecorder
from tmrl.spaces import Component, ObservationSpec

SPEC = ObservationSpec((Component("speed", (1,)), Component("scan", (4,), history=3)), 2)


def config(algo: str, prefetch: int, n_step: int = 1) -> RLConfig:
    return RLConfig(
        algorithm=AlgorithmConfig(
            name=algo, learn_entropy=True, lr_actor=1e-3, lr_critic=1e-3, redq_n=4, redq_g=3, n_step=n_step
        ),
        model=ModelConfig(hidden=(16, 16)),
        trainer=TrainerConfig(
            batch_size=16, replay_capacity=500, warmup_steps=50, prefetch=prefetch, log_every=5, seed=3
        ),
    )


def rows(n_episodes: int = 4, length: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rec = TransitionRecorder(SPEC)
    for _ in range(n_episodes):
        rec.reset({"speed": rng.random(1, np.float32), "scan": rng.random((3, 4), np.float32)})
        for t in range(length):
            rec.step(
                rng.uniform(-1, 1, 2).astype(np.float32),
                float(rng.normal()),
                t == length - 1,
                False,
                {"speed": rng.random(1, np.float32), "scan": rng.random((3, 4), np.float32)},
            )
    out = rec.take()
    assert out is not None
    return out


def params(learner: Learner) -> list[torch.Tensor]:
    a = learner.algo
    return [p.detach().clone() for m in (a.actor, a.critic, a.critic_target) for p in m.parameters()] + [
        a.log_alpha.detach().clone()
    ]


@pytest.mark.parametrize("algo,prefetch,n_step", [("sac", 3, 1), ("redq", 0, 1), ("sac", 3, 3)])
def test_resume_gives_the_same_next_updates_as_not_stopping(
    tmp_path: Path, algo: str, prefetch: int, n_step: int
) -> None:
    cfg = config(algo, prefetch, n_step)
    a = Learner(SPEC, cfg, tmp_path / "run", tensorboard=False)
    a.add_batch(0, rows())
    assert a.train(7) == 7
    a.checkpoint()
    continued = [float(a.update()["losses/critic"]) for _ in range(4)]
    expected = params(a)
    a.close()

    b = Learner(SPEC, cfg, tmp_path / "run", resume=True, tensorboard=False)
    assert (b.updates, b.env_steps) == (7, 124)
    assert len(b.memory) == len(a.memory) and b.memory.ring.total_appended == a.memory.ring.total_appended
    resumed = [float(b.update()["losses/critic"]) for _ in range(4)]
    b.close()
    assert resumed == continued
    for x, y in zip(params(b), expected, strict=True):
        assert torch.equal(x, y)
    # optimiser moments came back too
    assert (
        b.algo.critic_opt.state_dict()["state"][0]["step"]
        == a.algo.critic_opt.state_dict()["state"][0]["step"]
    )


def test_resume_with_another_n_step_is_refused_when_minibatches_were_saved(tmp_path: Path) -> None:
    a = Learner(SPEC, config("sac", 3), tmp_path / "run", tensorboard=False)
    a.add_batch(0, rows())
    a.train(3)
    a.checkpoint()
    a.close()
    with pytest.raises(CheckpointError, match="n_step"):
        Learner(SPEC, config("sac", 3, n_step=2), tmp_path / "run", resume=True, tensorboard=False)


def test_checkpoints_replace_each_other_atomically(tmp_path: Path) -> None:
    learner = Learner(SPEC, config("sac", 0), tmp_path / "run", tensorboard=False)
    learner.add_batch(0, rows(2, 30))
    learner.train(3)
    first = learner.checkpoint()
    learner.train(2)
    second = learner.checkpoint()
    learner.close()
    root = tmp_path / "run" / CHECKPOINT_DIR
    assert not first.exists() and second.exists()
    assert sorted(p.name for p in root.iterdir()) == sorted([LATEST, second.name])
    assert has_checkpoint(root)
    state = json.loads((second / "state.json").read_text())
    assert state["counters"]["updates"] == 5 and state["config"]["trainer"]["batch_size"] == 16


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "run" / CHECKPOINT_DIR
    with pytest.raises(CheckpointError, match=f"no checkpoint at {root}"):
        load_checkpoint(root)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Learner(SPEC, config("sac", 0), tmp_path / "run", resume=True, tensorboard=False)
    learner = Learner(SPEC, config("sac", 0), tmp_path / "run", tensorboard=False)
    learner.add_batch(0, rows(2, 30))
    learner.train(2)
    path = learner.checkpoint()
    learner.close()

    model = path / "model.pt"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match=f"{path}.*model.pt is corrupt"):
        load_checkpoint(root)
    model.write_bytes(good)

    (path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="state.json is missing or corrupt"):
        load_checkpoint(root)
    (path / "state.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(root)

    (root / LATEST).write_text("ckpt-gone\n")
    with pytest.raises(CheckpointError, match="ckpt-gone.*missing"):
        load_checkpoint(root)


def test_checkpoint_with_another_observation_layout_is_refused(tmp_path: Path) -> None:
    learner = Learner(SPEC, config("sac", 0), tmp_path / "run", tensorboard=False)
    learner.add_batch(0, rows(2, 30))
    learner.checkpoint()
    learner.close()
    other = ObservationSpec((Component("speed", (1,)), Component("scan", (4,), history=3)), 3)
    with pytest.raises(CheckpointError, match="another observation layout"):
        Learner(other, config("sac", 0), tmp_path / "run", resume=True, tensorboard=False)


def test_model_file_is_loaded_without_pickle(tmp_path: Path) -> None:
    """A model.pt holding an arbitrary Python object is refused (weights_only=True), not executed."""
    learner = Learner(SPEC, config("sac", 0), tmp_path / "run", tensorboard=False)
    learner.add_batch(0, rows(2, 30))
    path = learner.checkpoint()
    learner.close()

    torch.save({"algo": argparse.Namespace(payload="not a tensor")}, path / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt is corrupt"):
        load_checkpoint(tmp_path / "run" / CHECKPOINT_DIR)


def test_learner_decays_the_learning_rates_with_environment_steps_and_after_a_resume(tmp_path: Path) -> None:
    base = config("sac", 0)
    algo = base.algorithm.model_copy(update={"lr_decay_steps": (100, 200), "lr_final_scale": 0.1})
    cfg = base.model_copy(update={"algorithm": algo})

    def rates(learner: Learner) -> tuple[float, float]:
        a = learner.algo
        return a.actor_opt.param_groups[0]["lr"], a.critic_opt.param_groups[0]["lr"]

    a = Learner(SPEC, cfg, tmp_path / "run", tensorboard=False)
    a.add_batch(0, rows(n_episodes=2))  # 62 rows: before the decay starts
    a.train(2)
    assert rates(a) == pytest.approx((1e-3, 1e-3))
    a.add_batch(0, rows(n_episodes=3))  # 155 rows: 55 % of the way
    a.update()
    assert rates(a) == pytest.approx((1e-3 * 0.505, 1e-3 * 0.505))
    assert a.gauges["charts/lr_scale"] == pytest.approx(0.505)
    a.checkpoint()
    a.close()

    b = Learner(SPEC, cfg, tmp_path / "run", resume=True, tensorboard=False)
    b.add_batch(0, rows(n_episodes=2))  # 217 rows: past the end
    b.update()
    assert rates(b) == pytest.approx((1e-4, 1e-4))
    b.close()
