"""OpenVINO networks saved per checkpoint, so a warm start never imports torch (issue 27).

The first run on a checkpoint reads it with torch, builds the Renderer (calibration and
fidelity measured as always) and, when the chosen network is OpenVINO, ``remember`` saves:

- the three graphs as IR (``openvino.save_model(..., compress_to_fp16=False)``: fp32
  weights, bit for bit) in ``<cache_root()>/ov-networks/<digest>/``, the digest naming the
  weights (checkpoint sha256 or the seeded weights' id), ``backends.VERSION``, OpenVINO's
  version and the graph-building code (``$LIPBENCH_OV_CACHE`` puts them elsewhere);
- a record per request (CPU model and cores, device, threads, the requested backend /
  precision / batch / pinning / torch layout, torch's version): the resolved backend,
  precision and batch size, the measured fidelity vs plain fp32, the calibration entry,
  and one generated face as a self-check.

A later run computes the key without torch (``weights.weights_identity``) and calls
``load_cached``: it compiles the IR files (OpenVINO's own CACHE_DIR then imports the
compiled blob), checks the network reproduces the recorded face (≤ 1 level), and returns
it with its record. Anything missing, stale or unreadable returns None: the caller takes
the torch path, which writes the entry again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, file_lock, write_text_atomic
from ..cachedir import cache_root
from ..sysinfo import machine
from . import VERSION, to_faces
from .openvino_cpu import GRAPHS, OpenVINONetwork

log = logging.getLogger("lipbench.backends.ov_cache")

FORMAT = 1  # bump when this module's layout or records change
_META = "meta.json"
_CHECK_SEED = 27


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "none"


def _code_hash() -> str:
    """The code that turns weights into graphs (ov_graph.py, model.py), read as files."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for p in (here / "ov_graph.py", here.parent / "model.py"):
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """``$LIPBENCH_OV_CACHE``, else ``<cache_root()>/ov-networks`` (~140 MB per checkpoint)."""
    return Path(os.environ.get("LIPBENCH_OV_CACHE") or cache_root() / "ov-networks")


@dataclasses.dataclass(frozen=True)
class NetworkKey:
    """Everything that selects a saved network and its record. ``backend``, ``precision``
    and ``batch_size`` are as *requested* (``auto`` included): the record says what they
    resolved to."""

    weights: str  # "sha256:<hex>" | gencache.seeded_weights_id(...)
    device: str
    threads: int
    backend: str
    precision: str
    batch_size: str
    pin_threads: bool = False
    layout: str = "cl+fold"  # torch's layout options: they weigh in an ``auto`` calibration

    @classmethod
    def for_request(cls, weights: str, options: Any, threads: int, device: str = "cpu") -> NetworkKey:  # fmt: skip
        """From a ``render.RenderOptions`` (or anything with the same fields)."""
        o = options
        layout = f"{'cl' if o.channels_last else 'nchw'}{'+fold' if o.fold_batchnorm else ''}"
        return cls(weights, str(device), int(threads), str(o.backend), str(o.precision),
                   str(o.batch_size), bool(o.pin_threads), layout)  # fmt: skip

    def ir(self) -> dict[str, Any]:
        """What the saved graphs depend on (not threads or precision: those are compile
        options, and OpenVINO's CACHE_DIR keys its compiled blobs by them)."""
        return {"format": FORMAT, "weights": self.weights, "backends": VERSION,
                "openvino": _version("openvino"), "code": _code_hash()}  # fmt: skip

    def request(self) -> str:
        m = machine()
        return (f"{m['cpu']}|{m['cores']} cores|{self.device}|{self.threads} threads|"
                f"{self.backend}/{self.precision}/{self.batch_size}|pin {self.pin_threads}|"
                f"{self.layout}|torch {_version('torch')}")  # fmt: skip

    def folder(self) -> Path:
        digest = hashlib.sha256(json.dumps(self.ir(), sort_keys=True).encode()).hexdigest()
        return cache_dir() / digest[:24]


@dataclasses.dataclass
class CachedNetwork:
    """A network loaded from the cache and what the first run measured about it."""

    network: OpenVINONetwork
    backend: str  # always "openvino"
    precision: str
    batch_size: int
    fidelity: dict[str, Any]  # backends.fidelity.check's record, vs plain fp32
    calibration: dict[str, Any] | None  # tuning.calibrate's entry, None if not ``auto``
    load_s: float
    folder: Path


def check_inputs() -> tuple[np.ndarray, np.ndarray]:
    """One mel window and one face, seeded: the self-check's input (no torch, no files)."""
    rng = np.random.default_rng(_CHECK_SEED)
    mel = np.clip(rng.normal(-1.0, 1.5, (1, 1, 80, 16)), -4, 4).astype(np.float32)
    face = rng.uniform(0, 1, (1, 6, 96, 96)).astype(np.float32)
    face[:, :3, 48:] = 0  # lower half masked, as at inference
    return mel, face


