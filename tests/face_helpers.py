"""Helpers shared by the tests of lipbench.face (test_face_*.py): images, videos, box checks."""

from __future__ import annotations

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
