"""JPEG encoding as a phone does it: pixels stored in sensor orientation,
an EXIF Orientation tag saying how to display them, and EXIF metadata."""
from __future__ import annotations

import cv2
import numpy as np

from beam_jobs.sample_data.exif import CameraTags, exif_segment, insert_after_soi

# Stored pixels = upright image turned by the inverse of what the tag asks a
# viewer to do (6: "rotate 90 CW to display", so store it turned 90 CCW).
_STORE_ROTATION = {
    1: None,
    3: cv2.ROTATE_180,
    6: cv2.ROTATE_90_COUNTERCLOCKWISE,
    8: cv2.ROTATE_90_CLOCKWISE,
}
ORIENTATIONS = tuple(_STORE_ROTATION)


def encode_jpeg(
    upright: np.ndarray, orientation: int, quality: int, progressive: bool, tags: CameraTags
) -> bytes:
    """Encode an upright BGR image so that a viewer honouring EXIF Orientation
    ``orientation`` shows it upright; the EXIF APP1 follows SOI directly."""
    rotation = _STORE_ROTATION[orientation]
    stored = upright if rotation is None else cv2.rotate(upright, rotation)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buf = cv2.imencode(".jpg", stored, params)
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return insert_after_soi(buf.tobytes(), exif_segment(tags, orientation))
