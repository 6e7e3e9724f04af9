"""Helpers shared by the tests: running the CLI, its one-line errors, file hashes, and the
face tests' images and videos."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

# FACTS.md: Haar finds the astronaut's face at x=177, y=66, w=95, h=95 (a pixel or two off
# after equalizeHist); boxes are (x1, y1, x2, y2).
EXPECTED_XYWH = (177, 66, 95, 95)
TOL = 6


def astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])


def near(box, expected, tol: float = TOL) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(box, expected, strict=True))


def write_video(
    path: Path, frames: list[np.ndarray], fps: float = 25.0, pix_fmt: str = "yuv420p"
) -> Path:
    """BGR frames → a video file (yuv444p allows odd sizes)."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (w, h),
        fps=fps,
        quality=9,
        macro_block_size=1,
        pix_fmt_out=pix_fmt,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f[:, :, ::-1]).tobytes())  # BGR -> RGB for ffmpeg
    writer.close()
    return path


def shift(img: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, config: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -m lipbench.cli [--config C] ARGS` → the finished process."""
    cmd = [sys.executable, "-m", "lipbench.cli"]
    if config:
        cmd += ["--config", str(config)]
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A failed command printed exactly one `error:` line and no traceback; return it."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr  # exactly one error line (warnings may precede it)
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name → sha256), hidden ones included."""
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def seeded_model(seed: int):
    """A seeded-random Wav2Lip generator (no checkpoint), torch on 2 threads."""
    import torch

    from lipbench.weights import load_generator

    torch.set_num_threads(2)
    m, _ = load_generator("gan", "/nonexistent", seed=seed)
    return m
