"""Borderline enhancement on real photographs: what curate --enhance rescues.

For every photo of ../shared/real_photos this makes labelled variants in
memory (never written anywhere) and runs each, JPEG-encoded at q92 as
degrade.py does, through curate's per-image path with enhancement
(transforms.image.analyze.analyze_and_enhance, the code the job runs):

  strong   degrade.py's own blur_strong, motion_strong, dark_strong,
           bright_strong, applied to every usable skin photo: must never be
           rescued;
  mild     milder steps of our own, in linear light as degrade.py does:
           dim -3, -4, -5, -6 EV (with degrade.py's read noise), dim and
           low-contrast (-4 EV after halving contrast), contrast squeezed to
           0.12, 0.16, 0.2 of itself around the mean, Gaussian blur of
           sigma 0.004, 0.006, 0.008 of the short side, and noise (sigma 8
           levels) on -4 EV: the borderline cases;
  non-skin every non-skin photo as it is and with the mild steps: must never
           be rescued.

Figures: the share of borderline variants (mild steps of usable skin photos
that curate rejects) rescued, overall, per step and per tone group; strong
variants and non-skin photos rescued (must be 0); the ITA shift of rescued
images (enhanced minus rejected original) and their ITA against the
undegraded photo's. Photos are downscaled to a short side of 672 px first
(3x the analysis size; the defects scale with the short side).

Run:  .venv/bin/python -m benchmarks.enhance_real_photos [--photos ../shared/real_photos] [--json PATH]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

STRONG = ("blur_strong", "motion_strong", "dark_strong", "bright_strong")
MILD = ("dim_-3ev", "dim_-4ev", "dim_-5ev", "dim_-6ev", "dim_lowcontrast", "flat_0.12", "flat_0.16", "flat_0.2",
        "blur_0.004", "blur_0.006", "blur_0.008", "noisy_dim")
WORK_SHORT_SIDE = 672

_degrade = None
_policy = None


def _load_degrade(photos: str):
    spec = importlib.util.spec_from_file_location("real_photos_degrade", os.path.join(photos, "degrade.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mild(d, img: np.ndarray, kind: str, rng) -> np.ndarray:
    s = min(img.shape[:2])
    if kind.startswith("dim_") and kind.endswith("ev"):
        return d.exposure(img, float(kind[4:-2]), rng, noise=0.6)
    if kind == "dim_lowcontrast":
        lin = d.to_linear(img)
        lin = 0.5 * lin + 0.5 * lin.mean()
        return d.to_srgb8(lin * 2.0 ** -4)
    if kind.startswith("flat_"):  # contrast squeezed towards the mean (fog, a dirty lens, a flat scan)
        m = img.reshape(-1, 3).mean(0)
        return np.clip(np.round(m + (img.astype(np.float32) - m) * float(kind[5:])), 0, 255).astype(np.uint8)
    if kind.startswith("blur_"):
        return cv2.GaussianBlur(img, (0, 0), float(kind[5:]) * s)
    if kind == "noisy_dim":
        return d.exposure(img, -4.0, rng, noise=8.0)
    raise ValueError(kind)


def _init(photos: str):
    global _degrade, _policy
    from schemas.policy import load_policy
    _degrade, _policy = _load_degrade(photos), load_policy()


def _jpeg(img) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def measure_photo(args) -> list[dict]:
    """Rows (file, tone, family, variant, plain verdict, enhance outcome, ITA) for one photo."""
    from transforms.image.analyze import analyze_and_enhance, analyze_image
    photos, label = args
    img = cv2.imread(os.path.join(photos, "images", label["file"]), cv2.IMREAD_COLOR)
    if img is None:
        return []
    s = min(img.shape[:2])
    if s > WORK_SHORT_SIDE:
        f = WORK_SHORT_SIDE / s
        img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
    skin = label["kind"].startswith("skin")
    usable = skin and label["expected"] == "accept"
    if not (usable or label["kind"] == "non_skin"):
        return []
    original, _ = analyze_image(label["file"], _jpeg(img), _policy)
    seed = int.from_bytes(label["file"].encode()[:8].ljust(8, b"\0"), "big")
    variants = [("original", "original", img)]
    rng = np.random.default_rng(seed)
    if usable:
        variants += [("strong", k, _degrade.degrade(img, k, rng)) for k in STRONG]
    variants += [("mild", k, mild(_degrade, img, k, rng)) for k in MILD]
    out = []
    for family, kind, pixels in variants:
        row, _t, _b = analyze_and_enhance(f"{label['file']}#{kind}", _jpeg(pixels), _policy)
        out.append({"file": label["file"], "tone": label["tone_group"], "skin": skin, "usable": usable,
                    "family": family, "variant": kind, "status": row["status"],
                    "reasons_before": row["reasons_before_enhance"] or row["reasons"],
                    "outcome": row["enhance_outcome"], "enhanced": bool(row["enhanced"]),
                    "recipe": row["enhance_recipe"], "ita_shift": row["enhance_ita_shift"],
                    "ita": row["ita_deg"], "ita_original": original["ita_deg"],
                    "original_status": original["status"]})
    return out


def _share(k: int, n: int) -> dict:
    return {"n": n, "rescued": k, "share": round(k / n, 3) if n else None}


def figures(rows: list[dict]) -> dict:
    # Borderline: mild variants of usable skin photos the plain verdict rejects,
    # whose original curate accepts (so the defect is the variant's).
    border = [r for r in rows if r["usable"] and r["family"] == "mild" and r["reasons_before"]
              and r["original_status"] == "accepted"]
    fixable = [r for r in border if r["outcome"] is not None]
    doc = {"borderline_rejected": _share(sum(r["enhanced"] for r in border), len(border)),
           "borderline_tried": _share(sum(r["enhanced"] for r in fixable), len(fixable)),
           "outcomes": dict(Counter(r["outcome"] or "not_tried" for r in border)),
           "by_step": {k: _share(sum(r["enhanced"] for r in border if r["variant"] == k),
                                 sum(1 for r in border if r["variant"] == k)) for k in MILD},
           "by_tone": {t: _share(sum(r["enhanced"] for r in border if r["tone"] == t),
                                 sum(1 for r in border if r["tone"] == t)) for t in ("light", "medium", "dark")}}
    strong = [r for r in rows if r["family"] == "strong"]
    doc["strong_rescued"] = {k: _share(sum(r["enhanced"] for r in strong if r["variant"] == k),
                                       sum(1 for r in strong if r["variant"] == k)) for k in STRONG}
    doc["strong_outcomes"] = dict(Counter(r["outcome"] or "not_tried" for r in strong))
    non_skin = [r for r in rows if not r["skin"]]
    doc["non_skin_rescued"] = _share(sum(r["enhanced"] for r in non_skin), len(non_skin))
    doc["non_skin_outcomes"] = dict(Counter(r["outcome"] or "not_tried" for r in non_skin))
    rescued = [r for r in border if r["enhanced"]]
    shifts = [abs(r["ita_shift"]) for r in rescued]
    vs_true = [r["ita"] - r["ita_original"] for r in rescued if r["ita_original"] is not None]
    doc["ita_shift_abs"] = ({"median": round(statistics.median(shifts), 2), "max": round(max(shifts), 2)}
                            if shifts else None)
    doc["ita_vs_undegraded"] = ({"median": round(statistics.median(vs_true), 1),
                                 "min": round(min(vs_true), 1), "max": round(max(vs_true), 1)}
                                if vs_true else None)
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.enhance_real_photos",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "real_photos"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (a quick look)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--rows", help="write every variant's row here (JSON lines)")
    a = ap.parse_args(argv)
    labels_path = os.path.join(a.photos, "labels.csv")
    if not os.path.exists(labels_path):
        print(f"enhance_real_photos: error: {labels_path} not found (give --photos)", file=sys.stderr)
        return 2
    with open(labels_path, newline="") as f:
        labels = list(csv.DictReader(f))
    if a.limit:
        labels = labels[:a.limit]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers, initializer=_init, initargs=(a.photos,)) as pool:
        rows = [r for rs in pool.map(measure_photo, [(a.photos, lab) for lab in labels], chunksize=4) for r in rs]
    doc = figures(rows)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["variants"] = len(rows)
    print(json.dumps(doc, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
    if a.rows:
        with open(a.rows, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
