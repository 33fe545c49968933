"""Episode traces (``tmrl.traces``): the CSV round trip, refusals of files that are not traces, the numbered
folder that keeps the newest, the table of an episode's end, and ``tmrl trace`` / ``tmrl test --trace``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmrl.cli.main import main
from tmrl.traces import COLUMNS, EpisodeTrace, TraceDirectory, TraceError, ending, read_trace

unit = st.floats(-1.0, 1.0)
step = st.tuples(
    st.tuples(unit, unit, unit),  # action
    st.floats(-200.0, 200.0),  # reward
    st.floats(0.0, 1.0),  # progress
    st.floats(0.0, 400.0),  # speed
    st.floats(0.0, 100.0),  # off trajectory
    st.floats(-1.0, 1.0),  # heading
)


def _trace(steps: list, pedals: str = "clip", dt: float = 0.02) -> EpisodeTrace:
    trace = EpisodeTrace(dt, pedals)
    for action, reward, progress, speed, off, heading in steps:
        info = {"progress": progress, "speed_kmh": speed, "off_trajectory": off, "heading": heading}
        trace.add(np.array(action, np.float32), reward, info)
    return trace


@given(steps=st.lists(step, max_size=60), pedals=st.sampled_from(["clip", "linear"]))
def test_a_trace_reads_back_what_was_written(tmp_path_factory: pytest.TempPathFactory, steps, pedals) -> None:
    path = tmp_path_factory.mktemp("trace") / "t.csv"
    _trace(steps, pedals).write(path)
    got = read_trace(path)
    assert tuple(got) == COLUMNS and all(len(v) == len(steps) for v in got.values())
    if not steps:
        return
    actions = np.array([s[0] for s in steps], np.float32).astype(np.float64)
    np.testing.assert_array_equal(got["step"], np.arange(1, len(steps) + 1))
    np.testing.assert_allclose(got["time_s"], 0.02 * np.arange(1, len(steps) + 1), atol=1e-3)
    np.testing.assert_allclose(got["gas"], actions[:, 0], atol=5e-4)
    np.testing.assert_allclose(got["steer"], actions[:, 2], atol=5e-4)
    np.testing.assert_allclose(got["reward"], [s[1] for s in steps], atol=5e-5)
    np.testing.assert_allclose(got["progress"], [s[2] for s in steps], atol=5e-5)
    np.testing.assert_allclose(got["speed_kmh"], [s[3] for s in steps], atol=0.05)
    pressed = np.clip(actions[:, :2] if pedals == "clip" else 0.5 * (actions[:, :2] + 1.0), 0.0, 1.0)
    np.testing.assert_allclose(got["gas_pressed"], pressed[:, 0], atol=5e-4)
    np.testing.assert_allclose(got["brake_pressed"], pressed[:, 1], atol=5e-4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a tmrl trace"),
        ("a,b,c\n1,2,3\n", "is not a tmrl trace"),
        (
            ",".join(COLUMNS) + "\n" + ",".join(["1"] * len(COLUMNS)) + "\n1,x\n",
            "line 3: a value is not a number",
        ),
        (",".join(COLUMNS) + "\n1,2,3\n", "line 2: 3 values where a trace has 12"),
    ],
)
def test_a_file_that_is_not_a_trace_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TraceError, match=message):
        read_trace(path)
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "missing.csv")


def test_the_folder_numbers_on_and_keeps_the_newest(tmp_path: Path) -> None:
    folder = tmp_path / "traces"
    traces = TraceDirectory(folder, keep=3)
    one = _trace([((0.5, -1.0, 0.0), 1.0, 0.1, 50.0, 1.0, 1.0)])
    saved = [traces.save(one) for _ in range(5)]
    assert [p.name for p in saved] == [f"test-{i:06d}.csv" for i in range(1, 6)]
    assert sorted(p.name for p in folder.iterdir()) == [f"test-{i:06d}.csv" for i in (3, 4, 5)]
    (folder / "notes.txt").write_text("kept", encoding="utf-8")
    again = TraceDirectory(folder, keep=3)  # a resumed run goes on from the highest number
    assert again.save(one).name == "test-000006.csv"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] + [
        f"test-{i:06d}.csv" for i in (4, 5, 6)
    ]
    every = TraceDirectory(tmp_path / "all", keep=None, prefix="episode")
    for _ in range(4):
        every.save(one)
    assert len(list((tmp_path / "all").iterdir())) == 4


def _written(trace: EpisodeTrace, path: Path) -> dict[str, np.ndarray]:
    trace.write(path)
    return read_trace(path)


def test_the_ending_shows_the_last_seconds_binned_up_to_the_last_step(tmp_path: Path) -> None:
    # 3 s at 50 Hz: full gas, then the brake for the last 0.5 s, speed falling from 300 to 0
    n = 150
    steps = [
        (
            (1.0 if i < 125 else -1.0, -1.0 if i < 125 else 0.8, 0.1),
            1.0,
            i / 1000,
            300.0 * (1 - i / n),
            2.0,
            1.0,
        )
        for i in range(n)
    ]
    table = ending(_written(_trace(steps), tmp_path / "a.csv"), seconds=1.0, every_s=0.1)
    lines = table.splitlines()
    assert len(lines) == 1 + 10 + 1  # header, 10 bins of 5 steps, summary
    assert lines[-2].split()[0] == "3.00"  # the last bin ends at the last step
    assert lines[1].split()[0] == "2.10"
    last = lines[-2].split()
    assert last[5] == "0.00" and last[6] == "0.80"  # gas released, brake pressed at 0.8
    assert lines[1].split()[5] == "1.00" and lines[1].split()[6] == "0.00"
    assert "150 steps, 3.00 s, return 150.0" in lines[-1]
    assert ending(_written(_trace([]), tmp_path / "b.csv")).startswith("the trace is empty")


def test_tmrl_trace_prints_the_ending_and_refuses_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    _trace([((0.2, -1.0, 0.0), 1.0, 0.01 * i, 100.0, 1.0, 1.0) for i in range(100)]).write(path)
    assert main(["trace", str(path), "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 5 + 1 and "100 steps" in out[-1]
    assert main(["trace", str(tmp_path / "missing.csv")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "does not exist" in err[0]
    assert main(["trace", str(path), "--seconds", "0"]) == 2


@pytest.mark.timeout(180)
def test_tmrl_test_traces_each_episode_it_drives(tmp_path: Path) -> None:
    """The real game in a real process: ``tmrl test --trace`` writes one trace per episode, as long as it."""
    from tmrl.envs.reward import Trajectory, save_trajectory
    from tmrl.games.carracing.pilot import track_centerline

    xz = track_centerline(0)
    reward = save_trajectory(
        tmp_path / "reward.json",
        Trajectory(np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1), "carracing", 0),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update({"TMRL_DATA_DIR": str(tmp_path), "PYGAME_HIDE_SUPPORT_PROMPT": "1"})
    cmd = [str(Path(sys.executable).parent / "tmrl"), "test", "--game", "carracing", "--episodes", "2"]
    cmd += ["--trace", str(tmp_path / "traces"), "--set", f"env.reward.path={reward}"]
    cmd += ["--set", "env.rtgym.ep_max_length=40"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "traces").iterdir())
    assert [p.name for p in files] == ["episode-000001.csv", "episode-000002.csv"]
    for path in files:
        trace = read_trace(path)
        assert 0 < len(trace["step"]) <= 40
        assert np.all(np.abs(trace["steer"]) <= 1.0) and np.all(trace["speed_kmh"] >= 0.0)
        assert trace["progress"][-1] > 0.0  # the shipped actor drove forward
        assert f"trace: {path}" in res.stdout


def test_tmrl_test_refuses_a_trace_folder_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the game starts: one line, exit 2."""
    taken = tmp_path / "taken"
    taken.write_text("a file", encoding="utf-8")
    assert main(["test", "--data-dir", str(tmp_path), "--game", "carracing", "--trace", str(taken)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"--trace {taken}" in err[0], err
