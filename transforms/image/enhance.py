"""Borderline enhancement: rescue a photo rejected only for a fixable reason. Pure.

curate --enhance (transforms/image/analyze.py) and score --enhance
(transforms/scoring/prepare.py) call attempt(); make_tfrecords and score
apply the recipe it returns with apply_recipe() inside the shared model-input
path (transforms/image/preprocess.py), so training and serving see the same
pixels.

The recipe, in this order, each step only when the reason calls for it:
  1. exposure lift (too_dark): a gain of 2^ev in linear light, the same on
     every channel, so chromaticity is kept; ev is the smallest step of the
     policy's ladder whose result passes and is lit well enough to use
     (lum_p99 >= min_lum_p99_after_lift);
  2. mild denoise of lightness (too_dark, blurry): a lift or a sharpen would
     amplify sensor noise (OpenCV non-local means, strength h);
  3. CLAHE on lightness only (too_dark, low_information): local contrast,
     a* and b* untouched;
  4. unsharp mask of lightness (blurry): L + amount * (L - Gaussian(L, sigma)).
Pixel parameters are in pixels at ~224 px, the size curate judges and a model
sees: curate applies the recipe to its analysis array, make_tfrecords and
score to the model's 224 px square.

Never attempted: input failures, duplicates (decided later), no_skin,
too_small, too_bright (clipped pixels hold nothing to recover), or a reason
whose feature is beyond the policy's strong bound, nor a photo whose own
skin test fails or (exposure fixes) cannot judge it (skin_verified). A result is accepted only
if every quality test passes on features recomputed from the enhanced array
(transforms/image/quality.py, the same code), the skin test is applied even
where the verdict would abstain for darkness, the relevance model's skin
probability reaches the policy's min_skin_probability_after, and the median ITA of the skin
region moved by at most max_ita_shift_deg (else refused: the recipe must not
change skin colour).
"""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np

from schemas.policy import QualityPolicy
from transforms.image.colour import exposed
from transforms.image.quality import policy_features
from transforms.image.verdict import not_skin, quality_reasons

