"""TransitionRecorder rows -> the Rust replay ring -> the sampler thread's minibatches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tmrl.rl.memory import ReplayMemory
from tmrl.rl.transitions import TransitionRecorder
from tmrl.spaces import Component, ObservationSpec

SPEC = ObservationSpec((Component("speed", (1,)), Component("scan", (2,), history=3)), 1)


def obs_at(ep: int, t: int, history: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Observation of step t of episode ep; the scan encodes (ep, t) and the history is the last 3 scans."""
    scan = np.array([ep, t], dtype=np.float32)
    history.append(scan)
    while len(history) < 3:
        history.insert(0, scan)
    return {"speed": np.array([ep * 1000 + t], dtype=np.float32), "scan": np.stack(history[-3:])}


def record_episode(rec: TransitionRecorder, ep: int, length: int, terminated: bool) -> None:
    hist: list[np.ndarray] = []
    rec.reset(obs_at(ep, 0, hist))
    for t in range(length):
        last = t == length - 1
        rec.step(
            np.array([t / 100], dtype=np.float32),
            float(ep * 1000 + t),
            terminated and last,
            (not terminated) and last,
            obs_at(ep, t + 1, hist),
        )


def one_episode(length: int = 50) -> dict[str, np.ndarray]:
    """The rows of one truncated episode of ``length`` steps."""
    rec = TransitionRecorder(SPEC)
    record_episode(rec, 0, length, terminated=False)
    batch = rec.take()
    assert batch is not None
    return batch


def test_recorder_rows_follow_the_row_convention() -> None:
    rec = TransitionRecorder(SPEC, initial_rows=2)  # forces growth
    record_episode(rec, 0, 4, terminated=True)
    record_episode(rec, 1, 2, terminated=False)
    assert rec.pop_episodes() == [
        {"return": 0 + 1 + 2 + 3, "length": 4, "terminated": True},
        {"return": 1000 + 1001, "length": 2, "terminated": False},
    ]
    b = rec.take()
    assert b is not None and rec.take() is None
    # 4 steps + final obs, then 2 steps + final obs
    assert b["obs.speed"][:, 0].tolist() == [0, 1, 2, 3, 4, 1000, 1001, 1002]
    assert b["obs.scan"].shape == (8, 2)  # one slice per step, not the history
    assert b["first"].tolist() == [True, False, False, False, False, True, False, False]
    assert b["terminated"].tolist() == [False, False, False, True, True, False, False, False]
    assert b["truncated"].tolist() == [False] * 6 + [True, True]
    assert b["reward"].tolist() == [0, 1, 2, 3, 0, 1000, 1001, 0]
    assert b["action"][4].tolist() == [0.0]  # the final row has no action


def test_recorder_cuts_an_open_episode_on_reset_and_refuses_step_before_reset() -> None:
    rec = TransitionRecorder(SPEC)
    with pytest.raises(RuntimeError, match="reset"):
        rec.step(np.zeros(1, np.float32), 0.0, False, False, obs_at(0, 1, []))
    hist: list[np.ndarray] = []
    rec.reset(obs_at(0, 0, hist))
    rec.step(np.zeros(1, np.float32), 1.0, False, False, obs_at(0, 1, hist))
    assert len(rec) == 1  # obs 1 waits for its action
    rec.reset(obs_at(1, 0, []))
    b = rec.take()
    assert b is not None
    assert b["obs.speed"][:, 0].tolist() == [0, 1] and b["truncated"].tolist() == [False, True]


@pytest.mark.parametrize("prefetch", [0, 3])
def test_minibatches_rebuild_histories_and_successors(prefetch: int) -> None:
    rec = TransitionRecorder(SPEC)
    for ep in range(6):
        record_episode(rec, ep, 5 + ep, terminated=ep % 2 == 0)
    mem = ReplayMemory(SPEC, 1000, 64, seed=3, prefetch=prefetch)
    try:
        batch = rec.take()
        assert batch is not None
        mem.append(0, batch)
        assert mem.num_transitions() == sum(5 + ep for ep in range(6))
        for _ in range(5):
            b = mem.sample()
            assert b.obs["scan"].shape == (64, 3, 2) and b.obs["speed"].shape == (64, 1)
            assert b.terminated.dtype == torch.float32 and b.action.shape == (64, 1)
            for i in range(64):
                code = int(b.obs["speed"][i, 0])
                ep, t = divmod(code, 1000)
                assert int(b.next_obs["speed"][i, 0]) == code + 1  # successor, same episode
                assert float(b.reward[i]) == code
                hist = b.obs["scan"][i]
                expected = [[ep, max(t - k, 0)] for k in (2, 1, 0)]  # first frame repeated at the start
                assert hist.tolist() == expected
                last = t == 5 + ep - 1
                assert bool(b.terminated[i]) == (last and ep % 2 == 0)
                assert bool(b.truncated[i]) == (last and ep % 2 == 1)
    finally:
        mem.close()


