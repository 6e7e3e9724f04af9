"""Tests for lipbench.face: avatars, Haar detection, cache, crop and paste-back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from lipbench import face
from lipbench.errors import FaceError, InputError

# FACTS.md: Haar finds the astronaut's face at x=177, y=66, w=95, h=95 (a pixel or two off
# after equalizeHist); boxes are (x1, y1, x2, y2).
EXPECTED_XYWH = (177, 66, 95, 95)
TOL = 6


def _astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])


def _near(box, expected, tol: int = TOL) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(box, expected, strict=True))


@pytest.fixture(scope="module")
def astronaut() -> face.Avatar:
    return face.load_avatar("default")


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, quality=9, macro_block_size=1, ffmpeg_log_level="error"
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f[:, :, ::-1]).tobytes())  # BGR -> RGB for ffmpeg
    writer.close()
    return path


def _shift(img: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


# ---- loading --------------------------------------------------------------------------------


def test_default_avatar_is_bgr_astronaut(astronaut: face.Avatar) -> None:
    assert astronaut.is_static
    assert len(astronaut) == 1
    assert astronaut.size == (512, 512)
    assert astronaut.source == "default:astronaut"
    assert astronaut.image is not None and astronaut.image.dtype == np.uint8
    np.testing.assert_array_equal(astronaut.image, _astronaut_bgr())
    assert astronaut.frame(0) is astronaut.frame(123)
    assert len(astronaut.content_hash) == 64
    assert face.load_avatar().content_hash == astronaut.content_hash
    with pytest.raises(ValueError):  # shared frames are read-only
        astronaut.frame(0)[0, 0, 0] = 1


def test_image_file_loads_and_hashes_bytes(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), _astronaut_bgr())
    av = face.load_avatar(p)
    np.testing.assert_array_equal(av.frame(0), _astronaut_bgr())
    import hashlib

    assert av.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()
    assert av.source == str(p)


def test_missing_and_non_image_files_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        face.load_avatar(tmp_path / "nope.png")
    txt = tmp_path / "notes.png"
    txt.write_text("this is not a picture")
    with pytest.raises(InputError, match="not a readable image") as ei:
        face.load_avatar(txt)
    assert ei.value.fix
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        face.load_avatar(empty)
    with pytest.raises(InputError, match="not a file"):
        face.load_avatar(tmp_path)
    fake_video = tmp_path / "clip.mp4"
    fake_video.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="not a readable video"):
        face.load_avatar(fake_video)


# ---- detection ------------------------------------------------------------------------------


def test_detects_astronaut_face_with_pads(astronaut: face.Avatar) -> None:
    x, y, w, h = EXPECTED_XYWH
    fb = face.detect_faces(astronaut, pads=(0, 0, 0, 0))
    assert fb.boxes.shape == (1, 4) and fb.boxes.dtype.kind == "i"
    assert _near(fb.box(0), (x, y, x + w, y + h))
    raw = fb.box(0)

    padded = face.detect_faces(astronaut)  # default pads (0, 10, 0, 0): 10 px more chin
    assert padded.pads == (0, 10, 0, 0)
    assert padded.box(0) == (raw[0], raw[1], raw[2], raw[3] + 10)
    assert padded.box(5) == padded.box(0)

    t, b, left, r = 7, 3, 11, 13
    custom = face.detect_faces(astronaut, pads=(t, b, left, r))
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
    crop = _astronaut_bgr()[0:256, 100:356]
    p = tmp_path / "twins.png"
    cv2.imwrite(str(p), cv2.hconcat([crop, crop]))
    with pytest.raises(FaceError, match="several faces") as ei:
        face.detect_faces(face.load_avatar(p))
    assert "crop the avatar to one face" in str(ei.value)


def test_dominant_face_wins(tmp_path: Path) -> None:
    big = _astronaut_bgr()[0:256, 100:356]
    small = cv2.resize(big, (128, 128))  # a quarter of the area
    canvas = np.full((256, 384, 3), 128, np.uint8)
    canvas[:, :256] = big
    canvas[64:192, 256:] = small
    p = tmp_path / "pair.png"
    cv2.imwrite(str(p), canvas)
    rects = face._haar_faces(face.load_avatar(p).frame(0))
    if len(rects) < 2:
        pytest.skip("Haar did not find the small face; dominance rule not exercised")
    fb = face.detect_faces(face.load_avatar(p), pads=(0, 0, 0, 0))
    x1, _, x2, _ = fb.box(0)
    assert x2 <= 256  # the big face on the left


# ---- cache ----------------------------------------------------------------------------------


def _forbid_detection(monkeypatch) -> None:
    def boom(frame):
        raise AssertionError("detector ran although the cache should have answered")

    monkeypatch.setattr(face, "_haar_faces", boom)


def test_cache_hit_skips_detection(astronaut: face.Avatar, tmp_path: Path, monkeypatch) -> None:
    first = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert not first.from_cache
    key = face.detection_cache_key(astronaut, "haar", (0, 10, 0, 0), 5)
    path = tmp_path / f"{key}.json"
    assert path.is_file()
    assert json.loads(path.read_text())["boxes"] == first.boxes.tolist()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left

    _forbid_detection(monkeypatch)
    second = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert second.from_cache
    np.testing.assert_array_equal(second.boxes, first.boxes)
    assert (second.detector, second.pads) == (first.detector, first.pads)

    # other inputs -> other key -> needs detection
    with pytest.raises(AssertionError, match="detector ran"):
        face.detect_faces(astronaut, pads=(0, 20, 0, 0), cache_dir=tmp_path)


def test_cache_key_depends_on_every_input(astronaut: face.Avatar) -> None:
    base = face.detection_cache_key(astronaut, "haar", (0, 10, 0, 0), 5)
    assert base == face.detection_cache_key(astronaut, "haar", [0, 10, 0, 0], 5)
    others = {
        face.detection_cache_key(astronaut, "s3fd", (0, 10, 0, 0), 5),
        face.detection_cache_key(astronaut, "haar", (0, 11, 0, 0), 5),
        face.detection_cache_key(astronaut, "haar", (0, 10, 0, 0), 3),
    }
    assert base not in others and len(others) == 3


@pytest.mark.parametrize(
    "garbage",
    [
        "{not json",
        "",
        '{"version": 1}',
        '["a list"]',
        None,  # right key, but a box outside the frame
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(
    astronaut: face.Avatar, tmp_path: Path, garbage: str | None
) -> None:
    good = face.detect_faces(astronaut, cache_dir=tmp_path)
    key = face.detection_cache_key(astronaut, "haar", (0, 10, 0, 0), 5)
    path = tmp_path / f"{key}.json"
    if garbage is None:
        doc = json.loads(path.read_text())
        doc["boxes"] = [[0, 0, 9999, 9999]]
        garbage = json.dumps(doc)
    path.write_text(garbage)
    again = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.boxes, good.boxes)
    assert json.loads(path.read_text())["boxes"] == good.boxes.tolist()


# ---- video ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_avatar(tmp_path_factory) -> tuple[face.Avatar, list[int]]:
    """10 frames, the astronaut moving right 3 px a frame; frame 4 has no face."""
    base = _astronaut_bgr()
    shifts = [3 * k for k in range(10)]
    frames = [_shift(base, dx) for dx in shifts]
    frames[4] = np.full_like(base, 128)
    path = _write_video(tmp_path_factory.mktemp("vid") / "avatar.mp4", frames)
    return face.load_avatar(path), shifts


def test_video_avatar_loads_and_loops(video_avatar) -> None:
    av, _ = video_avatar
    assert not av.is_static and av.image is None
    assert len(av) == 10
    assert av.size == (512, 512)
    assert av.fps == pytest.approx(25.0)
    assert av.frame(0).dtype == np.uint8 and av.frame(0).shape == (512, 512, 3)
    assert av.frame(13) is av.frame(3)
    assert av.frame(10) is av.frame(0)
    # still BGR after the round trip through ffmpeg (the astronaut's suit is white, the flag
    # at top-left is blue-ish: compare channel means with the source frame)
    src = _shift(_astronaut_bgr(), 0).astype(float).mean(axis=(0, 1))
    got = av.frame(0).astype(float).mean(axis=(0, 1))
    assert np.abs(src - got).max() < 6
    with pytest.raises(IndexError):
        av.frame(-1)


def test_video_boxes_fill_gaps_and_smooth(video_avatar) -> None:
    av, shifts = video_avatar
    raw = face.detect_faces(av, pads=(0, 0, 0, 0), smooth=1)
    assert raw.boxes.shape == (10, 4)
    x, y, w, h = EXPECTED_XYWH
    for k in (0, 3, 5, 9):
        assert _near(raw.box(k), (x + shifts[k], y, x + w + shifts[k], y + h)), k
    # frame 4 (no face) borrows the nearest frame's box (3 and 5 tie: the earlier one)
    assert raw.box(4) == raw.box(3)

    sm = face.detect_faces(av, pads=(0, 0, 0, 0), smooth=5)
    assert sm.boxes.shape == (10, 4)
    r = raw.boxes.astype(float)
    for i in range(10):
        lo, hi = max(0, i - 2), min(10, i + 3)
        np.testing.assert_array_equal(sm.boxes[i], np.rint(r[lo:hi].mean(axis=0)).astype(int))
    # boxes loop by global index like frames
    assert sm.box(17) == sm.box(7)
    assert sm.box(20) == sm.box(0)


def test_video_without_any_face(tmp_path: Path) -> None:
    frames = [np.full((128, 128, 3), v, np.uint8) for v in (60, 90, 120)]
    p = _write_video(tmp_path / "blank.mp4", frames)
    with pytest.raises(FaceError, match="any of the 3 frames"):
        face.detect_faces(face.load_avatar(p))


# ---- crop / paste ---------------------------------------------------------------------------


def test_crop_and_paste_round_trip(astronaut: face.Avatar) -> None:
    frame = astronaut.frame(0)
    box = face.detect_faces(astronaut).box(0)
    crop = face.crop_face(frame, box)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    x1, y1, x2, y2 = box
    np.testing.assert_array_equal(
        crop, cv2.resize(frame[y1:y2, x1:x2], (96, 96), interpolation=cv2.INTER_LINEAR)
    )

    generated = np.zeros((96, 96, 3), np.uint8)
    generated[:, :, 2] = 255  # pure red
    out = face.paste_face(frame, box, generated)
    assert out is not frame and out.shape == frame.shape
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    assert (out[y1:y2, x1:x2] == (0, 0, 255)).all()
    np.testing.assert_array_equal(frame, _astronaut_bgr())  # source untouched

    # pasting the crop back changes only the box, and only by resampling error
    back = face.paste_face(frame, box, crop)
    np.testing.assert_array_equal(back[outside], frame[outside])
    diff = np.abs(back[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2].astype(int))
    assert diff.mean() < 12

    buf = frame.copy()
    res = face.paste_face(buf, box, generated, inplace=True)
    assert res is buf
    np.testing.assert_array_equal(buf, out)


def test_crop_rejects_bad_boxes() -> None:
    frame = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(ValueError):
        face.crop_face(frame, (10, 10, 10, 20))
    with pytest.raises(ValueError):
        face.crop_face(frame, (0, 0, 61, 50))
    with pytest.raises(ValueError):
        face.paste_face(frame, (0, 0, 10, 10), np.zeros((96, 96, 3), np.float32))
