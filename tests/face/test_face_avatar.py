"""Tests for lipbench.face.avatar and .fit: loading avatars, the size limit, even sizes."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import EXPECTED_XYWH, astronaut_bgr, near, write_video

from lipbench import face
from lipbench.errors import InputError
from lipbench.face.fit import plan_fit


@pytest.fixture(scope="module")
def astronaut() -> face.Avatar:
    return face.load_avatar("default")


def _fit_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("lipbench.face")]


# ---- loading --------------------------------------------------------------------------------


def test_default_avatar_is_bgr_astronaut(astronaut: face.Avatar) -> None:
    assert astronaut.is_static
    assert len(astronaut) == 1
    assert astronaut.size == (512, 512)
    assert astronaut.original_size == (512, 512)
    assert astronaut.source == "default:astronaut"
    assert astronaut.image is not None and astronaut.image.dtype == np.uint8
    np.testing.assert_array_equal(astronaut.image, astronaut_bgr())
    assert astronaut.frame(0) is astronaut.frame(123)
    assert len(astronaut.content_hash) == 64
    assert face.load_avatar().content_hash == astronaut.content_hash
    with pytest.raises(ValueError):  # shared frames are read-only
        astronaut.frame(0)[0, 0, 0] = 1


def test_image_file_loads_and_hashes_bytes(tmp_path: Path, caplog) -> None:
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), astronaut_bgr())
    with caplog.at_level(logging.DEBUG, logger="lipbench.face"):
        av = face.load_avatar(p)
    np.testing.assert_array_equal(av.frame(0), astronaut_bgr())
    assert av.content_hash == hashlib.sha256(p.read_bytes()).hexdigest()
    assert av.source == str(p)
    assert _fit_records(caplog) == []  # nothing changed, nothing logged


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


@pytest.mark.parametrize("bad", [0, 63, -1, 1.5, "1920", None, True])
def test_bad_max_side_is_refused(bad) -> None:
    with pytest.raises(InputError, match=r"face\.max_side") as ei:
        face.load_avatar("default", max_side=bad)
    assert "1920" in (ei.value.fix or "")


# ---- the fit: size limit and even sizes -----------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "want"),
    [
        ((4000, 3000), 1920, (1920, 1440)),
        ((3000, 4000), 1920, (1440, 1920)),
        ((8000, 8000), 1920, (1920, 1920)),
        ((8000, 8000), 1921, (1920, 1920)),  # an odd limit: the long side drops to even
        ((1921, 1081), 1920, (1920, 1080)),
        ((1920, 1080), 1920, (1920, 1080)),  # at the limit: untouched
        ((513, 511), 1920, (512, 510)),  # odd sides lose a pixel
        ((8000, 3), 1920, (1920, 1)),  # cannot go below one pixel
    ],
)
def test_plan_fit_sizes(size, max_side, want) -> None:
    fit = plan_fit(*size, max_side)
    assert fit.size == want
    assert fit.original == size
    assert max(fit.size) <= max_side
    assert fit.scaled == (max(size) > max_side)
    w, h = fit.size
    if fit.scaled and min(w, h) > 1:
        assert w / h == pytest.approx(size[0] / size[1], rel=0.01)  # aspect kept


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> tuple[Path, tuple[int, int]]:
    """A 4000x3000 JPEG: gray canvas, the astronaut enlarged 5x pasted at (700, 200)."""
    canvas = np.full((3000, 4000, 3), 120, np.uint8)
    big = cv2.resize(astronaut_bgr(), (2560, 2560), interpolation=cv2.INTER_CUBIC)
    canvas[200:2760, 700:3260] = big
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path, (700, 200)


def test_large_image_is_downscaled_once_and_face_still_found(big_photo, caplog) -> None:
    path, (ox, oy) = big_photo
    with caplog.at_level(logging.DEBUG, logger="lipbench.face"):
        av = face.load_avatar(path)
    assert av.size == (1920, 1440)
    assert av.original_size == (4000, 3000)
    assert av.frame(0).shape == (1440, 1920, 3) and av.frame(0).dtype == np.uint8
    assert not av.frame(0).flags.writeable
    records = _fit_records(caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    msg = records[0].getMessage()
    assert "4000x3000" in msg and "1920x1440" in msg and str(path) in msg
    # the pixels are cv2.INTER_AREA's
    full = cv2.imread(str(path))
    want = cv2.resize(full, (1920, 1440), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(av.frame(0), want)
    # frames changed, so the hash is no longer the file's
    assert av.content_hash != hashlib.sha256(path.read_bytes()).hexdigest()

    x, y, w, h = EXPECTED_XYWH
    s = 1920 / 4000
    expected = [(5 * x + ox) * s, (5 * y + oy) * s, (5 * (x + w) + ox) * s, (5 * (y + h) + oy) * s]
    box = face.detect_faces(av, "haar", pads=(0, 0, 0, 0)).box(0)
    assert near(box, [round(v) for v in expected], tol=5 * 6 * s)


def test_limit_above_the_image_keeps_it(big_photo, caplog) -> None:
    path, _ = big_photo
    with caplog.at_level(logging.DEBUG, logger="lipbench.face"):
        av = face.load_avatar(path, max_side=4000)
    assert av.size == (4000, 3000)
    assert av.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _fit_records(caplog) == []


def test_odd_image_is_cropped_to_even(tmp_path: Path) -> None:
    src = astronaut_bgr()[:511, :509]
    p = tmp_path / "odd.png"
    cv2.imwrite(str(p), src)
    av = face.load_avatar(p)
    assert av.size == (508, 510)
    assert av.original_size == (509, 511)
    np.testing.assert_array_equal(av.frame(0), src[:510, :508])  # last row/column dropped
    assert av.content_hash != hashlib.sha256(p.read_bytes()).hexdigest()


# ---- video ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> Path:
    frames = [np.roll(astronaut_bgr(), 4 * k, axis=1) for k in range(3)]
    return write_video(tmp_path_factory.mktemp("vid") / "avatar.mp4", frames)


def test_video_avatar_loads_and_loops(small_video: Path) -> None:
    av = face.load_avatar(small_video)
    assert not av.is_static and av.image is None
    assert len(av) == 3
    assert av.size == (512, 512)
    assert av.fps == pytest.approx(25.0)
    assert av.frame(0).dtype == np.uint8 and av.frame(0).shape == (512, 512, 3)
    assert av.frame(4) is av.frame(1)
    assert av.frame(3) is av.frame(0)
    assert av.content_hash == hashlib.sha256(small_video.read_bytes()).hexdigest()
    # still BGR after the round trip through ffmpeg (the flag at top-left is blue-ish:
    # compare channel means with the source frame)
    src = astronaut_bgr().astype(float).mean(axis=(0, 1))
    got = av.frame(0).astype(float).mean(axis=(0, 1))
    assert np.abs(src - got).max() < 6
    with pytest.raises(IndexError):
        av.frame(-1)


def test_video_is_downscaled_frame_by_frame_with_one_log_line(small_video: Path, caplog) -> None:
    full = face.load_avatar(small_video)
    with caplog.at_level(logging.DEBUG, logger="lipbench.face"):
        av = face.load_avatar(small_video, max_side=256)
    assert len(av) == 3 and av.size == (256, 256) and av.original_size == (512, 512)
    for i in range(3):
        want = cv2.resize(full.frame(i), (256, 256), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(av.frame(i), want)
    assert len(_fit_records(caplog)) == 1
    assert av.content_hash != full.content_hash


def test_odd_video_is_cropped_to_even(tmp_path: Path) -> None:
    frames = [np.full((49, 65, 3), v, np.uint8) for v in (60, 120)]
    p = write_video(tmp_path / "odd.mp4", frames, pix_fmt="yuv444p")
    av = face.load_avatar(p)
    assert av.original_size == (65, 49)
    assert av.size == (64, 48)
    assert all(av.frame(i).shape == (48, 64, 3) for i in range(2))


def test_still_avatar_pickles_by_reference(tmp_path: Path, caplog) -> None:
    """A chunk task carries a still avatar as its source, read again (hash checked) where it
    is used; a file changed meanwhile is one clear error."""
    import pickle

    default = face.load_avatar("default")
    blob = pickle.dumps(default)
    assert len(blob) < 4000  # not the 786 KB image
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.frame(0), default.frame(0))
    assert back.size == (512, 512) and not back.frame(0).flags.writeable

    p = tmp_path / "big.png"
    cv2.imwrite(str(p), cv2.resize(astronaut_bgr(), (1024, 1024)))
    with caplog.at_level(logging.INFO, logger="lipbench.face"):
        av = face.load_avatar(p, max_side=700)
        back = pickle.loads(pickle.dumps(av))
        np.testing.assert_array_equal(back.frame(3), av.frame(0))
    assert len(_fit_records(caplog)) == 1  # the replica's re-read logs nothing
    again = pickle.loads(pickle.dumps(av))
    cv2.imwrite(str(p), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="changed while the job was running"):
        again.frame(0)
