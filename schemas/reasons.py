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
    "unreadable": "bytes could not be read or decoded (truncated or corrupt image, I/O error), or a local file name that is not UTF-8, which no output can hold (never read)",
    "unsupported_format": "not an image format we decode (HEIC, HTML, text, ...)",
    "too_large": "file size over the policy's max_bytes (refused from its size, never read past it), or declared pixel count or decoded size over max_pixels / max_decode_bytes, or a progressive JPEG with more than 500 scans (refused before decoding)",
    "too_small": "short side below the policy minimum",
    "too_dark": "underexposed: most pixels crushed to black and no highlights",
    "too_bright": "overexposed: most pixels clipped to white",
    "blurry": "out of focus or streaked by motion: at the size a model sees (224 px), even the steepest edges rise slowly for the contrast they span, in at least one direction",
    "low_information": "near-flat image: too few distinct luminance levels",
    "no_skin": "not a photo of skin: the relevance model's skin probability is under its threshold, or a colour photo has almost no skin-coloured pixels",
    "exact_duplicate": "byte-identical to the kept member of its duplicate cluster",
    "near_duplicate": "perceptually near-identical to the kept member of its cluster",
    "inference_error": "score only: the model raised on the batch holding this image (the error line is in `error`)",
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

# make_tfrecords' dead-letter codes: why a labelled or accepted image is not a
# training example (its dead_letters/*.jsonl rows carry one of these).
EXAMPLE_REASONS: dict[str, str] = {
    "no_image": "the labels name an image curate's output has no row for",
    "rejected_by_curate": "curate rejected the image (its reasons are the error text)",
    "no_label_row": "curate accepted the image but no labels/cases row names it",
    "conflicting_labels": "the labels list the image more than once with different labels",
    "bad_metadata": "a labels/cases value or a curate feature cannot be used",
    "unlabeled": "the case has no condition label (kept only with --keep_unlabeled)",
    "rare_class": "the class has fewer than --min_class_count images and --rare_classes drop",
    "unreadable": "the image could not be read or decoded when the example was made",
    "changed_since_curate": "the image's bytes are not those curate judged (its sha256 differs): "
                            "it was rewritten after curate ran",
}
