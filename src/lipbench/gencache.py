"""The seeded random generator (untrained weights for a run without a checkpoint), and its
on-disk cache (issue 16: time to the first frame).

Building one (random init of ~36 M parameters + a float64 BatchNorm calibration pass) costs
~2.4 s on a 2-core host; reading its state dict back costs ~0.15 s. The file is keyed by
everything that determines the weights, and a hit is bit-identical to a fresh build.

Files live in ``$LIPBENCH_GENERATOR_CACHE``, else ``<cache_root()>/generators`` (~145 MB
per seed). An unreadable, corrupt or mismatching file is ignored with a WARNING, rebuilt
and overwritten; a cache that cannot be written never stops a run.

Importing this module does not import torch (``seeded_weights_id`` names seeded weights
for a run that loads a compiled network and never needs them: ``backends.ov_cache``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_path
from .cachedir import cache_root
from .sysinfo import machine

if TYPE_CHECKING:
    from torch import Tensor

    from .model import Wav2Lip

__all__ = [
    "CACHE_VERSION",
    "cache_file",
    "cache_key",
    "cached_seeded_generator",
    "seeded_random_generator",
    "seeded_weights_id",
]

log = logging.getLogger("lipbench.gencache")

# Bump when seeded_random_generator's procedure changes in a way the key below cannot see.
CACHE_VERSION = 1
_FORMAT = "lipbench seeded generator"


def seeded_random_generator(seed: int = 0, calib_batch: int = 4) -> Wav2Lip:
    """An untrained generator, bit-identical for the same seed in any process (on CPU).

    Default PyTorch init alone is degenerate here: activations shrink layer by layer, so
    the output barely depends on the audio (std ~1e-8). So the BatchNorm running
    statistics are calibrated on one seeded batch of random faces and mels — each layer
    then sees unit-variance inputs, as in a trained net, and the mouth region responds to
    the audio. Calibration runs in float64 and the stats are rounded to bfloat16
    precision, so thread count / summation order cannot change a single bit.

    The caller's global RNG state is left untouched.
    """
    import torch

    with torch.no_grad():
        return _seeded(seed, calib_batch)


def _seeded(seed: int, calib_batch: int) -> Wav2Lip:
    import torch

    from .model import Wav2Lip, batchnorm_layers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device("cpu"):
            model = Wav2Lip()
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    face = torch.rand(calib_batch, 6, 96, 96, generator=gen, dtype=torch.float64)
    face[:, :3, 48:] = 0  # masked lower half, as at inference
    mel = torch.rand(calib_batch, 1, 80, 16, generator=gen, dtype=torch.float64) * 8 - 4

    bns = batchnorm_layers(model)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch → exactly its statistics
    model.double().train()
    model(mel, face)
    model.float().eval()
    for bn in bns:
        bn.momentum = 0.1
        for buf in (bn.running_mean, bn.running_var):
            assert buf is not None
            buf.copy_(buf.to(torch.bfloat16).to(torch.float32))
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.zero_()
    return model


def cache_dir() -> Path:
    return Path(os.environ.get("LIPBENCH_GENERATOR_CACHE") or cache_root() / "generators")


def _code_bytes() -> bytes:
    """model.py and this module (which holds seeded_random_generator), read as files: no
    import of torch. Source may be unavailable (zipped installs)."""
    try:
        here = Path(__file__)
        return (here.parent / "model.py").read_bytes() + here.read_bytes()
    except OSError:
        return b"no source"


def _source_hash() -> str:
    """The architecture (parameter names, dtypes, shapes) and the code that initialises it
    (model.py, and this module, which holds seeded_random_generator): a change to either
    invalidates the file."""
    from .model import state_dict_layout

    h = hashlib.sha256()
    for name, (dtype, shape) in sorted(state_dict_layout().items()):
        h.update(f"{name}|{dtype}|{shape}\n".encode())
    h.update(_code_bytes())
    return h.hexdigest()


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def seeded_weights_id(seed: int = 0, calib_batch: int = 4) -> str:
    """A name for the seeded weights of ``seed`` that changes whenever they could: the
    procedure's code (model.py, this module), torch's version and the CPU model, as
    ``cache_key``. Computed without importing torch (the architecture's shapes are in
    model.py's source)."""
    h = hashlib.sha256(_code_bytes())
    h.update(f"v{CACHE_VERSION}|{seed}|{calib_batch}|torch {_torch_version()}|{machine()['cpu']}".encode())  # fmt: skip
    return f"seeded-random:seed={int(seed)}:b{int(calib_batch)}:{h.hexdigest()[:20]}"


def cache_key(seed: int, calib_batch: int) -> dict[str, Any]:
    import torch

    # The CPU model too: calibration is float64 rounded to bf16, but a cache directory
    # shared between different hosts (NFS home) must not assume that covers every ISA.
    return {
        "version": CACHE_VERSION,
        "seed": int(seed),
        "calib_batch": int(calib_batch),
        "arch": _source_hash(),
        "torch": str(torch.__version__),  # a str subclass weights_only would refuse
        "cpu": machine()["cpu"],
    }


def cache_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"wav2lip-seed{key['seed']}-b{key['calib_batch']}-{digest}.pt"


def _checksum(sd: dict[str, Tensor]) -> int:
    # torch.load notices a truncated file but not flipped bytes inside a tensor; crc32 over
    # 145 MB costs ~60 ms, a small price for "a hit is bit-identical".
    crc = 0
    for name, t in sd.items():
        crc = zlib.crc32(f"{name}|{t.dtype}|{tuple(t.shape)}".encode(), crc)
        crc = zlib.crc32(memoryview(t.detach().reshape(-1).numpy()).cast("B"), crc)
    return crc


def _read(path: Path, key: dict[str, Any]) -> dict[str, Tensor]:
    """The cached state dict, or ValueError/any torch.load error if it is not usable."""
    import torch
    from torch import Tensor

    from .model import state_dict_layout

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise ValueError("not a lipbench generator cache file")
    if obj.get("key") != key:
        raise ValueError("its key does not match")
    sd = obj.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError("no state dict")
    layout = {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}
    if layout != state_dict_layout():
        raise ValueError("its tensors do not match the generator")
    if obj.get("crc32") != _checksum(sd):
        raise ValueError("checksum mismatch")
    return sd


def _from_state_dict(sd: dict[str, Tensor]) -> Wav2Lip:
    import torch

    from .model import Wav2Lip

    with torch.device("meta"):  # no random init: every tensor is replaced below
        model = Wav2Lip()
    model.load_state_dict(sd, strict=True, assign=True)  # assign: no 145 MB copy
    return model.eval()


def _write(path: Path, key: dict[str, Any], sd: dict[str, Tensor]) -> None:
    import torch

    obj = {"format": _FORMAT, "key": key, "crc32": _checksum(sd), "state_dict": sd}
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except OSError as exc:  # a read-only or full cache must not stop a run
        log.warning("could not write the generator cache %s: %s", path, exc)


def cached_seeded_generator(seed: int = 0, calib_batch: int = 4) -> Wav2Lip:
    """``seeded_random_generator(seed, calib_batch)`` in eval mode, from the cache when a
    valid file exists (bit-identical), else built and cached."""
    key = cache_key(seed, calib_batch)
    path = cache_file(key)
    if path.exists():
        t0 = time.perf_counter()
        try:
            model = _from_state_dict(_read(path, key))
        except Exception as exc:  # noqa: BLE001 - any unusable file means "rebuild"
            text = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {text[0][:160] if text else ''}"
            log.warning("ignoring the unusable generator cache %s (%s); rebuilding", path, why)
        else:
            log.info("seeded generator (seed %d) read from %s in %.2f s",
                     seed, path, time.perf_counter() - t0)  # fmt: skip
            return model
    t0 = time.perf_counter()
    model = seeded_random_generator(seed, calib_batch).eval()
    built = time.perf_counter() - t0
    _write(path, key, model.state_dict())
    log.info("seeded generator (seed %d) built in %.2f s, cached at %s", seed, built, path)
    return model
