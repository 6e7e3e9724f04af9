"""Wav2Lip frames for a frame range [a, b) of a job.

A job's inputs (full-file mel, avatar, face boxes) live in a ``JobInputs``; a ``Renderer``
holds one built network (``lipbench.backends``: torch eager or OpenVINO, fp32 or bf16) and
turns any frame range of any job into full BGR frames, batch by batch, so memory never grows
with audio length. Because every chunk reads its mel windows from the full-file mel, and a
network's output for one frame does not depend on the other frames of its batch, rendering
[a, b) in pieces gives the same frames as rendering it whole (within one backend and
precision).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from . import backends
from .face import Avatar, FaceBoxes, crop_face, face_input, paste_face

if TYPE_CHECKING:
    from .backends.ov_cache import CachedNetwork
    from .model import Wav2Lip

log = logging.getLogger("lipbench.render")

MEL_STEP = 16  # mel frames per window (0.2 s)
# A range's first batches are small and double up to the batch size, so its first frame is
# ready after a few frames' work instead of a whole batch's (a 32-frame batch is ~1.3 s on
# a 2-core CPU): the CLI's first frame and a stream's first segment come sooner.
FIRST_BATCH = 4


def batch_bounds(
    start: int, end: int, batch_size: int, first: int = FIRST_BATCH, keyframes: Collection[int] = ()
) -> list[tuple[int, int]]:
    """The [a, b) batches that cover [start, end): ``first`` frames, then twice as many each
    time up to ``batch_size``, then ``batch_size`` each. A batch that would stop at most
    ``first`` frames short of a keyframe (whole-video index in ``keyframes``) runs through it:
    the encoder closes the segment before a keyframe only once it has that frame, so the
    segment is ready with this batch instead of a whole batch later."""
    if batch_size < 1 or first < 1:
        raise ValueError(f"batch sizes must be ≥ 1, not {batch_size} / {first}")
    out, a, size = [], start, min(first, batch_size)
    while a < end:
        b = min(end, a + size)
        near = next((k for k in range(b, min(end, b + first)) if k in keyframes), None)
        if near is not None:
            b = near + 1
        out.append((a, b))
        a, size = b, min(batch_size, size * 2)
    return out


def mel_window_starts(n_frames: int, n_mel: int, fps: float, first: int = 0) -> np.ndarray:
    """Start of frame i's 16-frame window: int(i * 80 / fps), clamped to the last full window."""
    i = np.arange(first, first + n_frames)
    starts = np.floor(i * 80.0 / fps + 1e-9).astype(np.int64)  # guard against 80/fps rounding
    return np.minimum(starts, max(0, n_mel - MEL_STEP))


def pad_mel(mel: np.ndarray) -> np.ndarray:
    """Very short audio (< 0.2 s) has fewer than 16 mel frames: pad with silence (−4)."""
    if mel.shape[1] >= MEL_STEP:
        return mel
    return np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), constant_values=-4.0)


@dataclass
class JobInputs:
    """Everything a replica needs to render any frame range of one job (picklable).

    A video avatar pickles as its path (frames are read on demand in the replica);
    :meth:`for_range` gives the small input of one chunk: the mel columns and face boxes
    of its frames only. ``blend``: how the mouth patch is pasted ("feather" or "box", the
    reference's rectangle; see ``lipbench.face.paste_face``)."""

    mel: np.ndarray  # 80 × M float32: the whole file's, or columns [mel_start, …) of it
    n_frames: int  # the job's output frames (a chunk's input keeps the job's count)
    fps: float
    avatar: Avatar
    boxes: FaceBoxes
    label: str | None = None  # corner text stamped on every frame (untrained weights)
    meta: dict[str, Any] = field(default_factory=dict)
    blend: str = "feather"
    mel_start: int = 0  # first column of the whole file's mel that ``mel`` holds
    mel_len: int | None = None  # the whole file's mel columns (None: ``mel``'s own)

    def __post_init__(self) -> None:
        if self.mel_len is None:
            self.mel = pad_mel(np.asarray(self.mel, dtype=np.float32))
            self.mel_len = int(self.mel.shape[1])

    def mel_windows(self, a: int, b: int) -> np.ndarray:
        """(b − a) × 80 × 16 mel windows of global frames [a, b)."""
        assert self.mel_len is not None
        starts = mel_window_starts(b - a, self.mel_len, self.fps, first=a) - self.mel_start
        if len(starts) and (starts.min() < 0 or starts.max() + MEL_STEP > self.mel.shape[1]):
            raise ValueError(f"frames [{a}, {b}) are outside this input's mel columns")
        return np.stack([self.mel[:, s : s + MEL_STEP] for s in starts])

    def frame(self, i: int) -> np.ndarray:
        """The avatar frame output frame ``i`` shows (read-only)."""
        return self.avatar.frame(self.boxes.avatar_index(i))

    def for_range(self, start: int, end: int) -> JobInputs:
        """The picklable input of a chunk rendering global frames [start, end): the same
        frames as the whole input gives, carrying only that range's mel and boxes (and the
        avatar by reference: a video pickles as its path)."""
        if not 0 <= start < end <= self.n_frames:
            raise ValueError(f"frame range [{start}, {end}) outside the job's {self.n_frames}")
        assert self.mel_len is not None
        starts = mel_window_starts(end - start, self.mel_len, self.fps, first=start)
        lo, hi = int(starts.min()), int(starts.max()) + MEL_STEP
        self.avatar.release()  # no decoder state or kept frames travel with the task
        return dataclasses.replace(
            self,
            mel=self.mel[:, lo - self.mel_start : hi - self.mel_start].copy(),
            boxes=self.boxes.for_range(start, end),
            meta=dict(self.meta),
            mel_start=lo,
        )


