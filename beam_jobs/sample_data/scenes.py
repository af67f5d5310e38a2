"""Well-exposed, sharp, textured photos with no skin in them.

Every scene keeps its hues out of the warm 0-60 degree range that skin
occupies (only near-neutral greys and whites may be warm-ish), so a correct
skin detector finds nothing. Renders are float32 BGR on the 0-255 scale.
"""
from __future__ import annotations

import cv2
import numpy as np

from beam_jobs.sample_data.noise import fractal_noise, linear_ramp, smooth_noise

SCENE_KINDS = ("sky", "water", "foliage", "concrete", "fabric")


def render_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render one randomly chosen non-skin scene as float32 BGR (height, width, 3)."""
    kind = SCENE_KINDS[int(rng.integers(len(SCENE_KINDS)))]
    return _RENDERERS[kind](rng, height, width)


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blue gradient sky with fractal clouds (white/grey, so near-neutral)."""
    t = linear_ramp(h, w, np.pi / 2 + rng.uniform(-0.2, 0.2))[..., None]  # 0 at top
    zenith = np.array([rng.uniform(170, 210), rng.uniform(95, 130), rng.uniform(40, 70)], np.float32)
    horizon = np.array([rng.uniform(225, 245), rng.uniform(185, 205), rng.uniform(140, 165)], np.float32)
    sky = zenith + t * (horizon - zenith)
    cloud = fractal_noise(rng, h, w, ((3, 1.0), (9, 0.5), (27, 0.3), (80, 0.18), (160, 0.08)))
    cover = np.clip((cloud - np.float32(rng.uniform(-0.2, 0.4))) * 2.5, 0, 1)[..., None]
    shade = (np.float32(205) + smooth_noise(rng, h, w, 40) * np.float32(25))[..., None]
    return sky + cover * (shade - sky)


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blue-teal water with ripples (sums of sinusoids) and white glints."""
    short = min(h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = fractal_noise(rng, h, w, ((4, 1.0), (15, 0.4))) * np.float32(short * 0.03)
    ripple = np.zeros((h, w), np.float32)
    for _ in range(4):
        angle = rng.uniform(0, np.pi)
        wavelength = short * rng.uniform(1 / 70, 1 / 25)
        phase = (xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle)) + warp) / np.float32(wavelength)
        ripple += np.sin(phase * np.float32(2 * np.pi))
    ripple /= 2
    base = np.array([rng.uniform(150, 190), rng.uniform(100, 140), rng.uniform(20, 50)], np.float32)
    water = base * (1 + np.float32(0.18) * ripple)[..., None]
    glint = np.clip(ripple - 1.2, 0, None)[..., None] * np.float32(rng.uniform(60, 110))
    return water + glint


def _foliage(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Overlapping green leaves (hues 90-150 degrees) with darker gaps and midribs."""
    short = min(h, w)
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = (int(rng.uniform(15, 35)), int(rng.uniform(45, 70)), int(rng.uniform(10, 30)))
    n_leaves = int(w * h / short**2 * rng.uniform(180, 320))
    for _ in range(n_leaves):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        length = short * rng.uniform(0.03, 0.08)
        axes = (max(2, int(length)), max(1, int(length * rng.uniform(0.3, 0.5))))
        angle = float(rng.uniform(0, 180))
        green = rng.uniform(90, 200)
        colour = (int(green * rng.uniform(0.2, 0.5)), int(green), int(green * rng.uniform(0.25, 0.6)))
        cv2.ellipse(canvas, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        rib = tuple(int(c * 0.7) for c in colour)
        dx, dy = axes[0] * np.cos(np.radians(angle)), axes[0] * np.sin(np.radians(angle))
        cv2.line(canvas, (int(centre[0] - dx), int(centre[1] - dy)), (int(centre[0] + dx), int(centre[1] + dy)),
                 rib, 1, cv2.LINE_AA)
    light = 1 + fractal_noise(rng, h, w, ((3, 0.15), (12, 0.06)))
    return canvas.astype(np.float32) * light[..., None]


def _concrete(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Neutral grey concrete or asphalt: fractal grain, aggregate speckles, cracks."""
    short = min(h, w)
    grey = rng.uniform(85, 170)
    grain = fractal_noise(rng, h, w, ((4, 0.05), (20, 0.04), (70, 0.05), (150, 0.05)))
    speck = smooth_noise(rng, h, w, 120)
    level = grey * (1 + grain) + np.clip(speck - 1.2, 0, None) * np.float32(40) \
        - np.clip(-speck - 1.2, 0, None) * np.float32(40)
    cracks = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        pts = np.cumsum(rng.normal(0, short * 0.04, (14, 2)), axis=0) + [rng.uniform(0, w), rng.uniform(0, h)]
        cv2.polylines(cracks, [pts.astype(np.int32)], False, 255, max(1, short // 300), cv2.LINE_AA)
    level = level * (1 - cracks.astype(np.float32) * np.float32(0.5 / 255))
    tint = np.float32(1) + rng.uniform(-0.01, 0.01, 3).astype(np.float32)  # near-zero chroma
    return level[..., None] * tint


def _fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blue or purple woven fabric: a fine weave, thread noise and soft folds."""
    short = min(h, w)
    period = short / rng.uniform(45, 70)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = np.sin(xs * np.float32(2 * np.pi / period))
    weft = np.sin(ys * np.float32(2 * np.pi / period))
    weave = np.where((warp > 0) ^ (weft > 0), warp, weft) * np.float32(0.08)
    folds = fractal_noise(rng, h, w, ((2.5, 0.2), (6, 0.08)))
    threads = smooth_noise(rng, h, w, 150) * np.float32(0.04)
    if rng.random() < 0.5:  # blue
        colour = np.array([rng.uniform(150, 210), rng.uniform(70, 110), rng.uniform(20, 50)], np.float32)
    else:  # purple: blue stays above red so the hue sits in 260-300 degrees
        colour = np.array([rng.uniform(140, 190), rng.uniform(40, 70), rng.uniform(90, 125)], np.float32)
    return colour * (1 + weave + folds + threads)[..., None]


_RENDERERS = {"sky": _sky, "water": _water, "foliage": _foliage, "concrete": _concrete, "fabric": _fabric}
