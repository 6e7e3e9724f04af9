"""Calibration: batch size, backend and precision measured once, cached per machine and
thread count; only backends exact on the loaded checkpoint are eligible for ``auto``;
``auto`` precision stays fp32 on a CPU without bf16 hardware."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lipbench import backends, tuning
from lipbench.render import JobInputs, Renderer, RenderOptions
from lipbench.weights import load_generator


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path))
    return tmp_path / "calibration.json"


@pytest.fixture(scope="module")
def small_probe(model):
    from lipbench.backends import fidelity

    return fidelity.reference(model, n=2)


@pytest.fixture(autouse=True)
def _quick_fidelity(request, monkeypatch):
    """The fidelity check on 4 frames instead of 16 (same code, less time)."""
    if "model" in request.fixturenames:
        from lipbench.backends import fidelity

        probe = request.getfixturevalue("small_probe")
        monkeypatch.setattr(fidelity, "reference", lambda m, device="cpu", n=8: probe)


def fake_fps(table: dict[str, float]):
    """network_fps stand-in: frames/s by backend, a little better at batch 16."""
    calls: list[tuple[str, int]] = []

    def fps(net, batch, seconds=1.5):
        calls.append((net.key, batch))
        return table[net.backend + "|" + net.precision] + (1.0 if batch == 16 else 0.0)

    return fps, calls


def test_calibration_measures_once_then_uses_cache(cache, monkeypatch):
    from lipbench.backends import batch_calibration

    model, _ = load_generator("gan", "/nonexistent", seed=3)
    calls = []
    monkeypatch.setattr(
        batch_calibration,
        "decode_fps",
        lambda m, b, d, **k: calls.append(b) or float(100 - abs(b - 16)),
    )
    entry = tuning.calibrate_batch(model, "cpu", 1)
    assert entry["batch_size"] == 16 and sorted(calls) == sorted(tuning.BATCH_CANDIDATES)
    assert json.loads(cache.read_text())  # written
    monkeypatch.setattr(
        batch_calibration, "decode_fps", lambda *a, **k: pytest.fail("measured again")
    )
    assert tuning.calibrate_batch(model, "cpu", 1)["batch_size"] == 16
    assert tuning.cached_batch("cpu", 1) == 16
    assert tuning.cached_batch("cpu", 7) is None  # other thread counts are separate entries


def test_decode_fps_is_a_real_measurement():
    model, _ = load_generator("gan", "/nonexistent", seed=3)
    torch.set_num_threads(1)
    fps = tuning.decode_fps(model, 2, "cpu", seconds=0.2, channels_last=False)
    assert 0 < fps < 1000


def test_calibration_picks_the_fastest_exact_backend_and_caches_it(cache, monkeypatch, model):
    fps, calls = fake_fps({"torch|fp32": 10.0, "openvino|fp32": 12.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    opts = RenderOptions(batch_size="auto", backend="auto", precision="fp32")
    entry, net = tuning.calibrate(model, "cpu", 2, opts, quick=False)
    assert entry["backend"] == "openvino" and entry["precision"] == "fp32"
    assert entry["batch_size"] == 16 and net is not None and net.backend == "openvino"
    assert entry["fidelity"]["exact"] and entry["fidelity"]["max_abs_px"] <= 1  # really measured
    assert set(entry["options"]) == {"torch|fp32|channels_last+folded-BN", "openvino|fp32"}
    assert all(o["eligible"] for o in entry["options"].values())
    assert len(calls) == 2 * len(tuning.BATCH_CANDIDATES)
    assert any("|choice|" in k for k in json.loads(cache.read_text()))
    # a second replica on this machine: nothing measured, nothing built
    monkeypatch.setattr(tuning, "network_fps", lambda *a, **k: pytest.fail("measured again"))
    monkeypatch.setattr(backends, "build", lambda *a, **k: pytest.fail("built again"))
    again, net2 = tuning.calibrate(model, "cpu", 2, opts)
    assert net2 is None and again["backend"] == "openvino" and again["batch_size"] == 16


def test_a_backend_that_is_not_exact_on_the_checkpoint_is_not_chosen(cache, monkeypatch, model):
    from lipbench.backends import fidelity

    real_check = fidelity.check

    def check(net, probe):  # pretend OpenVINO is off by 3 levels on this checkpoint
        out = real_check(net, probe)
        return {**out, "max_abs_px": 3, "exact": False} if net.backend == "openvino" else out

    monkeypatch.setattr(fidelity, "check", check)
    fps, calls = fake_fps({"torch|fp32": 10.0, "openvino|fp32": 50.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    opts = RenderOptions(batch_size=16, backend="auto")
    entry, net = tuning.calibrate(model, "cpu", 2, opts, quick=False)
    assert entry["backend"] == "torch" and net.backend == "torch"
    assert entry["options"]["openvino|fp32"]["eligible"] is False
    assert all(key.startswith("torch") for key, _ in calls)  # the ineligible one is not timed
    # named explicitly, it is used as named, its fidelity recorded
    entry, net = tuning.calibrate(
        model, "cpu", 2, RenderOptions(batch_size="auto", backend="openvino"), quick=False
    )
    assert entry["backend"] == "openvino" and entry["fidelity"]["exact"] is False


def test_auto_precision_stays_fp32_without_bf16_hardware(cache, monkeypatch, model):
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f"}))
    assert tuning.candidates("cpu", "auto", "auto") == [("torch", "fp32"), ("openvino", "fp32")]
    fps, calls = fake_fps({"torch|fp32": 10.0, "openvino|fp32": 9.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    entry, _ = tuning.calibrate(
        model, "cpu", 2, RenderOptions(batch_size=16, backend="auto", precision="auto"), quick=False
    )
    assert entry["precision"] == "fp32" and entry["bf16_hardware"] is False
    assert all("bf16" not in key for key in entry["options"])


def test_auto_precision_takes_bf16_on_bf16_hardware_only_above_40_db(cache, monkeypatch, model):
    """With AMX (mocked flags) bf16 becomes a candidate; it wins only if its fidelity check
    reaches 40 dB and it really computes in bf16 (the check is mocked: no AMX here)."""
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert ("torch", "bf16") in tuning.candidates("cpu", "auto", "auto")
    assert tuning.candidates("cuda", "auto", "auto") == [("torch", "fp32")]  # GPUs keep torch fp32
    fps, _ = fake_fps({"torch|fp32": 10.0, "torch|bf16": 40.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    opts = RenderOptions(batch_size=16, backend="torch", precision="auto")

    def fake_fidelity(db):
        def fid(model, net, device, fp=None, probe=None):
            bf16 = net.precision == "bf16"
            return {"max_abs_px": 17 if bf16 else 0, "mean_abs_px": 0.1, "psnr_db": db if bf16 else None,
                    "exact": not bf16, "passes_psnr": db >= 40 or not bf16,
                    "effective_precision": net.precision}  # fmt: skip

        return fid

    for quick in (False, True):  # the first run's quick choice obeys the same bar
        monkeypatch.setattr(tuning, "fidelity", fake_fidelity(41.0))
        entry, _ = tuning.calibrate(model, "cpu", 2, opts, quick=quick)
        assert entry["precision"] == "bf16" and entry["fidelity"]["max_abs_px"] == 17
        cache.unlink()
        monkeypatch.setattr(tuning, "fidelity", fake_fidelity(38.0))
        entry, _ = tuning.calibrate(model, "cpu", 2, opts, quick=quick)
        assert entry["precision"] == "fp32"
        cache.unlink()


def test_fingerprint_tells_checkpoints_apart(model):
    from lipbench.model import Wav2Lip

    def net(seed: int) -> Wav2Lip:
        torch.manual_seed(seed)
        return Wav2Lip()

    assert tuning.fingerprint(net(1)) == tuning.fingerprint(net(1)) != tuning.fingerprint(net(2))
    assert tuning.fingerprint(model) != tuning.fingerprint(net(1))


@pytest.mark.slow
def test_auto_batch_renderer_matches_fixed_batch(cache, monkeypatch, model):
    """'auto' only picks a batch size: frames equal a fixed batch within one level."""
    from lipbench.face import detect_faces, load_avatar

    monkeypatch.setattr(tuning, "network_fps", lambda net, b, seconds=1.5: float(b == 8))
    monkeypatch.setattr(tuning, "QUICK_FIRST_RUN", False)  # measured, as after `refine`
    av = load_avatar("default")
    boxes = detect_faces(av)
    mel = np.random.default_rng(0).uniform(-4, 4, (80, 120)).astype(np.float32)
    job = JobInputs(mel, 30, 25.0, av, boxes, meta={"key": "auto"})
    auto = Renderer(model, "cpu", RenderOptions(batch_size="auto"))
    assert auto.options.batch_size == 8 and auto.calibration["batch_size"] == 8
    assert auto.fidelity["exact"]
    fixed = Renderer(model, "cpu", RenderOptions(batch_size=16))
    a = list(auto.render(job, 0, 30))
    b = list(fixed.render(job, 0, 30))
    assert (
        max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))
        <= 1
    )


@pytest.mark.slow
def test_first_run_is_quick_then_refine_measures_the_rest(cache, monkeypatch, model):
    """Cold cache: the first eligible candidate in expected-speed order (OpenVINO first) at
    batch 16, nothing timed, marked provisional; ``refine`` then times every candidate at
    every batch and replaces the entry (torch wins here by the fake rates)."""
    fps, calls = fake_fps({"torch|fp32": 30.0, "openvino|fp32": 12.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    opts = RenderOptions(batch_size="auto", backend="auto", precision="fp32")
    entry, net = tuning.calibrate(model, "cpu", 2, opts)
    assert calls == [] and entry["provisional"] is True and net.backend == "openvino"
    assert entry["backend"] == "openvino" and entry["batch_size"] == tuning.FIRST_RUN_BATCH
    assert entry["fidelity"]["exact"] and set(entry["options"]) == {"openvino|fp32"}
    assert entry["pending"] == {"candidates": ["torch|fp32"], "batches": [8, 32]}
    assert tuning.calibrate(model, "cpu", 2, opts) == (entry, None)  # cached as is
    done = tuning.refine(model, "cpu", 2, opts)
    assert done["provisional"] is False and done["backend"] == "torch"
    assert len(calls) == 2 * len(tuning.BATCH_CANDIDATES)
    assert tuning.calibrate(model, "cpu", 2, opts)[0]["backend"] == "torch"
    assert tuning.refine(model, "cpu", 2, opts) is None  # nothing pending any more


def test_quick_first_run_skips_an_inexact_candidate(cache, monkeypatch, model):
    from lipbench.backends import fidelity

    real_check = fidelity.check

    def check(net, probe):
        out = real_check(net, probe)
        return {**out, "max_abs_px": 3, "exact": False} if net.backend == "openvino" else out

    monkeypatch.setattr(fidelity, "check", check)
    monkeypatch.setattr(tuning, "network_fps", lambda *a, **k: pytest.fail("timed"))
    opts = RenderOptions(batch_size="auto", backend="auto", precision="fp32")
    entry, net = tuning.calibrate(model, "cpu", 2, opts)
    assert entry["backend"] == "torch" and net.backend == "torch" and entry["provisional"]
    assert entry["options"]["openvino|fp32"]["eligible"] is False


def test_refine_updates_the_saved_openvino_record(cache, monkeypatch, model):
    from lipbench.backends import ov_cache

    saved = []
    monkeypatch.setattr(
        ov_cache, "store", lambda key, net, m, **kw: saved.append((net.backend, kw))
    )
    fps, _ = fake_fps({"torch|fp32": 5.0, "openvino|fp32": 12.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    opts = RenderOptions(batch_size="auto", backend="auto", precision="fp32")
    tuning.calibrate(model, "cpu", 2, opts)
    key = ov_cache.NetworkKey.for_request("sha256:x", opts, 2)
    done = tuning.refine(model, "cpu", 2, opts, network_key=key)
    assert saved == [
        ("openvino", {"batch_size": 16, "fidelity": done["fidelity"], "calibration": done})
    ]


def test_refine_replica_loads_nothing_without_a_provisional_choice(cache, monkeypatch, model):
    import types

    from lipbench import weights

    opts = RenderOptions(batch_size="auto", backend="auto", precision="fp32")
    spec = types.SimpleNamespace(model="gan", threads=2, device="cpu", weights_dir="/nonexistent",
                                 weights_files={}, seed=3, render_options=opts)  # fmt: skip
    real_load = weights.load_generator
    monkeypatch.setattr(weights, "load_generator", lambda *a, **k: pytest.fail("loaded"))
    assert tuning.refine_replica(spec) is None  # empty cache
    fps, calls = fake_fps({"torch|fp32": 10.0, "openvino|fp32": 12.0})
    monkeypatch.setattr(tuning, "network_fps", fps)
    tuning.calibrate(model, "cpu", 2, opts)  # quick: provisional
    monkeypatch.setattr(weights, "load_generator", real_load)
    done = tuning.refine_replica(spec)
    assert done is not None and done["provisional"] is False and calls
    assert tuning.refine_replica(spec) is None
