"""Image-quality features from one decoded array: pure numpy/OpenCV.

compute_features() first area-resizes to the analysis short side, then derives
every feature of schemas/features.py's PIXELS group from that one small array.
"""
from __future__ import annotations

import cv2
import numpy as np

from transforms import skin_tone
from transforms.phash import centre_phashes, phash64

UNDEREXPOSED_LEVEL = 10   # luminance <= 10/255 counts as crushed to black
OVEREXPOSED_LEVEL = 250   # luminance >= 250/255 counts as clipped to white
SHADOW_LEVEL = 0.15 * 255
# Second differences along 0, 90, 45 and 135 degrees.
_DIRECTIONAL = (np.array([[1, -2, 1]], np.float32), np.array([[1], [-2], [1]], np.float32),
                np.array([[1, 0, 0], [0, -2, 0], [0, 0, 1]], np.float32),
                np.array([[0, 0, 1], [0, -2, 0], [1, 0, 0]], np.float32))


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


def _colorfulness(image: np.ndarray) -> float:
    # Hasler & Suesstrunk (2003): opponent-colour spread and mean.
    b, g, r = cv2.split(image.astype(np.float32))
    (rg_mean,), (rg_std,) = cv2.meanStdDev(r - g)
    (yb_mean,), (yb_std,) = cv2.meanStdDev(0.5 * (r + g) - b)
    return float(np.hypot(rg_std[0], yb_std[0]) + 0.3 * np.hypot(rg_mean[0], yb_mean[0]))


def _sharpness(gray_f: np.ndarray, mean: float) -> float:
    """Median over four directions of second-difference variance, / brightness.

    The median ignores a few strong edges (a hair, a lesion border) that keep
    an isotropic Laplacian high in a blurred photo, and catches motion blur,
    which removes detail along the shake. Detail scales with brightness, so
    dark skin shows less of it: dividing by the mean once removes that bias
    (dividing by mean^2 over-corrects, as sensor noise dominates dark frames).
    """
    energies = sorted(float(cv2.filter2D(gray_f, cv2.CV_32F, k).var()) for k in _DIRECTIONAL)
    return 0.5 * (energies[1] + energies[2]) / (mean + 1.0)


def compute_features(image_bgr: np.ndarray, analysis_short_side: int = 256) -> dict:
    """All pixel features of one BGR uint8 image (see schemas/features.py)."""
    img = to_analysis_size(image_bgr, analysis_short_side)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    n = gray.size

    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / n
    cdf = np.cumsum(p)
    levels = np.arange(256, dtype=np.float64)
    mean = float(p @ levels)
    std = float(np.sqrt(max(p @ (levels - mean) ** 2, 0.0)))
    nz = p[p > 0]

    gray_f = gray.astype(np.float32)
    lap = cv2.Laplacian(gray_f, cv2.CV_32F, ksize=1)
    gx = cv2.Sobel(gray_f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray_f, cv2.CV_32F, 0, 1, ksize=3)
    lap_var = float(lap.var())

    b, g, r = cv2.split(img)
    channel_diff = (cv2.mean(cv2.absdiff(b, g))[0] + cv2.mean(cv2.absdiff(g, r))[0]
                    + cv2.mean(cv2.absdiff(r, b))[0]) / 3.0
    # Colour statistics need no fine detail: a half-size copy gives the same
    # fractions and medians at a quarter of the cost.
    small = cv2.resize(img, (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)),
                       interpolation=cv2.INTER_AREA)  # max(1, ...): 1-pixel-wide uploads exist
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
        "laplacian_var": lap_var,
        "tenengrad": float(np.mean(gx * gx + gy * gy)),
        "sharpness": _sharpness(gray_f, mean),
        "entropy": float(-(nz * np.log2(nz)).sum()),
        "colorfulness": _colorfulness(small),
        "channel_diff": channel_diff,
        "skin_fraction": float(mask.mean()),
        "phash": f"{phash64(gray):016x}",
        "phash_centre": [f"{h:016x}" for h in centre_phashes(gray)],
    }
    features.update(skin_tone.skin_tone(lab, mask))
    return features