def self_check(network: Any) -> np.ndarray:
    """The network's uint8 face on ``check_inputs`` (static path: face encoder + decoder)."""
    mel, face = check_inputs()
    return to_faces(network.decode_static(mel, network.encode_face(face)))[0]


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _locked(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Serialise read-modify-write of one folder's records between replicas."""
    with contextlib.suppress(OSError):  # a read-only cache: the block runs unlocked
        folder.mkdir(parents=True, exist_ok=True)
    return file_lock(folder.parent / f".{folder.name}.lock")


def load_cached(key: NetworkKey, *, verify: bool = True) -> CachedNetwork | None:
    """The saved OpenVINO network for ``key`` with its record, or None (nothing saved for
    this request, another backend was chosen, files missing or unreadable, OpenVINO not
    installed, or the self-check failed). Never imports torch."""
    t0 = time.perf_counter()
    folder = key.folder()
    meta = _read_meta(folder)
    if meta is None or meta.get("key") != key.ir():
        return None
    rec = meta.get("records", {}).get(key.request())
    if not isinstance(rec, dict) or rec.get("backend") != "openvino":
        return None
    paths = {g: folder / f"{g}.xml" for g in GRAPHS}
    sizes = meta.get("bin_bytes", {})
    for g, p in paths.items():
        b = p.with_suffix(".bin")
        if not p.is_file() or not b.is_file() or b.stat().st_size != sizes.get(g):
            log.warning("OpenVINO network cache %s is incomplete; rebuilding from the checkpoint", folder)  # fmt: skip
            return None
    try:
        net = OpenVINONetwork(None, rec["precision"], key.threads, pin_threads=key.pin_threads,
                              graphs=paths)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any failure means "take the torch path"
        log.warning("could not load the cached OpenVINO network %s (%s: %s); rebuilding",
                    folder, type(exc).__name__, str(exc)[:160])  # fmt: skip
        return None
    if net.effective_precision != rec.get("effective_precision"):
        return None  # the engine would now run another precision: measure again
    if verify:
        want = np.load(folder / f"check-{rec['check']}.npy")
        got = self_check(net)
        diff = int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max())
        if diff > 1:
            log.warning("cached OpenVINO network %s differs from its record by %d levels; rebuilding", folder, diff)  # fmt: skip
            return None
    return CachedNetwork(net, "openvino", rec["precision"], int(rec["batch_size"]),
                         rec["fidelity"], rec.get("calibration"),
                         time.perf_counter() - t0, folder)  # fmt: skip


def _save_ir(folder: Path, model: Any) -> dict[str, int]:
    """Write the graphs of ``model`` (torch) as fp32 IR into ``folder``, atomically as a
    whole (a temporary sibling renamed into place). Returns each .bin's size."""
    import openvino as ov

    from .ov_graph import build_graphs

    if all((folder / f"{g}{ext}").is_file() for g in GRAPHS for ext in (".xml", ".bin")):
        return {g: (folder / f"{g}.bin").stat().st_size for g in GRAPHS}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name, graph in build_graphs(model).items():
            ov.save_model(graph, tmp / f"{name}.xml", compress_to_fp16=False)  # fp32 stays fp32
        for g in GRAPHS:
            for ext in (".xml", ".bin"):
                os.replace(tmp / f"{g}{ext}", folder / f"{g}{ext}")  # same filesystem
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {g: (folder / f"{g}.bin").stat().st_size for g in GRAPHS}


def store(
    key: NetworkKey,
    network: Any,
    model: Any,
    *,
    batch_size: int,
    fidelity: dict[str, Any],
    calibration: dict[str, Any] | None,
    weights: dict[str, Any] | None = None,
) -> Path | None:
    """Save ``network`` (built from ``model``, the fp32 torch generator) for ``key``. Only
    an OpenVINO network is saved; a torch choice is recorded as such (so a lookup returns
    None at once). Returns the folder, or None when nothing could be written."""
    folder = key.folder()
    try:
        with _locked(folder):
            meta = _read_meta(folder)
            if meta is None or meta.get("key") != key.ir():
                meta = {"key": key.ir(), "records": {}}
            rec: dict[str, Any] = {"backend": network.backend, "precision": network.precision,
                                   "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
            if network.backend == "openvino":
                meta["bin_bytes"] = _save_ir(folder, model)
                check = hashlib.sha256(key.request().encode()).hexdigest()[:12]
                with atomic_path(folder / f"check-{check}.npy") as tmp, open(tmp, "wb") as fh:
                    np.save(fh, self_check(network))
                rec |= {"effective_precision": network.effective_precision,
                        "batch_size": int(batch_size), "fidelity": fidelity,
                        "calibration": calibration, "check": check}  # fmt: skip
            meta["weights"] = weights
            meta["records"][key.request()] = rec
            write_text_atomic(folder / _META, json.dumps(meta, indent=1, default=str) + "\n")
    except OSError as exc:  # a read-only or full cache must not stop a run
        log.warning("could not save the OpenVINO network to %s: %s", folder, exc)
        return None
    return folder


def remember(key: NetworkKey, renderer: Any, model: Any, weights: dict[str, Any] | None = None) -> Path | None:  # fmt: skip
    """``store`` for a built ``render.Renderer`` (its network, resolved batch size, fidelity
    and calibration) whose network came from ``model``."""
    return store(key, renderer.network, model, batch_size=int(renderer.options.batch_size),
                 fidelity=renderer.fidelity, calibration=renderer.calibration,
                 weights=weights)  # fmt: skip
