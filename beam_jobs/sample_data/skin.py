"""Rendering of smartphone-style close-ups of skin, for any Monk skin tone.

The render is a float32 BGR canvas (0-255 scale) built from: the tone's base
colour with a small jitter, multi-scale albedo texture (mottling, pores,
pigment dots, specular sheen), the lesion pattern of the case's condition
(``lesions.PATTERN_OF_CONDITION``), optional hair and a small background
area, then a lighting gradient and vignetting.
Feature sizes are fractions of the frame, so texture that matters for the
pipeline's sharpness check (measured at a 224 px short side) is several
pixels wide at that scale whatever the output resolution.
"""
from __future__ import annotations

import cv2
import numpy as np

from beam_jobs.sample_data.lesions import draw_lesions
from beam_jobs.sample_data.noise import fractal_noise, linear_ramp, radial_distance, smooth_noise

# Monk Skin Tone scale, tones 1..10 (RGB hex), from the project design notes.
MONK_HEX = (
    "f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96",
    "a07e56", "825c43", "604134", "3a312a", "292420",
)

# Cool or neutral surroundings for the small background area: a skin-free
# hue keeps the "skin fraction" of a good image predictable.
_BACKGROUND_BGR = (
    (150, 140, 135),  # grey wall
    (120, 70, 40),    # blue fabric
    (215, 215, 210),  # white sheet
    (70, 45, 35),     # navy
    (110, 120, 95),   # teal-grey
)


def monk_bgr(tone: int) -> np.ndarray:
    """Return the BGR float32 colour of Monk tone ``tone`` (1-10)."""
    hexstr = MONK_HEX[tone - 1]
    r, g, b = (int(hexstr[i:i + 2], 16) for i in (0, 2, 4))
    return np.array([b, g, r], dtype=np.float32)


def render_skin(
    rng: np.random.Generator, width: int, height: int, tone: int, detail: float = 1.0, condition: str = ""
) -> np.ndarray:
    """Render a well-exposed skin close-up of Monk ``tone`` as float32 BGR (height, width, 3),
    showing the lesion pattern of ``condition`` ("" = unlabelled: generic blobs).

    ``detail`` (about 0.7-1.3) scales feature sizes: close-ups show bigger
    pores and lesions than shots taken at a distance.
    """
    short = min(width, height)
    base = monk_bgr(tone) * (1 + rng.normal(0, 0.025, 3)).astype(np.float32)
    base *= np.float32(1 + rng.normal(0, 0.03))
    # Auto-exposure: the lightest swatches would clip under the brightest
    # part of the lighting gradient, which a phone camera avoids.
    base *= np.float32(min(1.0, 232 / (float(base.max()) * 1.15)))

    # Work on three 2-D planes, in place where possible: numpy broadcasting
    # over a trailing axis of 3 is several times slower than 2-D arithmetic,
    # and every full-frame temporary costs page faults.
    albedo = _albedo_texture(rng, height, width, detail)
    redness = _erythema(rng, height, width)
    redness *= albedo
    cool = albedo - redness  # green and blue lose what red keeps
    redness *= np.float32(0.3)
    albedo += redness
    planes = [cool * base[0], cool, albedo]
    cool *= base[1]
    albedo *= base[2]
    # The lesions draw from their own stream, so the rest of the photo
    # (sheen, hair, background, lighting) does not depend on the condition.
    draw_lesions(np.random.default_rng(int(rng.integers(2**63))), planes, short * detail, condition)
    sheen = _sheen(rng, height, width, detail, tone)
    if rng.random() < 0.4:
        _add_hair(rng, planes, base, short * detail)
    if rng.random() < 0.35:
        _add_background(rng, planes)
    light = _lighting(rng, height, width)
    for plane in planes:
        plane += sheen
        plane *= light
    return cv2.merge(planes)


def _albedo_texture(rng: np.random.Generator, h: int, w: int, detail: float) -> np.ndarray:
    """Luminance multiplier: mottling, mid-scale unevenness, pores and pigment dots."""
    texture = fractal_noise(rng, h, w, (
        (2.5, rng.uniform(0.04, 0.08)),            # broad shading
        (5, rng.uniform(0.05, 0.09)),              # mottling
        (28 / detail, rng.uniform(0.025, 0.045)),  # unevenness
        (110 / detail, rng.uniform(0.03, 0.05)),   # pores
    ))
    dots = smooth_noise(rng, h, w, 75 / detail)
    dots -= np.float32(1.3)
    dots *= np.float32(1.6)
    np.clip(dots, 0, 1, out=dots)
    dots *= np.float32(rng.uniform(0.18, 0.35))
    texture -= dots
    texture += np.float32(1)
    return texture


