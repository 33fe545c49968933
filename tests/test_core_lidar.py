"""tmrl._core.Lidar against a plain-numpy reference of TMRL 0.7.1's LIDAR (exact agreement)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmrl._core import Lidar

CHANNELS = {"bgr": 3, "rgb": 3, "bgra": 4, "rgba": 4}


# ---------------------------------------------------------------------------------------------------------------
# Reference: TMRL 0.7.1's geometry written out in Python, generalised to any origin / angles / start.
# ---------------------------------------------------------------------------------------------------------------


def ref_paths(h: int, w: int, origin: tuple[int, int], start: int, angles: list[float]) -> list[np.ndarray]:
    paths = []
    r0, c0 = origin
    for a in angles:
        dr, dc = math.cos(math.radians(a)), math.sin(math.radians(a))
        path, d = [], start
        while True:
            r, c = int(r0 + d * dr), int(c0 + d * dc)
            if r <= 0 or c <= 0 or r >= h - 1 or c >= w - 1:
                break
            path.append((r, c))
            d += 1
        paths.append(np.array(path, dtype=np.int64).reshape(-1, 2))
    return paths


def ref_border(img: np.ndarray, border: str, threshold: int, lo: int, hi: int, tol: int) -> np.ndarray:
    rgb = img[..., :3].astype(np.int64)
    if border == "dark":
        return np.all(rgb < threshold, axis=-1)
    gray = (rgb.max(-1) - rgb.min(-1) <= tol) & np.all((rgb >= lo) & (rgb <= hi), axis=-1)
    return ~gray


def ref_scan(img: np.ndarray, paths: list[np.ndarray], **border) -> np.ndarray:
    mask = ref_border(img, **border)
    out = []
    for p in paths:
        hits = np.nonzero(mask[p[:, 0], p[:, 1]])[0]
        out.append(hits[0] if len(hits) else len(p) - 1)
    return np.array(out, dtype=np.float32)


def tmrl_default_angles() -> list[float]:
    return [float(a) for a in range(90, 280, 10)]


# ---------------------------------------------------------------------------------------------------------------
# Random frames with blobs, so that beams actually stop at various distances.
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def lidar_cases(draw):
    h = draw(st.integers(3, 90))
    w = draw(st.integers(3, 120))
    order = draw(st.sampled_from(sorted(CHANNELS)))
    border = draw(st.sampled_from(["dark", "not_road"]))
    use_default_origin = draw(st.booleans())
    # mostly inside the interior (a few on the edge, where beams are empty and construction must fail)
    origin = (
        None
        if use_default_origin
        else (draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1)))
        if draw(st.integers(0, 9)) == 0
        else (draw(st.integers(h // 4, h - 1 - h // 4)), draw(st.integers(w // 4, w - 1 - w // 4)))
    )
    use_default_angles = draw(st.booleans())
    angles = (
        None
        if use_default_angles
        else draw(
            st.lists(
                st.floats(-720, 720, allow_nan=False, allow_infinity=False)
                | st.integers(-360, 360).map(float),
                min_size=1,
                max_size=12,
            )
        )
    )
    start = draw(st.integers(0, max(0, min(h, w) // 4)))
    threshold = draw(st.integers(0, 255))
    lo = draw(st.integers(0, 200))
    hi = draw(st.integers(lo, 255))
    tol = draw(st.integers(0, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    c = CHANNELS[order]
    n_frames = draw(st.integers(1, 3))
    frames = []
    for _ in range(n_frames):
        if border == "dark":
            img = rng.integers(threshold, 256, (h, w, c), dtype=np.uint8)
        else:
            base = rng.integers(lo, hi + 1)
            img = np.clip(base + rng.integers(-tol // 2, tol // 2 + 1, (h, w, c)), 0, 255).astype(np.uint8)
        for _ in range(rng.integers(0, 6)):
            r, cc = rng.integers(0, h), rng.integers(0, w)
            rh, cw = rng.integers(1, max(2, h // 3)), rng.integers(1, max(2, w // 3))
            img[r : r + rh, cc : cc + cw] = rng.integers(0, 256, c, dtype=np.uint8)
        # sprinkle single pixels that sit on or near the thresholds
        for _ in range(rng.integers(0, 20)):
            r, cc = rng.integers(0, h), rng.integers(0, w)
            v = [threshold - 1, threshold, lo - 1, lo, hi, hi + 1]
            img[r, cc, :3] = np.clip(rng.choice(v, 3), 0, 255)
        frames.append(img)
    params = dict(threshold=threshold, road_min=lo, road_max=hi, road_tolerance=tol)
    return h, w, order, border, origin, angles, start, params, np.stack(frames)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lidar_cases())
def test_matches_numpy_reference(case) -> None:
    h, w, order, border, origin, angles, start, params, frames = case
    ref_origin = origin if origin is not None else (44 * h // 49, w // 2)
    ref_angles = angles if angles is not None else tmrl_default_angles()
    paths = ref_paths(h, w, ref_origin, start, ref_angles)
    kwargs = dict(angles_deg=angles, origin=origin, start=start, channel_order=order, border=border, **params)
    if any(len(p) == 0 for p in paths):
        with pytest.raises(ValueError, match="no pixel inside"):
            Lidar(h, w, **kwargs)
        return
    lidar = Lidar(h, w, **kwargs)
    assert lidar.origin == ref_origin
    assert lidar.angles_deg == ref_angles
    assert lidar.n_beams == len(ref_angles)
    got_paths = lidar.beam_paths()
    assert len(got_paths) == len(paths)
    for g, p in zip(got_paths, paths, strict=True):
        np.testing.assert_array_equal(g, p)
    np.testing.assert_array_equal(lidar.beam_lengths(), [len(p) for p in paths])
    ref_params = dict(
        border=border,
        threshold=params["threshold"],
        lo=params["road_min"],
        hi=params["road_max"],
        tol=params["road_tolerance"],
    )
    expected = np.stack([ref_scan(f, paths, **ref_params) for f in frames])
    for f, e in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(lidar.scan(f), e)
    np.testing.assert_array_equal(lidar.scan_batch(frames), expected)


def trackmania_like_frame(h: int = 488, w: int = 958) -> np.ndarray:
    """Gray road (BGR 128) bounded by black borders at known places, light sky above."""
    img = np.full((h, w, 3), 128, np.uint8)
    img[:120] = (230, 200, 170)
    img[:, 379] = 10  # left border: 479 - 20 - 379 = 80 px along the 270 degree beam
    img[:, 629] = (54, 54, 54)  # right border: 629 - (479 + 20) = 130 px along the 90 degree beam
    img[200, 300:700] = 0  # a black line ahead: 418 - 200 = 218 px along the 180 degree beam
    return img


def test_trackmania_like_frame() -> None:
    img = trackmania_like_frame()
    lidar = Lidar(488, 958)
    assert lidar.origin == (438, 479) and lidar.n_beams == 19
    d = lidar.scan(img)
    assert d.dtype == np.float32 and d.shape == (19,)
    assert d[0] == 130.0  # 90 degrees: right
    assert d[9] == 218.0  # 180 degrees: up
    assert d[18] == 80.0  # 270 degrees: left
    paths = ref_paths(488, 958, (438, 479), 20, tmrl_default_angles())
    np.testing.assert_array_equal(d, ref_scan(img, paths, border="dark", threshold=55, lo=0, hi=0, tol=0))
    # the same frame as BGRA gives the same distances (alpha ignored)
    bgra = np.concatenate([img, np.zeros((488, 958, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(Lidar(488, 958, channel_order="bgra").scan(bgra), d)


def test_no_hit_gives_length_minus_one() -> None:
    lidar = Lidar(488, 958)
    img = np.full((488, 958, 3), 200, np.uint8)
    np.testing.assert_array_equal(lidar.scan(img), lidar.beam_lengths() - 1)
    assert lidar.beam_lengths()[9] == 418  # rows 418 .. 1 straight up


def test_not_road_on_builtin_game_colours() -> None:
    # CarRacing-like: gray road (about 102-107), green grass; 96x96 RGB with the car at row 70, column 48.
    img = np.zeros((96, 96, 3), np.uint8)
    img[:] = (102, 204, 102)  # grass
    img[:, 30:66] = (105, 105, 105)  # road band
    lidar = Lidar(
        96, 96, origin=(70, 48), start=0, angles_deg=[90, 180, 270], channel_order="rgb", border="not_road"
    )
    d = lidar.scan(img)
    assert d[0] == 66 - 48  # first grass column to the right is 66
    assert d[2] == 48 - 29  # first grass column to the left is 29
    assert d[1] == lidar.beam_lengths()[1] - 1  # road all the way up


def test_out_parameter_is_filled_and_returned() -> None:
    lidar = Lidar(60, 80)
    img = np.full((60, 80, 3), 90, np.uint8)
    out = np.full(19, -1, np.float32)
    assert lidar.scan(img, out) is out
    np.testing.assert_array_equal(out, lidar.scan(img))


def test_errors_are_clear() -> None:
    lidar = Lidar(60, 80)
    img = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        lidar.scan(img.astype(np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        lidar.scan(img.tolist())
    with pytest.raises(ValueError, match="C-contiguous"):
        lidar.scan(np.zeros((60, 160, 3), np.uint8)[:, ::2])
    with pytest.raises(ValueError, match="3 dimensions"):
        lidar.scan(img[..., 0].copy())
    with pytest.raises(ValueError, match="60x80x3"):
        lidar.scan(np.zeros((60, 81, 3), np.uint8))
    with pytest.raises(ValueError, match="60x80x3"):
        lidar.scan(np.zeros((60, 80, 4), np.uint8))
    with pytest.raises(TypeError, match="float32"):
        lidar.scan(img, np.zeros(19, np.float64))
    with pytest.raises(ValueError, match="19"):
        lidar.scan(img, np.zeros(18, np.float32))
    with pytest.raises(ValueError, match="4 dimensions"):
        lidar.scan_batch(img)
    with pytest.raises(ValueError, match="channel_order"):
        Lidar(60, 80, channel_order="argb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="border"):
        Lidar(60, 80, border="black")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        Lidar(60, 80, threshold=256)
    with pytest.raises(ValueError, match="road_min"):
        Lidar(60, 80, border="not_road", road_min=130, road_max=120)
    with pytest.raises(ValueError, match="outside"):
        Lidar(60, 80, origin=(60, 10))
    with pytest.raises(ValueError, match="no pixel inside"):
        Lidar(60, 80, start=500)
    with pytest.raises(ValueError, match="at least one"):
        Lidar(60, 80, angles_deg=[])


def test_scan_batch_of_zero_frames() -> None:
    lidar = Lidar(40, 60)
    assert lidar.scan_batch(np.zeros((0, 40, 60, 3), np.uint8)).shape == (0, 19)
