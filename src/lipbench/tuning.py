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

First run (issue 27): measuring every candidate at every batch size cost 24 s before the
first frame of a fresh clone's demo (33 s on a loaded 2-core AMD EPYC). So ``calibrate``
by default checks the candidates in a fixed order of expected speed (OpenVINO before torch,
bf16 before fp32 where bf16 is a candidate) and takes the first one that is eligible, at
batch ``FIRST_RUN_BATCH``, without timing anything; the entry is marked ``provisional``.
``refine`` (to be called after the first video, or by any later run that can spare the
time) measures the rest as before and replaces the entry. Eligibility rules are the same
in both: the quick choice is never less exact, only possibly not the fastest.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import torch

from . import backends
from .backends.batch_calibration import (
    BATCH_CANDIDATES,
    CACHE_VERSION,
    cached_batch,
    calibrate_batch,
    decode_fps,
)
from .backends.calcache import _load, _update, cache_path
from .sysinfo import machine

log = logging.getLogger("lipbench.tuning")
__all__ = [
    "BATCH_CANDIDATES",
    "CACHE_VERSION",
    "cache_path",
    "cached_batch",
    "calibrate",
    "calibrate_batch",
    "decode_fps",
    "refine",
]

FIRST_RUN_BATCH = 16  # the quick calibration's batch (the best of the three on the hosts seen)
QUICK_FIRST_RUN = True  # calibrate(): quick provisional choice on a cold cache
# expected speed order (OpenVINO ≥ torch in every measurement so far: 2-core AMD EPYC,
# 2-core Xeon with AMX; bf16 ≫ fp32 where it is native): the quick choice's search order
_PRIOR = {("openvino", "bf16"): 0, ("openvino", "fp32"): 1, ("torch", "bf16"): 2, ("torch", "fp32"): 3}  # fmt: skip
CHOICE_VERSION = 2  # speed / fidelity / choice entries of calibrate
REFERENCE_KEY = "torch|fp32|NCHW"  # plain fp32: the fidelity reference itself


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


def _choice_key(model: torch.nn.Module, device: str, threads: int, options: Any) -> tuple[str, str, str]:  # fmt: skip
    """(the choice's cache key, the checkpoint fingerprint, the request as text)."""
    fp = fingerprint(model)
    want = f"{options.backend}/{options.precision}/{options.batch_size}"
    layout = (
        f"{'cl' if options.channels_last else 'nchw'}{'+fold' if options.fold_batchnorm else ''}"
    )
    return f"{_speed_key(device, threads)}|choice|{fp}|{want}|{layout}", fp, want


def _build(model: torch.nn.Module, device: str, backend: str, precision: str, threads: int, options: Any) -> backends.Network:  # fmt: skip
    return backends.build(
        model, device, backend, precision, threads=threads,
        channels_last=options.channels_last, fold_batchnorm=options.fold_batchnorm,
    )  # fmt: skip


