"""Reward from a recorded trajectory: resampling, progress search, failure countdown, finish, file errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmrl.envs.config import EnvConfig, RewardConfig, resolved_reward
from tmrl.envs.reward import (
    CarRacingReward,
    ProgressTracker,
    Trajectory,
    TrajectoryReward,
    load_trajectory,
    make_reward,
    resample,
    save_trajectory,
)
from tmrl.errors import RewardError

coords = st.floats(-50.0, 50.0, allow_nan=False)
polylines = st.lists(st.tuples(coords, coords, coords), min_size=2, max_size=12).map(np.array)


# TMRL's progress rule and failure countdown (TrackMania's per-game defaults).
TMRL_RULES = resolved_reward(EnvConfig(game="tm2020"))


def circle(n: int = 400, radius: float = 30.0) -> np.ndarray:
    """A closed-ish lap: positions on a circle in the x-z plane (y up = 0), like the built-in game's."""
    t = np.linspace(0.0, 1.9 * math.pi, n)
    return np.stack([radius * np.cos(t), np.zeros(n), radius * np.sin(t)], axis=1)


def tracker_for(points: np.ndarray, cfg: RewardConfig | None = None) -> ProgressTracker:
    cfg = cfg or TMRL_RULES
    return ProgressTracker(
        resample(points, cfg.spacing), cfg.check_forward, cfg.check_backward, cfg.max_stray
    )


@settings(max_examples=60, deadline=None)
@given(polylines, st.floats(0.05, 2.0))
def test_resample_spacing(points: np.ndarray, spacing: float) -> None:
    length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    if length < spacing:
        with pytest.raises(ValueError):
            resample(points, spacing)
        return
    out = resample(points, spacing)
    assert np.allclose(out[0], points[0])
    assert len(out) == math.floor(length / spacing + 1e-9) + 1
    chords = np.linalg.norm(np.diff(out, axis=0), axis=1)
    assert (chords <= spacing + 1e-6).all()  # chords are never longer than the arc between them


def test_resample_straight_line_is_evenly_spaced() -> None:
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 4.0], [3.0, 0.0, 4.0], [6.0, 0.0, 8.0]])
    out = resample(pts, 0.1)
    assert len(out) == 101
    assert np.allclose(np.linalg.norm(np.diff(out, axis=0), axis=1), 0.1)


def reference_forward(points: np.ndarray, cur: int, pos: np.ndarray, check: int) -> int:
    """Plain loop of the forward rule: stop after ``check`` consecutive non-improving points."""
    best, best_d, misses, i = cur, math.inf, 0, cur
    while i < len(points) and misses < check:
        d = float(np.linalg.norm(points[i] - pos))
        if d <= best_d:
            best, best_d, misses = i, d, 0
        else:
            misses += 1
        i += 1
    return best


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 60),
    st.integers(0, 5000),
)
def test_forward_search_matches_reference(seed: int, check: int, cur_frac: int) -> None:
    rng = np.random.default_rng(seed)
    points = np.cumsum(rng.normal(size=(int(rng.integers(2, 5000)), 3)), axis=0)
    cur = cur_frac % len(points)
    pos = points[int(rng.integers(0, len(points)))] + rng.normal(size=3)
    tracker = ProgressTracker(points, check, 10, math.inf)
    tracker.index = cur
    assert tracker._forward(pos)[0] == reference_forward(points, cur, pos, check)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=80))
def test_monotone_progress_sums_to_length(steps: list[int]) -> None:
    cfg = TMRL_RULES
    reward = TrajectoryReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    idx, total = 0, 0.0
    for s in steps:
        idx = min(idx + s, len(pts) - 1)
        r, terminated = reward.step(pts[idx], False, 2)
        assert not terminated
        assert r > 0 or idx == len(pts) - 1
        total += r
    assert total == pytest.approx(idx / cfg.index_per_reward)
    if idx == len(pts) - 1:
        assert total == pytest.approx((len(pts) - 1) / 100.0)


def test_full_lap_and_finish_bonus() -> None:
    cfg = TMRL_RULES
    reward = TrajectoryReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    total = 0.0
    for idx in range(0, len(pts), 37):
        total += reward.step(pts[idx], False, 2)[0]
    r, terminated = reward.step(pts[-1], True, 2)
    assert terminated
    assert total + r == pytest.approx((len(pts) - 1) / 100.0 + 100.0)


@pytest.mark.parametrize("game", ["carracing", "tm2020"])
def test_stray_gives_no_progress(game: str) -> None:
    cfg = resolved_reward(EnvConfig(game=game))
    stray = cfg.max_stray
    assert stray == (10.0 if game == "carracing" else 100.0)
    reward = TrajectoryReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    reward.step(pts[200], False, 2)
    assert stray is not None
    far = pts[260] + np.array([0.0, stray + 1.0, 0.0])
    r, _ = reward.step(far, False, 2)
    assert r == 0.0 and reward.tracker.index == 200
    near = pts[260] + np.array([0.0, stray - 1.0, 0.0])
    r, _ = reward.step(near, False, 2)
    assert r > 0.0 and reward.tracker.index == 260


def test_backward_search_follows_a_car_backing_up() -> None:
    cfg = TMRL_RULES
    reward = TrajectoryReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    reward.step(pts[300], False, 2)
    r, _ = reward.step(pts[295], False, 2)
    assert r == 0.0 and reward.tracker.index == 295
    r, _ = reward.step(pts[250], False, 2)  # the search goes on while points improve
    assert r == 0.0 and reward.tracker.index == 250
    r, _ = reward.step(pts[300], False, 2)  # driving forward again earns the stretch again (TMRL's rule)
    assert r == pytest.approx(0.5) and reward.tracker.index == 300


