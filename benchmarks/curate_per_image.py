"""Per-image cost of curate's analysis path on 12 MP JPEGs, one core.

Measures, on N generated 12 MP JPEGs (defect "none", EXIF included) whose bytes
are preloaded in memory, in one process with OpenCV limited to one thread:

  decode-only  cv2.imdecode at the DCT scale the path picks
               (transforms.image.decode.jpeg_scale(w, h, analysis_short_side), 1/8 for
               12 MP): the floor for any pipeline that must decode the image.
  path         transforms.image.analyze.analyze_image(uri, data, policy): sha256,
               header parse, one decode at that scale, all features, verdict,
               and the 96 px report thumbnail as AnalyzeImages asks for
               (--thumbnail-px 0 to leave it out).
  naive        full-resolution cv2.imdecode(IMREAD_COLOR), then the same
               compute_features at full resolution (analysis_short_side = the
               image's short side): what a tool without DCT-scaled decode and a
               fixed analysis size pays (cleanvision-style).

and beside them, from the same images (issue 13):

  heic decode  libheif (pillow-heif) full decode of the primary image, one
               decoding thread (transforms.image.decode.HEIF_DECODE_THREADS): HEVC has
               no reduced decode, so this is the HEIC floor.
  heic path    analyze_image on the same photos re-encoded as 12 MP HEIC
               (x265, quality 75, ~iPhone file sizes): --heic N of them (default 4).
               No embedded thumbnail: the full decode.
  heic+thumbnail path  the same with a 320x240 thumbnail embedded, as phones
               write: curate's 224 px analysis decodes the thumbnail.
  p3 path      analyze_image on the JPEGs converted to Display P3 and tagged
               with the profile, as an iPhone JPEG is, beside
  p3 control path  the same re-encode of the sRGB pixels, untagged (Pillow,
               quality 90 for both: the encoder alone moves the decode time):
               their ratio is the cost of the colour conversion on the JPEG path.

Each repeat runs every variant over all N images, in an order rotated per
repeat, so machine noise hits all of them alike. Reported: per-image ms (each
image's median over repeats, averaged over the images, so the mix of baseline
and ~5x slower-at-1/8 progressive JPEGs counts as in a real run), images/s,
the ratios of images/s path/decode-only (target >= 0.8) and path/naive
(target >= 6), and a breakdown of the path (sha256, decode(),
compute_features(), thumbnail, timed one by one in a fourth variant of the
same rotation). No assertions: on a shared machine read the ratios, not the
absolute times.

With --compare-rev REV, the same images also go through the path of git
revision REV (a worktree of it) and of this tree, each in its own process
beside its own decode-only (benchmarks/_path_child.py), the two trees
alternating: what a change did to the ratio, measured in one run.

Run:  cd /work/main && .venv/bin/python -m benchmarks.curate_per_image [--images 12]
      [--repeats 3] [--compare-rev REV [--only-compare]] [--json out.json]
Images are generated once into /tmp/bench_cache (~1-2 s each) and reused.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import CACHE_ROOT, cases_for, ground_truth, median, sample_set, table, write_json  # noqa: E402
from schemas.policy import load_policy  # noqa: E402
from transforms.image.analyze import analyze_image, thumbnail_jpeg  # noqa: E402
from transforms.image.decode import decode, jpeg_scale  # noqa: E402
from transforms.image.header import read_header  # noqa: E402
from transforms.image.quality import compute_features, policy_features  # noqa: E402

SIZE_12MP = (4032, 3024)
REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
           4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.curate_per_image",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=12, help="number of 12 MP images (default 12)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all images per variant (default 3)")
    p.add_argument("--seed", type=int, default=0, help="sample-data seed (default 0)")
    p.add_argument("--thumbnail-px", type=int, default=96,
                   help="report thumbnail size passed to analyze_image, as AnalyzeImages does (default 96; 0 = none)")
    p.add_argument("--heic", type=int, default=4,
                   help="number of 12 MP HEIC images (encoded once, cached; default 4, 0 = none)")
    p.add_argument("--sensor_noise", type=float, default=0.0,
                   help="re-encode every image (quality 92, its own progressive flag) with Gaussian sensor "
                        "noise of this many 8-bit levels added at full resolution (default 0: the "
                        "generator's files as written). The generator's photos are smoother than a phone's "
                        "(~1.3 MB per 12 MP where phones write 2-4 MB); the decode floor grows with the "
                        "bytes, the path's own work does not, so the ratio depends on the file size")
    p.add_argument("--compare-rev", metavar="REV",
                   help="also time the per-image path of git revision REV against this tree's on the same "
                        "images (a worktree of REV, each tree in its own process beside its own decode-only, "
                        "alternating; e.g. 5fa8716, the code before the real-photo work)")
    p.add_argument("--compare-rounds", type=int, default=3,
                   help="alternating rounds of the two trees with --compare-rev (default 3)")
    p.add_argument("--only-compare", action="store_true",
                   help="with --compare-rev, skip the variants above and run only the comparison")
    p.add_argument("--json", help="write the figures as JSON to this path")
    return p.parse_args(argv)


def load_images(n: int, seed: int) -> list[tuple[str, bytes]]:
    # Plain sRGB JPEGs only: the sample set also holds P3 JPEGs and HEICs
    # (about 1 in 5), which the p3/heic variants make from these instead.
    root = sample_set(cases_for(min_none=n + n // 2 + 2, seed=seed), seed, SIZE_12MP)
    rows = [r for r in ground_truth(root) if r["defect"] == "none" and r["image_path"].endswith(".jpg")
            and read_header((root / r["image_path"]).read_bytes()).icc_profile is None][:n]
    if len(rows) < n:
        sys.exit(f"only {len(rows)} defect-free images in {root}")
    return [(str(root / r["image_path"]), (root / r["image_path"]).read_bytes()) for r in rows]


def noisy_versions(images: list[tuple[str, bytes]], sd: float) -> list[tuple[str, bytes]]:
    """Each image decoded upright, with sensor noise of `sd` levels (seeded by
    its position) and re-encoded at quality 92 as a baseline or progressive
    JPEG like the original: the same scenes at a phone's file sizes."""
    from transforms.image.colour import with_sensor_noise
    out = []
    for i, (uri, data) in enumerate(images):
        upright = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", with_sensor_noise(upright, sd, seed=i),
                               [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_PROGRESSIVE, int(is_progressive(data))])
        assert ok
        out.append((uri, buf.tobytes()))
    return out


