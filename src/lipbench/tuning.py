"""Backend, precision and batch size chosen by a short calibration, cached per machine.

The cache (``~/.cache/lipbench/calibration.json`` unless $LIPBENCH_CACHE is set) holds three
kinds of entries, so a second run — or a second machine of the same kind — pays nothing:

- speed: frames/s of each network (backend × precision × layout) at each batch size, keyed
  by CPU model, core count, library versions, device and thread count;
- fidelity: each network's generated faces vs plain fp32 on the loaded checkpoint, keyed by
  the checkpoint's fingerprint (exactness depends on the weights);
- choice: what ``calibrate`` picked for one request on one checkpoint.

Eligibility for ``auto``: an fp32 network must be exact on the loaded checkpoint (max ≤ 1
level of 255 vs plain fp32 on real batches); bf16 is a candidate only on a CPU with bf16
hardware (AMX or AVX-512-BF16), only if it really computes in bf16, and only with PSNR ≥
40 dB on the generated faces. Among the eligible, the fastest wins. A backend or precision
named explicitly is used as named; its fidelity is still measured and recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import backends
from .atomic import write_text_atomic
from .cachedir import cache_root
from .sysinfo import machine

log = logging.getLogger("lipbench.tuning")

BATCH_CANDIDATES = (8, 16, 32)
CACHE_VERSION = 1  # the batch-only entries of calibrate_batch
CHOICE_VERSION = 2  # speed / fidelity / choice entries of calibrate
REFERENCE_KEY = "torch|fp32|NCHW"  # plain fp32: the fidelity reference itself


def cache_path() -> Path:
    return cache_root() / "calibration.json"


def _key(device: str, threads: int) -> str:
    m = machine()
    return f"v{CACHE_VERSION}|{m['cpu']}|{m['cores']}|torch {torch.__version__}|{device}|{threads} threads"


def _engines() -> str:
    from importlib import metadata

    try:
        ov = metadata.version("openvino")
    except metadata.PackageNotFoundError:
        ov = "none"
    return f"backends v{backends.VERSION}|torch {torch.__version__}|openvino {ov}"


def _speed_key(device: str, threads: int) -> str:
    m = machine()
    return (
        f"v{CHOICE_VERSION}|speed|{m['cpu']}|{m['cores']}|{_engines()}|{device}|{threads} threads"
    )


def _fidelity_key(device: str, fp: str) -> str:
    return f"v{CHOICE_VERSION}|fidelity|{machine()['cpu']}|{_engines()}|{device}|{fp}"


def _load() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise read-modify-write of the cache between replicas calibrating at once."""
    path = cache_path().with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")  # noqa: SIM115 - held for the block
    except OSError:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _update(key: str, entry: Any, merge: bool = False) -> None:
    """Write one entry (merged into an existing dict entry with ``merge``)."""
    with _locked():
        cache = _load()
        if merge and isinstance(cache.get(key), dict):
            entry = {**cache[key], **entry}
        cache[key] = entry
        try:
            write_text_atomic(cache_path(), json.dumps(cache, indent=2) + "\n")
        except OSError as exc:  # a read-only home must not stop a run
            log.warning("could not write the calibration cache %s: %s", cache_path(), exc)


# --------------------------------------------------------------------------- batch only


