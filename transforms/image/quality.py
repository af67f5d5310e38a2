"""Image-quality features from one decoded array: pure numpy/OpenCV.

compute_features() first area-resizes to the analysis short side, then derives
every feature of schemas/features.py's PIXELS group from that one small array.
"""
from __future__ import annotations

import cv2
import numpy as np

from transforms.image import skin_crop, skin_tone
from transforms.image.phash import region_phashes

UNDEREXPOSED_LEVEL = 10   # luminance <= 10/255 counts as crushed to black
OVEREXPOSED_LEVEL = 250   # luminance >= 250/255 counts as clipped to white
SHADOW_LEVEL = 0.15 * 255
# Blur is judged by how steep the steepest edges are relative to the local
# contrast they span, in the direction where the image is softest (see
# edge_sharpness). Eight directions 22.5 degrees apart: a motion streak at any
# angle is within 11 degrees of one of them.
BLUR_DIRECTIONS = 8
BLUR_WINDOW = 13          # px at the blur size: the span over which local contrast is measured
BLUR_MIN_CONTRAST = 6.0   # levels: pixels in flatter neighbourhoods carry no edge to judge
BLUR_PERCENTILE = 99.0    # the steepest 1% of edges in that direction
_BLUR_BINS = 500


def _bilinear_taps(dx: float, dy: float) -> np.ndarray:
    k = np.zeros((3, 3), np.float32)
    x0, y0 = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - x0, dy - y0
    for x, y, w in ((x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)),
                    (x0, y0 + 1, (1 - fx) * fy), (x0 + 1, y0 + 1, fx * fy)):
        if w:
            k[1 + y, 1 + x] += w
    return k


def _direction_kernels(n: int) -> list[np.ndarray]:
    """3x3 kernels of (I(p + u) - I(p - u)) / 2 for unit vectors u at n angles
    in [0, 180): a one-pixel central difference, bilinear between pixels."""
    out = []
    for i in range(n):
        t = np.pi * i / n
        c, s = float(np.cos(t)), float(np.sin(t))
        out.append(0.5 * (_bilinear_taps(c, s) - _bilinear_taps(-c, -s)))
    return out


_BLUR_KERNELS = _direction_kernels(BLUR_DIRECTIONS)
_BLUR_ELEMENT = np.ones((BLUR_WINDOW, BLUR_WINDOW), np.uint8)


