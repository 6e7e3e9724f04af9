"""Named Wav2Lip generator checkpoints: find, verify and load them.

- ``gan`` → ``<weights_dir>/wav2lip_gan.pth``, ``nogan`` → ``<weights_dir>/wav2lip.pth``.
- A missing file is not an error: the generator is built with seeded random weights (same
  seed → bit-identical weights in any process) and a WARNING says the output is untrained.
  ``load_generator`` reads them from an on-disk cache when it can (see ``gencache``).
- A file that is present but unusable (not a torch file, truncated, wrong architecture,
  a SyncNet or discriminator checkpoint, NaNs) raises ``WeightsError`` naming the file,
  what is wrong and how to fix it. There is never a silent fallback to random weights.

Importing this module does not import torch: ``weights_identity`` says which weights a
checkpoint name gives (a file's sha256, or the seeded weights' id) without loading them, so
a run that finds them already compiled (``backends.ov_cache``) never needs torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_path, write_text_atomic
from .cachedir import cache_root
from .errors import WeightsError, first_sentence
from .gencache import cached_seeded_generator, seeded_random_generator, seeded_weights_id

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from .model import Wav2Lip

__all__ = [
    "DEFAULT_FILES",
    "DEFAULT_WEIGHTS_DIR",
    "WeightsInfo",
    "checkpoint_path",
    "load_generator",
    "load_state_dict_file",
    "save_official_checkpoint",
    "seeded_random_generator",
    "sha256_file",
    "weights_identity",
]

log = logging.getLogger("lipbench.weights")

DEFAULT_WEIGHTS_DIR = "weights"
DEFAULT_FILES: dict[str, str] = {"gan": "wav2lip_gan.pth", "nogan": "wav2lip.pth"}

_PREFIX = "module."  # added by nn.DataParallel when the official checkpoints were saved
_DOWNLOAD_FIX = (
    "replace it with the official Wav2Lip generator checkpoint "
    "(wav2lip_gan.pth or wav2lip.pth, a few hundred MB), or delete it to run with "
    "seeded random weights"
)


@dataclass
class WeightsInfo:
    """Where a generator's weights came from (recorded with every result)."""

    name: str
    path: str | None  # the checkpoint file, None for seeded-random weights
    source: str  # "file" | "seeded-random"
    sha256: str | None
    seed: int | None  # only for seeded-random weights
    trained: bool  # True when loaded from a checkpoint file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_path(
    name: str,
    weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR,
    files: dict[str, str] | None = None,
) -> Path:
    """The file a checkpoint name maps to. ``files`` overrides/extends ``DEFAULT_FILES``
    (values are file names inside ``weights_dir``, or absolute paths)."""
    table = {**DEFAULT_FILES, **(files or {})}
    if name not in table:
        raise WeightsError(
            f"unknown checkpoint name {name!r}",
            f"use one of: {', '.join(sorted(table))}",
        )
    return Path(weights_dir) / table[name]


