"""Model-input preprocessing shared by make_tfrecords and score. Pure.

One decode at the smallest JPEG DCT scale that still covers the crop, EXIF
orientation applied (transforms.image.decode), a centred square crop, an area
resize to the model's size, and a JPEG re-encode. cv2.imencode writes no EXIF,
so nothing from the upload's metadata (GPS included) survives. Training
records carry these JPEG bytes; scoring decodes the same bytes with the same
TensorFlow op, so a model sees at serving exactly what it saw in training.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from schemas.examples import IMAGE_DEFAULTS
from transforms.image import skin_crop
from transforms.image.decode import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS, decode


def decode_size_for(image_size: int, crop_fraction: float) -> int:
    """Short side the decode must keep so the crop still covers image_size."""
    return math.ceil(image_size / crop_fraction)


def center_crop_resize(image: np.ndarray, image_size: int, crop_fraction: float) -> np.ndarray:
    """Centred square of crop_fraction x the short side, resized to image_size."""
    h, w = image.shape[:2]
    side = max(1, round(crop_fraction * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side >= image_size else cv2.INTER_LINEAR
    return cv2.resize(square, (image_size, image_size), interpolation=interp)


def decode_for_model(data: bytes, image_size: int, crop_fraction: float,
                     max_pixels: int = DEFAULT_MAX_PIXELS, max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
                     crop: str = "center"):
    """The one decode of the model path (transforms.image.decode.Decoded).
    --crop skin may cut a smaller square (skin_crop.MIN_SIDE_FRACTION): its decode keeps more pixels."""
    return decode(data, analysis_short_side=decode_size_for(image_size, skin_crop.decode_fraction(crop, crop_fraction)),
                  max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


def model_jpeg(image: np.ndarray, *, image_size: int, crop_fraction: float, quality: int) -> bytes:
    """Decoded BGR array -> the model-ready JPEG training records store."""
    square = center_crop_resize(image, image_size, crop_fraction)
    ok, buf = cv2.imencode(".jpg", square, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes()


def preprocess_to_jpeg(data: bytes, *, image_size: int = IMAGE_DEFAULTS["image_size"],
                       crop_fraction: float = IMAGE_DEFAULTS["crop_fraction"],
                       quality: int = IMAGE_DEFAULTS["jpeg_quality"], max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES) -> bytes:
    """Upload bytes -> model-ready JPEG (RGB content, no EXIF). Raises ImageRejected."""
    decoded = decode_for_model(data, image_size, crop_fraction, max_pixels, max_decode_bytes)
    return model_jpeg(decoded.image, image_size=image_size, crop_fraction=crop_fraction, quality=quality)


# --crop skin|center (transforms/image/skin_crop.py): the same decode, square,
# resize and JPEG for both jobs, with the crop actually cut (crop_used).

def encode_model_jpeg(square: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", square, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes()


def model_jpeg_cropped(image: np.ndarray, *, image_size: int, crop_fraction: float, quality: int,
                       crop: str = "center") -> tuple[bytes, str]:
    """Decoded BGR array -> (model-ready JPEG, crop_used: "skin" or "center")."""
    square, used = skin_crop.crop_resize(image, image_size, crop_fraction, crop)
    return encode_model_jpeg(square, quality), used


def preprocess_cropped(data: bytes, *, image_size: int = IMAGE_DEFAULTS["image_size"],
                       crop_fraction: float = IMAGE_DEFAULTS["crop_fraction"],
                       quality: int = IMAGE_DEFAULTS["jpeg_quality"], max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
                       crop: str = "center") -> tuple[bytes, str]:
    """Upload bytes -> (model-ready JPEG, crop_used). Raises ImageRejected."""
    decoded = decode_for_model(data, image_size, crop_fraction, max_pixels, max_decode_bytes, crop)
    return model_jpeg_cropped(decoded.image, image_size=image_size, crop_fraction=crop_fraction,
                              quality=quality, crop=crop)
