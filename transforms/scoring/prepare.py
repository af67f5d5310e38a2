"""Per-image preparation for scoring: one decode, optional quality gate. Pure.

The model input is produced exactly as make_tfrecords produced training
images: the same decode scale, crop, resize and JPEG bytes, decoded by the
same TensorFlow op (schemas.examples.decode_image). The quality gate judges
features computed from that same decoded array with curate's policy.
"""
from __future__ import annotations

import numpy as np

from schemas.policy import QualityPolicy
from transforms.image.enhance import RESCUED, attempt
from transforms.image.preprocess import decode_for_model, model_jpeg
from transforms.image.quality import policy_features, to_analysis_size
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
    reasons, array, _recipe = prepare_enhanced(data, policy, image_size=image_size, crop_fraction=crop_fraction,
                                               jpeg_quality=jpeg_quality, gate=gate, enhance=False)
    return reasons, array


def prepare_enhanced(data: bytes, policy: QualityPolicy, *, image_size: int, crop_fraction: float,
                     jpeg_quality: int, gate: bool, enhance: bool) -> tuple[list[str], np.ndarray | None, dict | None]:
    """prepare() with score --enhance: (reasons, model input, recipe or None).

    An image the gate rejects only for fixable reasons goes through the same
    attempt() as curate's (transforms/image/enhance.py), judged on the
    analysis-size array of this decode; if rescued, the model input is made
    with the recipe applied, by the same model_jpeg make_tfrecords uses.
    """
    decoded = decode_for_model(data, image_size, crop_fraction, policy.max_pixels, policy.max_decode_bytes)
    recipe = None
    if gate:
        w, h = decoded.width, decoded.height
        analysis = to_analysis_size(decoded.image, policy.analysis_short_side)
        features = policy_features(analysis, policy)
        reasons = quality_reasons(dict(features, width=w, height=h), policy)
        if reasons and enhance:
            tried = attempt(analysis, dict(features, width=w, height=h, reasons=reasons), policy)
            if tried is not None and tried.outcome == RESCUED:
                reasons, recipe = [], tried.recipe
        if reasons:
            return reasons, None, None
    jpeg = model_jpeg(decoded.image, image_size=image_size, crop_fraction=crop_fraction, quality=jpeg_quality,
                      recipe=recipe)
    return [], model_input_from_jpeg(jpeg), recipe
