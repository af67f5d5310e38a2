"""Skin crop against centre crop on real photos (issue 17.3, crops).

For every usable skin photo of a labels CSV in ../shared/real_photos' format
(kind skin_*, expected accept), both model inputs are made exactly as
make_tfrecords and score make them (transforms.image.preprocess's decode,
transforms.image.skin_crop.crop_resize; 224 px, crop_fraction 0.875), and
this prints, for all of them and for the photos with background (FUSeg
feet, abdomens: --background sources):

  - the median skin fraction of the model input, skin crop and centre crop;
  - how often a crop cuts away more than --cut share (default 10%) of the
    photo's skin (skin pixels of the whole frame outside the square);
  - how often the skin input shows 2 points more (less) skin than the centre one;
  - how often --crop skin found no region and fell back to the centre crop;
  - the same for the alternative not taken, the skin square allowed up to the
    whole short side (skin uncapped);
  - the ms the region costs: on curate's mask (what compute_features adds per
    image) and the whole skin-crop path against the centre path.

Skin is the project's own colour rule (transforms.image.skin_tone.skin_mask)
at the 224 px analysis size, the rule the crop is built from: the figures
say how much of that skin the model sees, not a hand-drawn ground truth.
The photos are read where they are; nothing of them is written anywhere.

Run:  .venv/bin/python -m benchmarks.skin_crops --labels ../shared/real_photos/labels.csv \
          --images ../shared/real_photos/images [--cut 0.10] [--json out.json]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import median, table, write_json  # noqa: E402
from transforms.image import skin_crop  # noqa: E402
from transforms.image.preprocess import decode_for_model  # noqa: E402

IMAGE_SIZE, CROP_FRACTION = 224, 0.875
cv2.setNumThreads(1)  # one core, as benchmarks/curate_per_image measures curate's path
BACKGROUND_SOURCES = ("FUSeg", "Abdominal")


VARIANTS = ("skin", "center", "skin_uncapped")


def measure(data: bytes, cut: float) -> dict:
    """Each crop of one upload: skin fraction of the input, share of skin cut away, crop used, ms.
    skin_uncapped is the alternative not taken: the skin square allowed up to the whole short side."""
    out = {}
    for crop in VARIANTS:
        t0 = time.perf_counter()
        image = decode_for_model(data, IMAGE_SIZE, CROP_FRACTION, crop=crop.split("_")[0]).image
        if crop == "skin_uncapped":
            box = skin_crop.box_of(skin_crop.skin_region(image))
            h, w = image.shape[:2]
            (top, left, side), used = ((skin_crop.skin_square(h, w, box, 1.0), "skin") if box else
                                       (skin_crop.center_square(h, w, CROP_FRACTION), "center"))
        else:
            (top, left, side), used = skin_crop.model_square(image, crop, CROP_FRACTION)
        square = cv2.resize(image[top:top + side, left:left + side], (IMAGE_SIZE, IMAGE_SIZE),
                            interpolation=cv2.INTER_AREA if side >= IMAGE_SIZE else cv2.INTER_LINEAR)
        ms = (time.perf_counter() - t0) * 1e3
        # The frame's skin at the analysis size, and the square mapped onto it.
        mask = skin_crop.skin_mask_of(image)
        h, w = image.shape[:2]
        mh, mw = mask.shape
        r0, r1 = int(round(top / h * mh)), int(round((top + side) / h * mh))
        c0, c1 = int(round(left / w * mw)), int(round((left + side) / w * mw))
        total = int(mask.sum())
        kept = int(mask[r0:r1, c0:c1].sum())
        lost = 1 - kept / total if total else 0.0
        out[crop] = {"skin_fraction": float(skin_crop.skin_mask_of(square, IMAGE_SIZE).mean()),
                     "lost": lost, "cut": lost > cut, "used": used, "ms": ms,
                     "side": side / min(h, w)}
    return out


def region_ms(data: bytes, repeats: int = 20) -> float:
    """What compute_features adds per image: region_from_mask on curate's half-size mask."""
    image = decode_for_model(data, IMAGE_SIZE, 1.0).image
    mask = skin_crop.skin_mask_of(image)
    t0 = time.perf_counter()
    for _ in range(repeats):
        skin_crop.region_from_mask(mask)
    return (time.perf_counter() - t0) * 1e3 / repeats


def summarise(name: str, results: list[dict]) -> list:
    n = len(results)
    row = [name, n]
    for crop in VARIANTS:
        row.append(round(median([r[crop]["skin_fraction"] for r in results]), 3))
    for crop in VARIANTS:
        row.append(round(sum(r[crop]["cut"] for r in results) / n, 3))
    # photos whose skin input shows 2 points more (less) skin than the centre input
    row.append(round(sum(r["skin"]["skin_fraction"] > r["center"]["skin_fraction"] + 0.02 for r in results) / n, 3))
    row.append(round(sum(r["skin"]["skin_fraction"] < r["center"]["skin_fraction"] - 0.02 for r in results) / n, 3))
    row.append(round(sum(r["skin"]["used"] == "center" for r in results) / n, 3))
    row.append(round(median([r["skin"]["side"] for r in results]), 2))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", required=True, help="labels.csv of ../shared/real_photos")
    ap.add_argument("--images", required=True, help="its images/ folder")
    ap.add_argument("--cut", type=float, default=0.10, help="share of the skin a crop may cut away")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    if not 0 < a.cut < 1:
        print(f"skin_crops: error: --cut {a.cut} must be in (0, 1)", file=sys.stderr)
        return 2
    with open(a.labels, newline="") as f:
        photos = [r for r in csv.DictReader(f) if r["kind"].startswith("skin_") and r["expected"] == "accept"]
    results, background, ms_region = [], [], []
    for r in photos:
        data = (Path(a.images) / r["file"]).read_bytes()
        m = measure(data, a.cut)
        m["file"] = r["file"]
        results.append(m)
        if any(s in r["source_dataset"] for s in BACKGROUND_SOURCES):
            background.append(m)
        ms_region.append(region_ms(data))
    rows = [summarise("usable skin photos", results), summarise("with background (FUSeg feet, abdomens)", background)]
    headers = ["photos", "n", "skin frac: skin", "center", "skin uncapped", f"cut>{a.cut:.0%}: skin",
               "center", "skin uncapped", "skin +2pp", "skin -2pp", "no region", "median side"]
    print(table(headers, rows, title="Model input: skin crop against centre crop (224 px)"))
    timing = [["region on curate's mask (added per image)", round(median(ms_region), 3)],
              ["model path, skin crop", round(median([r["skin"]["ms"] for r in results]), 2)],
              ["model path, centre crop", round(median([r["center"]["ms"] for r in results]), 2)]]
    print(table(["step", "median ms"], timing, title="Cost (photos as stored, one core)"))
    write_json(a.json, {"headers": headers, "rows": rows, "timing": timing, "cut": a.cut})
    return 0


if __name__ == "__main__":
    sys.exit(main())
