"""tmrl._core.resize_frame / FrameHistory against OpenCV's cv2.resize + cv2.cvtColor (within one level)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmrl._core import FrameHistory, resize_frame

CHANNELS = {"bgr": 3, "rgb": 3, "bgra": 4, "rgba": 4}
TO_GRAY = {
    "bgr": cv2.COLOR_BGR2GRAY,
    "bgra": cv2.COLOR_BGRA2GRAY,
    "rgb": cv2.COLOR_RGB2GRAY,
    "rgba": cv2.COLOR_RGBA2GRAY,
}
TO_RGB = {"bgr": cv2.COLOR_BGR2RGB, "bgra": cv2.COLOR_BGRA2RGB, "rgb": None, "rgba": cv2.COLOR_RGBA2RGB}
CV_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}


def to_rgb(img: np.ndarray, order: str) -> np.ndarray:
    code = TO_RGB[order]
    return img[..., :3].copy() if code is None else cv2.cvtColor(img, code)


def opencv_references(
    img: np.ndarray, h: int, w: int, order: str, gray: bool, interp: str
) -> list[np.ndarray]:
    """OpenCV's result in both orders (resize then convert, convert then resize)."""
    flag = CV_INTERP[interp]
    if gray:
        return [
            cv2.cvtColor(cv2.resize(img, (w, h), interpolation=flag), TO_GRAY[order]),
            cv2.resize(cv2.cvtColor(img, TO_GRAY[order]), (w, h), interpolation=flag),
        ]
    return [
        to_rgb(cv2.resize(img, (w, h), interpolation=flag), order),
        cv2.resize(to_rgb(img, order), (w, h), interpolation=flag),
    ]


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) if a.size else 0


@st.composite
def resize_cases(draw):
    sh, sw = draw(st.integers(1, 140)), draw(st.integers(1, 200))
    # mostly shrinking (captures are larger than observations), sometimes growing or mixed
    dh = draw(st.integers(1, 70) | st.integers(1, max(1, sh)))
    dw = draw(st.integers(1, 70) | st.integers(1, max(1, sw)))
    order = draw(st.sampled_from(sorted(CHANNELS)))
    gray = draw(st.booleans())
    interp = draw(st.sampled_from(["area", "bilinear"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "smooth", "blocks"]))
    c = CHANNELS[order]
    if kind == "noise":
        img = rng.integers(0, 256, (sh, sw, c), dtype=np.uint8)
    elif kind == "smooth":
        y, x = np.mgrid[0:sh, 0:sw]
        img = np.stack([(x * (k + 1) * 7 + y * (3 - k) * 5) % 256 for k in range(c)], axis=-1).astype(
            np.uint8
        )
    else:
        img = np.full((sh, sw, c), rng.integers(0, 256), np.uint8)
        for _ in range(5):
            r, cc = rng.integers(0, sh), rng.integers(0, sw)
            img[r : r + rng.integers(1, sh + 1), cc : cc + rng.integers(1, sw + 1)] = rng.integers(
                0, 256, c, dtype=np.uint8
            )
    return img, dh, dw, order, gray, interp


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resize_cases())
def test_within_one_level_of_opencv(case) -> None:
    img, dh, dw, order, gray, interp = case
    ours = resize_frame(img, dh, dw, channel_order=order, grayscale=gray, interpolation=interp)
    assert ours.dtype == np.uint8
    assert ours.shape == ((dh, dw) if gray else (dh, dw, 3))
    for ref in opencv_references(img, dh, dw, order, gray, interp):
        assert max_diff(ours, ref) <= 1, (img.shape, dh, dw, order, gray, interp)


@pytest.mark.parametrize("interp", ["area", "bilinear"])
@pytest.mark.parametrize("size", [(128, 256), (488, 958), (96, 96), (130, 257)])
def test_capture_sizes_to_64x64(size: tuple[int, int], interp: str) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*size, 4), dtype=np.uint8)
    ours = resize_frame(img, 64, 64, interpolation=interp)
    for ref in opencv_references(img, 64, 64, "bgra", True, interp):
        assert max_diff(ours, ref) <= 1
    # integer factors (4x2): area is a block mean; ours rounds the exact fused value once
    if size == (128, 256) and interp == "area":
        g = img[..., 2] * 4899.0 + img[..., 1] * 9617.0 + img[..., 0] * 1868.0
        exact = g.reshape(64, 2, 64, 4).mean(axis=(1, 3)) / 16384
        assert np.abs(ours - exact).max() <= 0.5 + 1e-3


