"""Skin tone of Display P3 photos, with and without colour management (issue 13).

For each skin photo in --images (real photos, read in place, never copied into
the project), writes three versions into --out (default /tmp/p3_photos):

  srgb.jpg      the photo's sRGB pixels (after decode(), so its own profile is
                honoured) re-encoded as JPEG q95, untagged: the reference
  p3.jpg        the same pixels converted to Display P3 code values, JPEG q95,
                with the Display P3 profile embedded (what an iPhone writes)
  p3.png        the P3 pixels, lossless PNG with the profile: the conversion alone
  p3.heic       the P3 pixels as HEIC (x265 q90) with the profile (--heic)

and, as the floor set by lossy coding itself, srgb.jpg decoded and
re-encoded at q95 once more ("srgb.jpg re-encoded": no colour change at all),

and runs curate's per-image path (transforms.analyze.analyze_image) on each,
once as the pipeline does (profile converted to sRGB) and once with the
conversion switched off (transforms.decode.to_srgb replaced by the identity:
what the code did before, reading P3 values as sRGB). Reported: |ITA - ITA of
the sRGB reference| (median, 95th percentile, max, degrees) and Monk estimate
steps from the reference, for each; and the cost of the conversion:
transforms.colour.to_srgb on the decoded arrays (median ms) and the path on
p3.jpg vs srgb.jpg (median ms, ratio). JPEG re-encoding alone moves ITA a
little, which is why the reference is re-encoded too.

Run:  .venv/bin/python -m benchmarks.colour_profiles --images ../shared/real_photos/images \\
          --labels ../shared/real_photos/labels.csv [--limit 80] [--heic] [--json out.json]
"""
from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

import transforms.decode as decode_module
from benchmarks._common import median, table, write_json
from schemas.policy import load_policy
from transforms.analyze import analyze_image
from transforms.colour import display_p3_profile, to_srgb


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.colour_profiles",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of photos (e.g. ../shared/real_photos/images)")
    p.add_argument("--labels", help="labels.csv with file,kind: only kind skin_* photos are used")
    p.add_argument("--limit", type=int, default=80, help="at most this many photos (default 80)")
    p.add_argument("--out", default="/tmp/p3_photos", help="where the versions are written (default /tmp/p3_photos)")
    p.add_argument("--heic", action="store_true", help="also measure P3 HEIC versions")
    p.add_argument("--json", help="write the figures as JSON to this path")
    return p.parse_args(argv)


def skin_photos(images: Path, labels: str | None) -> list[Path]:
    if not labels:
        return sorted(p for p in images.iterdir() if p.is_file())
    with open(labels, newline="") as f:
        return [images / r["file"] for r in csv.DictReader(f) if r["kind"].startswith("skin")]


