"""Skin mask, Individual Typology Angle and Monk tone estimate: pure functions.

The classic YCrCb box (Cr 133-173, Cb 77-127) misses the ends of the tone
range: Monk 10 (#292420) has Cr 131 and Monk 1 sits on the boundary. In CIE Lab
every Monk tone has a small but non-zero chroma (4.5 for Monk 10, 5.1 for
Monk 1). Weakly coloured skin (very light or very dark, or under a colour cast)
wanders in hue from pinkish to slightly olive, so weak colours get a broad hue
window; strong colours must be warm (red to yellow), which keeps foliage, sky
and fabric out. Neutral grey (chroma < 2) is never skin.
"""
from __future__ import annotations

import cv2
import numpy as np

from schemas.features import ITA_CATEGORIES, MONK_GROUPS

MONK_HEX = ("f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96",
            "a07e56", "825c43", "604134", "3a312a", "292420")

# Skin in Lab, degrees of hue atan2(b*, a*). Lesions are redder (lower hue,
# higher chroma) and stay in. Calibrated on all 10 Monk tones of the sample set.
CHROMA_MIN, CHROMA_MAX = 2.0, 60.0
WEAK_CHROMA = 20.0                      # below this a colour counts as weak
WEAK_HUE_DEG = (-30.0, 130.0)           # pinkish .. olive
STRONG_HUE_DEG = (10.0, 100.0)          # red .. yellow
L_MIN, L_MAX = 3.0, 99.0

# ITA class lower bounds, degrees (DESIGN.md "Skin tone").
ITA_CLASSES = tuple(zip(ITA_CATEGORIES, (55.0, 41.0, 28.0, 10.0, -30.0, -np.inf), strict=True))


def lab_float(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 -> Lab float32 with L* in 0-100 and a*, b* centred on 0."""
    lab = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2Lab).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    return lab


def _monk_lab() -> np.ndarray:
    bgr = np.array([[[int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)] for h in MONK_HEX]],
                   dtype=np.uint8)
    return lab_float(bgr)[0]


MONK_LAB = _monk_lab()


def is_skin_colour(L: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The skin rule on L* (0-100), a*, b* (centred) arrays."""
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a))
    weak = chroma < WEAK_CHROMA
    lo = np.where(weak, WEAK_HUE_DEG[0], STRONG_HUE_DEG[0])
    hi = np.where(weak, WEAK_HUE_DEG[1], STRONG_HUE_DEG[1])
    return ((hue >= lo) & (hue <= hi)
            & (chroma >= CHROMA_MIN) & (chroma <= CHROMA_MAX)
            & (L >= L_MIN) & (L <= L_MAX))


def _ab_table() -> np.ndarray:
    # OpenCV's 8-bit Lab has only 256 x 256 (a, b) pairs: evaluate the hue and
    # chroma rule once for each, so per-pixel work is a table lookup.
    a, b = np.meshgrid(np.arange(256) - 128.0, np.arange(256) - 128.0, indexing="ij")
    return is_skin_colour(np.full_like(a, 50.0), a, b)


_SKIN_AB = _ab_table().ravel()
_L8_MIN, _L8_MAX = int(np.ceil(L_MIN * 2.55)), int(np.floor(L_MAX * 2.55))


def lab8(image_bgr: np.ndarray) -> np.ndarray:
    """OpenCV 8-bit Lab: L = L* x 2.55, a = a* + 128, b = b* + 128."""
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2Lab)


def skin_mask(lab: np.ndarray) -> np.ndarray:
    """Boolean mask of skin-coloured pixels from an 8-bit lab8() image."""
    L = lab[..., 0]
    ab = (lab[..., 1].astype(np.uint16) << 8) | lab[..., 2]
    return _SKIN_AB[ab] & (L >= _L8_MIN) & (L <= _L8_MAX)


def _median_of_levels(counts: np.ndarray) -> float:
    """Median of 8-bit levels from their counts (256 integers), interpolated
    within the median's level.

    Each level k stands for the values [k - 0.5, k + 0.5), spread evenly (the
    median of grouped data). The plain median jumps a whole level (1 unit of
    b*, 1-2 degrees of ITA) when a few pixels cross a level boundary, e.g.
    after a colour conversion's or a re-encode's rounding; this one moves by
    the share of pixels that crossed. A uniform patch still gives its level.
    """
    cdf = np.cumsum(counts)
    half = cdf[-1] / 2
    k = int(np.searchsorted(cdf, half))
    return float(k - 0.5 + (half - (cdf[k] - counts[k])) / counts[k])


def skin_medians(lab: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(L*, b*): the medians (_median_of_levels) of a lab8() image's L and b
    over a non-empty mask. OpenCV counts the levels under the mask directly,
    without gathering the masked pixels first."""
    selected = mask.astype(np.uint8)
    L, b = (_median_of_levels(cv2.calcHist([lab], [c], selected, [256], [0, 256]).ravel().astype(np.int64))
            for c in (0, 2))
    return L / 2.55, b - 128.0


def ita_degrees(L_star: float, b_star: float) -> float:
    """ITA = atan2(L* - 50, b*) in degrees."""
    return float(np.degrees(np.arctan2(L_star - 50.0, b_star)))


def ita_category(ita: float) -> str:
    for name, lower in ITA_CLASSES:
        if ita > lower:
            return name
    return "dark"


MONK_ITA = np.array([ita_degrees(L, b) for L, _a, b in MONK_LAB])


def nearest_monk(ita: float) -> int:
    """Monk tone (1-10) whose swatch ITA is nearest.

    ITA, an angle combining L* and b*, moves far less with exposure than L*
    alone: nearest swatch in Lab put slightly under-lit Monk 1-4 skin all on
    Monk 5, while ITA keeps the tones in order.
    """
    return int(np.argmin(np.abs(MONK_ITA - ita))) + 1


def monk_group(monk: int) -> str:
    light, medium, dark = MONK_GROUPS
    return light if monk <= 3 else medium if monk <= 6 else dark


# Below this share of the frame the "skin" pixels are more likely warm objects
# (wood, sand) than skin, and the tone estimate would describe them.
MIN_SKIN_FRACTION_FOR_TONE = 0.10


def skin_tone(lab: np.ndarray, mask: np.ndarray) -> dict:
    """ITA, its class and the Monk estimate from the median skin colour.

    lab is a lab8() image. The medians of L* and b* over the mask (interpolated
    within a level, _median_of_levels) resist lesions and specular highlights. With too little skin in the frame, all
    values are None.
    """
    if mask.mean() < MIN_SKIN_FRACTION_FOR_TONE:
        return {"ita_deg": None, "ita_category": None, "monk_estimate": None, "monk_group": None}
    L_star, b_star = skin_medians(lab, mask)
    ita = ita_degrees(L_star, b_star)
    monk = nearest_monk(ita)
    return {"ita_deg": ita, "ita_category": ita_category(ita),
            "monk_estimate": monk, "monk_group": monk_group(monk)}