def test_same_size_is_a_colour_conversion() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    for interp in ("area", "bilinear"):
        np.testing.assert_array_equal(
            resize_frame(img, 33, 47, channel_order="bgr", grayscale=False, interpolation=interp),
            img[..., ::-1],
        )
        assert (
            max_diff(
                resize_frame(img, 33, 47, channel_order="bgr", interpolation=interp),
                cv2.cvtColor(img, cv2.COLOR_BGR2GRAY),
            )
            <= 1
        )


def frame_with_value(v: int, h: int = 128, w: int = 256) -> np.ndarray:
    return np.full((h, w, 4), v, np.uint8)


def test_history_order_oldest_to_newest() -> None:
    hist = FrameHistory(history=4)
    assert hist.history == 4
    view = hist.reset(frame_with_value(10))
    assert view.shape == (4, 64, 64) and view.dtype == np.uint8
    assert (view == 10).all()
    for k in range(1, 7):
        view = hist.push(frame_with_value(10 + 20 * k))
        expected = [10 + 20 * max(0, j) for j in range(k - 3, k + 1)]
        assert [int(view[i, 0, 0]) for i in range(4)] == expected
        assert all((view[i] == view[i, 0, 0]).all() for i in range(4))
    np.testing.assert_array_equal(hist.view(), view)
    # a new episode repeats its first frame in every slot
    view = hist.reset(frame_with_value(3))
    assert (view == 3).all()
    view = hist.push(frame_with_value(200))
    assert [int(view[i, 0, 0]) for i in range(4)] == [3, 3, 3, 200]


def test_history_view_is_zero_copy_readonly_and_keeps_owner_alive() -> None:
    hist = FrameHistory(8, 8, history=3, channel_order="rgb", grayscale=False)
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 200  # red
    view = hist.reset(img)
    assert view.shape == (3, 8, 8, 3)
    assert view.base is hist
    assert not view.flags.writeable
    assert view.flags.c_contiguous
    with pytest.raises(ValueError):
        view[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(view[..., 0], 200)
    np.testing.assert_array_equal(view[..., 1:], 0)
    # the buffer is written in place: an earlier view sees later pushes (documented: copy to keep)
    kept = np.array(hist.view())  # a copy survives later pushes
    img[..., 1] = 100
    assert int(hist.push(img)[-1, 0, 0, 1]) == 100
    assert kept[-1, 0, 0, 1] == 0
    del hist
    assert int(view[0, 0, 0, 0]) == 200  # the view's base keeps the memory alive


def test_history_matches_resize_frame_and_follows_source_size() -> None:
    rng = np.random.default_rng(3)
    hist = FrameHistory(64, 64, history=2, interpolation="bilinear")
    a = rng.integers(0, 256, (128, 256, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (488, 958, 4), dtype=np.uint8)
    hist.reset(a)
    view = hist.push(b)
    np.testing.assert_array_equal(view[0], resize_frame(a, 64, 64, interpolation="bilinear"))
    np.testing.assert_array_equal(view[1], resize_frame(b, 64, 64, interpolation="bilinear"))


def test_errors_are_clear() -> None:
    img = np.zeros((20, 30, 4), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        resize_frame(img.astype(np.float32), 8, 8)
    with pytest.raises(ValueError, match="C-contiguous"):
        resize_frame(np.zeros((20, 60, 4), np.uint8)[:, ::2], 8, 8)
    with pytest.raises(ValueError, match="3 dimensions"):
        resize_frame(img[..., 0].copy(), 8, 8)
    with pytest.raises(ValueError, match="4 channels"):
        resize_frame(img[..., :3].copy(), 8, 8)
    with pytest.raises(ValueError, match="3 channels"):
        resize_frame(img, 8, 8, channel_order="rgb")
    with pytest.raises(ValueError, match="positive"):
        resize_frame(img, 0, 8)
    with pytest.raises(ValueError, match="empty"):
        resize_frame(np.zeros((0, 30, 4), np.uint8), 8, 8)
    with pytest.raises(ValueError, match="channel_order"):
        resize_frame(img, 8, 8, channel_order="argb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interpolation"):
        resize_frame(img, 8, 8, interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history"):
        FrameHistory(history=0)
    hist = FrameHistory(8, 8)
    with pytest.raises(TypeError, match="uint8"):
        hist.push(img.astype(np.int16))
    with pytest.raises(ValueError, match="C-contiguous"):
        hist.reset(np.asfortranarray(img))
    with pytest.raises(ValueError, match="4 channels"):
        hist.push(np.zeros((20, 30, 3), np.uint8))
