"""Scaling and recall of transforms.curate.near_dups.image_pairs on per-image hash sets.

Each image carries 2 x (1 + len(CENTRE_FRACTIONS)) = 8 random 64-bit hashes
(full frame and nested centre crops, each also turned to its canonical
orientation, as curate computes them; real photos file 7.6 on average, since
a region already canonical files no turned hash and a near tie two), drawn with
np.random.default_rng. 1% of the images are planted near-duplicates: a copy of
a random existing image whose hash at a random level is one of the original's
hashes at a random level with 1..radius distinct random bits flipped (as a
crop's full-frame hash meets its original's centre hash), its other hashes
random. For each size (default 100,000 and 1,000,000 images, i.e. 800k and 8M
hashes, at the policy radius) times image_pairs over --repeats rounds, sizes
interleaved per round, and reports the median, the time ratio largest/smallest
size (target <= 12 for 10x the images, i.e. about linear) and, on the largest
set:

  recall vs brute force  for --queries sampled images (default 500), every
                         other image with any hash within the radius of any
                         of the query's, by vectorised XOR + np.bitwise_count;
                         recall = those pairs the search found / all of them
                         (target >= 0.99). A uniform sample of 500 out of 1M
                         holds only ~10 true pairs, so by default half the
                         queries are drawn from the planted pairs' members
                         (--planted-query-share) and half uniformly; the
                         count of true pairs is printed.
  planted-pair recall    found / all planted (original, copy) image pairs.
  outside radius         found pairs whose closest hashes are farther apart
                         than the radius (must be 0).

Run:  cd /work/main && .venv/bin/python -m benchmarks.near_dups_scale
      [--sizes 100000 1000000] [--radius 4] [--repeats 3] [--json out.json]
No assertions; on a shared machine read the ratios.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import median, table, write_json
from schemas.policy import load_policy
from transforms.curate.near_dups import image_pairs
from transforms.image.phash import CENTRE_FRACTIONS

HASHES_PER_IMAGE = 2 * (1 + len(CENTRE_FRACTIONS))  # as curate files them: full, centre crops, each turned canonical


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.near_dups_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="image counts (default 100000 1000000)")
    p.add_argument("--radius", type=int, default=load_policy().dup_radius,
                   help="Hamming radius in bits (default: the policy's)")
    p.add_argument("--planted", type=float, default=0.01, help="share of planted near-duplicates (default 0.01)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per size (default 3)")
    p.add_argument("--queries", type=int, default=500, help="brute-force recall queries (default 500)")
    p.add_argument("--planted-query-share", type=float, default=0.5,
                   help="share of recall queries drawn from planted pairs (default 0.5; 0 = uniform)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures as JSON to this path")
    return p.parse_args(argv)


def flip_masks(m: int, radius: int, rng: np.random.Generator) -> np.ndarray:
    """m uint64 masks, each with 1..radius distinct random bits set."""
    k = rng.integers(1, radius + 1, size=m)                          # bits to flip, 1..radius
    positions = rng.random((m, 64)).argsort(axis=1).astype(np.uint64)  # a random bit order per row
    chosen = np.arange(64)[None, :] < k[:, None]                     # first k of that order
    return np.bitwise_or.reduce(np.where(chosen, np.uint64(1) << positions, np.uint64(0)), axis=1)


def make_hash_sets(n: int, radius: int, planted: float, rng: np.random.Generator):
    """((n, HASHES_PER_IMAGE) uint64 hash sets, planted (original, copy) image pairs)."""
    m = int(round(n * planted))
    hs = rng.integers(0, 2**64, size=(n, HASHES_PER_IMAGE), dtype=np.uint64, endpoint=False)
    src = rng.integers(0, n - m, size=m)                             # originals among the first n - m
    copies = np.arange(n - m, n)
    hs[copies, rng.integers(0, HASHES_PER_IMAGE, size=m)] = (
        hs[src, rng.integers(0, HASHES_PER_IMAGE, size=m)] ^ flip_masks(m, radius, rng))
    return hs, np.stack([src, copies], axis=1)


def codes(pairs: np.ndarray, n: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1].astype(np.int64)


def closest(hs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Smallest distance between any hash of one image and any of the other, per pair."""
    a, b = hs[pairs[:, 0]], hs[pairs[:, 1]]
    return np.bitwise_count(a[:, :, None] ^ b[:, None, :]).min(axis=(1, 2))


