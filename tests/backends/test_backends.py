"""Network backends: each one is exact vs plain fp32 on seeded weights, batch-independent,
its static path equals its full path; bf16 is labelled inexact with its fidelity measured;
bad choices fail with one clear line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lipbench import backends
from lipbench.backends import fidelity
from lipbench.backends.measure import measure
from lipbench.errors import InputError


@pytest.fixture(scope="module")
def probe(model) -> fidelity.Probe:
    return fidelity.reference(model, n=4)


@pytest.fixture(scope="module", params=backends.BACKENDS)
def net(request, model):
    return backends.build(model, "cpu", request.param, "fp32", threads=2)


def test_openvino_is_installed():
    """A dependency of the project, so a missing wheel is a failure, not a skip."""
    assert backends.available() == ("torch", "openvino")


def test_fp32_backend_is_exact_vs_plain_fp32(net, probe):
    fid = fidelity.check(net, probe)
    assert fid["exact"] and fid["max_abs_px"] <= 1, fid
    assert fid["effective_precision"] == "fp32" and fid["network"] == net.key
    assert fid["psnr_db"] is None or fid["psnr_db"] > 60  # float rounding only


def test_static_path_equals_full_path(net, probe):
    """A static avatar's shortcut (face encoded once, shared by the batch) is the same maths
    as running the whole network on the repeated face."""
    static = net.decode_static(probe.mel, net.encode_face(probe.face))
    full = net.forward(probe.mel, np.repeat(probe.face, len(probe.mel), axis=0))
    assert static.shape == full.shape == (len(probe.mel), 3, 96, 96)
    assert np.abs(static - full).max() < 1e-4


def test_output_does_not_depend_on_batch_composition(net, probe):
    """Why parallel == sequential holds within a backend: a frame's face is the same in a
    batch of 4 or in a batch of 1 (chunks cut batches differently)."""
    whole = net.forward(probe.mel, probe.faces)
    parts = np.concatenate(
        [net.forward(probe.mel[i : i + 1], probe.faces[i : i + 1]) for i in range(4)]
    )
    assert np.abs(whole - parts).max() < 1e-4
    assert int(np.abs(backends.to_faces(whole).astype(int) - backends.to_faces(parts)).max()) <= 1


def test_networks_leave_the_callers_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backends.build(model, "cpu", "torch", "bf16", threads=1, fold_batchnorm=False)
    backends.build(model, "cpu", "openvino", "fp32", threads=1)
    after = model.state_dict()
    assert all(
        after[k].dtype == before[k].dtype and torch.equal(before[k], after[k]) for k in before
    )


@pytest.mark.slow
def test_torch_bf16_is_labelled_inexact_with_fidelity_measured(model):
    small = fidelity.reference(model, n=1)  # bf16 is emulated (very slow) without AMX
    net = backends.build(model, "cpu", "torch", "bf16", threads=2)
    fid = fidelity.check(net, small)
    assert net.precision == net.effective_precision == "bf16"
    assert fid["exact"] is False and fid["max_abs_px"] > 1
    assert isinstance(fid["psnr_db"], float) and 20 < fid["psnr_db"] < 60
    assert fid["passes_psnr"] == (fid["psnr_db"] >= fidelity.MIN_PSNR_DB)


@pytest.mark.slow
def test_openvino_bf16_runs_the_decoder_only_and_clears_40_db(model):
    """OpenVINO's bf16 keeps the face and audio encoders in fp32 (their rounding cost the
    whole network in bf16 its 40 dB: 39.3 dB on seeded weights) and runs the decoder in bf16."""
    net = backends.build(model, "cpu", "openvino", "bf16", threads=2)
    assert net.info()["encoders_precision"] == "fp32"
    assert net.effective_precision == ("bf16" if backends.has_bf16_hardware() else "fp32")
    fid = fidelity.check(net, fidelity.reference(model, n=8))
    # (on a CPU without bf16 hardware it computes f32: exact, or identical = None)
    assert fid["passes_psnr"] and (fid["psnr_db"] or 99) >= fidelity.MIN_PSNR_DB, fid


def test_torch_bf16_casts_the_whole_network(model):
    """Decoder-only bf16 in torch makes frames depend on the batch and thread count (its fp32
    encoders' float steps, rounded to bf16): torch keeps the whole network in bf16."""
    m = backends.build(model, "cpu", "torch", "bf16", threads=2).model
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}


