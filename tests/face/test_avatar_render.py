"""Rendering a video avatar: frames without the tracked face are written unchanged (the patch
fades at the gap's edges), the feathered paste changes pixels only near the box's border and
steps ≤ 2 levels per pixel across it, and a chunk's input carries only its chunk (small to
pickle) yet renders the same frames as the whole job."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.face_clips import astronaut_bgr, moving_clip, with_black, write_video
from helpers import seeded_model

from lipbench import face
from lipbench.face.crop import FEATHER
from lipbench.metrics import max_abs_diff
from lipbench.render import JobInputs, Renderer, RenderOptions

N = 16
GAP = (6, 10)


@pytest.fixture(scope="module")
def model():
    return seeded_model(3)


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> JobInputs:
    clip = with_black(moving_clip("pan", n=N), [GAP])
    path = write_video(tmp_path_factory.mktemp("render") / "gap.mp4", clip.frames)
    av = face.load_avatar(path)
    boxes = face.detect_faces(av, n_out=N, fps=25.0, fade_s=2 / 25)
    mel = np.random.default_rng(2).uniform(-4, 2, (80, 4 * N + 16)).astype(np.float32)
    return JobInputs(mel, N, 25.0, av, boxes, meta={"key": "avatar-render"})


def _render(model, job: JobInputs, cuts=(), **opts) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    edges = [0, *cuts, job.n_frames]
    for a, b in zip(edges, edges[1:], strict=False):
        piece = job.for_range(a, b) if cuts else job
        r = Renderer(model, "cpu", RenderOptions(batch_size=4, backend="torch", **opts))
        out.extend(r.render(piece, a, b))
    return out


@pytest.fixture(scope="module")
def whole(model, job) -> list[np.ndarray]:
    return _render(model, job)


def _outside(frame: np.ndarray, box) -> np.ndarray:
    x1, y1, x2, y2 = box
    m = np.ones(frame.shape[:2], bool)
    m[y1:y2, x1:x2] = False
    return frame[m]


def test_faceless_frames_are_written_unchanged_and_the_patch_fades(job, whole) -> None:
    a, b = GAP
    for i in range(N):
        src = job.frame(i)
        if a <= i < b:
            assert np.array_equal(whole[i], src), i  # no patch on a frame without the face
        else:
            box = job.boxes.box(i)
            assert np.array_equal(_outside(whole[i], box), _outside(src, box)), i
            assert max_abs_diff(whole[i], src) > 0, i
    # fading: the frame next to the gap is patched at 1/3, two away at 2/3, then fully
    assert [job.boxes.alpha(i) for i in (a - 3, a - 2, a - 1, b, b + 1, b + 2)] == pytest.approx(
        [1, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1]
    )
    d1, d3 = (max_abs_diff(whole[i], job.frame(i)) for i in (a - 1, a - 3))
    assert 0 < d1 < d3
    s = job.boxes.faceless_summary()
    assert s["frames_without_face"] == b - a and s["ranges_without_face"] == [[a, b]]


def test_chunks_carry_only_their_chunk_and_render_the_same(model, job, whole) -> None:
    pieces = _render(model, job, cuts=(5, 11))
    assert max(max_abs_diff(x, y) for x, y in zip(whole, pieces, strict=True)) <= 1
    part = job.for_range(5, 11)
    assert len(part.boxes) == 6 and list(part.boxes.index) == [5, 6, 7, 8, 9, 10]
    assert part.mel.shape[1] < job.mel.shape[1] / 2
    blob = pickle.dumps(part)
    assert len(blob) < 32_000  # path, metadata, 6 boxes, a few mel columns: no frames
    back = pickle.loads(blob)
    assert np.array_equal(back.frame(7), job.frame(7)) and back.boxes.box(7) == job.boxes.box(7)
    with pytest.raises(IndexError):
        part.boxes.box(12)  # not this chunk's


def test_feather_changes_pixels_only_near_the_box_border(model, job, whole) -> None:
    boxed = _render(model, job.__class__(**{**job.__dict__, "blend": "box"}))
    for i in (0, 3, 13):
        x1, y1, x2, y2 = job.boxes.box(i)
        f = max(2, round(FEATHER * min(x2 - x1, y2 - y1)))
        inner = (slice(y1 + f, y2 - f), slice(x1 + f, x2 - f))
        assert np.array_equal(whole[i][inner], boxed[i][inner])
        assert np.array_equal(
            _outside(whole[i], (x1, y1, x2, y2)), _outside(boxed[i], (x1, y1, x2, y2))
        )
        assert max_abs_diff(whole[i], boxed[i]) > 0


@pytest.mark.parametrize("level", [60, 150, 200])
def test_flat_face_border_step(level: int) -> None:
    """A flat-colour generated face on a flat frame 30 levels off (and on the photo): box
    keeps the reference's rectangle exactly; feather steps ≤ 2 levels per pixel across
    the border where box steps 30."""
    frame = np.full((256, 256, 3), level - 30, np.uint8)
    face96 = np.full((96, 96, 3), level, np.uint8)
    box = (60, 50, 60 + 113, 50 + 127)
    x1, y1, x2, y2 = box
    ref = frame.copy()
    ref[y1:y2, x1:x2] = cv2.resize(face96, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    boxed = face.paste_face(frame, box, face96, blend="box")
    assert np.array_equal(boxed, ref)
    soft = face.paste_face(frame, box, face96, blend="feather")
    for img, limit in ((boxed, 30), (soft, 2)):
        g = img.astype(int)
        step = max(np.abs(np.diff(g, axis=0)).max(), np.abs(np.diff(g, axis=1)).max())
        assert step == limit if img is boxed else step <= limit
    # on the photo, a patch of the photo's own pixels pasted back is the photo (within 1)
    photo = cv2.resize(astronaut_bgr(), (256, 256))
    own = cv2.resize(photo[y1:y2, x1:x2], (96, 96), interpolation=cv2.INTER_AREA)
    back = face.paste_face(photo, box, own, blend="feather").astype(int)
    hard = face.paste_face(photo, box, own, blend="box").astype(int)
    assert np.abs(back - photo).max() <= np.abs(hard - photo).max()


def test_alpha_zero_and_partial(tmp_path: Path) -> None:
    frame = np.full((64, 64, 3), 100, np.uint8)
    face96 = np.full((96, 96, 3), 200, np.uint8)
    assert np.array_equal(face.paste_face(frame, (8, 8, 56, 56), face96, alpha=0), frame)
    half = face.paste_face(frame, (8, 8, 56, 56), face96, alpha=0.5, blend="box")
    assert int(half[30, 30, 0]) == 150 and int(half[4, 4, 0]) == 100


@pytest.mark.parametrize("box", [(177, 66, 272, 171), (3, 4, 40, 30), (0, 0, 64, 64)])
def test_feather_strips_equal_mixing_the_whole_box(box) -> None:
    """The feathered paste mixes only the border strips; the result is the whole-box mix."""
    from lipbench.face.crop import _mix, feather_mask

    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (300, 300, 3), np.uint8)
    face96 = rng.integers(0, 256, (96, 96, 3), np.uint8)
    x1, y1, x2, y2 = box
    patch = cv2.resize(face96, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    want = frame.copy()
    want[y1:y2, x1:x2] = _mix(frame[y1:y2, x1:x2], patch, feather_mask(x2 - x1, y2 - y1))
    assert np.array_equal(face.paste_face(frame, box, face96, blend="feather"), want)
