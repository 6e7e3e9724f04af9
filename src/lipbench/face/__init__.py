"""Avatars (image or video) and face boxes for Wav2Lip: load, detect, cache, crop, paste back.

Conventions (see shared/spec/wav2lip.md, "Face crop, model input, paste-back"):

- every pixel array is BGR uint8, OpenCV's order, as Wav2Lip was trained;
- a box is ``(x1, y1, x2, y2)`` in full-frame pixels, exclusive at x2/y2, already padded with
  ``pads = (top, bottom, left, right)`` and clamped to the frame;
- a video avatar is read on demand by frame index (:mod:`.video`; memory does not grow with
  its length); output frame ``i`` shows the avatar frame on screen at ``i / fps`` seconds,
  looped forward and backward (:mod:`.timeline`); :class:`FaceBoxes` maps every global
  output frame to its avatar frame, box and patch weight, so a job split into chunks sees
  exactly the frames a sequential run sees;
- one person is tracked (:mod:`.track`): detections come from YuNet (default,
  :mod:`.yunet`) or Haar, cached per avatar with their five landmarks (:mod:`.cache`);
  a frame without the tracked face is written unchanged (patch weight 0, fading at the
  edges of the gap);
- avatar frames are at most ``max_side`` (default :data:`MAX_SIDE`) pixels on the long side,
  with even width and height, so every frame can be encoded as H.264.

Avatar pixel arrays are marked read-only so that nothing downstream can paint into the
shared frames by accident; :func:`paste_face` returns a new frame.

Modules: :mod:`.settings` (:class:`FaceSettings`, the config's face section), :mod:`.avatar`
(loading), :mod:`.video` (on-demand frames), :mod:`.fit` (size limits), :mod:`.yunet` and
:mod:`.haar` (detectors), :mod:`.track` (one person), :mod:`.timeline` (time sampling,
looping), :mod:`.boxes` (box type, padding, smoothing, patch weights), :mod:`.detect`
(:func:`detect_faces`), :mod:`.cache` (the on-disk detection cache), :mod:`.crop` (crop
and paste-back, feathered or not), :mod:`.bench_memory` (peak RSS by avatar length).
"""

from lipbench.face.avatar import (
    DEFAULT_AVATAR,
    DEFAULT_SOURCE,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Avatar,
    load_avatar,
)
from lipbench.face.boxes import DEFAULT_PADS, DETECTORS, S3FD_WEIGHTS, FaceBoxes, FaceSummary
from lipbench.face.cache import CACHE_FORMAT_VERSION, detection_cache_key
from lipbench.face.crop import FACE_SIZE, crop_face, face_input, feather_mask, paste_face
from lipbench.face.detect import detect_faces, detect_frame
from lipbench.face.fit import MAX_SIDE
from lipbench.face.settings import FaceSettings
from lipbench.face.timeline import Timeline

__all__ = [
    "CACHE_FORMAT_VERSION",
    "DEFAULT_AVATAR",
    "DEFAULT_PADS",
    "DEFAULT_SOURCE",
    "DETECTORS",
    "FACE_SIZE",
    "IMAGE_EXTENSIONS",
    "MAX_SIDE",
    "S3FD_WEIGHTS",
    "VIDEO_EXTENSIONS",
    "Avatar",
    "FaceBoxes",
    "FaceSettings",
    "FaceSummary",
    "Timeline",
    "crop_face",
    "face_input",
    "detect_faces",
    "detect_frame",
    "feather_mask",
    "detection_cache_key",
    "load_avatar",
    "paste_face",
]
