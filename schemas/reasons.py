"""The fixed vocabulary of rejection reason codes, in one place.

Every rejected image carries one or more of these; dead letters, counters,
summary.json and the report all use exactly these strings.
"""
from __future__ import annotations

# code -> what it means. Order is the order they are reported in.
REASONS: dict[str, str] = {
    "outside_allowed_root": "the URI is outside the allowed roots, has a '..' segment or a scheme other than gs:// or a local path (never read)",
    "not_a_regular_file": "the path leads to a FIFO, device, socket or directory, not a file (never read: a FIFO blocks, /dev/zero never ends)",
    "missing": "the URI does not exist (manifest or SCIN path resolves to nothing)",
    "empty": "the object has zero bytes",
    "unreadable": "bytes could not be read or decoded (truncated or corrupt image, I/O error)",
    "unsupported_format": "not an image format we decode (HEIC, HTML, text, ...)",
    "too_large": "file size over the policy's max_bytes (refused from its size, never read past it), or declared pixel count or decoded size over max_pixels / max_decode_bytes (refused before decoding)",
    "too_small": "short side below the policy minimum",
    "too_dark": "underexposed: most pixels crushed to black and no highlights",
    "too_bright": "overexposed: most pixels clipped to white",
    "blurry": "little fine detail relative to brightness at the analysis size",
    "low_information": "near-flat image: too few distinct luminance levels",
    "no_skin": "too few skin-coloured pixels to be a skin photo",
    "exact_duplicate": "byte-identical to the kept member of its duplicate cluster",
    "near_duplicate": "perceptually near-identical to the kept member of its cluster",
}

# Reasons decided before any pixel is seen; such images have no features.
INPUT_REASONS = ("outside_allowed_root", "not_a_regular_file", "missing", "empty", "unreadable", "unsupported_format", "too_large")
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")


def ordered(reasons) -> list[str]:
    """Deduplicate and sort reason codes into vocabulary order."""
    unknown = set(reasons) - REASONS.keys()
    if unknown:
        raise ValueError(f"unknown reason codes: {sorted(unknown)}")
    return [r for r in REASONS if r in set(reasons)]
