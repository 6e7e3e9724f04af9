"""The Renderer runs through a backend: within one backend and precision, chunks rendered
separately equal one pass; backends agree within a level; the record's description."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import seeded_model

from lipbench import backends
from lipbench.face import detect_faces, load_avatar
from lipbench.metrics import max_abs_diff
from lipbench.render import FIRST_BATCH, JobInputs, Renderer, RenderOptions, batch_bounds

N = 14  # frames: batches of 4 → chunk cuts fall inside batches


@pytest.fixture(scope="module")
def model():
    return seeded_model(5)


@pytest.fixture(scope="module")
def job(cfg) -> JobInputs:
    av = load_avatar("default")
    boxes = detect_faces(av, "haar", (0, 10, 0, 0), 5, cfg["face"]["cache_dir"])
    mel = np.random.default_rng(1).uniform(-4, 2, (80, 4 * N)).astype(np.float32)
    return JobInputs(mel, N, 25.0, av, boxes, meta={"key": "render-test"})


def frames(renderer: Renderer, job: JobInputs, cuts: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Frames of [0, n) in pieces cut at ``cuts``, each from the chunk's own input
    (``JobInputs.for_range``, as a pool sends it) when there are cuts."""
    edges = [0, *cuts, job.n_frames]
    return [
        f
        for a, b in zip(edges, edges[1:], strict=False)
        for f in renderer.render(job.for_range(a, b) if cuts else job, a, b)
    ]


def test_a_chunk_input_carries_only_its_mel_columns(job) -> None:
    part = job.for_range(5, 9)
    assert part.n_frames == job.n_frames and part.mel_len == job.mel_len
    # frame i's window starts at floor(i * 80 / 25): 16 for frame 5, 25 for frame 8
    assert part.mel_start == 16 and part.mel.shape[1] == 25 - 16 + 16
    np.testing.assert_array_equal(part.mel_windows(5, 9), job.mel_windows(5, 9))
    with pytest.raises(ValueError, match="outside this input"):
        part.mel_windows(2, 4)
    assert part.boxes.box(7) == job.boxes.box(0)  # a still image: one box for every frame


@pytest.fixture(scope="module", params=[True, False], ids=["static-face", "per-frame-face"])
def static(request) -> bool:
    return request.param


@pytest.fixture(scope="module")
def torch_frames(model, job, static) -> list[np.ndarray]:
    opts = RenderOptions(batch_size=4, backend="torch", static_face_features=static)
    return frames(Renderer(model, "cpu", opts), job)


@pytest.mark.slow
@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_chunks_equal_one_pass_within_a_backend(model, job, static, backend, torch_frames):
    # batch 8: the one pass ramps 4, 8, 2; the chunks' batches fall elsewhere
    opts = RenderOptions(batch_size=8, backend=backend, static_face_features=static)
    whole = frames(Renderer(model, "cpu", opts), job)
    pieces = frames(Renderer(model, "cpu", opts), job, cuts=(5, 9))  # fresh replica, other cuts
    assert len(whole) == len(pieces) == N
    assert max(max_abs_diff(a, b) for a, b in zip(whole, pieces, strict=True)) <= 1
    # and every exact backend agrees with torch within one level
    assert max(max_abs_diff(a, b) for a, b in zip(whole, torch_frames, strict=True)) <= 1


def test_describe_gives_the_record_backend_precision_and_fidelity(model):
    r = Renderer(model, "cpu", RenderOptions(batch_size=4, backend="openvino", precision="fp32"))
    d = backends.describe(r)
    assert (d["backend"], d["precision"], d["effective_precision"]) == ("openvino", "fp32", "fp32")
    assert d["exact"] is True and d["fidelity"]["max_abs_px"] <= 1
    assert d["batch_size"] == 4 and d["chosen_by"] == "config" and d["threads"] == 2
    assert d["engine"]["cpu_pinning"] is False
    plain = backends.describe(Renderer(model, "cpu", RenderOptions.plain()))
    assert plain["fidelity"]["reference"] is True and plain["exact"] is True


@pytest.mark.parametrize(
    ("start", "end", "bs", "expected"),
    [
        (0, 70, 32, [(0, 4), (4, 12), (12, 28), (28, 60), (60, 70)]),
        (10, 13, 32, [(10, 13)]),
        (0, 9, 2, [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]),  # batch below the ramp's start
        (5, 5, 8, []),
    ],
)
def test_batches_ramp_up_from_a_small_first_batch(start, end, bs, expected):
    assert batch_bounds(start, end, bs) == expected


def test_a_batch_stopping_just_short_of_a_keyframe_runs_through_it():
    """The segment before keyframe 13 (the early one at 0.5 s, 25 fps) closes once frame 13 is
    encoded: the batch that would stop at 12 takes 12 and 13, later ones start there."""
    assert batch_bounds(0, 70, 32, keyframes={13, 25, 50}) == [(0, 4), (4, 14), (14, 30), (30, 62), (62, 70)]  # fmt: skip
    assert batch_bounds(0, 70, 32, keyframes={20}) == [(0, 4), (4, 12), (12, 28), (28, 60), (60, 70)]  # fmt: skip
    assert batch_bounds(0, 13, 32, keyframes={13}) == [
        (0, 4),
        (4, 12),
        (12, 13),
    ]  # not past the end
    assert batch_bounds(100, 112, 8, keyframes={104}) == [(100, 105), (105, 112)]


def test_render_yields_the_small_first_batch_first(model, job):
    """The first batch is FIRST_BATCH frames whatever the batch size: the first frame is
    ready after a few frames' work (the CLI's first frame, a stream's first segment)."""
    r = Renderer(model, "cpu", RenderOptions(batch_size=16, backend="torch"))
    sizes = [len(f) for f, _ in r.generated_faces(job, 0, job.n_frames)]
    assert FIRST_BATCH == 4 and sizes == [4, 8, 2]  # 14 frames: 4, then 8, then the rest
