"""tmrl._core.ReplayRing against a plain-Python model of the ring, plus its error contract and persistence.

The model keeps, for every stream, the list of its rows (absolute row numbers in append order). A row is stored
while its number is >= total - capacity. A transition starts at a stored row whose next row in the same stream
exists and is not an episode's first row; histories walk back through the stream's stored rows of the same
episode and repeat the oldest one when the episode (or the storage) begins. Rows carry their absolute row number as
reward, so every sampled transition can be matched with the model's.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmrl._core import ReplayRing

Comp = tuple[str, tuple[int, ...], str, int]
NP_DTYPES = {"uint8": np.uint8, "float32": np.float32}


@dataclass
class Row:
    stream: int
    index: int  # position in its stream's list
    obs: dict[str, np.ndarray]
    action: np.ndarray
    terminated: bool
    truncated: bool
    first: bool


@dataclass
class Model:
    capacity: int
    comps: list[Comp]
    action_dim: int
    rows: list[Row] = field(default_factory=list)
    streams: dict[int, list[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.rows)

    def stored(self, r: int) -> bool:
        return self.total - self.capacity <= r < self.total

    def append(self, stream: int, batch: dict) -> None:
        lst = self.streams.setdefault(stream, [])
        for i in range(len(batch["reward"])):
            row = Row(
                stream,
                len(lst),
                {name: batch["obs"][name][i].copy() for name, *_ in self.comps},
                batch["action"][i].copy(),
                bool(batch["terminated"][i]),
                bool(batch["truncated"][i]),
                bool(batch["first"][i]),
            )
            lst.append(len(self.rows))
            self.rows.append(row)

    def pred(self, r: int) -> int | None:
        row = self.rows[r]
        if row.first or row.index == 0:
            return None
        p = self.streams[row.stream][row.index - 1]
        return p if self.stored(p) else None

    def succ(self, r: int) -> int | None:
        row = self.rows[r]
        lst = self.streams[row.stream]
        if row.index + 1 >= len(lst):
            return None
        s = lst[row.index + 1]
        return None if self.rows[s].first else s

    def valid_starts(self) -> list[int]:
        return [r for r in range(max(0, self.total - self.capacity), self.total) if self.succ(r) is not None]

    def history(self, r: int, k: int) -> list[int]:
        seq = [r]
        while len(seq) < k and (p := self.pred(seq[0])) is not None:
            seq.insert(0, p)
        return [seq[0]] * (k - len(seq)) + seq

    def returns(self, t: int, n_step: int) -> tuple[list[int], int]:
        """The rows whose rewards an n-step return from ``t`` sums, and the row of its next observation."""
        rows = [t]
        while len(rows) < n_step:
            last = self.rows[rows[-1]]
            u = self.succ(rows[-1])
            if last.terminated or last.truncated or u is None or self.succ(u) is None:
                break
            rows.append(u)
        u = self.succ(rows[-1])
        assert u is not None
        return rows, u

    def transition(self, t: int, n_step: int = 1, gamma: float | None = None) -> dict[str, np.ndarray]:
        rows, u = self.returns(t, n_step)
        out: dict[str, np.ndarray] = {}
        for name, _shape, _dtype, k in self.comps:
            for key, r in (("obs", t), ("next_obs", u)):
                frames = [self.rows[h].obs[name] for h in self.history(r, k)]
                out[f"{key}.{name}"] = np.stack(frames) if k > 1 else frames[0]
        out["action"] = self.rows[t].action
        g = 1.0 if gamma is None else gamma
        out["reward"] = np.float32(sum(g**j * r for j, r in enumerate(rows)))
        out["terminated"] = np.bool_(self.rows[rows[-1]].terminated)
        out["truncated"] = np.bool_(self.rows[rows[-1]].truncated)
        if gamma is not None:
            out["discount"] = np.float32(gamma ** len(rows))
        return out


def make_batch(
    rng: np.random.Generator, comps: list[Comp], action_dim: int, start: int, firsts: list[bool]
) -> dict:
    n = len(firsts)
    obs = {}
    for name, shape, dtype, _k in comps:
        if dtype == "uint8":
            obs[name] = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        else:
            obs[name] = rng.standard_normal((n, *shape)).astype(np.float32)
    return {
        "obs": obs,
        "action": rng.standard_normal((n, action_dim)).astype(np.float32),
        "reward": np.arange(start, start + n, dtype=np.float32),  # the absolute row number
        "terminated": rng.random(n) < 0.3,
        "truncated": rng.random(n) < 0.3,
        "first": np.array(firsts, dtype=bool),
    }


def append(ring: ReplayRing, stream: int, b: dict) -> None:
    ring.append_batch(stream, b["obs"], b["action"], b["reward"], b["terminated"], b["truncated"], b["first"])


def check_sample(
    ring: ReplayRing, model: Model, batch_size: int, n_step: int = 1, gamma: float | None = None
) -> set[int]:
    """Samples (n-step returns when ``gamma`` is given), checks every transition against the model, returns the
    starts seen. A sampled transition is identified by its action (random floats, distinct per row)."""
    out = ring.sample(batch_size, n_step=n_step, gamma=gamma)
    assert set(out) == {
        *(f"{p}.{c[0]}" for c in model.comps for p in ("obs", "next_obs")),
        "action",
        "reward",
        "terminated",
        "truncated",
        *(["discount"] if gamma is not None else []),
    }
    valid = set(model.valid_starts())
    by_action = {model.rows[r].action.tobytes(): r for r in valid}
    seen: set[int] = set()
    expected: dict[int, dict[str, np.ndarray]] = {}
    for i in range(batch_size):
        t = by_action.get(out["action"][i].tobytes())
        assert t is not None, f"sampled transition {i} does not start at a valid row ({sorted(valid)})"
        seen.add(t)
        want = expected.get(t) or expected.setdefault(t, model.transition(t, n_step, gamma))
        for key, value in want.items():
            if key in ("reward", "discount"):  # computed in float32 by the ring, in float64 by the model
                assert out[key][i] == pytest.approx(value, rel=1e-5, abs=1e-4), f"{key} of row {t}"
            elif not np.array_equal(out[key][i], value):  # (assert_array_equal is slow in this hot loop)
                np.testing.assert_array_equal(out[key][i], value, err_msg=f"{key} of row {t}")
    return seen


components_st = st.lists(
    st.tuples(
        st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple),
        st.sampled_from(["uint8", "float32"]),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=3,
).map(lambda cs: [(f"c{i}", shape, dtype, k) for i, (shape, dtype, k) in enumerate(cs)])

ops_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(0, 2),
            st.lists(st.booleans().map(lambda b: not b or None), max_size=9),
        ),
        st.tuples(
            st.just("sample"), st.integers(1, 40), st.sampled_from([(1, None), (1, 0.9), (2, 0.5), (4, 1.0)])
        ),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.integers(1, 30),
    comps=components_st,
    action_dim=st.integers(1, 3),
    ops=ops_st,
    seed=st.integers(0, 2**32 - 1),
)
def test_ring_matches_the_model(
    capacity: int, comps: list[Comp], action_dim: int, ops: list, seed: int
) -> None:
    ring = ReplayRing(capacity, comps, action_dim, seed=seed)
    model = Model(capacity, comps, action_dim)
    rng = np.random.default_rng(seed)
    for op, arg, flags in ops:
        if op == "append":
            # flags: None = first step of an episode (drawn often enough to make many boundaries)
            firsts = [f is None or rng.random() < 0.15 for f in flags]
            b = make_batch(rng, comps, action_dim, model.total, firsts)
            append(ring, arg, b)
            model.append(arg, b)
        elif model.valid_starts():
            n_step, gamma = flags
            check_sample(ring, model, arg, n_step, gamma)
        else:
            with pytest.raises(ValueError, match="no valid transition"):
                ring.sample(arg)
        assert len(ring) == min(model.total, capacity)
        assert ring.total_appended == model.total
        assert ring.num_transitions() == len(model.valid_starts())


@pytest.mark.parametrize("n_step, gamma", [(1, None), (3, 0.9)])
def test_every_valid_start_is_sampled_and_nothing_else(n_step: int, gamma: float | None) -> None:
    comps: list[Comp] = [
        ("lidar", (5,), "float32", 4),
        ("img", (2, 3), "uint8", 3),
        ("speed", (1,), "float32", 1),
    ]
    ring = ReplayRing(50, comps, 3, seed=3)
    model = Model(50, comps, 3)
    rng = np.random.default_rng(0)
    # three interleaved streams, episodes of various lengths, wrapping the ring twice
    for j in range(40):
        stream = j % 3
        n = int(rng.integers(1, 6))
        firsts = list(rng.random(n) < 0.2)
        if not model.streams.get(stream):
            firsts[0] = True
        b = make_batch(rng, comps, 3, model.total, firsts)
        append(ring, stream, b)
        model.append(stream, b)
    valid = set(model.valid_starts())
    assert model.total > 100 and len(valid) > 10
    seen: set[int] = set()
    for _ in range(10):
        seen |= check_sample(ring, model, 256, n_step, gamma)
    assert seen == valid


def test_sample_into_preallocated_arrays() -> None:
    comps: list[Comp] = [("frames", (4, 4), "uint8", 4), ("speed", (1,), "float32", 1)]
    ring = ReplayRing(20, comps, 2, seed=1)
    model = Model(20, comps, 2)
    b = make_batch(np.random.default_rng(1), comps, 2, 0, [True] + [False] * 9)
    append(ring, 0, b)
    model.append(0, b)
    out = ring.alloc_batch(8)
    assert out["obs.frames"].shape == (8, 4, 4, 4) and out["obs.frames"].dtype == np.uint8
    assert out["obs.speed"].shape == (8, 1) and out["action"].shape == (8, 2)
    assert out["terminated"].dtype == np.bool_
    ptrs = {k: v.ctypes.data for k, v in out.items()}
    res = ring.sample(8, out=out)
    assert res is out and {k: v.ctypes.data for k, v in res.items()} == ptrs
    valid = set(model.valid_starts())
    for i in range(8):
        t = int(out["reward"][i])
        assert t in valid
        for key, value in model.transition(t).items():
            np.testing.assert_array_equal(out[key][i], value)


def test_save_load_round_trip_after_wrap_around(tmp_path: Path) -> None:
    comps: list[Comp] = [("lidar", (19,), "float32", 4), ("img", (8, 8), "uint8", 4)]
    ring = ReplayRing(64, comps, 3, seed=11)
    rng = np.random.default_rng(2)
    total = 0
    for j in range(30):
        firsts = [j % 7 == 0] + [False] * 4
        b = make_batch(rng, comps, 3, total, firsts)
        append(ring, j % 2, b)
        total += 5
    target = tmp_path / "ring"
    ring.save(str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring"]
    back = ReplayRing.load(target)
    assert (len(back), back.total_appended, back.num_transitions()) == (
        len(ring),
        ring.total_appended,
        ring.num_transitions(),
    )
    assert (back.capacity, back.action_dim) == (64, 3)
    for _ in range(3):  # same data, same RNG state: the same minibatches
        a, b2 = ring.sample(32), back.sample(32)
        for key in a:
            np.testing.assert_array_equal(a[key], b2[key], err_msg=key)
    # streams continue after a load: one more step of stream 1 adds exactly one transition
    before = back.num_transitions()
    b = make_batch(rng, comps, 3, total, [False])
    append(back, 1, b)
    evicted_valid = before + 1 - back.num_transitions()
    assert evicted_valid in (0, 1)
    # saving again replaces the previous save atomically, leaving no temporary directory
    back.save(target)
    assert ReplayRing.load(target, seed=5).total_appended == total + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring"]


def _saved(tmp_path: Path) -> Path:
    comps: list[Comp] = [("x", (3,), "float32", 2)]
    ring = ReplayRing(16, comps, 1, seed=0)
    append(ring, 0, make_batch(np.random.default_rng(0), comps, 1, 0, [True] + [False] * 5))
    d = tmp_path / "saved"
    ring.save(d)
    return d


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: None, None),
        (lambda d: (d / "reward.bin").write_bytes((d / "reward.bin").read_bytes()[:-2]), "reward.bin"),
        (lambda d: (d / "next.bin").unlink(), "next.bin"),
        (lambda d: (d / "header.json").write_text("{ not json"), "header.json"),
        (lambda d: (d / "header.json").unlink(), "header.json"),
        (
            lambda d: (d / "header.json").write_text(
                (d / "header.json").read_text().replace('"version": 1', '"version": 7')
            ),
            "version 7",
        ),
        (
            lambda d: (d / "obs_0.bin").write_bytes(bytes(len((d / "obs_0.bin").read_bytes()))),
            "checksum",
        ),
    ],
)
def test_load_rejects_damaged_saves(tmp_path: Path, damage, needle: str | None) -> None:
    d = _saved(tmp_path)
    damage(d)
    if needle is None:
        assert ReplayRing.load(d).total_appended == 6
        return
    with pytest.raises(ValueError, match=needle) as err:
        ReplayRing.load(d)
    assert str(d) in str(err.value)


def test_load_missing_directory_and_save_refuses_foreign_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        ReplayRing.load(tmp_path / "missing")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    ring = ReplayRing(4, [("x", (1,), "float32", 1)], 1)
    with pytest.raises(ValueError, match="refusing"):
        ring.save(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign"]


COMPS: list[Comp] = [("lidar", (19,), "float32", 4), ("img", (4, 4), "uint8", 2)]


def _good(n: int = 3) -> dict:
    return make_batch(np.random.default_rng(0), COMPS, 3, 0, [True] + [False] * (n - 1))


def _call(ring: ReplayRing, b: dict, **over) -> None:
    args = {**b, **over}
    ring.append_batch(
        0, args["obs"], args["action"], args["reward"], args["terminated"], args["truncated"], args["first"]
    )


@pytest.mark.parametrize(
    "over, exc, needle",
    [
        ({"action": np.zeros((3, 3))}, TypeError, "action must have dtype float32"),
        ({"terminated": np.zeros(3, np.uint8)}, TypeError, "terminated must have dtype bool"),
        ({"reward": [0.0, 1.0, 2.0]}, TypeError, "reward must be a numpy array"),
        ({"obs": {"lidar": np.zeros((3, 19)), "img": np.zeros((3, 4, 4), np.uint8)}}, TypeError, "lidar"),
        (
            {"obs": {"lidar": np.zeros((3, 19), np.float32), "img": np.zeros((3, 4, 4), np.float32)}},
            TypeError,
            "img",
        ),
        ({"action": np.zeros((3, 2), np.float32)}, ValueError, r"action must have shape \(3, 3\)"),
        ({"first": np.zeros(2, bool)}, ValueError, "first must have shape"),
        (
            {"obs": {"lidar": np.zeros((3, 18), np.float32), "img": np.zeros((3, 4, 4), np.uint8)}},
            ValueError,
            "19",
        ),
        ({"obs": {"lidar": np.zeros((3, 19), np.float32)}}, ValueError, "components"),
        (
            {"obs": {"lidar": np.zeros((3, 19), np.float32), "image": np.zeros((3, 4, 4), np.uint8)}},
            ValueError,
            "img",
        ),
        (
            {"obs": {"lidar": np.zeros((3, 38), np.float32)[:, ::2], "img": np.zeros((3, 4, 4), np.uint8)}},
            ValueError,
            "C-contiguous",
        ),
    ],
)
def test_append_rejects_bad_arrays(over: dict, exc: type[Exception], needle: str) -> None:
    ring = ReplayRing(10, COMPS, 3)
    with pytest.raises(exc, match=needle):
        _call(ring, _good(), **over)
    assert ring.total_appended == 0, "a rejected batch writes nothing"
    _call(ring, _good())
    assert ring.total_appended == 3


def test_sample_rejects_bad_out_and_empty_ring() -> None:
    ring = ReplayRing(10, COMPS, 3, seed=0)
    with pytest.raises(ValueError, match="no valid transition"):
        ring.sample(4)
    _call(ring, _good())
    out = ring.alloc_batch(4)
    with pytest.raises(ValueError, match=r"obs.lidar.* must have shape \(5, 4, 19\), not \(4, 4, 19\)"):
        ring.sample(5, out=out)
    bad = {
        **out,
        "obs.lidar": np.zeros((4, 4, 19), np.float64),
        "next_obs.lidar": np.zeros((4, 4, 19), np.float32),
    }
    with pytest.raises(TypeError, match="obs.lidar"):
        ring.sample(4, out=bad)
    plain = np.zeros((4, 4, 19), np.float32)
    aliased = {**out, "obs.lidar": plain, "next_obs.lidar": plain}
    with pytest.raises(ValueError, match="next_obs.lidar.*cannot be written"):
        ring.sample(4, out=aliased)
    not_window = {**out, "next_obs.lidar": out["obs.lidar"]}
    with pytest.raises(ValueError, match="obs.lidar.*window"):
        ring.sample(4, out=not_window)
    missing = {k: v for k, v in out.items() if k != "truncated"}
    with pytest.raises(ValueError, match="truncated"):
        ring.sample(4, out=missing)
    with pytest.raises(ValueError, match="batch_size"):
        ring.sample(-1)


def test_nstep_outputs_and_their_errors() -> None:
    ring = ReplayRing(10, COMPS, 3, seed=0)
    _call(ring, _good())
    with pytest.raises(ValueError, match="n_step = 3 needs gamma"):
        ring.sample(4, n_step=3)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="gamma must be in"):
            ring.sample(4, n_step=3, gamma=bad)
    with pytest.raises(ValueError, match="n_step must be"):
        ring.sample(4, n_step=0, gamma=0.9)
    windows = ring.alloc_batch(4)
    with pytest.raises(ValueError, match="obs.lidar.*not C-contiguous.*n_step > 1"):
        ring.sample(4, out={**windows, "discount": np.zeros(4, np.float32)}, n_step=3, gamma=0.9)
    with pytest.raises(ValueError, match="discount"):
        ring.sample(4, out=windows, n_step=1, gamma=0.9)
    out = ring.alloc_batch(4, n_step=3)
    assert out["discount"].shape == (4,) and out["obs.lidar"].flags.c_contiguous
    assert ring.sample(4, out=out, n_step=3, gamma=0.5) is out
    assert set(np.unique(out["discount"])) <= {0.5, 0.25, 0.125}


@pytest.mark.parametrize(
    "args, needle",
    [
        ((0, COMPS, 3), "capacity"),
        ((10, COMPS, 0), "action_dim"),
        ((10, [("x", (3,), "float64", 1)], 1), "float64"),
        ((10, [("x", (3,), "float32", 0)], 1), "history"),
        ((10, [("x", (0,), "float32", 1)], 1), "dimension"),
        ((10, [("x", (3,), "float32", 1), ("x", (1,), "uint8", 1)], 1), "twice"),
    ],
)
def test_constructor_rejects_bad_layouts(args: tuple, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ReplayRing(*args)


def test_one_thread_appends_while_others_sample() -> None:
    """Both sides release the GIL; every sampled transition stays consistent (rows encode stream and step)."""
    comps: list[Comp] = [("x", (2,), "float32", 4)]
    ring = ReplayRing(300, comps, 1, seed=4)
    n_batches, done, errors = 400, threading.Event(), []

    def writer() -> None:
        try:
            step = [0, 0]
            for j in range(n_batches):
                s = j % 2
                t = np.arange(step[s], step[s] + 10, dtype=np.float32)
                x = np.stack([np.full(10, s, np.float32), t], axis=1)
                first = t % 25 == 0
                ring.append_batch(s, {"x": x}, t[:, None].copy(), t, first, first, first)
                step[s] += 10
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            done.set()

    def reader() -> None:
        out = None
        try:
            for _ in range(100_000):  # bounded; stops when the writer is done
                finished = done.is_set()
                if ring.num_transitions() > 0:
                    out = ring.sample(64, out=out or ring.alloc_batch(64))
                    x, nx = out["obs.x"], out["next_obs.x"]
                    t = out["action"][:, 0]
                    assert np.array_equal(x[:, -1, 1], t) and np.array_equal(nx[:, -1, 1], t + 1)
                    assert np.array_equal(nx[:, :-1], x[:, 1:])
                    assert (x[:, :, 0] == x[:, -1:, 0]).all(), "history mixes streams"
                    d = np.diff(x[:, :, 1], axis=1)
                    assert ((d == 1) | (d == 0)).all()
                    assert (np.floor(x[:, 0, 1] / 25) == np.floor(t / 25)).all(), "history crosses an episode"
                if finished:
                    return
        except Exception as e:
            errors.append(e)

    threads = [
        threading.Thread(target=writer),
        threading.Thread(target=reader),
        threading.Thread(target=reader),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads)
    assert not errors, errors
    assert ring.total_appended == n_batches * 10


def test_large_ring_allocates_lazily() -> None:
    """A ring of 10^6 image rows (4 GiB of frames) is created at once and costs nothing until written."""
    ring = ReplayRing(1_000_000, [("frames", (64, 64), "uint8", 4), ("speed", (1,), "float32", 1)], 3)
    assert len(ring) == 0 and ring.capacity == 1_000_000
    with tempfile.TemporaryDirectory() as d:
        ring.save(Path(d) / "empty")
        assert ReplayRing.load(Path(d) / "empty").capacity == 1_000_000


def test_window_and_split_outputs_agree() -> None:
    """alloc_batch's window views and plain C-contiguous arrays receive the same minibatch."""
    comps: list[Comp] = [
        ("lidar", (19,), "float32", 4),
        ("img", (3, 5), "uint8", 3),
        ("speed", (1,), "float32", 1),
    ]
    rings = [ReplayRing(40, comps, 2, seed=9) for _ in range(2)]
    rng = np.random.default_rng(3)
    total = 0
    for j in range(12):
        b = make_batch(rng, comps, 2, total, [j % 4 == 0] + [False] * 4)
        total += 5
        for ring in rings:
            append(ring, j % 2, b)
    win = rings[0].alloc_batch(64)
    assert not win["obs.lidar"].flags.c_contiguous
    assert np.shares_memory(win["obs.img"], win["next_obs.img"])
    split = {k: np.ascontiguousarray(v) for k, v in rings[1].alloc_batch(64).items()}
    for _ in range(3):
        a, b2 = rings[0].sample(64, out=win), rings[1].sample(64, out=split)
        for key in a:
            np.testing.assert_array_equal(a[key], b2[key], err_msg=key)


def test_stream_ids_must_be_unsigned_64_bit() -> None:
    ring = ReplayRing(10, COMPS, 3)
    b = _good()
    with pytest.raises(ValueError, match="stream"):
        ring.append_batch(-1, b["obs"], b["action"], b["reward"], b["terminated"], b["truncated"], b["first"])
    ring.append_batch(
        2**64 - 1, b["obs"], b["action"], b["reward"], b["terminated"], b["truncated"], b["first"]
    )
    assert ring.num_transitions() == 2