@pytest.mark.slow
@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_bf16_frames_do_not_depend_on_batch_or_threads(model, backend):
    """parallel == sequential within bf16: one batch at 2 threads vs smaller batches at 1
    thread, on the static and the whole-network paths, within one level."""
    n = 5 if backends.has_bf16_hardware() else 2  # torch emulates bf16 very slowly without it
    mel, faces, face = fidelity.probe_inputs(n)
    parts = [(0, 1), (1, n)] if n == 2 else [(0, 1), (1, 3), (3, n)]
    nets = {t: backends.build(model, "cpu", backend, "bf16", threads=t) for t in (1, 2)}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        one = nets[2]
        whole_static = backends.to_faces(one.decode_static(mel, one.encode_face(face)))
        whole_full = backends.to_faces(one.forward(mel, faces))
        torch.set_num_threads(1)
        few = nets[1]
        feats = few.encode_face(face)
        static = np.concatenate([backends.to_faces(few.decode_static(mel[a:b], feats)) for a, b in parts])  # fmt: skip
        full = np.concatenate([backends.to_faces(few.forward(mel[a:b], faces[a:b])) for a, b in parts])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert int(np.abs(static.astype(int) - whole_static).max()) <= 1
    assert int(np.abs(full.astype(int) - whole_full).max()) <= 1


def test_openvino_bf16_hint_reports_what_really_runs(model, probe):
    """OpenVINO takes bf16 only where the CPU has it; elsewhere it runs f32 and says so."""
    net = backends.build(model, "cpu", "openvino", "bf16", threads=2)
    assert net.precision == "bf16"
    if backends.has_bf16_hardware():
        assert net.effective_precision == "bf16"
    else:
        assert net.effective_precision == "fp32"
        assert fidelity.check(net, probe)["exact"]


def test_bf16_hardware_comes_from_the_cpu_flags(monkeypatch):
    assert not backends.has_bf16_hardware(frozenset({"avx2", "fma", "avx512f"}))
    assert backends.has_bf16_hardware(frozenset({"avx2", "amx_bf16"}))
    assert backends.has_bf16_hardware(frozenset({"avx512_bf16"}))
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2"}))
    assert not backends.has_bf16_hardware()


def test_to_faces_truncates_like_the_reference():
    out = np.array([0.0, 0.999 / 255, 1 / 255, 0.5, 1.0], np.float32).reshape(1, 1, 1, 5)
    faces = backends.to_faces(np.repeat(out, 3, axis=1))
    assert faces.dtype == np.uint8 and faces.shape == (1, 1, 5, 3)
    assert faces[0, 0, :, 0].tolist() == [0, 0, 1, 127, 255]


@pytest.mark.parametrize(
    ("backend", "precision", "device", "words"),
    [
        ("tensorrt", "fp32", "cpu", "unknown backend"),
        ("torch", "fp16", "cpu", "unknown precision"),
        ("openvino", "fp32", "cuda", "CPU only"),
    ],
)
def test_bad_choices_fail_with_one_clear_line(backend, precision, device, words):
    with pytest.raises(InputError) as e:
        backends.check_choice(backend, precision, device)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_openvino_graph_refuses_layers_it_cannot_translate(model):
    from lipbench.backends.ov_graph import _block

    with pytest.raises(ValueError, match="no OpenVINO translation"):
        _block(None, torch.nn.Tanh())
    block = copy.deepcopy(model.audio_encoder[0])
    block.conv_block[1] = torch.nn.GroupNorm(1, block.conv_block[1].num_features)
    with pytest.raises(ValueError, match="cannot fold"):
        _block(None, block)


