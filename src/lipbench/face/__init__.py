"""Avatars (image or video) and face boxes for Wav2Lip: load, detect, cache, crop, paste back.

Conventions (see shared/spec/wav2lip.md, "Face crop, model input, paste-back"):

- every pixel array is BGR uint8, OpenCV's order, as Wav2Lip was trained;
- a box is ``(x1, y1, x2, y2)`` in full-frame pixels, exclusive at x2/y2, already padded with
  ``pads = (top, bottom, left, right)`` and clamped to the frame;
- video avatars loop: global frame index ``i`` maps to frame ``i % n``, both for pixels
  (:meth:`Avatar.frame`) and boxes (:meth:`FaceBoxes.box`), so a job split into chunks sees
  exactly the frames a sequential run sees;
- avatar frames are at most ``max_side`` (default :data:`MAX_SIDE`) pixels on the long side,
  with even width and height, so every frame can be encoded as H.264.

Avatar pixel arrays are marked read-only so that nothing downstream can paint into the
shared frames by accident; :func:`paste_face` returns a new frame.

Modules: :mod:`.avatar` (loading), :mod:`.fit` (size limits), :mod:`.haar` (the detector),
:mod:`.boxes` (box type, settings, padding, smoothing), :mod:`.detect` (:func:`detect_faces`),
:mod:`.cache` (the on-disk detection cache), :mod:`.crop` (crop and paste-back).
"""

from lipbench.face.avatar import (
    DEFAULT_AVATAR,
    DEFAULT_SOURCE,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Avatar,
    load_avatar,
)
from lipbench.face.boxes import DEFAULT_PADS, DETECTORS, S3FD_WEIGHTS, FaceBoxes
from lipbench.face.cache import CACHE_FORMAT_VERSION, detection_cache_key
from lipbench.face.crop import FACE_SIZE, crop_face, face_input, paste_face
from lipbench.face.detect import detect_faces
from lipbench.face.fit import MAX_SIDE

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
    "crop_face",
    "face_input",
    "detect_faces",
    "detection_cache_key",
    "load_avatar",
    "paste_face",
]