def test_heading_tells_a_car_driving_the_wrong_way() -> None:
    """The cosine between a step's motion and the trajectory's direction at the index reached."""
    tracker = tracker_for(circle(), TMRL_RULES)
    pts = tracker.points
    tracker.update(pts[300])
    ahead, back = pts[304] - pts[300], pts[296] - pts[300]
    assert tracker.heading(ahead) == pytest.approx(1.0, abs=0.01)
    assert tracker.heading(back) == pytest.approx(-1.0, abs=0.01)
    across = np.cross(ahead, [0.0, 1.0, 0.0])  # sideways in the ground plane (y is up)
    assert tracker.heading(across) == pytest.approx(0.0, abs=0.05)
    assert tracker.heading(ahead * 1e-3) == 0.0  # standing still: no direction


def test_failure_countdown() -> None:
    cfg = TMRL_RULES
    reward = TrajectoryReward(tracker_for(circle(), cfg), cfg)
    start = reward.tracker.points[0]
    ends = [reward.step(start, False, 2)[1] for _ in range(cfg.min_steps + cfg.failure_countdown + 1)]
    assert not any(ends[:-1]) and ends[-1]
    # Progress resets the count.
    reward.reset()
    pts = reward.tracker.points
    for _ in range(cfg.min_steps + cfg.failure_countdown):
        assert not reward.step(pts[0], False, 2)[1]
    assert not reward.step(pts[50], False, 2)[1]
    for _ in range(cfg.failure_countdown):
        assert not reward.step(pts[50], False, 2)[1]
    assert reward.step(pts[50], False, 2)[1]


def test_carracing_scale_full_lap() -> None:
    cfg = TMRL_RULES
    reward = CarRacingReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    total, frames = 0.0, 0
    for idx in range(5, len(pts) - 40, 41):
        total += reward.step(pts[idx], False, 3)[0]
        frames += 3
    r, terminated = reward.step(pts[-30], True, 3)
    frames += 3
    assert terminated
    assert total + r == pytest.approx(cfg.lap_reward - cfg.frame_penalty * frames)


def test_carracing_scale_counts_progress_once() -> None:
    cfg = TMRL_RULES
    reward = CarRacingReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    first = reward.step(pts[400], False, 0)[0]
    assert first == pytest.approx(cfg.lap_reward * 400 / (len(pts) - 1))
    # Back up and drive the same stretch again: nothing earned but the frame penalty.
    for idx in (395, 390, 385, 390, 395, 400):
        assert reward.step(pts[idx], False, 2)[0] == pytest.approx(-0.2)


def test_trajectory_file_round_trip(tmp_path) -> None:
    traj = Trajectory(circle(), "carracing", 7)
    path = save_trajectory(tmp_path / "sub" / "reward.json", traj)
    back = load_trajectory(path, "carracing")
    assert back.track_seed == 7 and back.game == "carracing"
    assert np.allclose(back.points, traj.points, atol=1e-5)
    cfg = EnvConfig(reward=RewardConfig(path=path))
    assert isinstance(make_reward(cfg, track_seed=7), CarRacingReward)
    cfg_tm = EnvConfig(game="carracing", reward=RewardConfig(path=path, mode="trajectory"))
    assert isinstance(make_reward(cfg_tm), TrajectoryReward)


def test_missing_and_bad_files(tmp_path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(RewardError, match=r"nope\.json does not exist.*tmrl record-reward --game carracing"):
        make_reward(EnvConfig(reward=RewardConfig(path=missing)))
    with pytest.raises(RewardError, match="no reward trajectory file is configured"):
        make_reward(EnvConfig())
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RewardError, match=r"bad\.json is not readable JSON"):
        load_trajectory(bad, "carracing")
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(RewardError, match="not a tmrl reward trajectory"):
        load_trajectory(bad, "carracing")
    good = save_trajectory(tmp_path / "good.json", Trajectory(circle(), "carracing", 3))
    with pytest.raises(RewardError, match="recorded on game 'carracing', not 'tm2020'"):
        load_trajectory(good, "tm2020")
    with pytest.raises(RewardError, match="track seed 3 but the game uses seed 4"):
        make_reward(EnvConfig(reward=RewardConfig(path=good)), track_seed=4)
    doc = json.loads(good.read_text())
    doc["points"] = [[0.0, 0.0]]
    bad.write_text(json.dumps(doc))
    with pytest.raises(RewardError, match="at least two finite"):
        load_trajectory(bad, "carracing")


def test_carracing_scale_from_a_start_index() -> None:
    """An episode that starts part-way along the trajectory earns only the progress beyond its start."""
    cfg = TMRL_RULES
    reward = CarRacingReward(tracker_for(circle(), cfg), cfg)
    pts = reward.tracker.points
    start = reward.tracker.nearest(pts[300] + 0.01)
    assert start == 300
    reward.reset(start)
    assert reward.step(pts[300], False, 2)[0] == pytest.approx(-0.2)
    assert reward.step(pts[350], False, 0)[0] == pytest.approx(cfg.lap_reward * 50 / (len(pts) - 1))
    reward.reset()
    assert reward.step(pts[350], False, 0)[0] == pytest.approx(cfg.lap_reward * 350 / (len(pts) - 1))
    # ``last`` keeps the search off the end of the lap, which comes back next to its start.
    near_start = pts[0] + 0.9 * (pts[-1] - pts[0])
    assert reward.tracker.nearest(near_start) == len(pts) - 1
    assert reward.tracker.nearest(near_start, last=len(pts) // 2) == 0
