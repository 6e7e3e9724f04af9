"""Tests for lipbench.face.cache: hits skip detection, keys cover every input, bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from lipbench import face
from lipbench.face import detect


@pytest.fixture(scope="module")
def astronaut() -> face.Avatar:
    return face.load_avatar("default")


def _forbid_detection(monkeypatch) -> None:
    def boom(frame):
        raise AssertionError("detector ran although the cache should have answered")

    monkeypatch.setattr(detect, "haar_faces", boom)


def test_cache_hit_skips_detection(astronaut: face.Avatar, tmp_path: Path, monkeypatch) -> None:
    first = face.detect_faces(astronaut, cache_dir=tmp_path)
    assert not first.from_cache
    key = face.detection_cache_key(astronaut, "haar", (0, 10, 0, 0), 5)
    path = tmp_path / f"{key}.json"
    assert path.is_file()
    doc = json.loads(path.read_text())
    assert doc["boxes"] == first.boxes.tolist()
    assert doc["size"] == doc["original_size"] == [512, 512]
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


def test_cache_key_follows_max_side(astronaut: face.Avatar, tmp_path: Path) -> None:
    png = Path(skdata.__file__).parent / "astronaut.png"
    assert astronaut.content_hash == hashlib.sha256(png.read_bytes()).hexdigest()

    def key(av: face.Avatar) -> str:
        return face.detection_cache_key(av, "haar", (0, 10, 0, 0), 5)

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
