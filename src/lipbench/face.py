"""Avatars (image or video) and face boxes for Wav2Lip: load, detect, cache, crop, paste back.

Conventions (see shared/spec/wav2lip.md, "Face crop, model input, paste-back"):

- every pixel array is BGR uint8, OpenCV's order, as Wav2Lip was trained;
- a box is ``(x1, y1, x2, y2)`` in full-frame pixels, exclusive at x2/y2, already padded with
  ``pads = (top, bottom, left, right)`` and clamped to the frame;
- video avatars loop: global frame index ``i`` maps to frame ``i % n``, both for pixels
  (:meth:`Avatar.frame`) and boxes (:meth:`FaceBoxes.box`), so a job split into chunks sees
  exactly the frames a sequential run sees.

Avatar pixel arrays are marked read-only so that nothing downstream can paint into the
shared frames by accident; :func:`paste_face` returns a new frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lipbench.atomic import write_text_atomic
from lipbench.errors import FaceError, InputError

log = logging.getLogger(__name__)

DEFAULT_AVATAR = "default"
DEFAULT_SOURCE = "default:astronaut"
DEFAULT_PADS: tuple[int, int, int, int] = (0, 10, 0, 0)
FACE_SIZE = 96
DETECTORS = ("haar", "s3fd")
S3FD_WEIGHTS = Path("weights") / "s3fd.pth"

# Bump when the detection rules or the JSON layout change: old cache files then stop matching.
CACHE_FORMAT_VERSION = 1

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"})
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pbm", ".pgm", ".ppm"}
)

# Haar settings (FACTS.md: one face at x=177, y=66, w=95, h=95 on the astronaut).
_HAAR_FILE = "haarcascade_frontalface_default.xml"
_HAAR_SCALE_FACTOR = 1.1
_HAAR_MIN_NEIGHBORS = 5
# minSize is 60 px on a 512 px image, i.e. ~11.7 % of the short side, never below 30 px.
_HAAR_MIN_FRACTION = 60 / 512
_HAAR_MIN_PX = 30
# Big frames are searched at reduced size (boxes scaled back): same faces, far less time.
_DETECT_MAX_SIDE = 720
# Several faces: the largest wins only if its area is at least this multiple of the next one.
_DOMINANCE = 2.0

_NO_FACE_FIX = (
    "use a frontal, well-lit photo or video with one clearly visible face "
    "(at least about 12 % of the picture's short side), or the default avatar"
)


# --------------------------------------------------------------------------------------------
# Avatars


@dataclass
class Avatar:
    """A static image or a decoded video, BGR uint8 (arrays are read-only)."""

    frames: list[np.ndarray] | None
    image: np.ndarray | None
    fps: float | None
    source: str
    content_hash: str

    @property
    def is_static(self) -> bool:
        return self.frames is None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        h, w = self.frame(0).shape[:2]
        return int(w), int(h)

    def __len__(self) -> int:
        return 1 if self.frames is None else len(self.frames)

    def frame(self, i: int) -> np.ndarray:
        """Frame for global output frame index ``i`` (video avatars loop: ``i % len``)."""
        if i < 0:
            raise IndexError(f"frame index must be >= 0, got {i}")
        if self.frames is None:
            assert self.image is not None
            return self.image
        return self.frames[i % len(self.frames)]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_default() -> Avatar:
    from skimage import data as skdata

    rgb = skdata.astronaut()
    bgr = _readonly(rgb[:, :, ::-1])
    # Hash the PNG that ships in the wheel; fall back to the pixels if the layout ever changes.
    png = Path(skdata.__file__).parent / "astronaut.png"
    digest = _sha256_file(png) if png.is_file() else hashlib.sha256(bgr.tobytes()).hexdigest()
    return Avatar(frames=None, image=bgr, fps=None, source=DEFAULT_SOURCE, content_hash=digest)


def _load_image(path: Path, raw: bytes) -> Avatar:
    buf = np.frombuffer(raw, dtype=np.uint8)
    # IMREAD_COLOR: gray and RGBA inputs come back as 3-channel BGR (alpha dropped).
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None or img.size == 0:
        raise InputError(
            f"avatar {path} is not a readable image",
            "use a PNG/JPEG photo or an MP4/MOV/AVI/WebM/MKV video",
        )
    return Avatar(
        frames=None,
        image=_readonly(img),
        fps=None,
        source=str(path),
        content_hash=hashlib.sha256(raw).hexdigest(),
    )


def _load_video(path: Path) -> Avatar:
    import imageio_ffmpeg

    bad = InputError(
        f"avatar {path} is not a readable video",
        "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4) or use a photo",
    )
    frames: list[np.ndarray] = []
    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        meta: dict[str, Any] = next(gen)
        w, h = (int(v) for v in meta["size"])  # size after ffmpeg's auto-rotation
        fps = float(meta.get("fps") or 0.0)
        for chunk in gen:
            if len(chunk) != w * h * 3:
                raise bad
            rgb = np.frombuffer(chunk, dtype=np.uint8).reshape(h, w, 3)
            frames.append(_readonly(rgb[:, :, ::-1]))
    except InputError:
        raise
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError) as e:
        raise InputError(f"{bad.problem} ({type(e).__name__})", bad.fix) from e
    finally:
        gen.close()  # stops the ffmpeg subprocess even when we bail out early
    if not frames:
        raise InputError(f"avatar video {path} has no frames", bad.fix)
    if not fps > 0:
        fps = 25.0
    return Avatar(
        frames=frames, image=None, fps=fps, source=str(path), content_hash=_sha256_file(path)
    )


def load_avatar(spec: str | Path = DEFAULT_AVATAR) -> Avatar:
    """Load ``"default"`` (scikit-image's astronaut photo), an image file or a video file.

    Images are decoded with OpenCV, videos with imageio-ffmpeg (all frames in memory).
    A missing, empty, unreadable or non-media file raises :class:`InputError`.
    """
    if isinstance(spec, str) and spec.strip().lower() in (DEFAULT_AVATAR, DEFAULT_SOURCE):
        return _load_default()
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(
            f"avatar file {path} does not exist",
            f"check the path, or use '{DEFAULT_AVATAR}' for the built-in photo",
        )
    if not path.is_file():
        raise InputError(f"avatar {path} is not a file", "give the path of an image or a video")
    if path.stat().st_size == 0:
        raise InputError(f"avatar file {path} is empty", "give a real image or video file")
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return _load_video(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(
            f"cannot read avatar file {path}: {e.strerror}", "check permissions"
        ) from e
    return _load_image(path, raw)


# --------------------------------------------------------------------------------------------
# Detection


@dataclass
class FaceBoxes:
    """One padded, clamped (and, for video, smoothed) box per avatar frame."""

    boxes: np.ndarray  # N x 4 int (x1, y1, x2, y2)
    detector: str
    pads: tuple[int, int, int, int]
    smooth: int = 1
    from_cache: bool = field(default=False, compare=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def box(self, i: int) -> tuple[int, int, int, int]:
        """Box for global output frame index ``i`` (loops like :meth:`Avatar.frame`)."""
        if i < 0:
            raise IndexError(f"frame index must be >= 0, got {i}")
        x1, y1, x2, y2 = (int(v) for v in self.boxes[i % len(self.boxes)])
        return x1, y1, x2, y2


_tls = threading.local()


def _cascade() -> cv2.CascadeClassifier:
    # One classifier per thread: sharing one across threads is not documented as safe.
    c = getattr(_tls, "cascade", None)
    if c is None:
        xml = Path(cv2.data.haarcascades) / _HAAR_FILE
        c = cv2.CascadeClassifier(str(xml))
        if c.empty():
            raise InputError(
                f"OpenCV's Haar cascade {xml} could not be loaded",
                "reinstall opencv-python-headless 4.x (OpenCV 5 has no CascadeClassifier)",
            )
        _tls.cascade = c
    return c


def _haar_faces(frame: np.ndarray) -> np.ndarray:
    """All Haar detections on one BGR frame as a K x 4 int array of (x, y, w, h), full-res."""
    h, w = frame.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    small = frame
    if scale < 1.0:
        small = cv2.resize(
            frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
        )
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    gray = cv2.equalizeHist(gray)
    side = max(_HAAR_MIN_PX, round(min(gray.shape[:2]) * _HAAR_MIN_FRACTION))
    found = _cascade().detectMultiScale(
        gray,
        scaleFactor=_HAAR_SCALE_FACTOR,
        minNeighbors=_HAAR_MIN_NEIGHBORS,
        minSize=(side, side),
    )
    rects = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    return np.rint(rects / scale).astype(np.int64)


def _pick_face(rects: np.ndarray, where: str) -> np.ndarray | None:
    """The one face in ``rects`` (x, y, w, h), None if empty; FaceError if ambiguous."""
    if len(rects) == 0:
        return None
    if len(rects) == 1:
        return rects[0]
    areas = rects[:, 2].astype(np.int64) * rects[:, 3]
    order = np.argsort(-areas, kind="stable")
    first, second = areas[order[0]], areas[order[1]]
    if first >= _DOMINANCE * second:
        return rects[order[0]]
    raise FaceError(
        f"several faces of similar size ({len(rects)}) found in {where}",
        "crop the avatar to one face",
    )


def _pad_clamp(
    rect: np.ndarray, pads: tuple[int, int, int, int], width: int, height: int
) -> list[int]:
    x, y, w, h = (int(v) for v in rect)
    top, bottom, left, right = pads
    return [
        max(0, x - left),
        max(0, y - top),
        min(width, x + w + right),
        min(height, y + h + bottom),
    ]


def _smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean over ``window`` frames; the window is clipped at both ends."""
    n = len(boxes)
    if window <= 1 or n <= 1:
        return boxes.copy()
    before, after = (window - 1) // 2, window // 2
    csum = np.vstack([np.zeros((1, 4)), np.cumsum(boxes.astype(np.float64), axis=0)])
    out = np.empty((n, 4), dtype=np.float64)
    for i in range(n):
        lo, hi = max(0, i - before), min(n, i + after + 1)
        out[i] = (csum[hi] - csum[lo]) / (hi - lo)
    return np.rint(out).astype(np.int64)


def _check_detector(detector: str) -> str:
    name = str(detector).strip().lower()
    if name == "haar":
        return name
    if name == "s3fd":
        if not S3FD_WEIGHTS.is_file():
            raise InputError(
                f"the s3fd face detector needs {S3FD_WEIGHTS}, which is missing",
                "use detector 'haar' (works offline, no weights)",
            )
        raise InputError(
            "the s3fd face detector is not implemented in this build",
            "use detector 'haar' (works offline, no weights)",
        )
    raise InputError(
        f"unknown face detector {detector!r}", f"choose one of: {', '.join(DETECTORS)}"
    )


def _check_pads(pads: Any) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in pads)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 4:
        raise InputError(
            f"pads must be four integers (top, bottom, left, right), got {pads!r}",
            "e.g. pads=(0, 10, 0, 0)",
        )
    return vals  # type: ignore[return-value]