@dataclass
class RenderOptions:
    batch_size: int | str = 16  # "auto": calibrated per machine (lipbench.tuning), in the replica
    # "auto": the fastest backend that is exact on the loaded checkpoint (lipbench.tuning)
    backend: str = "torch"  # auto | torch | openvino
    precision: str = "fp32"  # fp32 (exact) | bf16 | auto (bf16 only on bf16 hardware, ≥ 40 dB)
    pin_threads: bool = False  # let a backend that pins its own threads (OpenVINO) do so
    channels_last: bool = True
    fold_batchnorm: bool = True
    static_face_features: bool = True  # static avatar: run the face encoder once per job
    reuse_identical_mels: bool = True  # static avatar: identical mel windows → same face
    overlap: bool = True  # network runs ahead on a thread while frames are pasted/encoded

    @classmethod
    def plain(cls) -> RenderOptions:
        """The reference path: plain fp32 NCHW, every speed option off, batch 16."""
        return cls(
            batch_size=16,
            backend="torch",
            precision="fp32",
            channels_last=False,
            fold_batchnorm=False,
            static_face_features=False,
            reuse_identical_mels=False,
            overlap=False,
        )


def stamp_label(frame: np.ndarray, text: str) -> np.ndarray:
    """White text on a black box in the TOP-left corner: a browser player's controls cover
    the bottom of the picture."""
    h = frame.shape[0]
    scale = max(0.35, h / 900)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = 6, 6 + th  # y: the text's baseline
    cv2.rectangle(frame, (x - 3, y - th - 3), (x + tw + 3, y + base + 3), (0, 0, 0), -1)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)  # fmt: skip
    return frame