def decode_fps(
    model: torch.nn.Module,
    batch: int,
    device: str,
    seconds: float = 1.5,
    channels_last: bool = True,
) -> float:
    """Frames/s of the per-frame work for a static avatar (audio encoder + decoder)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mel = torch.randn(batch, 1, 80, 16, device=device).contiguous(memory_format=fmt)
    face = torch.rand(1, 6, 96, 96, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode():
        feats = model.encode_face(face)
        expanded = [f.expand(batch, -1, -1, -1) for f in feats]
        model.decode(model.encode_audio(mel), expanded)  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            model.decode(model.encode_audio(mel), expanded)
            n += batch
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0)


def calibrate_batch(
    model: torch.nn.Module, device: str, threads: int, candidates=BATCH_CANDIDATES
) -> dict[str, Any]:
    """Measure each batch size of a torch model at ``threads`` threads; cache the best."""
    key = _key(device, threads)
    cache = _load()
    if key in cache:
        return cache[key]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        table = {str(b): round(decode_fps(model, b, device), 3) for b in candidates}
    finally:
        torch.set_num_threads(before)
    best = int(max(table, key=table.get))
    entry = {
        "batch_size": best,
        "threads": threads,
        "fps_by_batch": table,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _update(key, entry)
    log.info("calibrated batch size %d for %d thread(s) on %s: %s", best, threads, device, table)
    return entry


def cached_batch(device: str, threads: int) -> int | None:
    entry = _load().get(_key(device, threads))
    return int(entry["batch_size"]) if entry else None


# --------------------------------------------------------------------------- backends


def fingerprint(model: torch.nn.Module) -> str:
    """A cheap identity of the weights: every tensor's name, shape and a strided sample of
    its values (no sums: their rounding would depend on the thread count). Different
    checkpoints (gan, nogan, another seed) differ in every sample."""
    h = hashlib.blake2b(digest_size=12)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            flat = t.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
            h.update(f"{name}{tuple(t.shape)}".encode())
            h.update(sample.tobytes())
    return h.hexdigest()


def candidates(
    device: str, backend: str, precision: str, flags: frozenset[str] | None = None
) -> list[tuple[str, str]]:
    """(backend, precision) pairs to consider. ``auto`` backend: every installed backend
    that runs on ``device`` (a GPU keeps torch). ``auto`` precision: fp32, plus bf16 only on
    a CPU with bf16 hardware."""
    on_cpu = device.startswith("cpu")
    if backend == "auto":
        names = [b for b in backends.available() if on_cpu or b == "torch"]
    else:
        names = [backend]
    if precision == "auto":
        precs = ["fp32"] + (["bf16"] if on_cpu and backends.has_bf16_hardware(flags) else [])
    else:
        precs = [precision]
    return [(b, p) for b in names for p in precs]


def _reference_fidelity() -> dict[str, Any]:
    from .backends.fidelity import REFERENCE

    return {"max_abs_px": 0, "mean_abs_px": 0.0, "psnr_db": None, "exact": True,
            "passes_psnr": True, "frames": 0, "vs": REFERENCE, "network": REFERENCE_KEY,
            "effective_precision": "fp32", "reference": True}  # fmt: skip


class _Probe:
    """Plain fp32 outputs on the probe, computed on first need only."""

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        self.model, self.device, self._probe = model, device, None

    def get(self) -> Any:
        if self._probe is None:
            from .backends.fidelity import reference

            self._probe = reference(self.model, self.device)
        return self._probe


def fidelity(
    model: torch.nn.Module,
    network: backends.Network,
    device: str,
    fp: str | None = None,
    probe: _Probe | None = None,
) -> dict[str, Any]:
    """``network`` vs plain fp32 on ``model``'s weights, measured once per checkpoint,
    network and machine (cached)."""
    if network.key == REFERENCE_KEY:
        return _reference_fidelity()
    fp = fp or fingerprint(model)
    key = _fidelity_key(device, fp)
    hit = _load().get(key, {}).get(network.key)
    if hit is not None:
        return hit
    from .backends.fidelity import check

    result = check(network, (probe or _Probe(model, device)).get())
    _update(key, {network.key: result}, merge=True)
    log.info("fidelity of %s vs plain fp32: %s", network.key, result)
    return result


def network_fps(network: backends.Network, batch: int, seconds: float = 1.5) -> float:
    """Frames/s of a static avatar's per-frame work (the default avatar is an image)."""
    from .backends.measure import network_fps as fps

    return fps(network, batch, seconds, path="static")


