"""Model-input preprocessing shared by make_tfrecords and score. Pure.

One decode at the smallest JPEG DCT scale that still covers the crop, EXIF
orientation applied (transforms.image.decode), a square crop (centred, or
around the main skin region: transforms/image/skin_crop.py), an area resize to
the model's size, the enhancement recipe of an image rescued by one
(transforms/image/enhance.py), and a JPEG re-encode. cv2.imencode writes no EXIF,
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
from transforms.image.enhance import apply_recipe


def decode_size_for(image_size: int, crop_fraction: float) -> int:
    """Short side the decode must keep so the crop still covers image_size."""
    return math.ceil(image_size / crop_fraction)


def decode_for_model(data: bytes, image_size: int, crop_fraction: float,
                     max_pixels: int = DEFAULT_MAX_PIXELS, max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
                     crop: str = "center"):
    """The one decode of the model path (transforms.image.decode.Decoded).
    --crop skin may cut a smaller square (skin_crop.MIN_SIDE_FRACTION): its decode keeps more pixels."""
    return decode(data, analysis_short_side=decode_size_for(image_size, skin_crop.decode_fraction(crop, crop_fraction)),
                  max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


def model_jpeg(image: np.ndarray, *, image_size: int, crop_fraction: float, quality: int,
               crop: str = "center", recipe: dict | None = None) -> tuple[bytes, str]:
    """Decoded BGR array -> (the model-ready JPEG training records store,
    crop_used: "skin" or "center").

    recipe: an enhancement recipe (transforms/image/enhance.py) applied to the
    resized square, for images curate (or score --enhance) rescued with it.
    """
    square, used = skin_crop.crop_resize(image, image_size, crop_fraction, crop)
    if recipe:
        square = apply_recipe(square, recipe)
    ok, buf = cv2.imencode(".jpg", square, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes(), used


def preprocess_to_jpeg(data: bytes, *, image_size: int = IMAGE_DEFAULTS["image_size"],
                       crop_fraction: float = IMAGE_DEFAULTS["crop_fraction"],
                       quality: int = IMAGE_DEFAULTS["jpeg_quality"], max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES, crop: str = "center",
                       recipe: dict | None = None) -> tuple[bytes, str]:
    """Upload bytes -> (model-ready JPEG (RGB content, no EXIF), crop_used).
    Raises ImageRejected. recipe: the enhancement recipe curate recorded for
    the image, if any."""
    decoded = decode_for_model(data, image_size, crop_fraction, max_pixels, max_decode_bytes, crop)
    return model_jpeg(decoded.image, image_size=image_size, crop_fraction=crop_fraction, quality=quality,
                      crop=crop, recipe=recipe)