def _sha256_read(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _memo_path() -> Path:
    return cache_root() / "sha256.json"


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256, remembered by (real path, device, inode, size, mtime_ns) in
    ``<cache_root()>/sha256.json``: a checkpoint of a few hundred MB is read once (≈ 0.5 s),
    not on every start. A file rewritten in place changes its mtime, so a stale hit needs a
    same-size rewrite within one mtime tick."""
    try:
        st = os.stat(path)
    except OSError:
        return _sha256_read(path)  # raises the OSError the caller expects
    stamp = f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"
    try:
        hit = json.loads(_memo_path().read_text()).get(stamp)
    except (OSError, ValueError):
        hit = None
    if isinstance(hit, str) and len(hit) == 64:
        return hit
    digest = _sha256_read(path)
    with contextlib.suppress(OSError, ValueError):  # a read-only cache: just not remembered
        _memo_path().parent.mkdir(parents=True, exist_ok=True)
        with open(_memo_path().with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                memo = json.loads(_memo_path().read_text())
            except (OSError, ValueError):
                memo = {}
            if len(memo) > 256:  # bounded: old stamps of replaced files go
                memo = {}
            memo[stamp] = digest
            write_text_atomic(_memo_path(), json.dumps(memo, indent=1) + "\n")
    return digest


def weights_identity(
    name: str,
    weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR,
    files: dict[str, str] | None = None,
    seed: int = 0,
) -> tuple[WeightsInfo, str]:
    """Which weights ``load_generator(name, weights_dir, files, seed)`` would give, without
    loading them or importing torch: (their ``WeightsInfo``, an id naming them exactly —
    ``sha256:<hex>`` of the file, or ``gencache.seeded_weights_id``). The file is not
    validated here: a compiled network is cached only after ``load_generator`` accepted it."""
    path = checkpoint_path(name, weights_dir, files)
    if not path.exists():
        return (
            WeightsInfo(name, None, "seeded-random", None, seed, False),
            seeded_weights_id(seed),
        )
    digest = sha256_file(path)
    return WeightsInfo(name, str(path), "file", digest, None, True), f"sha256:{digest}"


# --------------------------------------------------------------------------- reading files


def _sniff(path: Path) -> tuple[bool, str]:
    """(looks like a torch file, hint) for a file that torch.load rejected."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return False, f"it cannot be opened ({e})"
    if not head:
        return False, "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return False, "it is a Git LFS pointer, not the checkpoint itself"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return False, "it is an HTML page (a failed download?)"
    # zip archive (torch >= 1.6) or pickle protocol 2 header (legacy torch.save)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02"):
        return True, "it looks like a PyTorch file that is truncated or corrupted"
    return False, "it does not look like a PyTorch file"


def _read_torch_file(path: Path, map_location: str | torch.device) -> Any:
    import torch

    if not path.is_file():
        raise WeightsError(f"checkpoint {path} is not a regular file", _DOWNLOAD_FIX)
    try:
        # weights_only=True: official checkpoints hold only tensors, dicts, lists and numbers,
        # so the safe unpickler suffices; anything needing arbitrary code is rejected.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load reports bad bytes via EOFError, KeyError,
        # UnpicklingError, RuntimeError (broken zip) ...: all mean "unusable file"
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        is_torch, hint = _sniff(path)
        if is_torch and "Weights only load failed" in msg:
            raise WeightsError(
                f"checkpoint {path} contains pickled Python objects (not just tensors), "
                "which lipbench refuses to load",
                "re-save it as torch.save({'state_dict': model.state_dict()}, path), "
                f"or {_DOWNLOAD_FIX}",
            ) from e
        if is_torch:  # torch's own words help only with a file that is torch's format
            hint += f" (incomplete download or copy?) [{type(e).__name__}: {first_sentence(msg)}]"
        raise WeightsError(
            f"checkpoint {path} cannot be read by torch.load: {hint}", _DOWNLOAD_FIX
        ) from e


def _extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    from torch import Tensor

    if not isinstance(obj, dict):
        raise WeightsError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a dict with a 'state_dict'",
            _DOWNLOAD_FIX,
        )
    if "state_dict" in obj:
        sd = obj["state_dict"]
        if not isinstance(sd, dict):
            raise WeightsError(
                f"checkpoint {path}: 'state_dict' is a {type(sd).__name__}, not a dict",
                _DOWNLOAD_FIX,
            )
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        sd = obj  # a bare state dict
    else:
        keys = ", ".join(map(str, list(obj)[:5]))
        raise WeightsError(
            f"checkpoint {path} has no 'state_dict' and is not a state dict itself "
            f"(top-level keys: {keys or 'none'})",
            _DOWNLOAD_FIX,
        )
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise WeightsError(
                f"checkpoint {path}: entry {k!r} is a {type(v).__name__}, not a tensor",
                _DOWNLOAD_FIX,
            )
        out[k.removeprefix(_PREFIX)] = v
    return out


