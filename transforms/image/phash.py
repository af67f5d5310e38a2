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
image against every hash of another. Four regions per image bound the cost.

A copy turned by a quarter turn or mirrored (a photo rotated in an editor, or
stripped of its EXIF orientation, which displays it on its side) moves every
bit too. Its hash is the original's under one of the 7 other symmetries of the
square, and those come from the same DCT without another pass over the
pixels: mirroring negates the coefficients of odd frequency along the mirrored
axis, transposing transposes them (TURNS). Rather than file every region in
all 8 (32 hashes per image), each region (the frame and its centre crops) also files its hash
turned to a canonical orientation, read off its two lowest coefficients,
which turn with it: transposed when the vertical gradient C(1,0) outweighs
the horizontal C(0,1), then mirrored so that both are positive
(canonical_turns). A photo and its turned copy reach the same orientation
unless a decision is a near tie, and then every orientation the tie allows is
filed. The crops' turns catch the commonest phone edit, crop and rotate: a
copy turned and cropped meets its original through the canonical hash of
the centre crop nearest its framing. On 370 real photos that is 2.7 hashes
per image beside the four of the regions (7.6 in all, where the frame's 7
turns made 11), and benchmarks/turned_copies.py catches 100% of their turned
copies and 97.6% of those also cropped to 90% (the frame's 7 turns: 85.9%).
"""
from __future__ import annotations

import cv2
import numpy as np

HASH_BITS = 64
# Fractions of each side kept by the nested centre crops hashed beside the full
# frame: 0.93 ** (1, 2, 3). No crop between 0.8 and 1 is more than ~3.5% off a rung.
CENTRE_FRACTIONS = (0.93, 0.865, 0.804)


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _low_frequencies(image: np.ndarray) -> np.ndarray:
    """The 8x8 lowest DCT coefficients of the image area-resized to 32x32."""
    small = cv2.resize(_gray(image), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.dct(small)[:8, :8]


def _hashes(lows: np.ndarray) -> list[int]:
    """One hash per row of (k, 64) coefficients: a bit per coefficient above
    its row's median, the first bit highest."""
    # The median as np.median takes it (the mean of the two middle values, in
    # the rows' dtype), from one sort: np.median costs ~10x more on rows this short.
    ranked = np.sort(lows, axis=1)
    middle = HASH_BITS // 2
    bits = lows > (ranked[:, middle - 1:middle] + ranked[:, middle:middle + 1]) / 2
    return np.packbits(bits, axis=1).view(">u8").ravel().tolist()


def phash64(image: np.ndarray) -> int:
    """Return the 64-bit pHash of a BGR or grayscale uint8 image as an int."""
    return _hashes(_low_frequencies(image).reshape(1, 64))[0]


# A mirror x -> 31 - x multiplies coefficient (u, v) by (-1)^v (v: the x
# frequency), y -> 31 - y by (-1)^u; a transpose swaps u and v.
_ODD = (-1.0) ** np.arange(8, dtype=np.float32)
# The 7 symmetries of the square other than the identity, as (transpose,
# mirror x, mirror y) applied to the image in that order: quarter turns
# (np.rot90 is a transpose then a vertical mirror), half turn, 4 mirrors.
TURNS = tuple((t, mx, my) for t in (False, True) for mx in (False, True) for my in (False, True)
              if (t, mx, my) != (False, False, False))


def turned_image(image: np.ndarray, transpose: bool, mirror_x: bool, mirror_y: bool) -> np.ndarray:
    """The image (2-D or with channels) under one of TURNS, in pixels: what
    _turned does to its DCT block (the tests and benchmarks make copies with it)."""
    out = image.transpose(1, 0, *range(2, image.ndim)) if transpose else image
    out = out[:, ::-1] if mirror_x else out
    return np.ascontiguousarray(out[::-1] if mirror_y else out)


def _turned(low: np.ndarray, transpose: bool, mirror_x: bool, mirror_y: bool) -> np.ndarray:
    out = low.T if transpose else low
    if mirror_x:
        out = out * _ODD[None, :]
    if mirror_y:
        out = out * _ODD[:, None]
    return out


# How close the two sides of an orientation decision may be, as a share of the
# RMS of the 63 AC coefficients, before both sides are filed. On real photos
# turned, resized and re-encoded, without it 3 of 370 copies reached another
# orientation than their original; from 0.05 to 0.3 none did.
ORIENTATION_MARGIN = 0.1


def canonical_turns(low: np.ndarray, margin: float = ORIENTATION_MARGIN) -> list[tuple[bool, bool, bool]]:
    """The turns (transpose, mirror x, mirror y) taking an 8x8 DCT block to its
    canonical orientation: |C(0,1)| >= |C(1,0)|, then C(0,1) >= 0 and
    C(1,0) >= 0. A decision within `margin` of a tie keeps both sides."""
    tie = margin * float(np.sqrt(max((low ** 2).sum() - low[0, 0] ** 2, 0.0) / 63))
    a, b = abs(float(low[0, 1])), abs(float(low[1, 0]))
    out = []
    for transpose in ([False, True] if abs(a - b) < tie else [a < b]):
        x, y = (low[1, 0], low[0, 1]) if transpose else (low[0, 1], low[1, 0])
        out += [(transpose, mx, my)
                for mx in ([False, True] if abs(x) < tie else [bool(x < 0)])
                for my in ([False, True] if abs(y) < tie else [bool(y < 0)])]
    return out


def region_phashes(image: np.ndarray, fractions=CENTRE_FRACTIONS) -> tuple[int, list[int], list[int]]:
    """(the frame's pHash (phash64), its centre crops' (phash64 of each centre_crop), the distinct
    pHashes of each of those regions turned to its canonical orientation(s)
    that are not among the first two), one DCT per region."""
    gray = _gray(image)
    lows = [_low_frequencies(gray), *(_low_frequencies(centre_crop(gray, f)) for f in fractions)]
    turned = [_turned(low, *turn) for low in lows for turn in canonical_turns(low)]
    hashes = _hashes(np.stack([*lows, *turned]).reshape(len(lows) + len(turned), 64))
    own = hashes[:len(lows)]
    return own[0], own[1:], [h for h in dict.fromkeys(hashes[len(lows):]) if h not in own]


def centre_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The centred region keeping `fraction` of each side (at least 1 px), a view."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


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
