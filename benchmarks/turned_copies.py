"""Turned and mirrored copies of real photos: does near-duplicate matching catch them?

For every photo of a folder (e.g. ../shared/real_photos/images; nothing is
written into the project) and each of the 7 symmetries of the square other
than the identity (transforms.image.phash.TURNS: quarter turns, half turn,
mirrors), a copy is made as an editor or an EXIF-stripping upload path would:
the decoded pixels turned, centre-cropped to keep each --keep fraction of
each side (phone editors crop and rotate in one tool), area-resized by its
--resize factor and re-encoded as JPEG at its --quality. Original and copy both go through
curate's own analysis (analyze_image with the packaged policy), and the copy
counts as caught when transforms.curate.duplicates.pair_distance, the
distance near-duplicate matching compares, is within the policy's radius.
Beside it:

  without turned    the same pairs with phash_turned emptied: what the full
                    frame and centre crops alone catch.
  closest distinct  the smallest pair_distance between two different photos
                    of the folder (their false-match margin), and the pairs
                    within the radius.
  hashes per image  row_hashes per photo, what each files in the search.

Photos whose pHash curate does not trust (flat or clipped frames, matched by
bytes only) or that it cannot decode are left out and counted.

Run:  cd /work/main && .venv/bin/python -m benchmarks.turned_copies --images ../shared/real_photos/images
      [--resize 0.5 0.9 0.85] [--quality 70 95 75] [--keep 1 1 0.9] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import table, write_json
from schemas.policy import load_policy
from transforms.curate.duplicates import hash_is_reliable, pair_distance, row_hashes
from transforms.image.analyze import analyze_image
from transforms.image.phash import TURNS, centre_crop, turned_image

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.turned_copies", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of photos (read only)")
    p.add_argument("--resize", type=float, nargs="+", default=[0.5, 0.9, 0.85],
                   help="area-resize factor of each copy variant (default 0.5 0.9 0.85)")
    p.add_argument("--quality", type=int, nargs="+", default=[70, 95, 75],
                   help="JPEG quality of each copy variant, paired with --resize (default 70 95 75)")
    p.add_argument("--keep", type=float, nargs="+", default=[1.0, 1.0, 0.9],
                   help="share of each side the centre crop of each variant keeps (default 1 1 0.9)")
    p.add_argument("--json", help="write the figures as JSON to this path")
    a = p.parse_args(argv)
    if not len(a.resize) == len(a.quality) == len(a.keep):
        p.error("--resize, --quality and --keep go together: give as many of each")
    if not all(0 < k <= 1 for k in a.keep):
        p.error("--keep: a share of each side, in (0, 1]")
    return a


def copy_bytes(image: np.ndarray, t, factor: float, quality: int, keep: float = 1.0) -> bytes:
    turned = cv2.resize(np.ascontiguousarray(centre_crop(turned_image(image, *t), keep)), None, fx=factor, fy=factor,
                        interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", turned, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def main(argv=None) -> int:
    a = parse_args(argv)
    policy = load_policy()
    radius = policy.dup_radius
    paths = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in SUFFIXES)
    if not paths:
        sys.exit(f"no photos in {a.images}")
    variants = list(zip(a.resize, a.quality, a.keep))
    originals, skipped = [], 0
    caught = {v: 0 for v in variants}
    caught_without = {v: 0 for v in variants}
    distances = {v: [] for v in variants}
    for path in paths:
        data = path.read_bytes()
        row, _ = analyze_image(str(path), data, policy)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None or not hash_is_reliable(row, policy.exact_only_for):
            skipped += 1
            continue
        originals.append(row)
        for t, v in itertools.product(TURNS, variants):
            copy, _ = analyze_image("copy.jpg", copy_bytes(image, t, *v), policy)
            d = pair_distance(copy, row)
            distances[v].append(d)
            caught[v] += d <= radius
            caught_without[v] += pair_distance(dict(copy, phash_turned=[]), dict(row, phash_turned=[])) <= radius
    n = len(originals)
    between = [pair_distance(x, y) for x, y in itertools.combinations(originals, 2)]
    per_image = [len(row_hashes(r)) for r in originals]
    rows, doc = [], {"photos": n, "left_out": skipped, "radius": radius, "variants": {}}
    for v in variants:
        k = len(distances[v])
        name = f"x{v[0]} q{v[1]}" + (f" keep {v[2]}" if v[2] < 1 else "")
        rows.append([name, f"{caught[v]}/{k}", f"{100 * caught[v] / k:.2f}%",
                     f"{caught_without[v]}/{k}", int(np.median(distances[v]))])
        doc["variants"][name.replace(" ", "_")] = {"copies": k, "caught": caught[v], "caught_without_turned": caught_without[v],
                                               "median_distance": float(np.median(distances[v]))}
    doc.update(closest_distinct=min(between), distinct_pairs_within_radius=sum(d <= radius for d in between),
               hashes_per_image=float(np.mean(per_image)), hashes_per_image_max=max(per_image))
    print(table(["copy (7 turns each)", "caught", "share", "without turned", "median distance"], rows,
                title=f"{n} photos ({skipped} left out: undecodable or hash not trusted), radius {radius}"))
    print(f"\nclosest two distinct photos: {doc['closest_distinct']} bits apart; "
          f"pairs within the radius: {doc['distinct_pairs_within_radius']}")
    print(f"hashes filed per photo: {doc['hashes_per_image']:.2f} on average, at most {doc['hashes_per_image_max']}")
    write_json(a.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