class Renderer:
    """One network on one device, reused across jobs and frame ranges.

    ``options.backend`` / ``precision`` / ``batch_size`` set to ``auto`` are resolved by
    ``lipbench.tuning.calibrate`` (cached per machine and thread count); the network's
    fidelity vs plain fp32 on this checkpoint is measured once (cached) and kept in
    ``self.fidelity`` for the run record (``lipbench.backends.describe``)."""

    def __init__(
        self,
        model: Wav2Lip | None,
        device: str = "cpu",
        options: RenderOptions | None = None,
        *,
        cached: CachedNetwork | None = None,
    ):
        """``cached``: a network from ``backends.ov_cache.load_cached`` (``model`` None, torch
        never imported): backend, precision and batch size as the run that saved it
        resolved them, with its measured fidelity and calibration."""
        self.options = dataclasses.replace(options or RenderOptions())  # don't mutate the caller's
        self.calibration: dict[str, Any] | None = None
        if cached is not None:
            o = self.options
            o.backend, o.precision = cached.backend, cached.precision
            o.batch_size = cached.batch_size
            self.device = "cpu"
            self.calibration = cached.calibration
            self.network: backends.Network = cached.network
            self.fidelity: dict[str, Any] = cached.fidelity
        else:
            assert model is not None, "a Renderer needs a model or a cached network"
            self._build(model, device)
        self._face_cache: tuple[object, Any] | None = None
        self._mel_cache: dict[bytes, np.ndarray] = {}

    def _build(self, model: Wav2Lip, device: str) -> None:
        """The torch path: calibrate what is ``auto``, build the network, measure its
        fidelity (cached)."""
        import torch

        from . import tuning

        self.device = str(torch.device(device))
        dev = self.device
        model = model.eval().to(self.device)
        threads = torch.get_num_threads()
        o = self.options
        self.calibration = None
        network = None
        if "auto" in (o.backend, o.precision, o.batch_size):
            self.calibration, network = tuning.calibrate(model, dev, threads, o)
            o.backend = self.calibration["backend"]
            o.precision = self.calibration["precision"]
            o.batch_size = int(self.calibration["batch_size"])
        if network is None:
            network = backends.build(
                model, dev, o.backend, o.precision, threads=threads,
                channels_last=o.channels_last, fold_batchnorm=o.fold_batchnorm,
                pin_threads=o.pin_threads,
            )  # fmt: skip
        self.network = network
        self.fidelity = (
            self.calibration["fidelity"]
            if self.calibration
            else tuning.fidelity(model, network, dev)
        )

    def _static_features(self, job: JobInputs) -> Any:
        key = job.meta.get("key", id(job))  # jobs arrive re-pickled per chunk: key by job id
        if self._face_cache is None or self._face_cache[0] != key:
            face = face_input(crop_face(job.frame(0), job.boxes.box(0)))[None]
            self._face_cache = (key, self.network.encode_face(face))
            self._mel_cache.clear()
        return self._face_cache[1]

    def _faces(
        self,
        job: JobInputs,
        frames: np.ndarray,
        windows: np.ndarray,
        pics: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """96×96 BGR uint8 generated faces for global frame indices ``frames`` (``pics``:
        their avatar frames, when already read)."""
        static = job.avatar.is_static and self.options.static_face_features
        mel = windows[:, None]
        if static:
            out = self.network.decode_static(mel, self._static_features(job))
        else:
            if pics is None:
                pics = [job.frame(int(i)) for i in frames]
            faces = np.stack(
                [
                    face_input(crop_face(pic, job.boxes.box(int(i))))
                    for i, pic in zip(frames, pics, strict=True)
                ]
            )
            out = self.network.forward(mel, faces)
        return backends.to_faces(out)

    def _faces_dedup(self, job: JobInputs, frames: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Static avatar: a repeated mel window (e.g. silence) is rendered once per job."""
        self._static_features(job)  # switch (and clear) the caches first when the job changed
        keys = [w.tobytes() for w in windows]
        todo = [k for k in range(len(frames)) if keys[k] not in self._mel_cache]
        uniq: dict[bytes, int] = {}
        for k in todo:
            uniq.setdefault(keys[k], k)
        if uniq:
            idx = np.array(list(uniq.values()))
            for key, face in zip(uniq, self._faces(job, frames[idx], windows[idx]), strict=True):
                self._mel_cache[key] = face
        out = np.stack([self._mel_cache[k] for k in keys])
        if len(self._mel_cache) > 4096:  # bounded: only repeats matter, keep memory flat
            self._mel_cache.clear()
        return out

    def generated_faces(
        self, job: JobInputs, start: int, end: int, keyframes: Collection[int] = ()
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (global frame indices, 96×96 faces) batch by batch for [start, end)
        (``keyframes``: where the encoder cuts, see ``batch_bounds``)."""
        for frames, faces, _ in self._batches(job, start, end, keyframes):
            yield frames, faces

    def _batches(
        self, job: JobInputs, start: int, end: int, keyframes: Collection[int]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]]:
        """(frames, faces, their avatar frames or None for a still image): a video's frames
        are read once, here, and handed on for pasting (measured: a second decoder for the
        pasting thread costs more memory, ~140 MB of ffmpeg at 1080p, than the frames of
        the one batch that waits in the queue)."""
        bs = self.options.batch_size
        dedup = (
            self.options.reuse_identical_mels
            and job.avatar.is_static
            and self.options.static_face_features
        )
        for a, b in batch_bounds(start, end, bs, keyframes=keyframes):
            frames = np.arange(a, b)
            windows = job.mel_windows(a, b)
            pics = None if job.avatar.is_static else [job.frame(int(i)) for i in frames]
            faces = (
                self._faces_dedup(job, frames, windows)
                if dedup
                else self._faces(job, frames, windows, pics)
            )
            yield frames, faces, pics

    def render(
        self, job: JobInputs, start: int, end: int, keyframes: Collection[int] = ()
    ) -> Iterator[np.ndarray]:
        """Full BGR frames for [start, end), in order (``keyframes``: see ``batch_bounds``).

        With ``options.overlap`` the network runs one or two batches ahead on a background
        thread while this generator's consumer pastes, labels and encodes (torch, OpenCV and
        pipe writes release the GIL), so the network does not wait for I/O. A frame whose
        patch weight is 0 (no face there) is written unchanged."""
        if not 0 <= start < end <= job.n_frames:
            raise ValueError(
                f"frame range [{start}, {end}) outside the job's {job.n_frames} frames"
            )
        batches = self._batches(job, start, end, keyframes)
        if self.options.overlap:
            # a video's frames travel with their batch: one batch ahead bounds that memory
            batches = _prefetch(batches, depth=2 if job.avatar.is_static else 1)
        try:
            for frames, faces, pics in batches:
                if pics is None:
                    pics = [job.frame(int(i)) for i in frames]
                for i, face, pic in zip(frames, faces, pics, strict=True):
                    b = job.boxes
                    frame = paste_face(
                        pic, b.box(int(i)), face, alpha=b.alpha(int(i)), blend=job.blend
                    )
                    if job.label:
                        frame = stamp_label(frame, job.label)
                    yield frame
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # joins the prefetch thread, so its decoder is released below
            job.avatar.release()  # stop this range's decoders (a video avatar)


_DONE = object()


def _prefetch(source: Iterator, depth: int) -> Iterator:
    """Run ``source`` on a background thread, ``depth`` items ahead of the consumer.
    Exceptions are re-raised in the consumer; a consumer that stops early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    worker = threading.Thread(target=produce, name="render-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
