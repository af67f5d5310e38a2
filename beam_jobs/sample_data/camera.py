"""The virtual camera: working resolution, and developing a render into pixels.

Scenes are rendered in float32 at a reduced working resolution (texture is
made of upsampled noise anyway), then upsampled to the requested frame and
given per-pixel sensor noise there: rendering cost barely grows with frame
size, and a 12 MP frame takes well under a second.
"""
from __future__ import annotations

import cv2
import numpy as np

# Short side of the working canvas: at least 384 px (so texture is still
# resolved at the pipeline's 224 px analysis scale) and at least a quarter of
# the frame's (so a 12 MP frame decoded at 1/4 or 1/8 scale shows the full
# rendered detail); never more than the frame itself.
MIN_WORK_SHORT_SIDE = 384


def work_size(width: int, height: int) -> tuple[int, int]:
    """Return the (width, height) of the working canvas for a frame of this size."""
    short = min(width, height)
    scale = min(short, max(MIN_WORK_SHORT_SIDE, short // 4)) / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def luminance(image: np.ndarray) -> np.ndarray:
    """Return Rec. 601 luma of a BGR image (same weights as cv2 BGR2GRAY), as float32."""
    b, g, r = image[..., 0], image[..., 1], image[..., 2]
    return np.float32(0.114) * b + np.float32(0.587) * g + np.float32(0.299) * r


def develop(
    work: np.ndarray, width: int, height: int, rng: np.random.Generator, noise_std: float
) -> np.ndarray:
    """Quantise a float32 BGR render (clipped in place), upsample it to
    (width, height) and add luminance sensor noise of ``noise_std`` levels."""
    np.clip(work, 0, 255, out=work)
    image = cv2.convertScaleAbs(work)  # rounds and saturates; values are >= 0
    if image.shape[1] != width or image.shape[0] != height:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if noise_std <= 0:
        return image
    grain = np.empty((height, width), dtype=np.int16)
    # cv2.randn is several times faster than numpy's normal sampler at
    # 12 MP; seeding it from the image's own generator keeps it reproducible.
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    cv2.randn(grain, 0.0, float(noise_std))
    # Same noise in B, G and R (luma noise); cv2.add saturates at 0 and 255.
    return cv2.add(image, cv2.merge([grain, grain, grain]), dtype=cv2.CV_8U)
