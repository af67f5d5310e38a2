"""Curate's verdicts on real photos saved the way phones save them (issue 13).

Issue 13's "done when" asks that HEIC and AVIF photos be accepted or rejected
on their content like JPEGs, and that Display P3 photos be judged like their
sRGB versions. Generated files prove the decoders work; this measures it on
real photographs. Every image of a labelled folder (../shared/real_photos, or
its degrade.py output with the capture defects) is re-encoded, into a
temporary folder outside the project, as:

  heic     HEIC (libheif/x265 via pillow-heif, quality 90, 8-bit, no profile),
           what an iPhone writes minus the P3 tag
  heic_p3  the same pixels converted to Display P3 (LittleCMS) and tagged with
           the profile: what an iPhone actually writes
  avif     AVIF (libavif via OpenCV, quality 90), as newer Android phones write
  jpeg_p3  JPEG q95 in Display P3 with the profile embedded, as iPhones write
           when set to "Most Compatible"

from the pixels curate itself decodes (transforms.image.decode: EXIF orientation
applied, the source's own profile honoured, full resolution). Exact copies
stay byte copies (the copy is re-encoded from the same pixels: the encoders are
deterministic, which this also checks) and a degraded variant keeps its
`derived_from` twin under the new name.

Then the real curate job (DirectRunner) runs on the original folder and on
each version, and the figures of benchmarks.real_photos are printed side by
side, with per version the share of images given the same content verdict
(reasons other than duplicates) as the original file, the duplicate pairs
found again, and the images judged differently. Re-encoding is itself a lossy step (a second JPEG
generation for the JPEG originals), so a few changed verdicts on borderline
photos are expected; a format curate could not read would show up here as
`unsupported_format` or `unreadable` rows.

The photos are read where they are; nothing of them is written into the project.

Run:  .venv/bin/python -m benchmarks.phone_formats --folder /tmp/rp_deg [--formats heic,avif,heic_p3,jpeg_p3]
      .venv/bin/python -m benchmarks.phone_formats --degrade ../shared/real_photos
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms

from benchmarks._common import table, write_json
from benchmarks.real_photos import DUPLICATE_REASONS, degrade_into, figures, read_labels, run_curate

FORMATS = {"heic": ".heic", "heic_p3": ".heic", "avif": ".avif", "jpeg_p3": ".jpg"}


def _p3_transform():
    from transforms.image.colour import display_p3_profile
    profile = display_p3_profile()
    transform = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                        ImageCms.ImageCmsProfile(io.BytesIO(profile)), "RGB", "RGB")
    return transform, profile


def encode(rgb: np.ndarray, fmt: str, p3=None) -> bytes:
    """rgb (uint8, H x W x 3) in the phone format `fmt`."""
    image = Image.fromarray(rgb)
    icc = {}
    if fmt.endswith("_p3"):
        transform, profile = p3
        image = ImageCms.applyTransform(image, transform)
        icc = {"icc_profile": profile}
    buf = io.BytesIO()
    if fmt.startswith("heic"):
        import pillow_heif
        pillow_heif.from_pillow(image).save(buf, format="HEIF", quality=90, **icc)
    elif fmt == "jpeg_p3":
        image.save(buf, "JPEG", quality=95, **icc)
    elif fmt == "avif":
        ok, data = cv2.imencode(".avif", np.asarray(image)[..., ::-1], [cv2.IMWRITE_AVIF_QUALITY, 90])
        if not ok:
            raise SystemExit("phone_formats: error: this OpenCV build cannot encode AVIF")
        return data.tobytes()
    return buf.getvalue()


def reencode_folder(labels: list[dict], images: str, fmt: str, out: Path) -> tuple[list[dict], list[str]]:
    """Writes every labelled image of `images` as `fmt` into out/images, and
    out/labels.csv; returns the new labels and the files curate's decoder refused
    (they are left out, and listed: a benchmark must not hide them)."""
    from schemas.policy import load_policy
    from transforms.image.decode import ImageRejected, decode
    max_pixels = load_policy().max_pixels
    p3 = _p3_transform() if fmt.endswith("_p3") else None
    (out / "images").mkdir(parents=True, exist_ok=True)
    ext = FORMATS[fmt]
    rename = {lab["file"]: Path(lab["file"]).stem + ext for lab in labels}
    if len(set(rename.values())) != len(rename):
        raise SystemExit("phone_formats: error: two labelled files share a stem; cannot rename them")
    new_labels, refused = [], []
    for lab in labels:
        data = Path(images, lab["file"]).read_bytes()
        try:
            pixels = decode(data, max_pixels=max_pixels, analysis_short_side=1 << 30).image  # full resolution
        except ImageRejected as e:
            refused.append(f"{lab['file']}: {e}")
            continue
        rgb = np.ascontiguousarray(pixels[..., ::-1])
        Path(out, "images", rename[lab["file"]]).write_bytes(encode(rgb, fmt, p3))
        new_labels.append(dict(lab, file=rename[lab["file"]],
                               derived_from=rename.get(lab.get("derived_from") or "", lab.get("derived_from", ""))))
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(labels[0].keys()))
        w.writeheader()
        w.writerows(new_labels)
    return new_labels, refused


def curate_rows(images: str, out: str, reuse: bool = False) -> tuple[dict[str, dict], float | None]:
    """curate's rows for images/ (and its wall seconds), or with `reuse` those a
    complete earlier run left in `out` (seconds None)."""
    from beam_jobs.evaluate_curate import load_features
    seconds = None if reuse and os.path.exists(os.path.join(out, "_SUCCESS")) else run_curate(images, out)
    return load_features(out), seconds


def agreement(labels: list[dict], images: str, rows: dict, base_labels: dict, base_images: str,
              base_rows: dict) -> dict:
    """How far each re-encoded image is judged like its original.

    Content verdicts (every reason but the duplicate ones) are compared image
    by image. Duplicates are compared as pairs (an image, the one it
    duplicates), unordered: which member of a cluster is kept follows a
    quality tie-break that a re-encode may swap, which is not a different verdict.
    """
    same_content = n = 0
    changed = []
    pairs, base_pairs = set(), set()
    for lab in labels:
        row = rows.get(os.path.join(images, lab["file"]))
        original = base_labels[Path(lab["file"]).stem]
        base = base_rows.get(os.path.join(base_images, original["file"]))
        if row is None or base is None:
            continue
        n += 1
        own = [r for r in row["reasons"] if r not in DUPLICATE_REASONS]
        base_own = [r for r in base["reasons"] if r not in DUPLICATE_REASONS]
        same_content += sorted(own) == sorted(base_own)
        if sorted(own) != sorted(base_own):
            changed.append((lab["file"], lab.get("degradation") or lab["kind"],
                            ",".join(base_own) or "accepted", ",".join(own) or "accepted"))
        for r, into in ((row, pairs), (base, base_pairs)):
            if r.get("duplicate_of"):
                into.add(frozenset((Path(r["uri"]).stem, Path(r["duplicate_of"]).stem)))
    return {"n": n, "same_content_verdict": same_content / n if n else None,
            "content_changed": sorted(changed),
            "duplicate_pairs": len(pairs), "original_duplicate_pairs": len(base_pairs),
            "duplicate_pairs_same": len(pairs & base_pairs),
            "duplicate_pairs_lost": sorted("+".join(sorted(p)) for p in base_pairs - pairs),
            "duplicate_pairs_new": sorted("+".join(sorted(p)) for p in pairs - base_pairs)}


def _pct(s: dict) -> str:
    return "n/a" if s.get("share") is None else f"{100 * s['share']:.1f}% ({s['hits']}/{s['n']})"


def side_by_side(docs: dict[str, dict]) -> str:
    names = list(docs)
    first = docs[names[0]]
    rows = [["usable skin photos wrongly rejected"] + [_pct(d["usable_wrongly_rejected"]) for d in docs.values()]]
    for g in first["usable_wrongly_rejected_by_tone"]:
        rows.append([f"  ... {g}"] + [_pct(d["usable_wrongly_rejected_by_tone"].get(g, {})) for d in docs.values()])
    rows.append(["  spread between tone groups (pp)"] + [f"{d['tone_spread_pp']:.1f}" for d in docs.values()])
    rows.append(["non-skin photos rejected"] + [_pct(d["non_skin_rejected"]) for d in docs.values()])
    rows.append(["  ... skin-coloured ones"] + [_pct(d["skin_like_rejected"]) for d in docs.values()])
    for k in first["defects"]:
        rows.append([f"{k} rejected with its reason"] + [_pct(d["defects"].get(k, {})) for d in docs.values()])
    rows.append(["same content verdict as the original file"] + [
        "-" if "agreement" not in d else f"{100 * d['agreement']['same_content_verdict']:.1f}%" for d in docs.values()])
    rows.append(["duplicate pairs found (of the original's)"] + [
        "-" if "agreement" not in d else
        f"{d['agreement']['duplicate_pairs_same']}/{d['agreement']['original_duplicate_pairs']}"
        f" (+{len(d['agreement']['duplicate_pairs_new'])} new)" for d in docs.values()])
    rows.append(["not decodable when re-encoding"] + [str(len(d.get("refused", []))) for d in docs.values()])
    rows.append(["curate wall seconds"] + ["reused" if d["curate_seconds"] is None else f"{d['curate_seconds']:.0f}"
                                           for d in docs.values()])
    return table(["figure"] + names, rows, title="curate on real photos, by file format")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.phone_formats", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--degrade", metavar="DIR", help="a real_photos folder (labels.csv, images/, degrade.py): degrade it first")
    src.add_argument("--folder", metavar="DIR", help="a degrade.py output folder or a real_photos folder (labels.csv, images/)")
    ap.add_argument("--formats", default="heic,heic_p3,avif,jpeg_p3",
                    help=f"comma-separated, of {', '.join(FORMATS)} (default: all)")
    ap.add_argument("--keep", metavar="DIR", help="write the re-encoded folders and curate outputs here and keep them")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse the re-encoded folders and complete curate outputs an earlier run left there")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    if a.reuse and not a.keep:
        ap.error("--reuse needs --keep")
    formats = [f for f in a.formats.split(",") if f]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        ap.error(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="phone_formats_") as tmp:
        work = Path(a.keep or tmp)
        folder = degrade_into(Path(a.degrade), work / "degraded") if a.degrade else Path(a.folder)
        labels = read_labels(str(folder / "labels.csv"))
        images = str((folder / "images").resolve())
        base_rows, seconds = curate_rows(images, str(work / "curated-original"), a.reuse)
        docs = {"original": dict(figures(labels, base_rows, images), curate_seconds=seconds)}
        by_stem = {Path(lab["file"]).stem: lab for lab in labels}
        for fmt in formats:
            t0 = time.perf_counter()
            if a.reuse and (work / fmt / "labels.csv").exists():
                new_labels, refused = read_labels(str(work / fmt / "labels.csv")), []
            else:
                new_labels, refused = reencode_folder(labels, images, fmt, work / fmt)
                print(f"{fmt}: {len(new_labels)} images re-encoded in {time.perf_counter() - t0:.0f} s", flush=True)
            fmt_images = str((work / fmt / "images").resolve())
            rows, seconds = curate_rows(fmt_images, str(work / f"curated-{fmt}"), a.reuse)
            doc = figures(new_labels, rows, fmt_images)
            doc.update(curate_seconds=seconds, refused=refused,
                       agreement=agreement(new_labels, fmt_images, rows, by_stem, images, base_rows),
                       failures=dict(Counter(r for row in rows.values() for r in row["reasons"]
                                             if r in ("unsupported_format", "unreadable", "too_large"))))
            docs[fmt] = doc
    print(side_by_side(docs))
    for fmt, doc in docs.items():
        if fmt == "original":
            continue
        if doc["failures"]:
            print(f"\n{fmt}: decode failures {doc['failures']}")
        agree = doc["agreement"]
        print(f"\n{fmt}: {len(agree['content_changed'])} images judged differently on content")
        for f, kind, before, after in agree["content_changed"]:
            print(f"  {f:<46} {kind:<14} {before} -> {after}")
        for what in ("lost", "new"):
            for pair in agree[f"duplicate_pairs_{what}"]:
                print(f"  duplicate pair {what}: {pair}")
    write_json(a.json, {"benchmark": "phone_formats", "formats": docs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
