"""A saved OpenVINO network loads and runs in a fresh interpreter without importing torch,
gives the frames the torch-built network gave, and is found only for its own key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lipbench.backends import ov_cache
from lipbench.weights import sha256_file, weights_identity

pytestmark = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("openvino") is None, reason="needs openvino"
)

OPTS = dict(backend="openvino", precision="fp32", batch_size=16, pin_threads=False,
            channels_last=True, fold_batchnorm=True)  # fmt: skip

# run in a child: the key from the weights' identity, then store (torch) or load (no torch)
CHILD = """
import json, sys, types
import numpy as np
from lipbench.backends import ov_cache
from lipbench.weights import weights_identity
opts = types.SimpleNamespace(**json.loads(sys.argv[2]))
info, wid = weights_identity("gan", sys.argv[3], seed=5)
key = ov_cache.NetworkKey.for_request(wid, opts, 1)
mel, face = ov_cache.check_inputs()
mel = np.repeat(mel, 3, 0) + np.arange(3, dtype=np.float32)[:, None, None, None]
if sys.argv[1] == "store":
    import torch
    from lipbench import backends
    from lipbench.weights import load_generator
    torch.set_num_threads(1)
    model, _ = load_generator("gan", sys.argv[3], seed=5)
    net = backends.build(model, "cpu", "openvino", "fp32", threads=1)
    fid = {"exact": True, "max_abs_px": 1, "psnr_db": 80.0}
    assert ov_cache.store(key, net, model, batch_size=16, fidelity=fid, calibration=None,
                          weights=info.to_dict()) is not None
else:
    cached = ov_cache.load_cached(key)
    assert cached is not None, "nothing cached"
    net = cached.network
    assert cached.fidelity["psnr_db"] == 80.0 and cached.batch_size == 16
out = net.decode_static(mel, net.encode_face(face))
np.save(sys.argv[4], out)
print(json.dumps({"torch": "torch" in sys.modules, "mods": sorted(m for m in sys.modules if m.startswith("torch"))[:5]}))
"""


def _env(cache: Path) -> dict[str, str]:
    """The child's environment: every lipbench cache under ``cache``."""
    env = {k: v for k, v in os.environ.items() if k != "LIPBENCH_OV_CACHE"}
    return {**env, "LIPBENCH_CACHE": str(cache)}


def _child(mode: str, cache: Path, weights: Path, out: Path) -> dict:
    env = _env(cache)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, json.dumps(OPTS), str(weights), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    tmp = tmp_path_factory.mktemp("ovcache")
    cache, weights = tmp / "cache", tmp / "weights"  # no checkpoint there: seeded weights
    first = _child("store", cache, weights, tmp / "built.npy")
    assert first["torch"]
    return cache, weights, np.load(tmp / "built.npy")


@pytest.mark.process
def test_a_cached_network_runs_in_a_fresh_interpreter_without_torch(saved, tmp_path):
    cache, weights, built = saved
    got = _child("load", cache, weights, tmp_path / "cached.npy")
    assert got["torch"] is False, got["mods"]
    out = np.load(tmp_path / "cached.npy")
    # the IR holds the fp32 weights bit for bit: the same frames as the network torch built
    diff = np.abs(ov_cache.to_faces(out).astype(int) - ov_cache.to_faces(built).astype(int))
    assert diff.max() <= 1


def _key(cache: Path, weights: Path, monkeypatch, **over) -> ov_cache.NetworkKey:
    monkeypatch.setenv("LIPBENCH_CACHE", str(cache))
    monkeypatch.delenv("LIPBENCH_OV_CACHE", raising=False)
    wid = weights_identity("gan", weights, seed=over.pop("seed", 5))[1]
    return ov_cache.NetworkKey.for_request(wid, types.SimpleNamespace(**{**OPTS, **over}), over.pop("threads", 1))  # fmt: skip


def test_only_its_own_key_finds_it(saved, monkeypatch):
    cache, weights, _ = saved
    assert ov_cache.load_cached(_key(cache, weights, monkeypatch), verify=False) is not None
    for over in ({"seed": 6}, {"precision": "bf16"}, {"batch_size": "auto"}, {"backend": "auto"}, {"pin_threads": True}):  # fmt: skip
        assert ov_cache.load_cached(_key(cache, weights, monkeypatch, **over)) is None, over
    key = _key(cache, weights, monkeypatch)
    assert ov_cache.load_cached(ov_cache.NetworkKey(**{**key.__dict__, "threads": 2})) is None


