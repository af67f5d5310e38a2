"""64-bit perceptual hash (pHash) and Hamming distance: pure numpy/OpenCV.

The hash is the classic DCT pHash: grayscale, area-resize to 32x32, 2-D DCT,
keep the 8x8 lowest frequencies, one bit per coefficient set when it exceeds
the median of those 64. Re-encoding, mild resizing and small crops move only a
few bits; different photos differ in about half of them.
"""
from __future__ import annotations

import cv2
import numpy as np

HASH_BITS = 64
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash64(image: np.ndarray) -> int:
    """Return the 64-bit pHash of a BGR or grayscale uint8 image as an int."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.sum(_BIT_WEIGHTS[bits], dtype=np.uint64))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()
