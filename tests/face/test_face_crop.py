"""Tests for lipbench.face.crop: the 96x96 face crop and the paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import astronaut_bgr

from lipbench import face


def test_crop_and_paste_round_trip() -> None:
    av = face.load_avatar("default")
    frame = av.frame(0)
    box = face.detect_faces(av).box(0)
    crop = face.crop_face(frame, box)
    assert face.FACE_SIZE == 96
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    x1, y1, x2, y2 = box
    np.testing.assert_array_equal(
        crop, cv2.resize(frame[y1:y2, x1:x2], (96, 96), interpolation=cv2.INTER_LINEAR)
    )

    generated = np.zeros((96, 96, 3), np.uint8)
    generated[:, :, 2] = 255  # pure red
    out = face.paste_face(frame, box, generated)
    assert out is not frame and out.shape == frame.shape
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    assert (out[y1:y2, x1:x2] == (0, 0, 255)).all()
    np.testing.assert_array_equal(frame, astronaut_bgr())  # source untouched

    # pasting the crop back changes only the box, and only by resampling error
    back = face.paste_face(frame, box, crop)
    np.testing.assert_array_equal(back[outside], frame[outside])
    diff = np.abs(back[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2].astype(int))
    assert diff.mean() < 12

    buf = frame.copy()
    res = face.paste_face(buf, box, generated, inplace=True)
    assert res is buf
    np.testing.assert_array_equal(buf, out)


def test_crop_rejects_bad_boxes() -> None:
    frame = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(ValueError):
        face.crop_face(frame, (10, 10, 10, 20))
    with pytest.raises(ValueError):
        face.crop_face(frame, (0, 0, 61, 50))
    with pytest.raises(ValueError):
        face.paste_face(frame, (0, 0, 10, 10), np.zeros((96, 96, 3), np.float32))
