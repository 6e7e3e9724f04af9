"""Batch-size calibration: measured once, cached per machine and thread count."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lipbench import tuning
from lipbench.render import JobInputs, Renderer, RenderOptions
from lipbench.weights import load_generator


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path))
    return tmp_path / "calibration.json"


def test_calibration_measures_once_then_uses_cache(cache, monkeypatch):
    model, _ = load_generator("gan", "/nonexistent", seed=3)
    calls = []
    monkeypatch.setattr(
        tuning, "decode_fps", lambda m, b, d, **k: calls.append(b) or float(100 - abs(b - 16))
    )
    entry = tuning.calibrate_batch(model, "cpu", 1)
    assert entry["batch_size"] == 16 and sorted(calls) == sorted(tuning.BATCH_CANDIDATES)
    assert json.loads(cache.read_text())  # written
    monkeypatch.setattr(tuning, "decode_fps", lambda *a, **k: pytest.fail("measured again"))
    assert tuning.calibrate_batch(model, "cpu", 1)["batch_size"] == 16
    assert tuning.cached_batch("cpu", 1) == 16
    assert tuning.cached_batch("cpu", 7) is None  # other thread counts are separate entries


def test_decode_fps_is_a_real_measurement():
    model, _ = load_generator("gan", "/nonexistent", seed=3)
    torch.set_num_threads(1)
    fps = tuning.decode_fps(model, 2, "cpu", seconds=0.2, channels_last=False)
    assert 0 < fps < 1000


def test_auto_batch_renderer_matches_fixed_batch(cache, monkeypatch):
    """'auto' only picks a batch size: frames equal a fixed batch within one level."""
    from lipbench.face import detect_faces, load_avatar

    monkeypatch.setattr(tuning, "decode_fps", lambda m, b, d, **k: float(b == 8))
    model, _ = load_generator("gan", "/nonexistent", seed=3)
    av = load_avatar("default")
    boxes = detect_faces(av)
    mel = np.random.default_rng(0).uniform(-4, 4, (80, 120)).astype(np.float32)
    job = JobInputs(mel, 30, 25.0, av, boxes, meta={"key": "auto"})
    auto = Renderer(model, "cpu", RenderOptions(batch_size="auto"))
    assert auto.options.batch_size == 8 and auto.calibration["batch_size"] == 8
    fixed = Renderer(model, "cpu", RenderOptions(batch_size=16))
    a = list(auto.render(job, 0, 30))
    b = list(fixed.render(job, 0, 30))
    assert (
        max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))
        <= 1
    )