def test_a_damaged_cache_is_ignored_not_used(saved, tmp_path, monkeypatch):
    cache, weights, _ = saved
    copy = tmp_path / "cache"
    import shutil

    shutil.copytree(cache / "ov-networks", copy / "ov-networks")
    key = _key(copy, weights, monkeypatch)
    binary = key.folder() / "decode.bin"
    binary.write_bytes(binary.read_bytes()[:-4])  # truncated
    assert ov_cache.load_cached(key) is None
    (key.folder() / "meta.json").write_text("{not json")
    assert ov_cache.load_cached(key) is None


def test_the_self_check_catches_a_network_that_drifted(saved, tmp_path, monkeypatch):
    cache, weights, _ = saved
    import shutil

    shutil.copytree(cache / "ov-networks", tmp_path / "c" / "ov-networks")
    key = _key(tmp_path / "c", weights, monkeypatch)
    check = next(key.folder().glob("check-*.npy"))
    np.save(check, 255 - np.load(check))
    assert ov_cache.load_cached(key, verify=False) is not None
    assert ov_cache.load_cached(key) is None


def test_a_torch_choice_is_recorded_and_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPBENCH_OV_CACHE", str(tmp_path / "elsewhere"))
    key = ov_cache.NetworkKey("sha256:" + "0" * 64, "cpu", 2, "auto", "fp32", "auto")
    net = types.SimpleNamespace(backend="torch", precision="fp32")
    folder = ov_cache.store(key, net, None, batch_size=16, fidelity={}, calibration=None)
    assert folder is not None and folder.parent == tmp_path / "elsewhere"  # $LIPBENCH_OV_CACHE
    assert ov_cache.load_cached(key) is None


def test_weights_identity_without_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPBENCH_CACHE", str(tmp_path / "cache"))
    info, wid = weights_identity("gan", tmp_path, seed=3)
    assert info.source == "seeded-random" and wid.startswith("seeded-random:seed=3:")
    assert weights_identity("gan", tmp_path, seed=4)[1] != wid
    ckpt = tmp_path / "wav2lip_gan.pth"
    ckpt.write_bytes(b"x" * 1000)
    info, wid = weights_identity("gan", tmp_path)
    assert info.source == "file" and wid == f"sha256:{info.sha256}" and info.trained
    assert json.loads((tmp_path / "cache" / "sha256.json").read_text())  # remembered
    ckpt.write_bytes(b"y" * 1001)  # replaced: another size and mtime → hashed again
    assert sha256_file(ckpt) != info.sha256
    code = "import sys, lipbench.weights, lipbench.gencache, lipbench.backends.ov_cache; print('torch' in sys.modules)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# the integration (chunk.load_renderer → Renderer(..., cached=...)): runs once it is in place
RUN = """
import sys, numpy as np
from lipbench.chunk import ReplicaSpec, load_renderer
from lipbench.face import detect_faces, load_avatar
from lipbench.render import JobInputs, RenderOptions
opts = RenderOptions(batch_size="auto", backend="auto", precision="fp32")
spec = ReplicaSpec(model="gan", threads=1, device="cpu", weights_dir=sys.argv[1],
                   weights_files={}, seed=7, render_options=opts)
loaded = load_renderer(spec)
av = load_avatar("default")
mel = np.random.default_rng(0).uniform(-4, 4, (80, 60)).astype(np.float32)
job = JobInputs(mel, 10, 25.0, av, detect_faces(av), meta={"key": "t"})
np.save(sys.argv[2], np.stack(list(loaded.renderer.render(job, 0, 10))))
print(loaded.renderer.network.backend, "torch" in sys.modules)
"""


def _integrated() -> bool:
    import inspect

    from lipbench.render import Renderer

    return "cached" in inspect.signature(Renderer.__init__).parameters


@pytest.mark.skipif(not _integrated(), reason="Renderer(..., cached=...) not integrated yet")
@pytest.mark.process
def test_a_warm_load_renderer_never_imports_torch(tmp_path):
    env = _env(tmp_path / "cache")
    outs = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "w"), str(tmp_path / f"{i}.npy")],
                              capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(proc.stdout.split())
    assert outs[0] == ["openvino", "True"]  # the first start reads the weights with torch
    assert outs[1] == ["openvino", "False"]  # the second loads the saved network only
    a, b = (np.load(tmp_path / f"{i}.npy").astype(int) for i in range(2))
    assert np.abs(a - b).max() <= 1
