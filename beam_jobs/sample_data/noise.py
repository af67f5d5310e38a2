"""Smooth random fields: the building block of every rendered texture.

Textures are drawn on a coarse grid and upsampled with bicubic interpolation,
which is far cheaper than filtering full-resolution noise and gives features
whose size is set by the grid spacing (relative to the frame, so the look is
the same at 640x480 and at 12 MP).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> np.ndarray:
    """Return a float32 (height, width) field of roughly unit std whose features
    are about ``min(height, width) / cells`` pixels across."""
    return fractal_noise(rng, height, width, ((cells, 1.0),))


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, octaves: Sequence[tuple[float, float]]
) -> np.ndarray:
    """Return the float32 (height, width) sum of smooth noise octaves given as
    (cells across the short side, amplitude) pairs.

    Octaves are summed on the finest octave's grid and upsampled once, so the
    cost is one full-frame resize whatever the number of octaves.
    """
    finest = max(max(cells for cells, _ in octaves), 1.0)
    step = max(min(height, width) / finest, 1.0)
    gh, gw = round(height / step) + 2, round(width / step) + 2
    grid = np.zeros((gh, gw), dtype=np.float32)
    for cells, amp in octaves:
        coarse = max(min(height, width) / max(cells, 1.0), step) / step
        ch, cw = max(2, round(gh / coarse)), max(2, round(gw / coarse))
        octave = rng.standard_normal((ch, cw), dtype=np.float32) * np.float32(amp)
        grid += octave if (ch, cw) == (gh, gw) else cv2.resize(octave, (gw, gh), interpolation=cv2.INTER_CUBIC)
    # Upsample with half a cell of margin and crop it: cubic interpolation
    # clamps at the border, which would otherwise leave flat edges.
    margin = int(np.ceil(step / 2))
    size = (width + 2 * margin, height + 2 * margin)
    if step > 12:
        # OpenCV's cubic resize is slow at large zoom factors: go cubic to a
        # quarter-size canvas (cells still >= 3 px) and finish linearly.
        quarter = cv2.resize(grid, (size[0] // 4, size[1] // 4), interpolation=cv2.INTER_CUBIC)
        field = cv2.resize(quarter, size, interpolation=cv2.INTER_LINEAR)
    else:
        field = cv2.resize(grid, size, interpolation=cv2.INTER_CUBIC)
    return field[margin:margin + height, margin:margin + width]


def linear_ramp(height: int, width: int, angle: float) -> np.ndarray:
    """Return a float32 (height, width) ramp from 0 to 1 along direction ``angle`` (radians)."""
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None] * height
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :] * width
    proj = xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))
    lo, hi = float(proj.min()), float(proj.max())
    return (proj - lo) / max(hi - lo, 1e-6)


def radial_distance(height: int, width: int, cy: float, cx: float) -> np.ndarray:
    """Return a float32 (height, width) map of distance to (cy, cx), normalised by the half-diagonal."""
    ys = (np.arange(height, dtype=np.float32)[:, None] - np.float32(cy)) ** 2
    xs = (np.arange(width, dtype=np.float32)[None, :] - np.float32(cx)) ** 2
    return np.sqrt(ys + xs) / np.float32(0.5 * np.hypot(height, width))