def to_analysis_size(image: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so the short side equals short_side (never upsamples).

    The DCT-scaled decode leaves at most a 2x reduction to do, where bilinear
    sampling already averages every source pixel; area resampling is kept
    for larger factors (non-JPEG inputs), where bilinear would alias.
    """
    h, w = image.shape[:2]
    s = min(h, w)
    if s <= short_side:
        return image
    f = short_side / s
    interp = cv2.INTER_LINEAR if f >= 0.5 else cv2.INTER_AREA
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp)


def half_size(image: np.ndarray) -> np.ndarray:
    """Means of 2x2 blocks (an odd last row or column is dropped; 1-px sides are kept).

    Cropped to even sides so OpenCV takes its exact-2x area path, several times
    faster than a general area resize at a ratio just off 2.
    """
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        return cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    even = image[:h - h % 2, :w - w % 2]
    return cv2.resize(even, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def _colorfulness(image: np.ndarray) -> float:
    # Hasler & Suesstrunk (2003): opponent-colour spread and mean.
    b, g, r = cv2.split(image.astype(np.float32))
    (rg_mean,), (rg_std,) = cv2.meanStdDev(r - g)
    (yb_mean,), (yb_std,) = cv2.meanStdDev(0.5 * (r + g) - b)
    return float(np.hypot(rg_std[0], yb_std[0]) + 0.3 * np.hypot(rg_mean[0], yb_mean[0]))


def edge_sharpness(gray: np.ndarray) -> float:
    """Steepness of the steepest edges in the softest direction, 0 (flat) to ~0.5.

    For every pixel whose BLUR_WINDOW neighbourhood spans at least
    BLUR_MIN_CONTRAST levels, the one-pixel brightness change along a
    direction is divided by that local range; the score is the 99th
    percentile of the ratio, in the direction where it is lowest. A sharp
    edge rises across ~2 px (ratio ~0.25-0.5); a Gaussian blur of sigma 2.7 px
    or an 11 px motion streak spreads it over 7-11 px (ratio < 0.16), and a
    streak does so only along its own direction, which the minimum over
    directions finds. The ratio is relative to local contrast, so neither
    brightness nor the amount of texture (smooth skin, dark skin) moves it;
    only how soft the edges are.
    """
    # Local range and mask in uint8 (max - min of integers is exact, and twice as fast).
    local_range = cv2.subtract(cv2.dilate(gray, _BLUR_ELEMENT), cv2.erode(gray, _BLUR_ELEMENT))
    mask = local_range >= BLUR_MIN_CONTRAST
    counted = int(np.count_nonzero(mask))
    if counted < 50:  # no edges at all: a flat frame (low_information says so)
        return 0.0
    # The ratio is at most 0.5 (a one-pixel change cannot exceed the range it
    # lies in), so its histogram bin, floor(ratio * _BLUR_BINS), fits in uint8
    # and an 8-bit histogram replaces a float one at a fraction of the cost.
    # Pixels outside the mask get factor 0: they fall in bin 0 and are taken out.
    levels = local_range.astype(np.float32)
    levels[~mask] = np.inf   # 500 / inf = 0
    bins_per_level = np.float32(_BLUR_BINS) / levels
    g = gray.astype(np.float32)
    target = BLUR_PERCENTILE / 100.0 * counted
    outside = gray.size - counted
    softest = 1.0
    # Two buffers reused across the eight directions: fresh 270 kB temporaries cost more than the arithmetic.
    change, bins = np.empty_like(g), np.empty(g.shape, np.uint8)
    for k in _BLUR_KERNELS:
        cv2.filter2D(g, cv2.CV_32F, k, dst=change)
        cv2.multiply(np.abs(change, out=change), bins_per_level, dst=change)
        np.copyto(bins, change, casting="unsafe")   # truncates, as astype does
        hist = cv2.calcHist([bins], [0], None, [256], [0, 256]).ravel()
        hist[0] -= outside
        cdf = np.cumsum(hist)
        softest = min(softest, (int(np.searchsorted(cdf, target)) + 0.5) / _BLUR_BINS)
    return float(softest)


def policy_features(image_bgr: np.ndarray, policy) -> dict:
    """compute_features() as a quality policy (schemas/policy.py) asks for it:
    its analysis and blur sizes, relevance model and grayscale limit."""
    return compute_features(to_analysis_size(image_bgr, policy.analysis_short_side), policy.analysis_short_side,
                            policy.blur_short_side, policy.relevance, policy.gray_max_channel_diff)


def compute_features(image_bgr: np.ndarray, analysis_short_side: int = 224,
                     blur_short_side: int = 224, relevance=None, gray_max_channel_diff: float = 2.0) -> dict:
    """All pixel features of one BGR uint8 image (see schemas/features.py).

    Blur is judged at blur_short_side, the size a model sees, not at the
    analysis size: what matters is whether the model gets a sharp image.
    skin_probability comes from `relevance` (a transforms.image.relevance
    RelevanceModel), None without one; grayscale images (mean channel
    difference under gray_max_channel_diff) go to its grayscale network.
    """
    img = to_analysis_size(image_bgr, analysis_short_side)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    n = gray.size

    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    p = hist / n
    cdf = np.cumsum(p)
    levels = np.arange(256, dtype=np.float64)
    mean = float(p @ levels)
    std = float(np.sqrt(max(p @ (levels - mean) ** 2, 0.0)))
    nz = p[p > 0]

    # OpenCV's reductions accumulate in float64 and make no temporaries. The
    # 3x3 derivatives of 8-bit pixels are exact integers within int16, half
    # the bytes of float32 for the same values.
    _, lap_sd = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S, ksize=1))
    tenengrad = (cv2.norm(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3), cv2.NORM_L2SQR)
                 + cv2.norm(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3), cv2.NORM_L2SQR)) / n
    blur_gray = to_analysis_size(gray, blur_short_side)

    b, g, r = cv2.split(img)
    channel_diff = (cv2.mean(cv2.absdiff(b, g))[0] + cv2.mean(cv2.absdiff(g, r))[0]
                    + cv2.mean(cv2.absdiff(r, b))[0]) / 3.0
    # Colour statistics need no fine detail: a half-size copy gives the same
    # fractions and medians at a quarter of the cost.
    small = half_size(img)
    # A 32x32 hash needs no more than the half-size frame, at a quarter of the resize cost.
    gray_half = half_size(gray)
    full, centre, turned = region_phashes(gray_half)
    lab = skin_tone.lab8(small)
    mask = skin_tone.skin_mask(lab)

    features = {
        "brightness_mean": mean / 255.0,
        "brightness_std": std / 255.0,
        "lum_p01": float(np.searchsorted(cdf, 0.01)) / 255.0,
        "lum_p99": float(np.searchsorted(cdf, 0.99)) / 255.0,
        "underexposed_fraction": float(cdf[UNDEREXPOSED_LEVEL]),
        "overexposed_fraction": float(1.0 - cdf[OVEREXPOSED_LEVEL - 1]),
        "shadow_fraction": float(hist[: int(np.ceil(SHADOW_LEVEL))].sum() / n),
        "rms_contrast": std / mean if mean > 0 else 0.0,
        "laplacian_var": float(lap_sd[0, 0]) ** 2,
        "tenengrad": float(tenengrad),
        "sharpness": edge_sharpness(blur_gray),
        "entropy": float(-(nz * np.log2(nz)).sum()),
        "colorfulness": _colorfulness(small),
        "channel_diff": channel_diff,
        "skin_fraction": float(mask.mean()),
        "phash": f"{full:016x}",
        "phash_centre": [f"{h:016x}" for h in centre],
        "phash_turned": [f"{h:016x}" for h in turned],
    }
    features["grayscale"] = channel_diff < gray_max_channel_diff
    features["skin_probability"] = (None if relevance is None
                                    else relevance.skin_probability(img, features["grayscale"]))
    features.update(skin_tone.skin_tone(lab, mask))
    features.update(skin_crop.region_from_mask(mask))
    return features
