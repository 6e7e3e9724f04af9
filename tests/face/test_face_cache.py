"""Tests for lipbench.face.cache: raw detections (boxes, landmarks, scores) per avatar frame;
hits skip detection, a longer job adds only the new frames, keys follow the pixels, bad files
are ignored and rewritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import astronaut_bgr, shift, write_video
from skimage import data as skdata

from lipbench import face
from lipbench.face import detect


@pytest.fixture(scope="module")
def astronaut() -> face.Avatar:
    return face.load_avatar("default")


def _count_detections(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = detect.detect_frame

    def counting(frame, name):
        calls.append(1)
        return real(frame, name)

    monkeypatch.setattr(detect, "detect_frame", counting)
    return calls


def test_cache_hit_skips_detection(astronaut: face.Avatar, tmp_path: Path, monkeypatch) -> None:
    first = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert not first.from_cache
    key = face.detection_cache_key(astronaut, "yunet")
    path = tmp_path / f"{key}.json"
    assert path.is_file()
    doc = json.loads(path.read_text())
    assert doc["size"] == doc["original_size"] == [512, 512] and doc["detector"] == "yunet"
    (row,) = doc["frames"]["0"]  # one face: box, five landmarks, score
    assert len(row) == 15 and all(v is not None for v in row) and 0.7 <= row[14] <= 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left

    calls = _count_detections(monkeypatch)
    second = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert second.from_cache and not calls
    np.testing.assert_array_equal(second.boxes, first.boxes)
    # pads and smoothing are applied after the cache: same file, no detection
    other = face.detect_faces(astronaut, pads=(0, 20, 0, 0), cache_dir=tmp_path)
    assert other.from_cache and not calls and other.box(0)[3] == first.box(0)[3] + 10
    # another detector: another file, detection runs (Haar: no landmarks, written as null)
    face.detect_faces(astronaut, "haar", cache_dir=tmp_path)
    assert calls == [1] and len(list(tmp_path.glob("*.json"))) == 2
    hdoc = json.loads(
        (tmp_path / f"{face.detection_cache_key(astronaut, 'haar')}.json").read_text()
    )
    assert hdoc["frames"]["0"][0][4:14] == [None] * 10


def test_longer_audio_detects_only_the_new_frames(tmp_path: Path, monkeypatch) -> None:
    frames = [shift(astronaut_bgr(), 2 * k) for k in range(12)]
    av = face.load_avatar(write_video(tmp_path / "v.mp4", frames))
    calls = _count_detections(monkeypatch)
    short = face.detect_faces(av, cache_dir=tmp_path / "c", n_out=5, fps=25.0)
    assert len(calls) == 5 and list(short.index) == [0, 1, 2, 3, 4]
    longer = face.detect_faces(av, cache_dir=tmp_path / "c", n_out=9, fps=25.0)
    assert len(calls) == 9 and not longer.from_cache
    again = face.detect_faces(av, cache_dir=tmp_path / "c", n_out=9, fps=25.0)
    assert len(calls) == 9 and again.from_cache
    np.testing.assert_array_equal(again.boxes, longer.boxes)


def test_cache_key_follows_pixels_and_detector(astronaut: face.Avatar, tmp_path: Path) -> None:
    png = Path(skdata.__file__).parent / "astronaut.png"
    assert astronaut.content_hash == hashlib.sha256(png.read_bytes()).hexdigest()

    def key(av: face.Avatar, det: str = "yunet") -> str:
        return face.detection_cache_key(av, det)

    assert key(astronaut) != key(astronaut, "haar")
    # a limit the 512 px photo does not reach leaves the frames, the hash and the key alone
    assert key(face.load_avatar("default", max_side=512)) == key(astronaut)
    assert key(face.load_avatar("default", max_side=4000)) == key(astronaut)
    # a limit that downscales changes the key, and each limit has its own, reproducibly
    small = face.load_avatar("default", max_side=384)
    assert small.size == (384, 384)
    smaller = face.load_avatar("default", max_side=320)
    assert len({key(astronaut), key(small), key(smaller)}) == 3
    assert key(face.load_avatar("default", max_side=384)) == key(small)

    # so detection on the downscaled photo neither reads nor overwrites the full-size entry
    full = face.detect_faces(astronaut, cache_dir=tmp_path)
    down = face.detect_faces(small, cache_dir=tmp_path)
    assert not down.from_cache
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert max(down.boxes[0]) <= 384
    np.testing.assert_allclose(down.boxes[0], full.boxes[0] * 384 / 512, atol=8)
    again = face.detect_faces(face.load_avatar("default", max_side=384), cache_dir=tmp_path)
    assert again.from_cache
    np.testing.assert_array_equal(again.boxes, down.boxes)


@pytest.mark.parametrize(
    "garbage",
    [
        "{not json",
        "",
        '{"version": 1}',
        '["a list"]',
        "size",  # right key, wrong frame size
        "row",  # right key, a row of the wrong length
        "frame",  # right key, a frame index past the avatar's end
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(
    astronaut: face.Avatar, tmp_path: Path, garbage: str
) -> None:
    good = face.detect_faces(astronaut, cache_dir=tmp_path)
    key = face.detection_cache_key(astronaut, "yunet")
    path = tmp_path / f"{key}.json"
    doc = json.loads(path.read_text())
    if garbage == "size":
        doc["size"] = [256, 256]
    elif garbage == "row":
        doc["frames"]["0"] = [[1, 2, 3]]
    elif garbage == "frame":
        doc["frames"]["7"] = doc["frames"]["0"]
    if garbage in ("size", "row", "frame"):
        garbage = json.dumps(doc)
    path.write_text(garbage)
    again = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.boxes, good.boxes)
    assert list(json.loads(path.read_text())["frames"]) == ["0"]


def test_the_configs_auto_cache_is_the_user_cache_never_a_folder_named_auto(tmp_path, monkeypatch):
    """face.cache_dir: auto (the default) passed on as the config spells it lands in the
    user cache; nothing is written under the current directory."""
    from lipbench import face

    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.chdir(tmp_path)
    face.detect_faces(face.load_avatar("default"), "haar", cache_dir="auto")
    assert not (tmp_path / "auto").exists()
    assert list((tmp_path / "user-cache" / "faces").glob("*.json"))