def p3_jpeg(data: bytes, p3: bool = True) -> bytes:
    """The photo as a P3-tagged JPEG: its colours in Display P3 code values,
    profile embedded. With p3=False, the same re-encode (Pillow, quality 90)
    of the sRGB pixels, untagged: the control the P3 file's path is compared
    with, since the encoder and quality alone change the decode time."""
    import io

    from PIL import Image, ImageCms

    from transforms.image.colour import display_p3_profile
    img = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    if not p3:
        img.save(buf, "JPEG", quality=90)
        return buf.getvalue()
    profile = display_p3_profile()
    to_p3 = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                    ImageCms.ImageCmsProfile(io.BytesIO(profile)), "RGB", "RGB")
    ImageCms.applyTransform(img, to_p3).save(buf, "JPEG", quality=90, icc_profile=profile)
    return buf.getvalue()


def heic_versions(images: list[tuple[str, bytes]], thumbnail: int = 0) -> list[tuple[str, bytes]]:
    """Each image re-encoded as HEIC (x265 q75, optionally with an embedded
    thumbnail of that long side, as phones write), cached (~10-20 s each)."""
    import io

    import pillow_heif
    from PIL import Image
    out = []
    folder = "heic_q75" + (f"_thumb{thumbnail}" if thumbnail else "")
    for uri, data in images:
        cached = CACHE_ROOT / folder / (hashlib.sha256(data).hexdigest()[:16] + ".heic")
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            pillow_heif.from_pillow(Image.open(io.BytesIO(data)).convert("RGB")).save(
                buf, format="HEIF", quality=75, thumbnails=[thumbnail] if thumbnail else [])
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(buf.getvalue())
            tmp.rename(cached)
        out.append((uri.rsplit(".", 1)[0] + ".heic", cached.read_bytes()))
    return out