def _eligible(fid: dict[str, Any], precision: str, options: Any) -> bool:
    """May this measured network be chosen for ``options``? Explicit names are honoured;
    ``auto`` backend needs exactness for fp32; bf16 needs PSNR ≥ 40 dB, and for ``auto``
    precision also real bf16 arithmetic (a bf16 hint that the engine ran in fp32 is the fp32
    path again, not a faster option)."""
    if precision == "fp32":
        return bool(fid["exact"]) or options.backend != "auto"
    if options.precision == "auto":
        return bool(fid["passes_psnr"]) and fid["effective_precision"] == "bf16"
    return bool(fid["passes_psnr"]) or options.backend != "auto"


def calibrate(
    model: torch.nn.Module, device: str, threads: int, options: Any
) -> tuple[dict[str, Any], backends.Network | None]:
    """Pick backend, precision and batch size for ``options`` (a render.RenderOptions whose
    backend / precision / batch_size may be ``auto``) on this machine at ``threads``.

    Returns the choice (recorded as the replica's ``calibration``) and the chosen network if
    it was built here (None when everything came from the cache)."""
    batches = BATCH_CANDIDATES if options.batch_size == "auto" else (int(options.batch_size),)
    pairs = candidates(device, options.backend, options.precision)
    fp = fingerprint(model)
    want = f"{options.backend}/{options.precision}/{options.batch_size}"
    layout = (
        f"{'cl' if options.channels_last else 'nchw'}{'+fold' if options.fold_batchnorm else ''}"
    )
    choice_key = f"{_speed_key(device, threads)}|choice|{fp}|{want}|{layout}"
    hit = _load().get(choice_key)
    if hit is not None:
        return hit, None

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    probe = _Probe(model, device)
    built: dict[str, backends.Network] = {}
    rows: dict[str, dict[str, Any]] = {}
    speed_key = _speed_key(device, threads)
    try:
        for backend, precision in pairs:
            net = backends.build(
                model, device, backend, precision, threads=threads,
                channels_last=options.channels_last, fold_batchnorm=options.fold_batchnorm,
            )  # fmt: skip
            key = net.key
            fid = fidelity(model, net, device, fp, probe)
            ok = _eligible(fid, precision, options)
            table = dict(_load().get(speed_key, {}).get(key, {}))
            if ok and len(pairs) * len(batches) > 1:
                for b in batches:
                    if str(b) not in table:
                        table[str(b)] = round(network_fps(net, b), 3)
                _update(speed_key, {key: table}, merge=True)
            rows[key] = {"backend": backend, "precision": precision, "eligible": ok,
                         "fps_by_batch": {str(b): table.get(str(b)) for b in batches},
                         "fidelity": fid}  # fmt: skip
            built[key] = net
            if not ok:
                log.warning("%s is not eligible on this checkpoint: %s", key, fid)
    finally:
        torch.set_num_threads(before)
    eligible = [k for k in built if rows[k]["eligible"]]
    if not eligible:  # e.g. bf16 under 40 dB everywhere: the first candidate, said loudly
        log.warning("no candidate among %s passed its fidelity check; using %s", list(rows),
                    next(iter(rows)))  # fmt: skip
        eligible = [next(iter(rows))]

    def best_fps(k: str) -> float:
        return (
            max((v or 0.0) for v in rows[k]["fps_by_batch"].values())
            if rows[k]["fps_by_batch"]
            else 0.0
        )

    chosen = max(eligible, key=best_fps)
    for k in set(built) - {chosen}:
        del built[k]  # free the other candidates' weights now
    row = rows[chosen]
    fps = {b: v for b, v in row["fps_by_batch"].items() if v is not None}
    batch = int(max(fps, key=fps.get)) if fps else batches[0]
    entry = {
        "backend": row["backend"],
        "precision": row["precision"],
        "effective_precision": row["fidelity"]["effective_precision"],
        "batch_size": batch,
        "threads": threads,
        "fidelity": row["fidelity"],
        "fps_by_batch": fps,
        "options": rows,
        "bf16_hardware": backends.has_bf16_hardware(),
        "requested": want,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _update(choice_key, entry)
    log.info("calibrated %s: %s %s, batch %d (%d thread(s))", want, entry["backend"],
             entry["precision"], batch, threads)  # fmt: skip
    return entry, built[chosen]