RECIPE_NAME = "lift-denoise-clahe-usm/1"
# Outcomes written to enhance_outcome (schemas/features.py).
RESCUED, STILL_REJECTED, REFUSED_ITA, STRONG = "rescued", "still_rejected", "refused_ita", "strong_defect"
SKIN_UNVERIFIED = "skin_unverified"
# Report thumbnail key of a rescued image before enhancement: its uri + this suffix.
BEFORE_ENHANCE = "#before_enhance"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What attempt() decided: outcome, the recipe tried last (None if none
    was), the enhanced array and its features (rescued only), the ITA shift."""
    outcome: str
    recipe: dict | None = None
    image: np.ndarray | None = None
    features: dict | None = None
    ita_shift: float | None = None


def lift_exposure(image: np.ndarray, ev: float) -> np.ndarray:
    """2^ev gain in linear light on every channel (one 8-bit table)."""
    return exposed(image, ev) if ev else image


def apply_recipe(image: np.ndarray, recipe: dict) -> np.ndarray:
    """A BGR uint8 array with the recipe applied (a recipe as attempt() records it)."""
    out = lift_exposure(image, float(recipe["ev"]))
    h, clip, amount = float(recipe["denoise_h"]), float(recipe["clahe_clip"]), float(recipe["unsharp_amount"])
    if not (h or clip or amount):
        return out
    lab = cv2.cvtColor(out, cv2.COLOR_BGR2Lab)
    L = lab[..., 0].copy()
    if h:
        L = cv2.fastNlMeansDenoising(L, None, h, 7, 21)
    if clip:
        tiles = int(recipe["clahe_tiles"])
        L = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(L)
    if amount:
        soft = cv2.GaussianBlur(L, (0, 0), float(recipe["unsharp_sigma"]))
        L = cv2.addWeighted(L, 1.0 + amount, soft, -amount, 0)
    lab[..., 0] = L
    return cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)


def recipe_json(recipe: dict | None) -> str | None:
    """The recipe as curate records it (enhance_recipe): stable JSON."""
    return None if recipe is None else json.dumps(recipe, sort_keys=True)


def parse_recipe(text: str | None) -> dict | None:
    """enhance_recipe back to a recipe dict; ValueError if it is not one."""
    if not text:
        return None
    try:
        recipe = json.loads(text)
        if recipe.get("name") != RECIPE_NAME:
            raise ValueError(f"unknown recipe {recipe.get('name')!r}")
        for key in ("ev", "denoise_h", "clahe_clip", "clahe_tiles", "unsharp_sigma", "unsharp_amount"):
            float(recipe[key])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"bad enhance_recipe {text!r}: {e}") from None
    return recipe


def is_strong(row: dict, reasons, policy: QualityPolicy) -> bool:
    """A reason's feature is beyond the policy's strong bound: not borderline."""
    e = policy.enhance
    return (("too_dark" in reasons and row["lum_p99"] <= e.strong_dark_max_p99)
            or ("blurry" in reasons and row["sharpness"] <= e.strong_blur_max_sharpness)
            or ("low_information" in reasons and row["entropy"] <= e.strong_flat_max_entropy))


def eligible(row: dict, policy: QualityPolicy) -> bool:
    """Rejected, with reasons that are all fixable (cheap: called on every row)."""
    reasons = row["reasons"]
    return bool(reasons) and row.get("lum_p99") is not None and set(reasons) <= policy.enhance.fixable


def skin_verified(row: dict, reasons, policy: QualityPolicy) -> bool:
    """The upload itself passes the skin test, which quality_reasons hides
    behind blurry, too_dark and low_information; and, for an exposure or
    contrast fix, it is bright enough for that test and for its ITA to mean
    anything (the policy's min_brightness_to_judge).

    On real photos, blurred non-skin photos (a cat, a crate) passed the skin
    test after unsharp masking, and dim photos whose skin stayed near black
    after the recipe kept an ITA of about -85 degrees whatever the true tone
    (a light-skinned arm read as Monk 10): the ITA shift limit cannot catch
    that, since before and after are both pinned near -90.
    """
    if not_skin(row, policy):
        return False
    exposure = "too_dark" in reasons or "low_information" in reasons
    return not exposure or row["brightness_mean"] >= policy.skin_min_brightness


def _surely_skin(features: dict, e) -> bool:
    # Blur and smoothing read as skin to the relevance model: a rescue needs a higher bar.
    p = features.get("skin_probability")
    return p is None or p >= e.min_skin_probability_after


def recipe_for(reasons, policy: QualityPolicy, ev: float) -> dict:
    e = policy.enhance
    dark, flat, blurry = "too_dark" in reasons, "low_information" in reasons, "blurry" in reasons
    return {"name": RECIPE_NAME, "ev": ev if dark else 0.0,
            "denoise_h": e.denoise_h if dark or blurry else 0.0,
            "clahe_clip": e.clahe_clip if dark or flat else 0.0, "clahe_tiles": e.clahe_tiles,
            "unsharp_sigma": e.unsharp_sigma, "unsharp_amount": e.unsharp_amount if blurry else 0.0}


def attempt(analysis: np.ndarray, row: dict, policy: QualityPolicy) -> Attempt | None:
    """Try the recipe on an eligible row's analysis array; None if not eligible.

    row holds the features of `analysis` (width, height and the verdict
    included). Exposure steps are tried smallest first; the first result
    that passes every test is checked for ITA shift and so rescued or refused.
    """
    if not eligible(row, policy):
        return None
    reasons = row["reasons"]
    if is_strong(row, reasons, policy):
        return Attempt(STRONG)
    if not skin_verified(row, reasons, policy):
        return Attempt(SKIN_UNVERIFIED)
    e = policy.enhance
    recipe = None
    for ev in (e.ev_steps if "too_dark" in reasons else (0.0,)):
        recipe = recipe_for(reasons, policy, float(ev))
        image = apply_recipe(analysis, recipe)
        features = dict(policy_features(image, policy), width=row["width"], height=row["height"])
        if quality_reasons(features, policy) or not_skin(features, policy) or not _surely_skin(features, e):
            continue
        if recipe["ev"] and features["lum_p99"] < e.min_lift_p99:  # over the line but still too dim to use
            continue
        before, after = row.get("ita_deg"), features.get("ita_deg")
        if before is None or after is None:  # no skin region to compare: colour unchecked, refuse
            return Attempt(REFUSED_ITA, recipe)
        shift = float(after - before)
        if abs(shift) > e.max_ita_shift_deg:
            return Attempt(REFUSED_ITA, recipe, ita_shift=shift)
        return Attempt(RESCUED, recipe, image, features, shift)
    return Attempt(STILL_REJECTED, recipe)
