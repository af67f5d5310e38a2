"""Condition-specific lesion patterns, so a model trained on the sample data
has something to learn.

``PATTERN_OF_CONDITION`` is the one place that says which pattern a case's
primary condition (``CasePlan.condition``) is drawn with; unlabelled cases get
the generic irregular red or brown blobs. Every pattern is a set of masks
(inflamed, pale, dark) applied relative to the skin underneath, so it shows on
every Monk tone, and its smallest structures are >= ~1.5% of the frame's short
side, i.e. >= 1 px even at a 64 px model input.
"""
from __future__ import annotations

import cv2
import numpy as np

from beam_jobs.sample_data.noise import smooth_noise

# Condition -> pattern (the names of the _PATTERNS renderers below). Any
# condition missing here (and unlabelled cases) renders as "generic".
PATTERN_OF_CONDITION = {
    "Psoriasis": "scaly_plaque",          # well-bordered red plaques, silvery scale
    "Urticaria": "wheals",                # pale raised patches with red rims
    "Eczema": "eczematous_patch",         # ill-defined redness studded with tiny papules
    "Allergic Contact Dermatitis": "contact_band",  # straight-edged red band (strap, patch)
    "Insect Bite": "bite_papules",        # few small red papules with a dark punctum
    "Folliculitis": "pustules",           # many scattered red dots with pale centres
    "Tinea": "annular_ring",              # red scaly ring, clearer centre
    "Herpes Zoster": "vesicle_clusters",  # grouped bright vesicles on red bases, in a band
    "Erythema Multiforme": "target_lesions",  # concentric dusky centre, pale ring, red rim
}


def draw_lesions(rng: np.random.Generator, planes: list[np.ndarray], scale: float, condition: str) -> None:
    """Draw the lesion pattern of ``condition`` onto BGR ``planes`` in place;
    ``scale`` is the frame's short side times the shot's detail factor."""
    h, w = planes[0].shape
    pattern = PATTERN_OF_CONDITION.get(condition, "generic")
    masks = _Masks(h, w)
    _PATTERNS[pattern](rng, masks, scale)
    masks.apply(planes, rng)


