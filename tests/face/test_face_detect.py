"""Tests for lipbench.face.detect, .haar, .yunet and .boxes: detection, picking, pads,
smoothing, gaps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import EXPECTED_XYWH, astronaut_bgr, near, shift, write_video

from lipbench import face
from lipbench.errors import FaceError, InputError
from lipbench.face import haar

# FACTS.md: YuNet finds the astronaut's face at x=178, y=63, w=90, h=113.
YUNET_XYWH = (178, 63, 90, 113)


@pytest.fixture(scope="module")
def astronaut() -> face.Avatar:
    return face.load_avatar("default")


@pytest.mark.parametrize("detector", ["haar", "yunet"])
def test_detects_astronaut_face_with_pads(astronaut: face.Avatar, detector: str) -> None:
    x, y, w, h = EXPECTED_XYWH if detector == "haar" else YUNET_XYWH
    fb = face.detect_faces(astronaut, detector, pads=(0, 0, 0, 0))
    assert fb.boxes.shape == (1, 4) and fb.boxes.dtype.kind == "i"
    assert near(fb.box(0), (x, y, x + w, y + h))
    raw = fb.box(0)

    padded = face.detect_faces(astronaut, detector)  # default pads (0, 10, 0, 0): 10 px more chin
    assert padded.pads == (0, 10, 0, 0)
    assert padded.box(0) == (raw[0], raw[1], raw[2], raw[3] + 10)
    assert padded.box(5) == padded.box(0)

    t, b, left, r = 7, 3, 11, 13
    custom = face.detect_faces(astronaut, detector, pads=(t, b, left, r))
    assert custom.box(0) == (raw[0] - left, raw[1] - t, raw[2] + r, raw[3] + b)


def test_big_pads_are_clamped_to_the_frame(astronaut: face.Avatar) -> None:
    fb = face.detect_faces(astronaut, pads=(1000, 1000, 1000, 1000))
    assert fb.box(0) == (0, 0, 512, 512)
    fb = face.detect_faces(astronaut, pads=(500, 0, 0, 0))
    raw = face.detect_faces(astronaut, pads=(0, 0, 0, 0)).box(0)
    assert fb.box(0) == (raw[0], 0, raw[2], raw[3])


def test_bad_detector_pads_and_smooth(astronaut: face.Avatar, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(InputError, match="unknown face detector"):
        face.detect_faces(astronaut, detector="dlib")
    monkeypatch.chdir(tmp_path)  # no weights/s3fd.pth here
    with pytest.raises(InputError, match=r"weights/s3fd\.pth") as ei:
        face.detect_faces(astronaut, detector="s3fd")
    assert "haar" in str(ei.value)
    with pytest.raises(InputError, match="pads"):
        face.detect_faces(astronaut, pads=(1, 2, 3))
    with pytest.raises(InputError, match="smooth"):
        face.detect_faces(astronaut, smooth=-1)


@pytest.mark.parametrize("kind", ["gray", "noise"])
def test_no_face_raises_face_error(tmp_path: Path, kind: str) -> None:
    if kind == "gray":
        img = np.full((256, 256, 3), 128, np.uint8)
    else:
        img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    p = tmp_path / f"{kind}.png"
    cv2.imwrite(str(p), img)
    with pytest.raises(FaceError, match="no face") as ei:
        face.detect_faces(face.load_avatar(p))
    assert str(p) in str(ei.value)
    assert "frontal" in (ei.value.fix or "")


def test_two_equal_faces_raise_several_faces(tmp_path: Path) -> None:
    crop = astronaut_bgr()[0:256, 100:356]
    p = tmp_path / "twins.png"
    cv2.imwrite(str(p), cv2.hconcat([crop, crop]))
    with pytest.raises(FaceError, match="several faces") as ei:
        face.detect_faces(face.load_avatar(p))
    assert "crop the avatar to one face" in str(ei.value)


def test_dominant_face_wins(tmp_path: Path) -> None:
    big = astronaut_bgr()[0:256, 100:356]
    small = cv2.resize(big, (128, 128))  # a quarter of the area
    canvas = np.full((256, 384, 3), 128, np.uint8)
    canvas[:, :256] = big
    canvas[64:192, 256:] = small
    p = tmp_path / "pair.png"
    cv2.imwrite(str(p), canvas)
    rects = haar.haar_faces(face.load_avatar(p).frame(0))
    if len(rects) < 2:
        pytest.skip("Haar did not find the small face; dominance rule not exercised")
    fb = face.detect_faces(face.load_avatar(p), pads=(0, 0, 0, 0))
    x1, _, x2, _ = fb.box(0)
    assert x2 <= 256  # the big face on the left


def test_pick_face_rule() -> None:
    assert haar.pick_face(np.zeros((0, 4), np.int64), "x") is None
    one = np.array([[1, 2, 30, 30]])
    np.testing.assert_array_equal(haar.pick_face(one, "x"), one[0])
    two = np.array([[0, 0, 20, 20], [50, 50, 40, 40]])  # 4x the area: the big one wins
    np.testing.assert_array_equal(haar.pick_face(two, "x"), two[1])
    close = np.array([[0, 0, 40, 40], [50, 50, 35, 35]])
    with pytest.raises(FaceError, match="several faces"):
        haar.pick_face(close, "x")


# ---- video ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_avatar(tmp_path_factory) -> tuple[face.Avatar, list[int]]:
    """10 frames, the astronaut moving right 3 px a frame; frame 4 has no face."""
    base = astronaut_bgr()
    shifts = [3 * k for k in range(10)]
    frames = [shift(base, dx) for dx in shifts]
    frames[4] = np.full_like(base, 128)
    path = write_video(tmp_path_factory.mktemp("vid") / "avatar.mp4", frames)
    return face.load_avatar(path), shifts


def test_video_boxes_glide_across_gaps_and_smooth(video_avatar) -> None:
    av, shifts = video_avatar
    raw = face.detect_faces(av, "haar", pads=(0, 0, 0, 0), smooth=1, fade_s=0)
    assert raw.boxes.shape == (10, 4)
    x, y, w, h = EXPECTED_XYWH
    for k in (0, 3, 5, 9):
        assert near(raw.box(k), (x + shifts[k], y, x + w + shifts[k], y + h)), k
    # frame 4 (no face): no patch; its box (used only to crop the network's input) lies
    # between its neighbours' — no jump
    assert raw.alpha(4) == 0 and raw.alpha(3) == raw.alpha(5) == 1
    b3, b4, b5 = (np.array(raw.box(k)) for k in (3, 4, 5))
    assert np.all(np.abs(b4 - (b3 + b5) / 2) <= 1)

    sm = face.detect_faces(av, "haar", pads=(0, 0, 0, 0), smooth=5)
    assert sm.boxes.shape == (10, 4)
    r = raw.boxes.astype(float)
    for i in range(10):
        lo, hi = max(0, i - 2), min(10, i + 3)
        np.testing.assert_array_equal(sm.boxes[i], np.rint(r[lo:hi].mean(axis=0)).astype(int))
    # past the end the video plays backward (ping-pong): output 10 shows frame 8, 17 frame 1
    assert sm.box(10) == sm.box(8) and sm.box(17) == sm.box(1) and sm.box(18) == sm.box(0)


def test_fade_at_gap_edges(video_avatar) -> None:
    av, _ = video_avatar
    fb = face.detect_faces(av, "haar", fade_s=2 / 25)  # two frames at 25 fps
    got = [fb.alpha(k) for k in range(10)]
    assert got[4] == 0 and got[3] == got[5] == pytest.approx(1 / 3)
    assert got[2] == got[6] == pytest.approx(2 / 3) and got[1] == got[7] == 1
    s = fb.faceless_summary()
    assert s["frames_without_face"] == 1 and s["ranges_without_face"] == [[4, 5]]
    assert s["frames_faded"] == 4 and s["frames"] == 10


def test_video_without_any_face(tmp_path: Path) -> None:
    frames = [np.full((128, 128, 3), v, np.uint8) for v in (60, 90, 120)]
    p = write_video(tmp_path / "blank.mp4", frames)
    with pytest.raises(FaceError, match="any of the 3 frames"):
        face.detect_faces(face.load_avatar(p))
