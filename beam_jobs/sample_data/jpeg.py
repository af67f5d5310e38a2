"""JPEG encoding as a phone does it: pixels stored in sensor orientation,
an EXIF Orientation tag saying how to display them, and EXIF metadata."""
from __future__ import annotations

import struct

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
    upright: np.ndarray, orientation: int, quality: int, progressive: bool, tags: CameraTags,
    icc_profile: bytes | None = None,
) -> bytes:
    """Encode an upright BGR image so that a viewer honouring EXIF Orientation
    ``orientation`` shows it upright; the EXIF APP1 follows SOI directly, then
    the ICC profile's APP2 when one is given (the pixels must be in its space)."""
    rotation = _STORE_ROTATION[orientation]
    stored = upright if rotation is None else cv2.rotate(upright, rotation)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buf = cv2.imencode(".jpg", stored, params)
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    data = buf.tobytes()
    if icc_profile:  # one APP2 segment: display profiles are far under 64 KB
        body = b"ICC_PROFILE\x00\x01\x01" + icc_profile
        data = insert_after_soi(data, b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body)
    return insert_after_soi(data, exif_segment(tags, orientation))


def encode_heic(upright: np.ndarray, orientation: int, quality: int, tags: CameraTags,
                icc_profile: bytes | None = None) -> bytes:
    """HEIC as an iPhone writes it: stored pixels, orientation as HEIF irot
    (pillow-heif turns the EXIF tag into irot/imir), EXIF and profile kept,
    and a 320 px thumbnail embedded (iPhones embed one of about 320x240)."""
    import io

    import pillow_heif
    from PIL import Image
    rotation = _STORE_ROTATION[orientation]
    stored = upright if rotation is None else cv2.rotate(upright, rotation)
    exif = exif_segment(tags, orientation)[10:]  # APP1 marker, length and "Exif\0\0" off
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(np.ascontiguousarray(stored[..., ::-1]))).save(
        buf, format="HEIF", quality=int(quality), exif=exif, icc_profile=icc_profile, thumbnails=[320])
    return buf.getvalue()
