"""Per-image preparation for scoring: one decode, optional quality gate. Pure.

The model input is produced exactly as make_tfrecords produced training
images: the same decode scale, crop, resize and JPEG bytes, decoded by the
same TensorFlow op (schemas.examples.decode_image). The quality gate judges
features computed from that same decoded array with curate's policy.
"""
from __future__ import annotations

import numpy as np

from schemas.policy import QualityPolicy
from transforms.image.preprocess import decode_for_model, model_jpeg_cropped
from transforms.image.quality import policy_features
from transforms.image.verdict import quality_reasons


def model_input_from_jpeg(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 RGB array via the trainer's decode op."""
    from schemas.examples import decode_image
    return decode_image(jpeg).numpy()


def prepare(data: bytes, policy: QualityPolicy, *, image_size: int, crop_fraction: float,
            jpeg_quality: int, gate: bool, crop: str = "center") -> tuple[list[str], np.ndarray | None]:
    """(quality reasons, model input). Reasons non-empty -> no input (skipped).

    Raises transforms.image.decode.ImageRejected for unreadable input.
    """
    reasons, array, _used = prepare_cropped(data, policy, image_size=image_size, crop_fraction=crop_fraction,
                                            jpeg_quality=jpeg_quality, gate=gate, crop=crop)
    return reasons, array


def prepare_cropped(data: bytes, policy: QualityPolicy, *, image_size: int, crop_fraction: float,
                    jpeg_quality: int, gate: bool, crop: str = "center") -> tuple[list[str], np.ndarray | None, str | None]:
    """prepare() and crop_used ("skin" or "center"; None when skipped)."""
    decoded = decode_for_model(data, image_size, crop_fraction, policy.max_pixels, policy.max_decode_bytes, crop)
    if gate:
        w, h = decoded.width, decoded.height
        features = policy_features(decoded.image, policy)
        reasons = quality_reasons(dict(features, width=w, height=h), policy)
        if reasons:
            return reasons, None, None
    jpeg, used = model_jpeg_cropped(decoded.image, image_size=image_size, crop_fraction=crop_fraction,
                                    quality=jpeg_quality, crop=crop)
    return [], model_input_from_jpeg(jpeg), used