def _entry(row: dict[str, Any], batch: int, threads: int, rows: dict[str, Any], want: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    fps = {b: v for b, v in row["fps_by_batch"].items() if v is not None}
    return {
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
        **extra,
    }


def calibrate(
    model: torch.nn.Module, device: str, threads: int, options: Any, quick: bool | None = None
) -> tuple[dict[str, Any], backends.Network | None]:
    """Pick backend, precision and batch size for ``options`` (a render.RenderOptions whose
    backend / precision / batch_size may be ``auto``) on this machine at ``threads``.

    ``quick`` (default ``QUICK_FIRST_RUN``): on a cold cache, the first eligible candidate
    in ``_PRIOR`` order at ``FIRST_RUN_BATCH``, marked ``provisional`` (see ``refine``);
    otherwise every candidate at every batch size, the fastest eligible one.

    Returns the choice (recorded as the replica's ``calibration``) and the chosen network if
    it was built here (None when everything came from the cache)."""
    choice_key, fp, want = _choice_key(model, device, threads, options)
    hit = _load().get(choice_key)
    if hit is not None:
        return hit, None
    quick = QUICK_FIRST_RUN if quick is None else quick
    batches = BATCH_CANDIDATES if options.batch_size == "auto" else (int(options.batch_size),)
    pairs = candidates(device, options.backend, options.precision)
    if quick and len(pairs) * len(batches) > 1:
        return _quick(model, device, threads, options, choice_key, fp, want)
    return _full(model, device, threads, options, choice_key, fp, want)


def _quick(model: torch.nn.Module, device: str, threads: int, options: Any, choice_key: str, fp: str, want: str) -> tuple[dict[str, Any], backends.Network]:  # fmt: skip
    """The first eligible candidate in expected-speed order; nothing timed."""
    t0 = time.perf_counter()
    pairs = sorted(candidates(device, options.backend, options.precision), key=lambda p: _PRIOR[p])
    batch = FIRST_RUN_BATCH if options.batch_size == "auto" else int(options.batch_size)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    probe = _Probe(model, device)
    rows: dict[str, dict[str, Any]] = {}
    first: tuple[str, backends.Network] | None = None
    chosen = None
    try:
        for backend, precision in pairs:
            net = _build(model, device, backend, precision, threads, options)
            fid = fidelity(model, net, device, fp, probe)
            ok = _eligible(fid, precision, options)
            rows[net.key] = {"backend": backend, "precision": precision, "eligible": ok,
                             "fps_by_batch": {}, "fidelity": fid}  # fmt: skip
            first = first or (net.key, net)
            if ok:
                chosen = (net.key, net)
                break
            log.warning("%s is not eligible on this checkpoint: %s", net.key, fid)
    finally:
        torch.set_num_threads(before)
    if chosen is None:  # as _full: the first candidate, said loudly
        log.warning("no candidate among %s passed its fidelity check; using %s", list(rows), first[0])  # type: ignore[index]  # fmt: skip
        chosen = first
    key, net = chosen  # type: ignore[misc]
    measured = set(rows)
    pending = [f"{b}|{p}" for b, p in pairs if not any(k.startswith(f"{b}|{p}") for k in measured)]
    entry = _entry(rows[key], batch, threads, rows, want, provisional=True,
                   pending={"candidates": pending, "batches": [b for b in BATCH_CANDIDATES if b != batch]
                            if options.batch_size == "auto" else []},
                   calibration_s=round(time.perf_counter() - t0, 3))  # fmt: skip
    _update(choice_key, entry)
    log.info("first-run calibration of %s: %s %s, batch %d in %.1f s (provisional: `refine` measures %s)",
             want, entry["backend"], entry["precision"], batch, entry["calibration_s"], entry["pending"])  # fmt: skip
    return entry, net


def _full(model: torch.nn.Module, device: str, threads: int, options: Any, choice_key: str, fp: str, want: str) -> tuple[dict[str, Any], backends.Network]:  # fmt: skip
    """Every candidate's fidelity, the eligible ones timed at each batch size."""
    t0 = time.perf_counter()
    batches = BATCH_CANDIDATES if options.batch_size == "auto" else (int(options.batch_size),)
    pairs = candidates(device, options.backend, options.precision)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    probe = _Probe(model, device)
    built: dict[str, backends.Network] = {}
    rows: dict[str, dict[str, Any]] = {}
    speed_key = _speed_key(device, threads)
    try:
        for backend, precision in pairs:
            net = _build(model, device, backend, precision, threads, options)
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
    fps = {b: v for b, v in rows[chosen]["fps_by_batch"].items() if v is not None}
    batch = int(max(fps, key=fps.get)) if fps else batches[0]
    entry = _entry(rows[chosen], batch, threads, rows, want, provisional=False,
                   calibration_s=round(time.perf_counter() - t0, 3))  # fmt: skip
    _update(choice_key, entry)
    log.info("calibrated %s: %s %s, batch %d (%d thread(s))", want, entry["backend"],
             entry["precision"], batch, threads)  # fmt: skip
    return entry, built[chosen]


def refine(
    model: torch.nn.Module,
    device: str,
    threads: int,
    options: Any,
    network_key: Any = None,  # backends.ov_cache.NetworkKey of this request, to re-save
) -> dict[str, Any] | None:
    """Finish a provisional (first-run) calibration: every candidate at every batch size,
    as ``calibrate(quick=False)``; the entry is replaced, so the next run uses the measured
    choice. With ``network_key`` the saved OpenVINO network's record is replaced too (or
    marked torch, when torch won). Returns the new entry, or None when nothing was pending
    (no entry, or one already measured in full)."""
    choice_key, fp, want = _choice_key(model, device, threads, options)
    hit = _load().get(choice_key)
    if not isinstance(hit, dict) or not hit.get("provisional"):
        return None
    entry, net = _full(model, device, threads, options, choice_key, fp, want)
    if network_key is not None:
        from .backends import ov_cache

        ov_cache.store(network_key, net, model, batch_size=int(entry["batch_size"]),
                       fidelity=entry["fidelity"], calibration=entry)  # fmt: skip
    return entry


def refine_replica(spec: Any) -> dict[str, Any] | None:
    """``refine`` for a ``chunk.ReplicaSpec`` (call it after the first video): returns None
    at once when this machine and thread count have no provisional choice; else loads the
    weights (torch), measures the rest and re-saves the OpenVINO network's record."""
    prefix = f"{_speed_key(spec.device, spec.threads)}|choice|"
    if not any(k.startswith(prefix) and isinstance(v, dict) and v.get("provisional") for k, v in _load().items()):  # fmt: skip
        return None
    from .backends import ov_cache
    from .weights import load_generator, weights_identity

    torch.set_num_threads(spec.threads)
    model, _ = load_generator(spec.model, spec.weights_dir, spec.weights_files, seed=spec.seed, device=spec.device)  # fmt: skip
    wid = weights_identity(spec.model, spec.weights_dir, spec.weights_files, seed=spec.seed)[1]
    key = ov_cache.NetworkKey.for_request(wid, spec.render_options, spec.threads, spec.device)
    return refine(model, spec.device, spec.threads, spec.render_options,
                  network_key=key if spec.device == "cpu" else None)  # fmt: skip