class _Masks:
    """Full-frame float masks in [0, 1] of the three ways skin changes."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.red = np.zeros((h, w), np.float32)   # inflamed: green and blue drop
        self.pale = np.zeros((h, w), np.float32)  # oedema / scale / pus: towards whitish grey
        self.dark = np.zeros((h, w), np.float32)  # pigment / dusky centre / punctum

    def apply(self, planes: list[np.ndarray], rng: np.random.Generator) -> None:
        for m in (self.red, self.pale, self.dark):
            np.clip(m, 0, 1, out=m)
        # Relative changes, so the same mask reads on Monk 1 and Monk 10. On
        # dark skin inflammation shows as a deeper red-brown rather than pink:
        # red gains while green and blue drop, else it would be invisible.
        level = float(np.mean([p[::8, ::8].mean() for p in planes]))
        red_gain = (rng.uniform(0.3, 0.38), rng.uniform(0.3, 0.4),
                    -float(np.interp(level, (40, 200), (0.4, 0.03))))
        dark_gain = (0.62, 0.55, 0.42)  # blue drops most: brown / dusky
        pale = np.float32(rng.uniform(0.45, 0.6))
        for plane, rg, dg in zip(planes, red_gain, dark_gain):
            plane *= 1 - self.red * np.float32(rg)
            plane *= 1 - self.dark * np.float32(dg)
            # Halfway towards white at most: scale, oedema and pus are paler
            # than the skin around them on every tone.
            plane += self.pale * pale * (np.float32(255) - plane) * np.float32(0.5)

    def blob(self, rng, cy, cx, r0, irregular=0.2, soft=0.1, reach=None):
        """(region, soft irregular disc mask) around (cy, cx) of radius ~r0 over a
        square of half-side ``reach`` (default 1.6 r0), or None off-frame."""
        region, dist, theta = self._polar(cy, cx, reach or 1.6 * r0)
        if region is None:
            return None, None
        radius = np.ones_like(dist)
        for k in range(2, 6):
            amp = np.float32(rng.uniform(0, irregular) / np.sqrt(k))
            radius += amp * np.cos(k * theta + np.float32(rng.uniform(0, 2 * np.pi)))
        radius *= np.float32(r0)
        softness = np.float32(max(r0 * soft, 0.6))
        return region, 1 / (1 + np.exp(np.clip((dist - radius) / softness, -30, 30)))

    def ring(self, cy, cx, radius, width):
        """(region, Gaussian ring mask) of ``radius`` and half-width ``width``."""
        region, dist, _ = self._polar(cy, cx, radius + 2.5 * width)
        if region is None:
            return None, None
        return region, np.exp(-((dist - np.float32(radius)) / np.float32(max(width, 0.6))) ** 2)

    def dot(self, mask: np.ndarray, cy, cx, r, strength=1.0):
        """Add a soft round dot of radius ``r`` (>= 1 px) to ``mask``."""
        region, dist, _ = self._polar(cy, cx, 2 * r + 1)
        if region is not None:
            sub = mask[region]
            np.maximum(sub, np.float32(strength) / (1 + np.exp(np.clip((dist - r) / max(r * 0.25, 0.5), -30, 30))),
                       out=sub)

    def _polar(self, cy, cx, reach):
        y0, y1 = max(0, int(cy - reach)), min(self.h, int(cy + reach) + 1)
        x0, x1 = max(0, int(cx - reach)), min(self.w, int(cx + reach) + 1)
        if y1 - y0 < 2 or x1 - x0 < 2:
            return None, None, None
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        return np.s_[y0:y1, x0:x1], np.sqrt(ys * ys + xs * xs), np.arctan2(ys, xs)


def _centre(rng, m: _Masks, margin=0.15):
    return rng.uniform(margin, 1 - margin) * m.h, rng.uniform(margin, 1 - margin) * m.w


def _add(mask, region, sub, strength=1.0):
    if region is not None:
        np.maximum(mask[region], sub * np.float32(strength), out=mask[region])


def _generic(rng, m: _Masks, scale):
    """1-4 irregular soft-edged blobs, each red (inflamed) or brown (pigmented)."""
    for _ in range(int(rng.integers(1, 5))):
        region, sub = m.blob(rng, *_centre(rng, m, 0.1), scale * rng.uniform(0.05, 0.15), 0.22,
                             rng.uniform(0.06, 0.2))
        _add(m.dark if rng.random() >= 0.6 else m.red, region, sub, rng.uniform(0.8, 1.0))


def _scaly_plaque(rng, m: _Masks, scale):
    """1-3 sharply bordered red plaques covered in patchy silvery scale."""
    for _ in range(int(rng.integers(1, 4))):
        r0 = scale * rng.uniform(0.1, 0.2)
        region, sub = m.blob(rng, *_centre(rng, m), r0, 0.15, 0.03)
        if region is None:
            continue
        _add(m.red, region, sub)
        bh, bw = sub.shape
        flakes = smooth_noise(rng, bh, bw, max(bh, bw) / max(0.05 * scale, 1.5))
        flakes = np.clip((flakes + np.float32(0.2)) * np.float32(1.6), 0, 1)
        _add(m.pale, region, sub * flakes, 0.9)


def _wheals(rng, m: _Masks, scale):
    """2-5 oval pale raised patches with a red rim (and a faint red flare)."""
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = _centre(rng, m, 0.1)
        r0 = scale * rng.uniform(0.06, 0.14)
        region, outer = m.blob(rng, cy, cx, r0 * 1.35, 0.1, 0.15)
        if region is None:
            continue
        _, inner = m.blob(rng, cy, cx, r0, 0.3, 0.12, reach=1.6 * 1.35 * r0)
        _add(m.red, region, np.clip(outer - inner * np.float32(0.8), 0, 1))
        _add(m.pale, region, inner, 0.7)


def _eczematous_patch(rng, m: _Masks, scale):
    """1-2 ill-defined red patches studded with tiny papules/vesicles."""
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = _centre(rng, m)
        r0 = scale * rng.uniform(0.14, 0.24)
        region, sub = m.blob(rng, cy, cx, r0, 0.3, 0.35)
        _add(m.red, region, sub, 0.8)
        for _ in range(int(rng.integers(15, 35))):
            a, d = rng.uniform(0, 2 * np.pi), r0 * np.sqrt(rng.uniform(0, 0.8))
            y, x = cy + d * np.sin(a), cx + d * np.cos(a)
            r = scale * rng.uniform(0.012, 0.02)
            m.dot(m.red, y, x, r * 1.6)
            m.dot(m.pale, y, x, r * 0.7, 0.6)


def _contact_band(rng, m: _Masks, scale):
    """A straight-edged red band or rectangle (where a strap, glove or patch sat)."""
    cy, cx = _centre(rng, m, 0.25)
    length, width = scale * rng.uniform(0.5, 0.9), scale * rng.uniform(0.1, 0.2)
    box = ((float(cx), float(cy)), (float(length), float(width)), float(rng.uniform(0, 180)))
    mask = np.zeros((m.h, m.w), np.uint8)
    cv2.fillPoly(mask, [np.round(cv2.boxPoints(box)).astype(np.int32)], 255)
    k = max(3, int(scale * 0.01) | 1)
    band = cv2.GaussianBlur(mask, (k, k), 0).astype(np.float32) / np.float32(255)
    papules = np.clip(smooth_noise(rng, m.h, m.w, max(m.h, m.w) / max(0.03 * scale, 1.5)), 0, 1)
    np.maximum(m.red, band * (np.float32(0.75) + np.float32(0.25) * papules), out=m.red)


def _bite_papules(rng, m: _Masks, scale):
    """2-5 small round red papules with a pink halo and a dark central punctum."""
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = _centre(rng, m)
        r0 = scale * rng.uniform(0.045, 0.07)
        region, halo = m.blob(rng, cy, cx, r0 * 2.2, 0.1, 0.4)
        _add(m.red, region, halo, 0.6)
        m.dot(m.red, cy, cx, r0)
        m.dot(m.dark, cy, cx, max(scale * 0.012, 1.0), 0.8)


def _pustules(rng, m: _Masks, scale):
    """10-30 scattered small red papules with pale (pus) centres over part of the frame."""
    cy, cx = _centre(rng, m, 0.3)
    spread = scale * rng.uniform(0.25, 0.45)
    for _ in range(int(rng.integers(10, 31))):
        y, x = cy + rng.normal(0, spread * 0.5), cx + rng.normal(0, spread * 0.5)
        r = scale * rng.uniform(0.018, 0.03)
        m.dot(m.red, y, x, r * 1.7)
        m.dot(m.pale, y, x, r * 0.7, 0.85)


def _annular_ring(rng, m: _Masks, scale):
    """1-2 red scaly rings with a clearer centre."""
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = _centre(rng, m)
        r0 = scale * rng.uniform(0.12, 0.22)
        region, ring = m.ring(cy, cx, r0, r0 * 0.12)
        if region is None:
            continue
        reach = r0 + 2.5 * r0 * 0.12
        _add(m.red, region, ring)
        bh, bw = ring.shape
        scale_tex = np.clip(smooth_noise(rng, bh, bw, max(bh, bw) / max(0.03 * scale, 1.5)), 0, 1)
        _add(m.pale, region, ring * scale_tex, 0.5)
        _, centre = m.blob(rng, cy, cx, r0 * 0.8, 0.1, 0.3, reach=reach)
        _add(m.red, region, centre, 0.15)


def _vesicle_clusters(rng, m: _Masks, scale):
    """3-6 clusters of tense bright vesicles on red bases, strung along a band."""
    y0, x0 = _centre(rng, m, 0.2)
    angle = rng.uniform(0, 2 * np.pi)
    step = scale * rng.uniform(0.1, 0.16)
    for k in range(int(rng.integers(3, 7))):
        cy = y0 + k * step * np.sin(angle) + rng.normal(0, step * 0.3)
        cx = x0 + k * step * np.cos(angle) + rng.normal(0, step * 0.3)
        r0 = scale * rng.uniform(0.05, 0.08)
        region, base = m.blob(rng, cy, cx, r0, 0.25, 0.2)
        _add(m.red, region, base)
        for _ in range(int(rng.integers(4, 9))):
            a, d = rng.uniform(0, 2 * np.pi), r0 * np.sqrt(rng.uniform(0, 0.6))
            m.dot(m.pale, cy + d * np.sin(a), cx + d * np.cos(a), scale * rng.uniform(0.012, 0.02))


def _target_lesions(rng, m: _Masks, scale):
    """2-5 targets: dusky centre, pale ring, red outer ring."""
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = _centre(rng, m, 0.1)
        r0 = scale * rng.uniform(0.06, 0.1)
        region, outer = m.ring(cy, cx, r0 * 0.8, r0 * 0.22)
        _add(m.red, region, outer)
        region, middle = m.ring(cy, cx, r0 * 0.45, r0 * 0.12)
        _add(m.pale, region, middle, 0.6)
        m.dot(m.dark, cy, cx, r0 * 0.25, 0.7)
        m.dot(m.red, cy, cx, r0 * 0.3)


_PATTERNS = {
    "generic": _generic,
    "scaly_plaque": _scaly_plaque,
    "wheals": _wheals,
    "eczematous_patch": _eczematous_patch,
    "contact_band": _contact_band,
    "bite_papules": _bite_papules,
    "pustules": _pustules,
    "annular_ring": _annular_ring,
    "vesicle_clusters": _vesicle_clusters,
    "target_lesions": _target_lesions,
}
assert set(PATTERN_OF_CONDITION.values()) <= set(_PATTERNS)
