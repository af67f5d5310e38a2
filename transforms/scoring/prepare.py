"""Per-image preparation for scoring: one decode, optional quality gate. Pure.

The model input is produced exactly as make_tfrecords produced training
images: the same decode scale, crop, resize and JPEG bytes, decoded by the
same TensorFlow op (schemas.examples.decode_image). The quality gate judges
what curate's analysis judges: the array curate decodes (at the DCT scale
covering the policy's analysis size), with curate's policy, so score skips
exactly the uploads curate rejects. That is the model's own decode whenever
curate's decode would give the same array (transforms.image.decode.
decodes_alike: every 12 MP JPEG, any model; a HEIC without a thumbnail
covering curate's size); otherwise (say a 1280x960 photo, which curate reads
at 1/4 and a 224 px model, needing 256 px before its crop, at 1/2; any small
model; a HEIC whose ~320 px thumbnail covers curate's 224 px but not the
model's 256 px) the gate's array is decoded apart: features of a differently
scaled array differ, and verdicts near a threshold would flip.
"""
from __future__ import annotations

import numpy as np

from schemas.policy import QualityPolicy
from typing import NamedTuple

from transforms.image.analyze import decode_for_analysis
from transforms.image.decode import decodes_alike
from transforms.image.enhance import RESCUED, attempt
from transforms.image.preprocess import decode_for_model, model_jpeg
from transforms.image.quality import policy_features, to_analysis_size
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
    p = prepare_model_input(data, policy, image_size=image_size, crop_fraction=crop_fraction,
                            jpeg_quality=jpeg_quality, gate=gate, crop=crop)
    return p.reasons, p.array


class Prepared(NamedTuple):
    """What prepare_model_input() made of one upload."""
    reasons: list          # quality reasons; non-empty -> no model input (skipped)
    array: np.ndarray | None
    crop_used: str | None  # "skin" or "center"; None when skipped
    recipe: dict | None    # the enhancement recipe applied (score --enhance), else None


def prepare_model_input(data: bytes, policy: QualityPolicy, *, image_size: int, crop_fraction: float,
                        jpeg_quality: int, gate: bool, crop: str = "center", enhance: bool = False) -> Prepared:
    """prepare() with the crop cut and, with score --enhance, the rescue.

    An image the gate rejects only for fixable reasons goes through the same
    attempt() as curate's (transforms/image/enhance.py), judged on the
    analysis-size array of this decode; if rescued, the model input is made
    with the recipe applied, by the same model_jpeg make_tfrecords uses.
    """
    decoded = decode_for_model(data, image_size, crop_fraction, policy.max_pixels, policy.max_decode_bytes, crop)
    recipe = None
    if gate:
        w, h = decoded.width, decoded.height
        if decodes_alike(decoded, policy.analysis_short_side):
            analysis = to_analysis_size(decoded.image, policy.analysis_short_side)
        else:
            _, analysis = decode_for_analysis(data, policy)   # curate's own decode
        features = policy_features(analysis, policy)
        reasons = quality_reasons(dict(features, width=w, height=h), policy)
        if reasons and enhance:
            tried = attempt(analysis, dict(features, width=w, height=h, reasons=reasons), policy)
            if tried is not None and tried.outcome == RESCUED:
                reasons, recipe = [], tried.recipe
        if reasons:
            return Prepared(reasons, None, None, None)
    jpeg, used = model_jpeg(decoded.image, image_size=image_size, crop_fraction=crop_fraction,
                            quality=jpeg_quality, crop=crop, recipe=recipe)
    return Prepared([], model_input_from_jpeg(jpeg), used, recipe)