def _check_smooth(smooth: Any) -> int:
    if isinstance(smooth, bool) or not isinstance(smooth, int | np.integer) or smooth < 0:
        raise InputError(
            f"smooth must be a whole number of frames >= 0, got {smooth!r}",
            "use 5 (the Wav2Lip default) or 1 to turn smoothing off",
        )
    return max(1, int(smooth))


def detection_cache_key(avatar: Avatar, detector: str, pads: Any, smooth: int) -> str:
    """sha256 over everything the boxes depend on (hex)."""
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "content": avatar.content_hash,
        "detector": str(detector).strip().lower(),
        "pads": list(_check_pads(pads)),
        "smooth": _check_smooth(smooth),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_cache(path: Path, key: str, avatar: Avatar) -> np.ndarray | None:
    """Boxes from a cache file, or None if it is missing or does not fully check out."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != CACHE_FORMAT_VERSION or doc.get("key") != key:
            return None
        boxes = np.asarray(doc["boxes"], dtype=np.int64)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    w, h = avatar.size
    ok = (
        boxes.ndim == 2
        and boxes.shape == (len(avatar), 4)
        and bool(np.all(boxes[:, 0] >= 0))
        and bool(np.all(boxes[:, 1] >= 0))
        and bool(np.all(boxes[:, 2] <= w))
        and bool(np.all(boxes[:, 3] <= h))
        and bool(np.all(boxes[:, 2] > boxes[:, 0]))
        and bool(np.all(boxes[:, 3] > boxes[:, 1]))
    )
    return boxes if ok else None


def _write_cache(path: Path, key: str, avatar: Avatar, fb: FaceBoxes) -> None:
    doc = {
        "version": CACHE_FORMAT_VERSION,
        "key": key,
        "source": avatar.source,
        "content_hash": avatar.content_hash,
        "detector": fb.detector,
        "pads": list(fb.pads),
        "smooth": fb.smooth,
        "size": list(avatar.size),
        "boxes": fb.boxes.tolist(),
    }
    try:
        write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    except OSError as e:  # a cache that cannot be written only costs time
        log.warning("could not write face-detection cache %s: %s", path, e)


def _detect(avatar: Avatar, pads: tuple[int, int, int, int], smooth: int) -> np.ndarray:
    w, h = avatar.size
    n = len(avatar)
    raw = np.zeros((n, 4), dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    for i in range(n):
        where = avatar.source if n == 1 else f"frame {i} of {avatar.source}"
        rect = _pick_face(_haar_faces(avatar.frame(i)), where)
        if rect is not None:
            raw[i] = _pad_clamp(rect, pads, w, h)
            found[i] = True
    if not found.any():
        what = "no face found in" if n == 1 else f"no face found in any of the {n} frames of"
        raise FaceError(f"{what} {avatar.source}", _NO_FACE_FIX)
    if not found.all():
        # Frames without a face borrow the nearest detected frame's box (earlier one on ties).
        hits = np.flatnonzero(found)
        for i in np.flatnonzero(~found):
            j = int(np.searchsorted(hits, i))
            cands = [hits[k] for k in (j - 1, j) if 0 <= k < len(hits)]
            raw[i] = raw[min(cands, key=lambda c: abs(int(c) - int(i)))]
        log.info(
            "%d of %d frames of %s had no face; used the nearest frame's box",
            n - len(hits),
            n,
            avatar.source,
        )
    boxes = _smooth_boxes(raw, smooth)
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise FaceError(
            f"the padded face box is empty in {avatar.source} (pads {pads})",
            "use smaller (or non-negative) pads",
        )
    return boxes


def detect_faces(
    avatar: Avatar,
    detector: str = "haar",
    pads: Any = DEFAULT_PADS,
    smooth: int = 5,
    cache_dir: str | Path | None = None,
) -> FaceBoxes:
    """Find the face box in every avatar frame (one box for a static image).

    ``pads`` = (top, bottom, left, right) in pixels, applied to the raw detection and clamped
    to the frame; video boxes are then smoothed with a centred moving mean over ``smooth``
    frames. With ``cache_dir``, boxes are read from / written to ``cache_dir/<key>.json``
    (see :func:`detection_cache_key`); an unusable cache file is ignored and rewritten.
    """
    name = _check_detector(detector)
    pads_t = _check_pads(pads)
    window = _check_smooth(smooth)
    cache_path: Path | None = None
    key = ""
    if cache_dir is not None:
        key = detection_cache_key(avatar, name, pads_t, window)
        cache_path = Path(cache_dir) / f"{key}.json"
        cached = _read_cache(cache_path, key, avatar)
        if cached is not None:
            return FaceBoxes(cached, name, pads_t, window, from_cache=True)
    fb = FaceBoxes(_detect(avatar, pads_t, window), name, pads_t, window)
    if cache_path is not None:
        _write_cache(cache_path, key, avatar, fb)
    return fb


# --------------------------------------------------------------------------------------------
# Crop and paste back


def _box_in(frame: np.ndarray, box: Any) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = frame.shape[:2]
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f"box {(x1, y1, x2, y2)} is empty or outside the {w}x{h} frame")
    return x1, y1, x2, y2


def crop_face(frame: np.ndarray, box: Any) -> np.ndarray:
    """The box's pixels resized to 96x96 (bilinear), BGR uint8."""
    x1, y1, x2, y2 = _box_in(frame, box)
    return cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)


def paste_face(
    frame: np.ndarray, box: Any, face96: np.ndarray, *, inplace: bool = False
) -> np.ndarray:
    """Resize a generated face (96x96 BGR uint8) to the box and write it at the box.

    Returns a new frame by default (avatar frames are read-only and shared between output
    frames); with ``inplace=True`` writes into ``frame`` and returns it. Pixels outside the
    box are untouched.
    """
    x1, y1, x2, y2 = _box_in(frame, box)
    if face96.dtype != np.uint8 or face96.ndim != frame.ndim:
        raise ValueError(
            f"face must be uint8 with {frame.ndim} dims, got {face96.dtype} {face96.shape}"
        )
    patch = cv2.resize(face96, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    out = frame if inplace else frame.copy()
    out[y1:y2, x1:x2] = patch.reshape(out[y1:y2, x1:x2].shape)
    return out
