"""``generate``: plan a dataset, render every image, write files and CSVs."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from beam_jobs.sample_data import ground_truth, scin_csv
from beam_jobs.sample_data.catalog import DEFECTS, NONE
from beam_jobs.sample_data.plan import ImagePlan, plan_dataset
from beam_jobs.sample_data.render import RenderedImage, decode_upright, render_image
from transforms.image.phash import HASH_BITS, phash64

MAX_AREA = 4032 * 3024
MIN_SIDE = 64


def validate_size(width: int, height: int) -> None:
    """Raise ValueError unless both sides are >= MIN_SIDE and the area <= 4032x3024."""
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"size {width}x{height}: each side must be at least {MIN_SIDE} px")
    if width * height > MAX_AREA:
        raise ValueError(f"size {width}x{height}: area exceeds 4032x3024 ({MAX_AREA} px)")


# Distinct accepted images must differ in more than 16 of 64 pHash bits, so
# no two can pass for near-duplicates. Independent renders collide that
# closely about once in 2,000 pairs; such an image is redrawn.
_ACCEPTED = frozenset({NONE, "dim_textured"})
_MIN_DISTINCT_BITS = 17
_MAX_ATTEMPTS = 8


class _DistinctHashes:
    """pHashes of the accepted images written so far."""

    def __init__(self, capacity: int) -> None:
        self._hashes = np.zeros(capacity, dtype=np.uint64)
        self._count = 0

    def closest(self, value: int) -> int:
        """Smallest Hamming distance from ``value`` to a stored hash (65 if none)."""
        if not self._count:
            return HASH_BITS + 1
        return int(np.bitwise_count(self._hashes[: self._count] ^ np.uint64(value)).min())

    def add(self, value: int) -> None:
        """Store one more hash."""
        self._hashes[self._count] = value
        self._count += 1


def _make_distinct(
    item: ImagePlan, seed: int, size: tuple[int, int], result: RenderedImage, distinct: _DistinctHashes
) -> RenderedImage:
    """Redraw ``item`` (next attempt) until its pHash is far from every earlier accepted image."""
    attempt = 0
    while True:
        value = phash64(decode_upright(result.data))
        if distinct.closest(value) >= _MIN_DISTINCT_BITS or attempt == _MAX_ATTEMPTS:
            distinct.add(value)
            return result
        attempt += 1
        result = render_image(item, seed, size, attempt=attempt)


def generate(out_dir: str | Path, cases: int, seed: int, size: tuple[int, int] = (640, 480)) -> dict:
    """Write a SCIN-style sample dataset with known defects under ``out_dir``.

    Produces ``dataset/images/<id>.jpg`` (about 10% of the rendered photos
    Display-P3-tagged JPEGs) and ``<id>.heic`` (about 10%, P3 HEIC), ``dataset/scin_cases.csv``,
    ``dataset/scin_labels.csv`` and ``ground_truth.csv``. ``size`` is the
    landscape frame (width, height); about a quarter of images are portrait.
    Same arguments give byte-identical files. Returns a summary dict
    (paths and counts).
    """
    if cases < 0:
        raise ValueError(f"cases must be >= 0, got {cases}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    validate_size(*size)
    out = Path(out_dir)
    images_dir = out / "dataset" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    plan = plan_dataset(cases, seed)
    needed = {item.duplicate_of for item in plan.images if item.duplicate_of is not None}
    originals: dict[int, RenderedImage] = {}
    truth: dict[int, dict[str, str]] = {}
    distinct = _DistinctHashes(sum(item.defect in _ACCEPTED for item in plan.images))
    # Originals first: duplicates are made from their bytes.
    for item in sorted(plan.images, key=lambda it: it.duplicate_of is not None):
        result = render_image(item, seed, size, originals.get(item.duplicate_of))
        if item.defect in _ACCEPTED:
            result = _make_distinct(item, seed, size, result, distinct)
        (out / item.path).write_bytes(result.data)
        if item.index in needed:
            originals[item.index] = result
        truth[item.index] = ground_truth.ground_truth_row(plan, item, plan.cases[item.case_index], result)

    cases_csv = out / "dataset" / "scin_cases.csv"
    labels_csv = out / "dataset" / "scin_labels.csv"
    truth_csv = out / "ground_truth.csv"
    scin_csv.write_csv(cases_csv, scin_csv.CASES_COLUMNS, [scin_csv.case_row(plan, c) for c in plan.cases])
    scin_csv.write_csv(labels_csv, scin_csv.LABELS_COLUMNS, [scin_csv.label_row(plan, c) for c in plan.cases])
    scin_csv.write_csv(truth_csv, ground_truth.COLUMNS, [truth[i] for i in range(len(plan.images))])

    counts = Counter(item.defect for item in plan.images)
    return {
        "out_dir": str(out),
        "images_dir": str(images_dir),
        "scin_cases_csv": str(cases_csv),
        "scin_labels_csv": str(labels_csv),
        "ground_truth_csv": str(truth_csv),
        "cases": cases,
        "labeled_cases": sum(bool(c.differential) for c in plan.cases),
        "images": len(plan.images),
        "defects": {d: counts.get(d, 0) for d in DEFECTS},
    }