def test_prefetching_thread_samples_the_same_stream_as_inline_sampling() -> None:
    batch = one_episode()
    seqs = []
    for prefetch in (0, 4):
        mem = ReplayMemory(SPEC, 100, 8, seed=11, prefetch=prefetch)
        mem.append(0, batch)
        seqs.append([mem.sample().obs["speed"][:, 0].tolist() for _ in range(10)])
        mem.close()
    assert seqs[0] == seqs[1]


def test_pause_returns_unconsumed_minibatches_and_restore_serves_them_first() -> None:
    batch = one_episode()
    mem = ReplayMemory(SPEC, 100, 8, seed=5, prefetch=3)
    mem.append(0, batch)
    mem.sample()
    saved = mem.pause()
    expected = [mem.sample().obs["speed"][:, 0].tolist() for _ in range(4)]
    mem.close()
    assert 1 <= len(saved) <= 3
    other = ReplayMemory(SPEC, 100, 8, seed=99, prefetch=0)
    other.append(0, batch)
    other.restore_ready(saved)
    got = [other.sample().obs["speed"][:, 0].tolist() for _ in range(len(saved))]
    assert got == expected[: len(saved)]
    other.close()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_nstep_minibatches_sum_rewards_up_to_the_episode_end(prefetch: int) -> None:
    """Recorder rows (final observation rows included) -> 3-step returns: the sum stops at the episode's last
    step, the next observation is the one after the last reward summed, and the discount counts the steps."""
    n, gamma = 3, 0.5
    rec = TransitionRecorder(SPEC)
    for ep in range(6):
        record_episode(rec, ep, 5 + ep, terminated=ep % 2 == 0)
    mem = ReplayMemory(SPEC, 1000, 64, seed=4, prefetch=prefetch, n_step=n, gamma=gamma)
    try:
        batch = rec.take()
        assert batch is not None
        mem.append(0, batch)
        seen = set()
        for _ in range(5):
            b = mem.sample()
            assert b.discount is not None and b.discount.shape == (64,)
            for i in range(64):
                code = int(b.obs["speed"][i, 0])
                ep, t = divmod(code, 1000)
                length = 5 + ep
                m = min(n, length - t)  # steps t .. t+m-1, never past the episode's last step
                seen.add(m)
                assert int(b.next_obs["speed"][i, 0]) == code + m
                assert float(b.reward[i]) == pytest.approx(sum(gamma**j * (code + j) for j in range(m)))
                assert float(b.discount[i]) == gamma**m
                hist = b.next_obs["scan"][i].tolist()
                assert hist == [[ep, max(t + m - k, 0)] for k in (2, 1, 0)]
                last = t + m == length
                assert bool(b.terminated[i]) == (last and ep % 2 == 0)
                assert bool(b.truncated[i]) == (last and ep % 2 == 1)
        assert seen == {1, 2, 3}
    finally:
        mem.close()


def test_nstep_needs_gamma_and_saved_minibatches_must_match_it() -> None:
    with pytest.raises(ValueError, match="needs gamma"):
        ReplayMemory(SPEC, 100, 8, n_step=2)
    batch = one_episode()
    one = ReplayMemory(SPEC, 100, 8, seed=5, prefetch=2)
    one.append(0, batch)
    one.sample()
    saved = one.pause()
    one.close()
    multi = ReplayMemory(SPEC, 100, 8, seed=5, prefetch=0, n_step=3, gamma=0.9)
    with pytest.raises(ValueError, match="n_step"):
        multi.restore_ready(saved)
    multi.close()
