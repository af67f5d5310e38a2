"""Skin tone of Display P3 photos, with and without colour management (issue 13).

For each skin photo in --images (real photos, read in place, never copied into
the project), its sRGB pixels (after decode(), so its own profile is honoured;
4 px cropped off the top and left) are the **reference**, measured losslessly
(PNG). From them, written into --out (default /tmp/p3_photos):

  srgb.jpg / srgb.heic  the reference re-encoded, JPEG q95 / HEIC (x265) q90:
                        the **controls**, the drift lossy coding alone causes
  p3.png                the pixels converted to Display P3 code values (LittleCMS,
                        8-bit, as a phone's encoder would), lossless, profile
                        embedded: colour management alone (P3's own 8-bit
                        rounding and the conversion back)
  p3.jpg / p3.heic      the P3 pixels at the controls' codec and quality, profile
                        embedded (what an iPhone writes)

The crop moves the pixels off the source JPEG's 8x8 block grid: re-encoding
a decoded JPEG on its own grid at a similar quality loses almost nothing
(generation loss), so an uncropped sRGB control would look better than any
fresh encode, the P3 one included (measured: mean pixel error 0.15 aligned,
0.79 off-grid, 0.38 for the P3 codes, on one abdomen photo).

Each goes through curate's per-image path (transforms.image.analyze.analyze_image),
P3 versions twice: as the pipeline does (converted to sRGB) and with the
conversion switched off (transforms.image.decode.to_srgb replaced by the identity:
what the code did before, reading P3 values as sRGB). Reported: |ITA - ITA of
the reference| (median, 95th percentile, max, degrees), the share within 1
degree, and Monk estimate steps from the reference; for P3 lossy versions also
the share within 1 degree of their control (same codec, same quality), which
is the part colour management adds; and every converted or control version
more than 1 degree off is listed with the median skin colour (L*, b*) it and
the reference measured (ITA = atan2(L* - 50, b*) is ill-conditioned when that
colour is near L* 50, b* 0: there a fraction of a level moves it degrees).
And the cost of the conversion:
transforms.image.colour.to_srgb on the decoded arrays (median ms) and the path on
p3.jpg vs srgb.jpg (median ms, ratio).

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

import transforms.image.decode as decode_module
from benchmarks._common import median, table, write_json
from schemas.policy import load_policy
from transforms.image.analyze import analyze_image
from transforms.image.colour import display_p3_profile, to_srgb
from transforms.image.quality import half_size, to_analysis_size
from transforms.image.skin_tone import lab8, skin_mask, skin_medians


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


def tone(data: bytes, policy, convert: bool) -> tuple[float | None, int | None]:
    saved = decode_module.to_srgb
    if not convert:
        decode_module.to_srgb = lambda image, icc: image
    try:
        row, _ = analyze_image("x", data, policy)
    finally:
        decode_module.to_srgb = saved
    return row["ita_deg"], row["monk_estimate"]


def encode(rgb: np.ndarray, codec: str, **kw) -> bytes:
    """rgb as lossless PNG, JPEG q95 or HEIC q90 (kw: icc_profile)."""
    buf = io.BytesIO()
    if codec == "png":
        Image.fromarray(rgb).save(buf, "PNG", **kw)
    elif codec == "jpg":
        Image.fromarray(rgb).save(buf, "JPEG", quality=95, **kw)
    else:
        import pillow_heif
        pillow_heif.from_pillow(Image.fromarray(rgb)).save(buf, format="HEIF", quality=90, **kw)
    return buf.getvalue()


def main(argv=None) -> dict:
    args = parse_args(argv)
    policy = load_policy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p3 = display_p3_profile()
    to_p3 = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                    ImageCms.ImageCmsProfile(io.BytesIO(p3)), "RGB", "RGB")
    codecs = ["jpg", "heic"] if args.heic else ["jpg"]
    kinds = ["p3.png converted", "p3.png not converted"]
    for c in codecs:
        kinds += [f"srgb.{c} (control)", f"p3.{c} converted", f"p3.{c} not converted"]
    drift = {k: {"ita": [], "monk": [], "vs_control": []} for k in kinds}
    cost = {"to_srgb_ms": [], "path_srgb_ms": [], "path_p3_ms": []}
    outliers = []
    used = 0

    def median_lab(data: bytes) -> tuple[float, float]:
        """L*, b* of the median skin colour, on the array analyze_image measures tone on."""
        image = decode_module.decode(data, analysis_short_side=policy.analysis_short_side).image
        lab = lab8(half_size(to_analysis_size(image, policy.analysis_short_side)))
        return skin_medians(lab, skin_mask(lab))

    for path in skin_photos(Path(args.images), args.labels):
        if used >= args.limit:
            break
        try:
            decoded = decode_module.decode(path.read_bytes(), analysis_short_side=policy.analysis_short_side)
        except decode_module.ImageRejected:
            continue
        rgb = np.ascontiguousarray(decoded.image[4:, 4:, ::-1])  # off the source's block grid
        rgb_png = encode(rgb, "png")
        ref_ita, ref_monk = tone(rgb_png, policy, True)
        if ref_ita is None:  # no skin pixels to judge
            continue
        used += 1
        p3_rgb = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb), to_p3))
        versions = {"p3.png": encode(p3_rgb, "png", icc_profile=p3)}
        control = {}
        for c in codecs:
            versions[f"srgb.{c}"] = encode(rgb, c)
            versions[f"p3.{c}"] = encode(p3_rgb, c, icc_profile=p3)
        for name, data in versions.items():
            (out / f"{path.stem}.{name}").write_bytes(data)
            codec = name.split(".")[1]
            for convert in ((True,) if name.startswith("srgb") else (True, False)):
                ita, monk = tone(data, policy, convert)
                key = (f"{name} (control)" if name.startswith("srgb")
                       else f"{name} {'converted' if convert else 'not converted'}")
                d = drift[key]
                d["ita"].append(abs(ita - ref_ita) if ita is not None else float("inf"))
                d["monk"].append(abs(monk - ref_monk) if monk is not None else 10)
                if convert and (ita is None or abs(ita - ref_ita) > 1):
                    outliers.append([path.stem[:40], key, ref_ita, ita, "%.1f, %.1f" % median_lab(rgb_png),
                                     "%.1f, %.1f" % median_lab(data)])
                if name.startswith("srgb"):
                    control[codec] = ita
                elif codec in control:
                    both = ita is not None and control[codec] is not None
                    d["vs_control"].append(abs(ita - control[codec]) if both else float("inf"))
        # Cost: the conversion alone on the decoded P3 array, and the whole path.
        bgr_p3 = np.ascontiguousarray(p3_rgb[..., ::-1])
        t0 = time.perf_counter()
        to_srgb(bgr_p3, p3)
        cost["to_srgb_ms"].append((time.perf_counter() - t0) * 1000)
        for key, data in (("path_srgb_ms", versions["srgb.jpg"]), ("path_p3_ms", versions["p3.jpg"])):
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
        vs = f"{(np.array(d['vs_control']) <= 1).mean():.0%}" if d["vs_control"] else "-"
        rows.append([k, median(ita), float(np.percentile(ita, 95)), float(ita.max()),
                     f"{(ita <= 1).mean():.0%}", vs, f"{(monk == 0).mean():.0%}", int(monk.max())])
    print(table(["version", "|dITA| median", "p95", "max", "within 1 deg", "within 1 deg of control",
                 "Monk same", "Monk max steps"],
                rows, title=f"skin tone vs the lossless sRGB original, {used} real skin photos (Display P3)"))
    print()
    print(table(["photo", "version", "ITA ref", "ITA", "ref L*, b*", "L*, b*"], outliers,
                title="converted and control versions more than 1 degree from the reference"))
    size = f"{decoded.image.shape[1]}x{decoded.image.shape[0]}"
    ratio = median(cost["path_srgb_ms"]) / median(cost["path_p3_ms"])
    print()
    print(table(["cost", "median ms"],
                [["to_srgb on the decoded array (cached transform)", median(cost["to_srgb_ms"])],
                 ["analyze_image, sRGB JPEG", median(cost["path_srgb_ms"])],
                 ["analyze_image, P3-tagged JPEG", median(cost["path_p3_ms"])]],
                title=f"conversion cost (photos ~{size}); images/s P3 / sRGB = {ratio:.2f}"))

    def share(values):
        return float(np.mean(np.array(values) <= 1)) if values else None

    doc = {"benchmark": "colour_profiles", "photos": used, "reference": "lossless sRGB (PNG)",
           "drift": {k: {"ita_median": median(d["ita"]), "ita_p95": float(np.percentile(d["ita"], 95)),
                         "ita_max": max(d["ita"]), "ita_within_1deg_share": share(d["ita"]),
                         "ita_within_1deg_of_control_share": share(d["vs_control"]),
                         "monk_same_share": float(np.mean(np.array(d["monk"]) == 0)),
                         "monk_max": max(d["monk"])} for k, d in drift.items()},
           "outliers": [dict(zip(["photo", "version", "ita_ref", "ita", "ref_L_b", "L_b"], o)) for o in outliers],
           "cost_median_ms": {k: median(v) for k, v in cost.items()}, "p3_vs_srgb_images_per_s": ratio}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