def jpeg(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def tone(data: bytes, policy, convert: bool) -> tuple[float | None, int | None]:
    saved = decode_module.to_srgb
    if not convert:
        decode_module.to_srgb = lambda image, icc: image
    try:
        row, _ = analyze_image("x", data, policy)
    finally:
        decode_module.to_srgb = saved
    return row["ita_deg"], row["monk_estimate"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    policy = load_policy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p3 = display_p3_profile()
    to_p3 = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                    ImageCms.ImageCmsProfile(io.BytesIO(p3)), "RGB", "RGB")
    kinds = ["srgb.jpg re-encoded", "p3.png converted", "p3.png not converted",
             "p3.jpg converted", "p3.jpg not converted"]
    if args.heic:
        kinds += ["p3.heic converted", "p3.heic not converted"]
    drift = {k: {"ita": [], "monk": []} for k in kinds}
    cost = {"to_srgb_ms": [], "path_srgb_ms": [], "path_p3_ms": []}
    used = 0
    for path in skin_photos(Path(args.images), args.labels):
        if used >= args.limit:
            break
        try:
            decoded = decode_module.decode(path.read_bytes(), analysis_short_side=policy.analysis_short_side)
        except decode_module.ImageRejected:
            continue
        rgb = np.ascontiguousarray(decoded.image[..., ::-1])
        srgb_bytes = jpeg(rgb)
        ref_ita, ref_monk = tone(srgb_bytes, policy, True)
        if ref_ita is None:  # no skin pixels to judge
            continue
        used += 1
        p3_rgb = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb), to_p3))
        png = io.BytesIO()
        Image.fromarray(p3_rgb).save(png, "PNG", icc_profile=p3)
        versions = {"p3.png": png.getvalue(), "p3.jpg": jpeg(p3_rgb, icc_profile=p3)}
        again = decode_module.decode(srgb_bytes, analysis_short_side=10**6).image
        ita, monk = tone(jpeg(np.ascontiguousarray(again[..., ::-1])), policy, True)
        drift["srgb.jpg re-encoded"]["ita"].append(abs(ita - ref_ita) if ita is not None else float("inf"))
        drift["srgb.jpg re-encoded"]["monk"].append(abs(monk - ref_monk) if monk is not None else 10)
        if args.heic:
            import pillow_heif
            buf = io.BytesIO()
            pillow_heif.from_pillow(Image.fromarray(p3_rgb)).save(buf, format="HEIF", quality=90, icc_profile=p3)
            versions["p3.heic"] = buf.getvalue()
        stem = out / path.stem
        (stem.parent / f"{path.stem}.srgb.jpg").write_bytes(srgb_bytes)
        for name, data in versions.items():
            (stem.parent / f"{path.stem}.{name}").write_bytes(data)
            for convert in (True, False):
                ita, monk = tone(data, policy, convert)
                key = f"{name} {'converted' if convert else 'not converted'}"
                drift[key]["ita"].append(abs(ita - ref_ita) if ita is not None else float("inf"))
                drift[key]["monk"].append(abs(monk - ref_monk) if monk is not None else 10)
        # Cost: the conversion alone on the decoded P3 array, and the whole path.
        bgr_p3 = np.ascontiguousarray(p3_rgb[..., ::-1])
        t0 = time.perf_counter()
        to_srgb(bgr_p3, p3)
        cost["to_srgb_ms"].append((time.perf_counter() - t0) * 1000)
        for key, data in (("path_srgb_ms", srgb_bytes), ("path_p3_ms", versions["p3.jpg"])):
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                analyze_image("x", data, policy)
                runs.append((time.perf_counter() - t0) * 1000)
            cost[key].append(median(runs))

    rows = []
    for k, d in drift.items():
        ita = np.array(d["ita"])
        monk = np.array(d["monk"])
        rows.append([k, median(ita), float(np.percentile(ita, 95)), float(ita.max()),
                     f"{(ita <= 1).mean():.0%}", f"{(monk == 0).mean():.0%}", int(monk.max())])
    print(table(["version", "|dITA| median", "p95", "max", "within 1 deg", "Monk same", "Monk max steps"],
                rows, title=f"skin tone vs the sRGB original, {used} real skin photos (Display P3)"))
    size = f"{decoded.image.shape[1]}x{decoded.image.shape[0]}"
    ratio = median(cost["path_srgb_ms"]) / median(cost["path_p3_ms"])
    print()
    print(table(["cost", "median ms"],
                [["to_srgb on the decoded array (cached transform)", median(cost["to_srgb_ms"])],
                 ["analyze_image, sRGB JPEG", median(cost["path_srgb_ms"])],
                 ["analyze_image, P3-tagged JPEG", median(cost["path_p3_ms"])]],
                title=f"conversion cost (photos ~{size}); images/s P3 / sRGB = {ratio:.2f}"))
    doc = {"benchmark": "colour_profiles", "photos": used,
           "drift": {k: {"ita_median": median(d["ita"]), "ita_p95": float(np.percentile(d["ita"], 95)),
                         "ita_max": max(d["ita"]), "monk_same_share": float(np.mean(np.array(d["monk"]) == 0)),
                         "monk_max": max(d["monk"])} for k, d in drift.items()},
           "cost_median_ms": {k: median(v) for k, v in cost.items()}, "p3_vs_srgb_images_per_s": ratio}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