def _erythema(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Faint patchy redness: the fraction taken off green and blue."""
    redness = smooth_noise(rng, h, w, 7)
    np.maximum(redness, 0, out=redness)
    redness *= np.float32(rng.uniform(0.02, 0.05))
    return redness


def _sheen(rng: np.random.Generator, h: int, w: int, detail: float, tone: int) -> np.ndarray:
    """Additive specular glints on skin ridges, in absolute levels: the reason
    dark skin still shows texture in a photo."""
    glints = smooth_noise(rng, h, w, 90 / detail)
    glints -= np.float32(0.9)
    np.maximum(glints, 0, out=glints)
    glints *= np.float32(rng.uniform(5, 11) * (1.0 if tone <= 5 else 1.8 if tone <= 7 else 3.0))
    return glints


def _add_hair(rng: np.random.Generator, planes: list[np.ndarray], base: np.ndarray, scale: float) -> None:
    """Draw a few thin dark curved strands, blended in place."""
    h, w = planes[0].shape
    mask = np.zeros((h, w), dtype=np.uint8)
    thickness = max(1, round(min(h, w) * rng.uniform(0.002, 0.004)))
    for _ in range(int(rng.integers(3, 12))):
        step = scale * rng.uniform(0.2, 0.6) / 10
        angles = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, 10))
        start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        offsets = np.cumsum(step * np.stack([np.cos(angles), np.sin(angles)], axis=1), axis=0)
        pts = np.vstack([start, start + offsets])
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    alpha = mask.astype(np.float32) * np.float32(rng.uniform(0.6, 0.85) / 255)
    # Hair is darker than the skin around it but never pitch black.
    colour = np.minimum(base * np.float32(0.45), np.array([28, 32, 40], np.float32))
    for plane, c in zip(planes, colour):
        plane += alpha * (c - plane)


def _add_background(rng: np.random.Generator, planes: list[np.ndarray]) -> None:
    """Replace a strip along one edge (4-12% of the frame, wavy border) with a
    textured non-skin surface, in place."""
    h, w = planes[0].shape
    side = int(rng.integers(0, 4))  # top, bottom, left, right
    depth = rng.uniform(0.04, 0.11)  # wobble +-25%: always < 14% of the frame
    along, across = (w, h) if side < 2 else (h, w)
    knots = depth * (1 + rng.uniform(-0.25, 0.25, 6))
    edge = np.interp(np.arange(along), np.linspace(0, along - 1, 6), knots) * across
    band = int(np.ceil(edge.max())) + 2
    dist = np.arange(band, dtype=np.float32)[:, None]
    mask = np.clip((edge[None, :].astype(np.float32) - dist) / 2, 0, 1)  # 2 px soft edge
    if side % 2:
        mask = mask[::-1]
    if side >= 2:
        mask = np.ascontiguousarray(mask.T)
    if side == 0:
        region = np.s_[:band, :]
    elif side == 1:
        region = np.s_[h - band:, :]
    elif side == 2:
        region = np.s_[:, :band]
    else:
        region = np.s_[:, w - band:]
    mh, mw = mask.shape
    grain = 1 + smooth_noise(rng, mh, mw, 60 * min(mh, mw) / min(h, w)) * np.float32(0.05)
    colour = _BACKGROUND_BGR[int(rng.integers(len(_BACKGROUND_BGR)))]
    for plane, c in zip(planes, colour):
        sub = plane[region]
        sub += mask * (grain * np.float32(c) - sub)


def _lighting(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradient from 0.8x to 1.15x in a random direction, times soft vignetting.

    Both are smooth, so they are computed on a 1/8 grid and upsampled.
    """
    gh, gw = max(2, h // 8), max(2, w // 8)
    # Each photo spans its own part of the 0.8-1.15x range.
    low, high = rng.uniform(0.8, 0.95), rng.uniform(1.0, 1.15)
    ramp = linear_ramp(gh, gw, rng.uniform(0, 2 * np.pi))
    light = np.float32(low) + np.float32(high - low) * ramp
    cy, cx = gh * rng.uniform(0.35, 0.65), gw * rng.uniform(0.35, 0.65)
    light *= 1 - np.float32(rng.uniform(0.08, 0.18)) * radial_distance(gh, gw, cy, cx) ** 2
    return cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)