def _few(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _check_generator_state_dict(sd: dict[str, Tensor], path: Path) -> None:
    import torch

    from .model import state_dict_layout

    keys = set(sd)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("binary_pred."):
        raise WeightsError(
            f"checkpoint {path} is a Wav2Lip visual-quality discriminator "
            "(it has 'face_encoder_blocks' + 'binary_pred' weights), not the generator",
            "use the generator checkpoint wav2lip_gan.pth or wav2lip.pth, "
            "not the discriminator (visual_quality_disc.pth)",
        )
    if has("face_encoder.") and not has("face_encoder_blocks."):
        raise WeightsError(
            f"checkpoint {path} looks like a SyncNet lip-sync expert "
            "('face_encoder.*' / 'audio_encoder.*' stacks, no 'face_encoder_blocks'), "
            "not the Wav2Lip generator",
            "use the generator checkpoint wav2lip_gan.pth or wav2lip.pth, not lipsync_expert.pth",
        )

    expected = state_dict_layout()
    # Pre-0.4.1 BatchNorm checkpoints lack num_batches_tracked; BatchNorm fills it in.
    missing = sorted(k for k in expected if k not in keys and not k.endswith("num_batches_tracked"))
    unexpected = sorted(keys - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
        raise WeightsError(
            f"checkpoint {path} does not match the Wav2Lip generator: " + "; ".join(parts),
            _DOWNLOAD_FIX,
        )
    for k, (dtype, shape) in expected.items():
        if k not in sd:
            continue
        v = sd[k]
        if tuple(v.shape) != shape:
            raise WeightsError(
                f"checkpoint {path} does not match the Wav2Lip generator: {k} has shape "
                f"{tuple(v.shape)}, expected {shape}",
                _DOWNLOAD_FIX,
            )
        if dtype.is_floating_point:
            if not v.is_floating_point():
                raise WeightsError(
                    f"checkpoint {path}: {k} has dtype {v.dtype}, expected a float tensor",
                    _DOWNLOAD_FIX,
                )
            if not bool(torch.isfinite(v).all()):
                raise WeightsError(
                    f"checkpoint {path}: {k} contains NaN or Inf values",
                    _DOWNLOAD_FIX,
                )


def load_state_dict_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    """Read a generator state dict from a checkpoint in the official format.

    Accepts ``{"state_dict": {...}, ...}`` (other top-level keys such as ``optimizer``,
    ``global_step``, ``global_epoch`` are ignored) or a bare state dict; a ``module.`` key
    prefix is stripped. The result is checked against the generator's keys and shapes;
    any problem raises ``WeightsError``.
    """
    p = Path(path)
    sd = _extract_state_dict(_read_torch_file(p, map_location), p)
    _check_generator_state_dict(sd, p)
    return sd


# --------------------------------------------------------------------------- building models


def _model_from_state_dict(sd: dict[str, Tensor], path: Path, device: torch.device) -> Wav2Lip:
    import torch

    from .model import Wav2Lip, batchnorm_layers

    with torch.device("meta"):  # skip random init: every tensor is overwritten below
        model = Wav2Lip()
    model.to_empty(device=device)
    for bn in batchnorm_layers(model):
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.zero_()  # in case the checkpoint predates this buffer
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # shapes/keys were checked already; this is a safety net
        raise WeightsError(f"checkpoint {path} cannot be loaded: {e}", _DOWNLOAD_FIX) from e
    return model


def load_generator(
    name: str,
    weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR,
    files: dict[str, str] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Wav2Lip, WeightsInfo]:
    """The generator for checkpoint ``name``, in eval mode on ``device``.

    If the file is missing, returns seeded random weights (``source="seeded-random"``,
    ``trained=False``) and logs a WARNING; if it is present but unusable, raises
    ``WeightsError``.
    """
    import torch

    dev = torch.device(device)
    path = checkpoint_path(name, weights_dir, files)
    if not path.exists():
        log.warning(
            "Checkpoint %r not found at %s: using UNTRAINED random weights (seed %d). "
            "The video will show meaningless mouth movement. For real lip-sync, put the "
            "official Wav2Lip checkpoint at %s.",
            name,
            path,
            seed,
            path,
        )
        model = cached_seeded_generator(seed).to(dev).eval()
        return model, WeightsInfo(name, None, "seeded-random", None, seed, False)

    sd = load_state_dict_file(path, map_location=dev)
    model = _model_from_state_dict(sd, path, dev).eval()
    info = WeightsInfo(name, str(path), "file", sha256_file(path), None, True)
    log.info("Loaded checkpoint %r from %s (sha256 %s)", name, path, info.sha256)
    return model, info


def save_official_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``model`` the way the official checkpoints are laid out (DataParallel
    ``module.`` prefix under ``state_dict``, plus the bookkeeping keys). Atomic."""
    import torch

    ckpt = {
        "state_dict": {_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": None,
        "global_step": 0,
        "global_epoch": 0,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
