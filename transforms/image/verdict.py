"""Quality verdict: features + policy -> rejection reason codes. Pure.

Duplicate reasons are decided later, across images (transforms/curate/duplicates.py);
input failures (missing, empty, unreadable, ...) before any features exist.
"""
from __future__ import annotations

from schemas.policy import QualityPolicy
from schemas.reasons import ordered


def not_skin(f: dict, policy: QualityPolicy, colour_rule: bool = True) -> bool:
    """The skin test: the relevance model says not skin, or (colour_rule) a
    colour photo has hardly a skin-coloured pixel. quality_reasons drops the
    colour rule in dim frames; enhancement applies the whole test to every
    result it would accept."""
    gray = bool(f.get("grayscale"))
    if (colour_rule and not gray and f.get("skin_fraction") is not None
            and f["skin_fraction"] < policy.skin_min_fraction):
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
    # Colour fades with light: in a dim frame the share of skin-coloured pixels
    # says nothing (dimmed light skin reads as dark grey), so only the model,
    # trained on dimmed copies and reading texture too, judges it. A frame too
    # dark for anything is too_dark, which no_skin defers to.
    colour_rule = f["brightness_mean"] >= policy.skin_min_brightness
    if not_skin(f, policy, colour_rule):
        found.add("no_skin")
    # Report root causes only: drop a reason when one it defers to is present.
    kept = {r for r in found if not found.intersection(policy.suppressed_by.get(r, ()))}
    return ordered(kept)


# --- the tests above as data, for the report ---------------------------------

_COMPARE = {"<": lambda v, t: v < t, "<=": lambda v, t: v <= t, ">=": lambda v, t: v >= t}
_NEGATE = {"<": ">=", "<=": ">", ">=": "<"}


def thresholds(policy: QualityPolicy) -> list[tuple[str, str, str, float, str | tuple | None]]:
    """(reason, feature, comparison, threshold, applies_to) for each one-feature
    test quality_reasons applies, values from the policy. applies_to is None,
    "colour" / "grayscale" for a test that only judges such photos, or
    ("colour", b) for one that judges colour photos of mean brightness >= b.
    `short_side` is min(width, height)."""
    tests = [("too_small", "short_side", "<", policy.min_short_side, None),
             ("too_dark", "lum_p99", "<=", policy.dark_max_p99, None),
             ("too_bright", "overexposed_fraction", ">=", policy.bright_min_overexposed, None),
             ("low_information", "entropy", "<=", policy.info_max_entropy, None),
             ("blurry", "sharpness", "<=", policy.blur_max_sharpness, None),
             ("no_skin", "skin_fraction", "<", policy.skin_min_fraction, ("colour", policy.skin_min_brightness))]
    if policy.relevance is not None:
        tests += [("no_skin", "skin_probability", "<", policy.relevance.threshold[kind], kind)
                  for kind in ("colour", "grayscale")]
    return tests


def feature_value(row: dict, feature: str):
    if feature == "short_side":
        return min(row["width"], row["height"]) if row.get("width") and row.get("height") else None
    return row.get(feature)


def applies(applies_to, row: dict) -> bool:
    """Whether a test of thresholds() judges this row."""
    if applies_to is None:
        return True
    kind = "grayscale" if row.get("grayscale") else "colour"
    if isinstance(applies_to, tuple):
        kind_judged, least_brightness = applies_to
        return kind == kind_judged and (row.get("brightness_mean") or 0.0) >= least_brightness
    return kind == applies_to


def explain(row: dict, tests) -> list[tuple[str, str, float, str, float]]:
    """(reason, feature, value, comparison, threshold) for each test in
    `tests` (thresholds()) that decided one of the row's reasons: the
    feature values a person checks a rejection against."""
    out = []
    for reason, feature, op, limit, applies_to in tests:
        value = feature_value(row, feature)
        if (reason in row["reasons"] and value is not None and applies(applies_to, row)
                and _COMPARE[op](value, limit)):
            out.append((reason, feature, value, op, limit))
    return out


def closest_call(row: dict, tests):
    """For a row no test rejected: (feature, value, passing comparison,
    threshold) of the test it passed by the smallest relative margin, or None."""
    best = None
    for _reason, feature, op, limit, applies_to in tests:
        value = feature_value(row, feature)
        if value is None or not applies(applies_to, row) or _COMPARE[op](value, limit):
            continue
        margin = abs(value - limit) / (abs(limit) or 1)
        if best is None or margin < best[0]:
            best = (margin, (feature, value, _NEGATE[op], limit))
    return best[1] if best else None
