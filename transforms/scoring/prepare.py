"""Per-image preparation for scoring: one decode, optional quality gate. Pure.

The model input is produced exactly as make_tfrecords produced training
images: the same decode scale, crop, resize and JPEG bytes, decoded by the
same TensorFlow op (schemas.examples.decode_image). The quality gate judges
features computed from that same decoded array with curate's policy.
"""
from __future__ import annotations

import numpy as np

from schemas.policy import QualityPolicy
from transforms.image.preprocess import decode_for_model, model_jpeg
from transforms.image.quality import policy_features
from transforms.image.verdict import quality_reasons


def model_input_from_jpeg(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 RGB array via the trainer's decode op."""
    from schemas.examples import decode_image
    return decode_image(jpeg).numpy()


def prepare(data: bytes, policy: QualityPolicy, *, image_size: int, crop_fraction: float,
            jpeg_quality: int, gate: bool) -> tuple[list[str], np.ndarray | None]:
    """(quality reasons, model input). Reasons non-empty -> no input (skipped).

    Raises transforms.image.decode.ImageRejected for unreadable input.
    """
    decoded = decode_for_model(data, image_size, crop_fraction, policy.max_pixels, policy.max_decode_bytes)
    if gate:
        w, h = decoded.width, decoded.height
        features = policy_features(decoded.image, policy)
        reasons = quality_reasons(dict(features, width=w, height=h), policy)
        if reasons:
            return reasons, None
    jpeg = model_jpeg(decoded.image, image_size=image_size, crop_fraction=crop_fraction, quality=jpeg_quality)
    return [], model_input_from_jpeg(jpeg)