def test_openvino_graph_folds_batchnorm_like_the_torch_fold(model):
    """The graph folds each BatchNorm from the tensors (no copy of the model): the same
    bits as ``model.fold_batchnorm``, so a cached fidelity stays true."""
    from lipbench.backends.ov_graph import _folded
    from lipbench.model import Conv2d, Conv2dTranspose, fold_batchnorm

    pairs = [
        (a, b)
        for a, b in zip(model.modules(), fold_batchnorm(model).modules(), strict=True)
        if isinstance(a, Conv2d | Conv2dTranspose)
    ]
    assert len(pairs) > 40
    for a, b in pairs:
        w, bias = _folded(a.conv_block[0], a.conv_block[1])
        assert torch.equal(w, b.conv_block[0].weight) and torch.equal(bias, b.conv_block[0].bias)


def test_measure_gives_a_row_per_backend_precision_and_threads(model):
    rows = measure(model, precisions=("fp32",), threads=(1,), batch=2, seconds=0.01, probe_frames=1)
    assert [(r["backend"], r["precision"], r["threads"]) for r in rows] == [
        ("torch", "fp32", 1),
        ("openvino", "fp32", 1),
    ]
    for r in rows:
        assert r["fps"] > 0 and r["exact"] and r["max_abs_px"] <= 1 and r["path"] == "full"
    assert torch.get_num_threads() == 2  # restored


def test_choices_leave_out_what_cannot_run_well_here_and_say_why(monkeypatch):
    from lipbench.backends import measure as measure_mod

    monkeypatch.setattr(measure_mod, "has_bf16_hardware", lambda: False)
    measured, skipped = measure_mod.choices("cpu")
    assert measured == [("torch", "fp32"), ("openvino", "fp32")]
    assert {(b, p) for b, p, _ in skipped} == {("torch", "bf16"), ("openvino", "bf16")}
    assert all("no bf16 hardware" in why for *_, why in skipped)
    monkeypatch.setattr(measure_mod, "has_bf16_hardware", lambda: True)
    assert len(measure_mod.choices("cpu")[0]) == 4
    measured, skipped = measure_mod.choices("cuda")
    assert measured == [("torch", "fp32"), ("torch", "bf16")]
    assert all(b == "openvino" and "CPU only" in why for b, _, why in skipped)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_is_exact_and_auto_keeps_torch(model, tmp_path, monkeypatch):
    from lipbench import tuning
    from lipbench.render import RenderOptions

    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path))
    m = model.to("cuda")
    try:
        probe = fidelity.reference(m, "cuda", n=4)
        fid = fidelity.check(backends.build(m, "cuda", "torch", "fp32"), probe)
        assert fid["max_abs_px"] <= 1, fid
        opts = RenderOptions(batch_size="auto", backend="auto", precision="auto")
        entry, _ = tuning.calibrate(m, "cuda", 1, opts)
        assert (entry["backend"], entry["precision"]) == ("torch", "fp32")
    finally:
        model.to("cpu")


def test_gpu_check_fails_clearly_without_a_gpu(monkeypatch, capsys, tmp_path):
    from lipbench.backends import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = gpu_check.main(["--docs", str(tmp_path / "docs"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc != 0 and "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "docs").exists()


def test_gpu_check_table_names_the_gpu_and_each_step(tmp_path):
    import sys

    from lipbench.backends import gpu_check

    ok = gpu_check.Step("fast", [sys.executable, "-c", "print('table row')"], 30)
    bad = gpu_check.Step("broken", [sys.executable, "-c", "raise SystemExit(3)"], 30)
    slow = gpu_check.Step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1)
    outcomes = gpu_check.run_steps([ok, bad, slow], budget_s=60)
    assert [o.status for o in outcomes] == ["passed", "failed (rc 3)", "timed out"]
    facts = {"gpu": "cuda:0 NVIDIA H100", "gpu_name": "NVIDIA H100", "torch": "x", "cuda": "12"}
    md = gpu_check.report(facts, outcomes, "2026-11-28 02:00 UTC")
    assert md.startswith("# GPU check — NVIDIA H100, 2026-11-28 02:00 UTC")
    assert "| fast | passed |" in md and "| broken | failed (rc 3) |" in md and "table row" in md
