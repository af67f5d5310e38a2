"""Quality verdict: features + policy -> rejection reason codes. Pure.

Duplicate reasons are decided later, across images (transforms/curate/duplicates.py);
input failures (missing, empty, unreadable, ...) before any features exist.
"""
from __future__ import annotations

from schemas.policy import QualityPolicy
from schemas.reasons import ordered


def not_skin(f: dict, policy: QualityPolicy, dim: bool = False) -> bool:
    """The skin test: the relevance model says not skin, or a colour photo has
    hardly a skin-coloured pixel. In a dim frame (quality_reasons says which)
    colour says little and noise swamps texture: the colour rule is not used,
    and the model must be sure, its probability under the policy's
    dim_max_probability too. Enhancement applies the whole test to every
    result it would accept."""
    gray = bool(f.get("grayscale"))
    if (not dim and not gray and f.get("skin_fraction") is not None
            and f["skin_fraction"] < policy.skin_min_fraction):
        return True
    p = f.get("skin_probability")
    if p is None or policy.relevance is None or (dim and p >= policy.skin_dim_max_probability):
        return False
    return not policy.relevance.is_skin(p, gray)


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
    # trained on dimmed copies, judges it, and only when it is sure. A frame
    # too dark for anything is too_dark, which no_skin defers to.
    if not_skin(f, policy, dim=f["brightness_mean"] < policy.skin_min_brightness):
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
    (kind or None, least mean brightness or None, mean brightness it stays
    under or None) for one that judges only part of the brightness range.
    `short_side` is min(width, height)."""
    lit, dim = (policy.skin_min_brightness, None), (None, policy.skin_min_brightness)
    tests = [("too_small", "short_side", "<", policy.min_short_side, None),
             ("too_dark", "lum_p99", "<=", policy.dark_max_p99, None),
             ("too_bright", "overexposed_fraction", ">=", policy.bright_min_overexposed, None),
             ("low_information", "entropy", "<=", policy.info_max_entropy, None),
             ("blurry", "sharpness", "<=", policy.blur_max_sharpness, None),
             ("no_skin", "skin_fraction", "<", policy.skin_min_fraction, ("colour", *lit))]
    if policy.relevance is not None:
        tests += [("no_skin", "skin_probability", "<", policy.relevance.threshold[kind], kind)
                  for kind in ("colour", "grayscale")]
        tests.append(("no_skin", "skin_probability", "<", policy.skin_dim_max_probability, (None, *dim)))
    return tests


def scope(applies_to) -> str:
    """What a test of thresholds() judges, in words ("" for every photo)."""
    if not isinstance(applies_to, tuple):
        return applies_to or ""
    kind, least, under = applies_to
    return " ".join(w for w in (kind, "dim frames" if under is not None else "",
                                "lit frames" if least is not None else "") if w)


def feature_value(row: dict, feature: str):
    if feature == "short_side":
        return min(row["width"], row["height"]) if row.get("width") and row.get("height") else None
    return row.get(feature)


def applies(applies_to, row: dict) -> bool:
    """Whether a test of thresholds() judges this row."""
    if applies_to is None:
        return True
    kind = "grayscale" if row.get("grayscale") else "colour"
    if not isinstance(applies_to, tuple):
        return kind == applies_to
    kind_judged, least, under = applies_to
    brightness = row.get("brightness_mean") or 0.0
    return (kind_judged in (None, kind) and (least is None or brightness >= least)
            and (under is None or brightness < under))


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
