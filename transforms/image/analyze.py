"""The per-image path: bytes -> one decode -> features -> verdict row. Pure.

analyze_image() never raises for bad input: every failure becomes a row with
a reason code and error text, so the job accounts for every input.
"""
from __future__ import annotations

import hashlib

import cv2

from schemas.features import empty_row
from schemas.policy import QualityPolicy
from transforms.image.decode import ImageRejected, decode
from transforms.image.enhance import RESCUED, attempt, recipe_json
from transforms.image.quality import half_size, policy_features, to_analysis_size
from transforms.image.verdict import quality_reasons


def input_failure(uri: str, reason: str, error: str, policy: QualityPolicy, **ids) -> dict:
    """A rejected row for an image that produced no pixels."""
    return empty_row(uri=uri, status="rejected", reasons=[reason], error=error,
                     policy_version=policy.version, **ids)


def thumbnail_jpeg(image, size: int) -> bytes:
    """A small square-ish JPEG for the report, from the already-decoded array."""
    small = image
    while min(small.shape[:2]) >= 2 * size:  # exact halvings, then one bilinear step: cheap and unaliased
        small = half_size(small)
    small = to_analysis_size(small, size)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


def analyze_image(uri: str, data: bytes, policy: QualityPolicy, *,
                  image_id: str | None = None, case_id: str | None = None,
                  thumbnail_px: int = 0) -> tuple[dict, bytes | None]:
    """One schemas.features row for an image's bytes, and optionally a thumbnail.

    The thumbnail (JPEG, no EXIF) comes from the same decoded array as the
    features; it is None when thumbnail_px is 0 or nothing could be decoded.
    """
    row, analysis = _analyze(uri, data, policy, {"image_id": image_id, "case_id": case_id})
    thumb = thumbnail_jpeg(analysis, thumbnail_px) if thumbnail_px and analysis is not None else None
    return row, thumb


def analyze_and_enhance(uri: str, data: bytes, policy: QualityPolicy, *,
                        image_id: str | None = None, case_id: str | None = None,
                        thumbnail_px: int = 0) -> tuple[dict, bytes | None, bytes | None]:
    """analyze_image() with curate --enhance: a row rejected only for fixable
    reasons gets transforms/image/enhance.py's recipe; if the enhanced array
    passes, the row is accepted with its features, `enhanced` true and the
    reasons it had before in reasons_before_enhance. Returns (row, thumbnail,
    thumbnail before enhancement or None); the thumbnail is of the enhanced
    array when rescued. Rows not eligible cost one set comparison more."""
    row, analysis = _analyze(uri, data, policy, {"image_id": image_id, "case_id": case_id})
    tried = attempt(analysis, row, policy) if analysis is not None and row["reasons"] else None
    before = None
    if tried is not None:
        row.update(enhanced=tried.outcome == RESCUED, enhance_outcome=tried.outcome,
                   enhance_recipe=recipe_json(tried.recipe), reasons_before_enhance=list(row["reasons"]),
                   enhance_ita_shift=tried.ita_shift)
        if tried.outcome == RESCUED:
            before = thumbnail_jpeg(analysis, thumbnail_px) if thumbnail_px else None
            row.update({k: v for k, v in tried.features.items() if k not in ("width", "height")})
            row.update(status="accepted", reasons=[])
            analysis = tried.image
    thumb = thumbnail_jpeg(analysis, thumbnail_px) if thumbnail_px and analysis is not None else None
    return row, thumb, before


def decode_for_analysis(data: bytes, policy: QualityPolicy):
    """(decode()'s result, the analysis-size array the features are computed
    on): one decode within the policy's limits, as curate does it. Raises
    ImageRejected as decode() does."""
    decoded = decode(data, analysis_short_side=policy.analysis_short_side,
                     max_pixels=policy.max_pixels, max_decode_bytes=policy.max_decode_bytes)
    return decoded, to_analysis_size(decoded.image, policy.analysis_short_side)


def _analyze(uri: str, data: bytes, policy: QualityPolicy, ids: dict):
    """(row, the analysis-size array or None when nothing was decoded)."""
    row = _read_row(uri, data, policy, ids)
    try:
        # One resize to the analysis size serves the features and the thumbnail.
        decoded, analysis = decode_for_analysis(data, policy)
    except ImageRejected as e:  # e.header: decode already parsed it
        row.update(status="rejected", reasons=[e.reason], error=str(e),
                   format=e.header.format if e.header else None)
        return row, None
    return _judged(row, decoded, analysis, policy), analysis


def decoded_row(uri: str, data: bytes, decoded, analysis, policy: QualityPolicy, **ids) -> dict:
    """curate's row (before duplicates) for bytes already decoded by
    decode_for_analysis(): features and the quality verdict."""
    return _judged(_read_row(uri, data, policy, ids), decoded, analysis, policy)


def _read_row(uri: str, data: bytes, policy: QualityPolicy, ids: dict) -> dict:
    return empty_row(uri=uri, sha256=hashlib.sha256(data).hexdigest(),
                     file_size=len(data), policy_version=policy.version, **ids)


def _judged(row: dict, decoded, analysis, policy: QualityPolicy) -> dict:
    w, h = decoded.width, decoded.height
    row.update(format=decoded.header.format, width=w, height=h,
               aspect_ratio=min(w, h) / max(w, h), orientation=decoded.header.orientation,
               decode_scale=decoded.scale)
    row.update(policy_features(analysis, policy))
    reasons = quality_reasons(row, policy)
    row.update(status="rejected" if reasons else "accepted", reasons=reasons)
    return row