def brute_force_pairs(hs: np.ndarray, queries: np.ndarray, radius: int) -> np.ndarray:
    """All image pairs (i, j), i < j, with one of them a query and some hash of
    one within `radius` of some hash of the other."""
    out = []
    flat = np.ascontiguousarray(hs).ravel()
    for q in queries:
        d = np.min([np.bitwise_count(flat ^ h) for h in hs[q]], axis=0).reshape(hs.shape).min(axis=1)
        near = np.flatnonzero(d <= radius)
        near = near[near != q]
        out.append(np.stack([np.minimum(near, q), np.maximum(near, q)], axis=1))
    allp = np.concatenate(out) if out else np.empty((0, 2), np.int64)
    return np.unique(allp, axis=0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sets = {}
    for n in args.sizes:
        t0 = time.perf_counter()
        sets[n] = make_hash_sets(n, args.radius, args.planted, rng)
        print(f"{n:,} images -> {n * HASHES_PER_IMAGE:,} hashes, {len(sets[n][1]):,} planted pairs "
              f"(built in {time.perf_counter() - t0:.1f} s)", flush=True)

    times = {n: [] for n in args.sizes}
    found = {}
    image_pairs(sets[args.sizes[0]][0][:1000], args.radius)  # warm-up
    for r in range(args.repeats):
        order = args.sizes[r % len(args.sizes):] + args.sizes[: r % len(args.sizes)]
        for n in order:
            t0 = time.perf_counter()
            found[n] = image_pairs(sets[n][0], args.radius)
            times[n].append(time.perf_counter() - t0)
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n:,}: {times[n][-1]:.2f} s" for n in args.sizes),
              flush=True)

    rows, per_size = [], {}
    for n in args.sizes:
        hs, planted = sets[n]
        pairs = found[n]
        t = median(times[n])
        dist = closest(hs, pairs) if len(pairs) else np.empty(0)
        planted_found = np.isin(codes(np.sort(planted, axis=1), n), codes(pairs, n))
        per_size[n] = {"images": n, "hashes": n * HASHES_PER_IMAGE, "median_s": t, "times_s": times[n],
                       "images_per_s": n / t, "pairs_found": int(len(pairs)),
                       "planted_pairs": int(len(planted)),
                       "planted_recall": float(planted_found.mean()) if len(planted) else None,
                       "outside_radius": int((dist > args.radius).sum())}
        rows.append([f"{n:,}", f"{n * HASHES_PER_IMAGE:,}", t, f"{n / t / 1e6:.2f}", f"{len(pairs):,}",
                     f"{per_size[n]['planted_recall']:.4f}", per_size[n]["outside_radius"]])

    lo, hi = args.sizes[0], args.sizes[-1]
    hs, _ = sets[hi]
    qrng = np.random.default_rng(args.seed + 1)
    n_pl = int(round(args.queries * args.planted_query_share))
    members = np.unique(sets[hi][1].ravel())
    queries = np.unique(np.concatenate([
        qrng.choice(members, size=min(n_pl, members.size), replace=False),
        qrng.choice(hi, size=args.queries - min(n_pl, members.size), replace=False)]))
    t0 = time.perf_counter()
    truth = brute_force_pairs(hs, queries, args.radius)
    bf_s = time.perf_counter() - t0
    hit = np.isin(codes(truth, hi), codes(found[hi], hi))
    recall = float(hit.mean()) if len(truth) else float("nan")
    ratio = median(times[hi]) / median(times[lo])

    print()
    print(table(["images", "hashes", "median s", "M images/s", "pairs found", "planted recall", "outside r"],
                rows, title=f"image_pairs, {HASHES_PER_IMAGE} hashes per image, radius {args.radius}, "
                            f"{args.planted:.0%} planted, median of {args.repeats}"))
    print()
    print(table(["figure", "value", "target"], [
        [f"time {hi:,} / {lo:,} ({hi / lo:.0f}x the images)", ratio, f"<= {1.2 * hi / lo:.0f}"],
        [f"recall vs brute force, {len(queries)} queries, {len(truth)} true pairs", recall, ">= 0.99"],
        ["pairs missed of those", int((~hit).sum()), "0"],
    ]))
    doc = {"benchmark": "near_dups_scale",
           "params": {"sizes": args.sizes, "radius": args.radius, "hashes_per_image": HASHES_PER_IMAGE,
                      "planted": args.planted, "repeats": args.repeats, "queries": int(len(queries)),
                      "planted_query_share": args.planted_query_share, "seed": args.seed},
           "sizes": {str(n): v for n, v in per_size.items()},
           "ratios": {"time_largest_vs_smallest": ratio, "size_largest_vs_smallest": hi / lo},
           "recall": {"queries": int(len(queries)), "true_pairs": int(len(truth)), "found": int(hit.sum()),
                      "recall": recall, "brute_force_s": bf_s},
           "targets": {"time_ratio_max": 1.2 * hi / lo, "recall_min": 0.99}}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