def is_progressive(data: bytes) -> bool:
    """Whether the first frame header is SOF2 (progressive DCT)."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return marker == 0xC2
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False


def jpeg_kinds(images) -> dict[str, list[int]]:
    """Indexes of the baseline and of the progressive JPEGs among images."""
    return {"baseline": [i for i, (_u, d) in enumerate(images) if not is_progressive(d)],
            "progressive": [i for i, (_u, d) in enumerate(images) if is_progressive(d)]}


def compare_revision(images, rev: str, rounds: int, repeats: int, thumbnail_px: int) -> dict:
    """Path / decode-only of this tree and of revision `rev` on the same images,
    each tree in its own child process (benchmarks/_path_child.py), the two
    alternating for `rounds` rounds; per tree and JPEG kind, the median over
    rounds of (mean decode-only ms, mean path ms, their ratio)."""
    import json
    import pickle
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="curate_per_image-"))
    tree = tmp / "tree"
    try:
        added = subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=repo,
                               capture_output=True, text=True)
        if added.returncode:
            sys.exit(f"--compare-rev {rev}: git could not check it out: {added.stderr.strip().splitlines()[-1]}")
        (tmp / "images.pkl").write_bytes(pickle.dumps(images))
        trees = {"this tree": repo, rev: tree}
        runs = {name: [] for name in trees}
        for r in range(rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                out = tmp / "out.json"
                done = subprocess.run([sys.executable, str(repo / "benchmarks" / "_path_child.py"), str(trees[name]),
                                       str(tmp / "images.pkl"), str(out), str(repeats), str(thumbnail_px)],
                                      cwd=trees[name], capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"--compare-rev: the path of {name} failed:\n{done.stderr[-2000:]}")
                runs[name].append(json.loads(out.read_text()))
                print(f"  compare round {r + 1}/{rounds}: {name} done", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    kinds = {"all": range(len(images)), **jpeg_kinds(images)}
    out = {}
    for name, per_round in runs.items():
        for kind, idx in kinds.items():
            if idx:
                dec = [sum(run[i][0] for i in idx) / len(idx) for run in per_round]
                path = [sum(run[i][1] for i in idx) / len(idx) for run in per_round]
                out.setdefault(name, {})[kind] = {
                    "images": len(idx), "decode_only_ms": median(dec), "path_ms": median(path),
                    "path_vs_decode_only": median([d / p for d, p in zip(dec, path)])}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    cv2.setNumThreads(1)
    policy = load_policy()
    side = policy.analysis_short_side
    images = load_images(args.images, args.seed)
    if args.sensor_noise:
        images = noisy_versions(images, args.sensor_noise)
    if args.compare_rev and args.only_compare:
        return report_comparison(args, images, {})

    def decode_only(uri, data):
        h = read_header(data)  # outside the timing would be fairer still; it is ~10 us
        flag = REDUCED[jpeg_scale(h.width, h.height, side)]
        return cv2.imdecode(np.frombuffer(data, np.uint8), flag)

    def path(uri, data):
        return analyze_image(uri, data, policy, thumbnail_px=args.thumbnail_px)

    def naive(uri, data):
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return compute_features(full, min(full.shape[:2]), min(full.shape[:2]), policy.relevance,
                                policy.gray_max_channel_diff)

    parts = {"sha256": [], "decode": [], "features": [], "thumbnail": []}  # per-image s, by path_parts

    def path_parts(uri, data):
        t0 = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        t1 = time.perf_counter()
        d = decode(data, analysis_short_side=side, max_pixels=policy.max_pixels)
        t2 = time.perf_counter()
        policy_features(d.image, policy)
        t3 = time.perf_counter()
        if args.thumbnail_px:
            thumbnail_jpeg(d.image, args.thumbnail_px)
        t4 = time.perf_counter()
        for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k].append(dt)

    def heic_decode(uri, data):
        import pillow_heif

        from transforms.image.decode import HEIF_DECODE_THREADS
        pillow_heif.options.DECODE_THREADS = HEIF_DECODE_THREADS
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=False)
        return np.asarray(heif[heif.primary_index])

    variants = {"decode-only": decode_only, "path": path, "naive": naive, "path-parts": path_parts}
    inputs = {k: images for k in variants}
    if args.heic:
        heics = heic_versions(images[:args.heic])
        thumbed = heic_versions(images[:args.heic], thumbnail=320)
        variants.update({"heic decode": heic_decode, "heic path": path, "heic+thumbnail path": path})
        inputs.update({"heic decode": heics, "heic path": heics, "heic+thumbnail path": thumbed})
    variants["p3 path"] = variants["p3 control path"] = path
    inputs["p3 path"] = [(uri, p3_jpeg(data)) for uri, data in images]
    inputs["p3 control path"] = [(uri, p3_jpeg(data, p3=False)) for uri, data in images]
    names = list(variants)
    shown = [k for k in names if k != "path-parts"]

    # Sanity: the path really decodes at the decode-only baseline's scale, and succeeds.
    uri, data = images[0]
    row, _ = path(uri, data)
    assert row["status"] in ("accepted", "rejected") and not row.get("error"), row.get("error")
    small = decode_only(uri, data)
    full_shape = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape
    progressive = sum(is_progressive(d) for _, d in images)
    print(f"{len(images)} images ({progressive} progressive), {row['width']}x{row['height']} displayed, "
          f"{sum(len(d) for _, d in images) / len(images) / 1e6:.1f} MB/image; DCT scale 1/{row['decode_scale']} "
          f"-> {small.shape[1]}x{small.shape[0]}; naive full decode {full_shape[1]}x{full_shape[0]}; "
          f"{args.repeats} repeats, opencv threads {cv2.getNumThreads()}", flush=True)
    for k, fn in variants.items():  # warm-up (lazy init, allocator)
        fn(*inputs[k][0])
    for v in parts.values():
        v.clear()

    # times[name][i] = per-repeat ms of image i. Per image, the median over repeats
    # drops bursts of load; the mean over images keeps the mix honest (progressive
    # JPEGs decode several times slower at 1/8 than baseline ones).
    times = {k: [[] for _ in inputs[k]] for k in names}
    per_repeat = {k: [] for k in names}    # mean per-image ms of each repeat
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = variants[name]
            t_rep = time.perf_counter()
            for i, (uri, data) in enumerate(inputs[name]):
                t0 = time.perf_counter()
                fn(uri, data)
                times[name][i].append((time.perf_counter() - t0) * 1000)
            per_repeat[name].append((time.perf_counter() - t_rep) * 1000 / len(inputs[name]))
        print(f"  repeat {r + 1}/{args.repeats}: mean ms/image " + ", ".join(
            f"{k} {per_repeat[k][-1]:.1f}" for k in shown), flush=True)

    def typical(ts):  # mean over images of each image's median over repeats
        return sum(median(t) for t in ts) / len(ts)

    ms = {k: typical(times[k]) for k in shown}
    ips = {k: 1000 / v for k, v in ms.items()}
    n = len(images)
    part_ms = {k: typical([[t * 1000 for t in v[i::n]] for i in range(n)]) for k, v in parts.items()}
    rest_ms = ms["path"] - sum(part_ms.values())
    ratios = {"path_vs_decode_only": ips["path"] / ips["decode-only"],
              "path_vs_naive": ips["path"] / ips["naive"],
              "p3_path_vs_control": ips["p3 path"] / ips["p3 control path"]}
    if args.heic:
        ratios.update({"heic_path_vs_jpeg_path": ips["heic path"] / ips["path"],
                       "heic_thumbnail_path_vs_jpeg_path": ips["heic+thumbnail path"] / ips["path"],
                       "heic_path_vs_heic_decode": ips["heic path"] / ips["heic decode"]})
    # The ratio depends on the set's mix: a progressive JPEG decodes ~3-5x
    # slower at 1/8, so the same feature cost weighs less beside it. Per kind,
    # the figure does not depend on how many of each the sample happened to hold.
    kinds = jpeg_kinds(images)
    by_kind = {}
    for kind, idx in kinds.items():
        if idx:
            k_ms = {k: typical([times[k][i] for i in idx]) for k in ("decode-only", "path")}
            by_kind[kind] = {"images": len(idx), "ms_per_image": k_ms,
                             "path_vs_decode_only": k_ms["decode-only"] / k_ms["path"]}
    for kind in by_kind:
        ratios[f"path_vs_decode_only_{kind}"] = by_kind[kind]["path_vs_decode_only"]
    targets = {"path_vs_decode_only": 0.8, "path_vs_naive": 6.0,
               **{f"path_vs_decode_only_{kind}": 0.8 for kind in by_kind}}

    print()
    print(table(["variant", "ms/image", "images/s", "repeat means ms (min..max)"],
                [[k, ms[k], ips[k], f"{min(per_repeat[k]):.1f}..{max(per_repeat[k]):.1f}"] for k in shown],
                title=f"curate per-image: {n} x 12 MP JPEG ({progressive} progressive), 1 core, "
                      f"per-image median of {args.repeats} repeats, mean over images"))
    print()
    print(table(["ratio of images/s", "value", "target"],
                [["path / decode-only", ratios["path_vs_decode_only"], ">= 0.8"]]
                + [[f"  ... {kind} JPEGs only ({v['images']})", v["path_vs_decode_only"], ">= 0.8"]
                   for kind, v in by_kind.items()]
                + [["path / naive", ratios["path_vs_naive"], ">= 6"],
                 ["p3 path / p3 control path (colour conversion cost)", ratios["p3_path_vs_control"], ""]]
                + ([["heic path / jpeg path", ratios["heic_path_vs_jpeg_path"], ""],
                    ["heic+thumbnail path / jpeg path", ratios["heic_thumbnail_path_vs_jpeg_path"], ""],
                    ["heic path / heic decode", ratios["heic_path_vs_heic_decode"], ""]] if args.heic else [])))
    if args.heic:
        mb = sum(len(d) for _, d in inputs["heic path"]) / len(inputs["heic path"]) / 1e6
        print(f"HEIC: {len(inputs['heic path'])} images, {mb:.1f} MB/image, libheif decoding threads "
              f"{__import__('transforms.image.decode', fromlist=['x']).HEIF_DECODE_THREADS}")
    print()
    labels = {"sha256": "sha256 of the bytes", "decode": f"decode() at 1/{row['decode_scale']}",
              "features": "compute_features()", "thumbnail": f"thumbnail_jpeg({args.thumbnail_px} px)"}
    print(table(["path breakdown (timed apart)", "ms/image", "share of path"],
                [[labels[k], v, f"{v / ms['path']:.0%}"] for k, v in part_ms.items()]
                + [["rest: header, verdict, row (path minus the above)", rest_ms, f"{rest_ms / ms['path']:.0%}"]]))
    doc = {
        "benchmark": "curate_per_image",
        "params": {"images": len(images), "repeats": args.repeats, "seed": args.seed, "heic": args.heic,
                   "sensor_noise": args.sensor_noise,
                   "size": list(SIZE_12MP), "thumbnail_px": args.thumbnail_px,
                   "decode_scale": row["decode_scale"], "analysis_short_side": side,
                   "progressive_images": progressive},
        "per_image_median_ms": {k: [median(t) for t in times[k]] for k in shown},
        "ms_per_image": ms, "images_per_s": ips,
        "per_repeat_mean_ms_per_image": {k: per_repeat[k] for k in shown},
        "breakdown_ms": {**part_ms, "rest": rest_ms},
        "ratios": ratios, "targets": targets, "by_kind": by_kind,
    }
    if args.compare_rev:
        return report_comparison(args, images, doc)
    write_json(args.json, doc)
    return doc


def report_comparison(args, images, doc: dict) -> dict:
    """Runs compare_revision and prints its table; the figures join doc."""
    compared = compare_revision(images, args.compare_rev, args.compare_rounds, args.repeats, args.thumbnail_px)
    print()
    print(table(["tree", "JPEGs", "decode-only ms", "path ms", "path / decode-only"],
                [[name, f"{kind} ({v['images']})", v["decode_only_ms"], v["path_ms"], f"{v['path_vs_decode_only']:.3f}"]
                 for name, kinds in compared.items() for kind, v in kinds.items()],
                title=f"this tree against {args.compare_rev}, same images, each tree beside its own decode-only, "
                      f"median of {args.compare_rounds} alternating rounds of {args.repeats} repeats"))
    doc = {**doc, "benchmark": "curate_per_image", "compare_rev": args.compare_rev, "compared": compared}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
