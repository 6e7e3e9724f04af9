"""Follow one person through a video: pick the face once, then match it frame to frame.

Input: the detections of each used avatar frame, in frame order (K x 15 rows as
:func:`lipbench.face.yunet.yunet_faces` gives them; Haar rows have NaN landmarks and score 1).
The face is picked once (``select``): followed from a few seed frames, the track with the most
face (area x score summed over its frames) wins; it is followed forward and backward by overlap with the last matched box or, failing that, by
the distance between landmark centres. A frame with no match has no face (``present`` is
False): other, smaller or short-lived detections are ignored. Only a second face of
comparable size beside the tracked one in (nearly) every frame is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lipbench.errors import FaceError

# A second face is "comparable" when the tracked one is less than this many times its area.
DOMINANCE = 2.0
# ... and such a second face must be beside the tracked one in this share of frames to refuse.
THROUGHOUT = 0.9
MIN_IOU = 0.3
# Without overlap: centres at most this many box sizes apart, sizes within this ratio.
MAX_SHIFT = 0.5
MAX_SHIFT_AFTER_GAP = 1.0
MAX_SCALE = 1.6
SEEDS = 8  # evenly spaced frames the tracker also starts from (besides the strongest one)

NO_FACE_FIX = (
    "use a frontal, well-lit photo or video with one clearly visible face "
    "(at least about 12 % of the picture's short side), or the default avatar"
)
TWO_FACES_FIX = (
    "crop the avatar to one face, or set face.select to largest, left or right to choose one"
)


@dataclass
class Track:
    rects: np.ndarray  # K x 4 float (x, y, w, h); rows of absent frames are NaN
    landmarks: np.ndarray  # K x 10 float (NaN: absent frame or no landmarks)
    scores: np.ndarray  # K float (NaN: absent)

    @property
    def present(self) -> np.ndarray:
        return ~np.isnan(self.rects[:, 0])


def _area(d: np.ndarray) -> np.ndarray:
    return d[..., 2] * d[..., 3]


def _centre(d: np.ndarray) -> np.ndarray:
    """Landmark centre when the detector gives landmarks, else the box centre (N x 2)."""
    d = np.atleast_2d(d)
    box_c = d[:, 0:2] + d[:, 2:4] / 2
    lm = d[:, 4:14].reshape(-1, 5, 2).mean(axis=1)
    return np.where(np.isnan(lm), box_c, lm)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (x, y, w, h) with each row of ``b``."""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (_area(a) + _area(b) - inter)


def _choose(d: np.ndarray, select: str) -> int:
    c = _centre(d)[:, 0]
    if select == "left":
        return int(np.argmin(c))
    if select == "right":
        return int(np.argmax(c))
    return int(np.argmax(_area(d) * d[:, 14]))  # auto / largest: big and sure


def _match(ref: np.ndarray, d: np.ndarray, gap: int) -> int | None:
    if len(d) == 0:
        return None
    iou = _iou(ref, d)
    if iou.max() >= MIN_IOU:
        return int(np.argmax(iou))
    size = np.sqrt(_area(ref))
    shift = np.linalg.norm(_centre(d) - _centre(ref), axis=1) / size
    scale = np.sqrt(_area(d)) / size
    ok = (shift <= (MAX_SHIFT if gap == 0 else MAX_SHIFT_AFTER_GAP)) & (scale <= MAX_SCALE)
    ok &= scale >= 1 / MAX_SCALE
    return int(np.argmin(np.where(ok, shift, np.inf))) if ok.any() else None


def _follow(dets: Sequence[np.ndarray], seed: int, first: int) -> np.ndarray:
    """Index of the followed detection in each frame (-1: not there), from ``seed``'s
    detection ``first`` forward and backward."""
    chosen = np.full(len(dets), -1)
    chosen[seed] = first
    for step in (1, -1):
        ref, gap = dets[seed][first], 0
        j = seed + step
        while 0 <= j < len(dets):
            m = _match(ref, dets[j], gap)
            if m is None:
                gap += 1
            else:
                chosen[j], ref, gap = m, dets[j][m], 0
            j += step
    return chosen


def track_face(
    dets: Sequence[np.ndarray], select: str, where: Callable[[int], str], source: str
) -> Track:
    """The tracked face in each of ``dets``' frames; FaceError if there is none anywhere, or
    (``select`` auto) two comparable faces throughout. ``where(j)`` names frame ``j``."""
    k = len(dets)
    rects = np.full((k, 4), np.nan)
    lms = np.full((k, 10), np.nan)
    scores = np.full(k, np.nan)
    with_faces = [j for j in range(k) if len(dets[j])]
    if not with_faces:
        what = "no face found in" if k == 1 else f"no face found in any of the {k} frames used of"
        raise FaceError(f"{what} {source}", NO_FACE_FIX)

    def strength(j: int) -> float:
        d = dets[j][_choose(dets[j], select)]
        return float(d[14]) if select in ("left", "right") else float(_area(d) * d[14])

    # Follow from a few seeds (the strongest frame's choice and evenly spaced others) and
    # keep the track that is biggest and surest summed over the frames it covers: a large
    # but passing false detection (Haar boxes background now and then) loses to the face
    # that is there all along.
    strongest = max(with_faces, key=lambda j: (strength(j), -j))
    spaced = [with_faces[round(q)] for q in np.linspace(0, len(with_faces) - 1, SEEDS)]
    best: tuple[float, np.ndarray] | None = None
    for seed in dict.fromkeys([strongest, *spaced]):
        chosen = _follow(dets, seed, _choose(dets[seed], select))
        picked = [dets[j][chosen[j]] for j in np.flatnonzero(chosen >= 0)]
        score = float(sum(_area(d) * d[14] for d in picked))
        if best is None or score > best[0] * (1 + 1e-9):
            best = (score, chosen)
    assert best is not None
    chosen = best[1]
    n_two = 0
    first_two = -1
    for j in np.flatnonzero(chosen >= 0):
        d = dets[j][chosen[j]]
        rects[j], lms[j], scores[j] = d[0:4], d[4:14], d[14]
        others = np.delete(dets[j], chosen[j], axis=0)
        if len(others):
            far = _iou(d, others) < MIN_IOU
            close = far & (_area(others) * DOMINANCE > _area(d))
            if close.any():
                n_two += 1
                first_two = int(j) if first_two < 0 else first_two
    n_present = int((chosen >= 0).sum())
    if select == "auto" and n_two and n_two >= THROUGHOUT * n_present:
        what = "several faces of similar size found in"
        if k > 1:
            what = f"two faces of similar size in {n_two} of {n_present} frames, e.g. in"
        raise FaceError(f"{what} {where(first_two)}", TWO_FACES_FIX)
    return Track(rects, lms, scores)
