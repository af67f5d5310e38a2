"""Quality verdict: features + policy -> rejection reason codes. Pure.

Duplicate reasons are decided later, across images (transforms/duplicates.py);
input failures (missing, empty, unreadable, ...) before any features exist.
"""
from __future__ import annotations

from schemas.policy import QualityPolicy
from schemas.reasons import ordered


def _not_skin(f: dict, policy: QualityPolicy) -> bool:
    """The relevance model says not skin, or a colour photo has hardly a skin-coloured pixel."""
    gray = bool(f.get("grayscale"))
    if not gray and f.get("skin_fraction") is not None and f["skin_fraction"] < policy.skin_min_fraction:
        return True
    p = f.get("skin_probability")
    return p is not None and policy.relevance is not None and not policy.relevance.is_skin(p, gray)


def quality_reasons(f: dict, policy: QualityPolicy) -> list[str]:
    """Reason codes for one image's features; [] means it passes."""
    found = set()
    if min(f["width"], f["height"]) < policy.min_short_side:
        found.add("too_small")
    if f["lum_p99"] <= policy.dark_max_p99:
        found.add("too_dark")
    if f["overexposed_fraction"] >= policy.bright_min_overexposed:
        found.add("too_bright")
    if f["entropy"] <= policy.info_max_entropy:
        found.add("low_information")
    if f["sharpness"] <= policy.blur_max_sharpness:
        found.add("blurry")
    # Too dark to carry colour: abstain rather than call skin "not skin".
    if f["brightness_mean"] >= policy.skin_min_brightness and _not_skin(f, policy):
        found.add("no_skin")
    # Report root causes only: drop a reason when one it defers to is present.
    kept = {r for r in found if not found.intersection(policy.suppressed_by.get(r, ()))}
    return ordered(kept)
