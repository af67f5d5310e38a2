"""64-bit perceptual hashes (pHash) of nested centre regions, Hamming distance.

The hash is the classic DCT pHash: grayscale, area-resize to 32x32, 2-D DCT,
keep the 8x8 lowest frequencies, one bit per coefficient set when it exceeds
the median of those 64. Re-encoding and resizing move only a few bits;
different photos differ in about half of them.

A crop is what moves a pHash most: the DCT grid is pinned to the frame, so a
copy that keeps the centre 92% of its original lands 2-20 bits away from it
(median 8, on real photos), while a crop within ~3.5% of the same framing
moves it by 0-4 bits. So each image is also hashed over nested centre crops,
a ladder of ratio 0.93 (CENTRE_FRACTIONS): a copy keeping anywhere from 80%
to 100% of each side has a full-frame hash within ~3.5% in scale of one of its
original's regions, and transforms/curate/near_dups.py matches every hash of one
image against every hash of another. Four hashes per image bound the cost.
"""
from __future__ import annotations

import cv2
import numpy as np

HASH_BITS = 64
# Fractions of each side kept by the nested centre crops hashed beside the full
# frame: 0.93 ** (1, 2, 3). No crop between 0.8 and 1 is more than ~3.5% off a rung.
CENTRE_FRACTIONS = (0.93, 0.865, 0.804)
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def phash64(image: np.ndarray) -> int:
    """Return the 64-bit pHash of a BGR or grayscale uint8 image as an int."""
    small = cv2.resize(_gray(image), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.sum(_BIT_WEIGHTS[bits], dtype=np.uint64))


def centre_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The centred region keeping `fraction` of each side (at least 1 px), a view."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


def centre_phashes(image: np.ndarray, fractions=CENTRE_FRACTIONS) -> list[int]:
    """pHashes of the nested centre crops (the full frame's is phash64)."""
    gray = _gray(image)
    return [phash64(centre_crop(gray, f)) for f in fractions]


def parse_hex(text: str) -> np.ndarray:
    """Concatenated 16-digit hex pHashes (as features carry them, f"{h:016x}")
    -> uint64 array, in one pass (int(h, 16) per hash costs far more)."""
    return np.frombuffer(bytes.fromhex(text), dtype=">u8").astype(np.uint64)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def min_hamming(hashes_a, hashes_b) -> int:
    """Smallest distance between any hash of one image and any of another:
    the near-duplicate distance (see transforms/curate/near_dups.py)."""
    a = np.asarray(hashes_a, dtype=np.uint64)
    b = np.asarray(hashes_b, dtype=np.uint64)
    return int(np.bitwise_count(a[:, None] ^ b[None, :]).min())
