"""Avatars: the built-in photo, an image file or a video file, decoded to BGR uint8 frames.

Every avatar is fitted on load (:mod:`lipbench.face.fit`): at most ``max_side`` pixels on the
long side and even width and height, so any frame it gives can be encoded as H.264. A video is
read on demand by frame index (:mod:`lipbench.face.video`) and fitted frame by frame, so
memory does not grow with its length.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lipbench.errors import InputError
from lipbench.face.fit import MAX_SIDE, Fit, check_max_side, plan_fit
from lipbench.face.video import VideoFrames

log = logging.getLogger(__name__)

DEFAULT_AVATAR = "default"
DEFAULT_SOURCE = "default:astronaut"

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"})
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pbm", ".pgm", ".ppm"}
)


@dataclass
class Avatar:
    """A static image, or a video read on demand (:class:`VideoFrames`), BGR uint8 read-only.

    ``content_hash`` identifies the pixels: the source file's sha256 when the frames are the
    file's own, a hash of that and the fit when loading resized or cropped them.
    ``original_size`` is the (width, height) before the fit (None: same as :attr:`size`).
    A video avatar pickles as its path and metadata, not its frames; so does a still image
    read from a file (or the built-in photo): it is read again, and its hash checked, where
    it is unpickled and first used.
    """

    video: VideoFrames | None
    image: np.ndarray | None
    fps: float | None
    source: str
    content_hash: str
    original_size: tuple[int, int] | None = None
    max_side: int = MAX_SIDE  # the limit it was loaded with (to read a still image again)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.video is None and self._rereadable():
            state["image"] = None  # by reference: read again where it is used
        return state

    def _rereadable(self) -> bool:
        return self.source == DEFAULT_SOURCE or Path(self.source).is_file()

    def _still(self) -> np.ndarray:
        if self.image is None:
            again = load_avatar(self.source, self.max_side, quiet=True)
            if again.content_hash != self.content_hash or again.image is None:
                raise InputError(
                    f"avatar {self.source} changed while the job was running",
                    "run the job again (and leave the avatar file alone until it ends)",
                )
            self.image = again.image
        return self.image

    @property
    def is_static(self) -> bool:
        return self.video is None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        if self.video is not None:
            return self.video.fit.size
        h, w = self._still().shape[:2]
        return int(w), int(h)

    def __len__(self) -> int:
        return 1 if self.video is None else len(self.video)

    def frame(self, k: int) -> np.ndarray:
        """Avatar frame ``k`` (``k % len``: which frame an output frame shows is the job's
        :class:`~lipbench.face.timeline.Timeline`'s business). A static avatar's one image
        for any ``k``."""
        if k < 0:
            raise IndexError(f"frame index must be >= 0, got {k}")
        if self.video is None:
            return self._still()
        return self.video.get(int(k) % len(self.video))

    def release(self) -> None:
        """Close a video's decoder and drop its kept frames (it reopens when read again)."""
        if self.video is not None:
            self.video.close()


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


def _log_fit(source: str, fit: Fit, max_side: int, quiet: bool = False) -> None:
    if quiet:
        return
    if fit.scaled:
        msg = "avatar %s is %dx%d; downscaled to %dx%d (face.max_side = %d)"
        log.info(msg, source, *fit.original, *fit.size, max_side)
    elif fit.changes:
        log.debug("avatar %s: odd size %s cropped to %s", source, fit.original, fit.size)


def _static(
    bgr: np.ndarray, source: str, source_hash: str, max_side: int, quiet: bool = False
) -> Avatar:
    h, w = bgr.shape[:2]
    fit = plan_fit(w, h, max_side)
    _log_fit(source, fit, max_side, quiet)
    return Avatar(
        video=None,
        image=_readonly(fit.apply(bgr)),
        fps=None,
        source=source,
        content_hash=fit.content_hash(source_hash),
        original_size=fit.original,
        max_side=max_side,
    )


def _load_default(max_side: int, quiet: bool = False) -> Avatar:
    # The PNG that ships in scikit-image's wheel, read with OpenCV (the same pixels as
    # skimage.data.astronaut(), tested): importing skimage.io costs ~0.3 s of start-up.
    spec = importlib.util.find_spec("skimage")
    png = Path(spec.origin).parent / "data" / "astronaut.png" if spec and spec.origin else None
    bgr = cv2.imread(str(png), cv2.IMREAD_COLOR) if png and png.is_file() else None
    if png is not None and bgr is not None:
        return _static(bgr, DEFAULT_SOURCE, _sha256_file(png), max_side, quiet)
    from skimage import data as skdata  # the layout changed: let scikit-image find it

    bgr = skdata.astronaut()[:, :, ::-1]
    digest = hashlib.sha256(np.ascontiguousarray(bgr).tobytes()).hexdigest()
    return _static(bgr, DEFAULT_SOURCE, digest, max_side, quiet)


def _load_image(path: Path, raw: bytes, max_side: int, quiet: bool = False) -> Avatar:
    buf = np.frombuffer(raw, dtype=np.uint8)
    # IMREAD_COLOR: gray and RGBA inputs come back as 3-channel BGR (alpha dropped).
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None or img.size == 0:
        raise InputError(
            f"avatar {path} is not a readable image",
            "use a PNG/JPEG photo or an MP4/MOV/AVI/WebM/MKV video",
        )
    return _static(img, str(path), hashlib.sha256(raw).hexdigest(), max_side, quiet)


def _load_video(path: Path, max_side: int) -> Avatar:
    import imageio_ffmpeg

    bad = InputError(
        f"avatar {path} is not a readable video",
        "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4) or use a photo",
    )
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        try:
            meta: dict[str, Any] = next(gen)
        finally:
            gen.close()  # stops the ffmpeg subprocess
        w, h = (int(v) for v in meta["size"])  # size after ffmpeg's auto-rotation
        fps = float(meta.get("fps") or 0.0)
        # stream copy to a null muxer: counts packets without decoding (fast at any length)
        n, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError, TypeError) as e:
        raise InputError(f"{bad.problem} ({type(e).__name__})", bad.fix) from e
    if n < 1 or w < 1 or h < 1:
        raise InputError(f"avatar video {path} has no frames", bad.fix)
    if not fps > 0:
        fps = 25.0
    # Variable frame rate (phones): the frame count and duration x rate disagree. Such a
    # file is read resampled to its average rate, so frame k is the picture at k / fps.
    vfr = secs > 0 and abs(n - secs * fps) > 1.5
    if vfr:
        n = max(1, int(secs * fps))
        log.info("avatar %s has a variable frame rate: read at %.3f fps", path, fps)
    fit = plan_fit(w, h, max_side)
    video = VideoFrames(path, n, fps, (w, h), fit, cfr=vfr)
    try:
        video.get(0)  # a video with no decodable frame fails here, in one line
    except InputError as e:
        raise InputError(f"avatar video {path} has no decodable frame", bad.fix) from e
    finally:
        video.close()
    _log_fit(str(path), fit, max_side)
    return Avatar(
        video=video,
        image=None,
        fps=fps,
        source=str(path),
        content_hash=fit.content_hash(_sha256_file(path)),
        original_size=fit.original,
        max_side=max_side,
    )


def load_avatar(
    spec: str | Path = DEFAULT_AVATAR, max_side: int = MAX_SIDE, *, quiet: bool = False
) -> Avatar:
    """Load ``"default"`` (scikit-image's astronaut photo), an image file or a video file.

    Images are decoded with OpenCV; videos with imageio-ffmpeg, on demand (frames are read
    by index when used, see :mod:`lipbench.face.video`). Frames
    longer than ``max_side`` pixels are downscaled (aspect kept, ``cv2.INTER_AREA``, one log
    line); odd widths/heights lose their last column/row. A missing, empty, unreadable or
    non-media file, or a bad ``max_side``, raises :class:`InputError`. ``quiet``: no log
    line for the fit (a replica reading a still image again).
    """
    max_side = check_max_side(max_side)
    if isinstance(spec, str) and spec.strip().lower() in (DEFAULT_AVATAR, DEFAULT_SOURCE):
        return _load_default(max_side, quiet)
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
        return _load_video(path, max_side)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(
            f"cannot read avatar file {path}: {e.strerror}", "check permissions"
        ) from e
    return _load_image(path, raw, max_side, quiet)
