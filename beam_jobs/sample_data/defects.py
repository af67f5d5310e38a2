"""Defects applied to renders (exposure, blur, flat frames) and to files
(near-duplicate edits, truncation, non-image bytes).

Photometric defects work on float32 BGR renders before the camera adds
sensor noise; each is calibrated so the invariants the tests measure on the
decoded JPEG hold with margin (see tests/test_sample_data.py).
"""
from __future__ import annotations

import cv2
import numpy as np

from beam_jobs.sample_data.camera import luminance
from beam_jobs.sample_data.noise import linear_ramp

# Shadow floor of the dim exposure curve: nothing maps below this level, so a
# dim image is never clipped to black (its darkest pixels stay > 10/255).
_DIM_FLOOR = 13.0


def underexpose(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moderate underexposure: scale so the median luma lands at 28-45/255,
    with a soft shadow floor instead of clipping. Relative texture and
    lesion colour are unchanged, only darker."""
    gain = np.float32(rng.uniform(28, 45) / max(float(np.median(luminance(image))), 1.0))
    scaled = image * gain
    # x + c*exp(-x/c) is ~x for bright values and never below c.
    return scaled + np.float32(_DIM_FLOOR) * np.exp(-scaled / np.float32(_DIM_FLOOR))


def crush_dark(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Severe underexposure with clipped shadows: luma is remapped so its 65th
    percentile lands at 2/255 (about two thirds of the frame black) and its
    99th at 10-20/255, what a photo taken 7 or more stops under looks like
    (white maps to 22/255 at -7 EV); colour is scaled with luma so hue is kept.
    Until real photos were measured the 99th went up to 30/255, which is as
    bright as a frame-filling photo of Monk 10 skin one stop under, a photo
    that must be kept."""
    luma = luminance(image)
    p65, p99 = np.percentile(luma, (65, 99))
    gain = (rng.uniform(10, 20) - 2) / max(p99 - p65, 1.0)
    target = np.maximum((luma - np.float32(p65)) * np.float32(gain) + np.float32(2), 0)
    return image * (target / np.maximum(luma, np.float32(1)))[..., None]


def overexpose(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blown highlights: gain such that 55-65% of pixels exceed 255 in every
    channel (pure white after clipping)."""
    darkest_channel = image.min(axis=2)
    level = np.percentile(darkest_channel, rng.uniform(35, 45))
    return image * np.float32(270 / max(float(level), 1.0))


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus (Gaussian, sigma short/80..short/45) or camera shake (a motion
    streak of short/14..short/8 plus sigma short/80 defocus)."""
    short = min(image.shape[:2])
    if rng.random() < 0.6:
        return cv2.GaussianBlur(image, (0, 0), short * rng.uniform(1 / 80, 1 / 45))
    length = short * rng.uniform(1 / 14, 1 / 8)
    size = int(length) | 1
    kernel = np.zeros((size, size), np.float32)
    angle = rng.uniform(0, np.pi)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    c = size // 2
    cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    streaked = cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    return cv2.GaussianBlur(streaked, (0, 0), short / 80)


def flat_field(rng: np.random.Generator, width: int, height: int, colour: np.ndarray) -> np.ndarray:
    """A single colour with a smooth gradient of at most 3 levels (low information)."""
    ramp = linear_ramp(height, width, rng.uniform(0, 2 * np.pi)) - np.float32(0.5)
    shade = ramp * np.float32(rng.uniform(0, 3))
    return np.clip(colour.astype(np.float32), 2, 253) + shade[..., None]


def near_duplicate_edit(upright: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """Return an edited copy: "reencode" (unchanged pixels, the caller
    re-encodes at lower quality), "resize" to 85-95%, or "crop" 2-4% off the
    edges."""
    h, w = upright.shape[:2]
    if variant == "resize":
        f = rng.uniform(0.85, 0.95)
        return cv2.resize(upright, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    if variant == "crop":
        cut_h, cut_w = (max(2, round(n * rng.uniform(0.02, 0.04))) for n in (h, w))
        top, left = int(rng.integers(0, cut_h + 1)), int(rng.integers(0, cut_w + 1))
        return upright[top:h - (cut_h - top), left:w - (cut_w - left)].copy()
    return upright


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """Cut a file to 30-70% of its bytes, like an interrupted upload."""
    return data[: int(len(data) * rng.uniform(0.3, 0.7))]


def not_an_image(rng: np.random.Generator) -> bytes:
    """Bytes that are not an image at all: an HTML error page or plain text.
    A random request id keeps the files distinct from one another."""
    request_id = "".join(f"{b:02x}" for b in rng.integers(0, 256, 12))
    pages = (
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body><h1>Not Found</h1>"
        f"<p>The requested URL was not found on this server.</p><!-- request {request_id} --></body></html>\n",
        "<html><head><meta charset=\"utf-8\"><title>Sign in</title></head><body><form method=\"post\">"
        f"<input name=\"user\"><input type=\"password\" name=\"pw\"></form><!-- {request_id} --></body></html>\n",
        f"Access denied.\nRequest ID: {request_id}\nPlease try the upload again from the app.\n",
        f"upload_token={request_id}\nstatus=PENDING\n",
    )
    return pages[int(rng.integers(len(pages)))].encode("utf-8")
