"""Scaling and recall of transforms.near_dups.near_duplicate_pairs on 64-bit hashes.

Builds synthetic sets of distinct random 64-bit hashes (np.random.default_rng),
1% of them planted near-duplicates (a copy of a random existing hash with
1..radius distinct random bits flipped), deduplicated with np.unique. For each
size (default 100,000 and 1,000,000, radius 6) times near_duplicate_pairs over
--repeats rounds, sizes interleaved per round, and reports the median, the
time ratio largest/smallest size (target <= 12 for 10x the hashes, i.e. about
linear) and, on the largest set:

  recall vs brute force  for --queries sampled hashes (default 500), every
                         other hash within the radius by vectorised XOR +
                         np.bitwise_count; recall = those pairs the search
                         found / all of them (target >= 0.99). A uniform sample
                         of 500 out of 1M holds only ~10 true pairs, so by
                         default half the queries are drawn from the planted
                         pairs' members (--planted-query-share) and half
                         uniformly; the count of true pairs is printed.
  planted-pair recall    found / all planted (original, copy) pairs.
  outside radius         found pairs farther apart than the radius (must be 0).

Run:  cd /work/main && .venv/bin/python -m benchmarks.near_dups_scale
      [--sizes 100000 1000000] [--radius 6] [--repeats 3] [--json out.json]
No assertions; on a shared machine read the ratios.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import median, table, write_json
from transforms.near_dups import near_duplicate_pairs


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.near_dups_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="hash counts before deduplication (default 100000 1000000)")
    p.add_argument("--radius", type=int, default=6, help="Hamming radius in bits (default 6)")
    p.add_argument("--planted", type=float, default=0.01, help="share of planted near-duplicates (default 0.01)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per size (default 3)")
    p.add_argument("--queries", type=int, default=500, help="brute-force recall queries (default 500)")
    p.add_argument("--planted-query-share", type=float, default=0.5,
                   help="share of recall queries drawn from planted pairs (default 0.5; 0 = uniform)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures as JSON to this path")
    return p.parse_args(argv)


def make_hashes(n: int, radius: int, planted: float, rng: np.random.Generator):
    """(sorted distinct uint64 hashes, planted pairs as an (m, 2) index array)."""
    m = int(round(n * planted))
    base = rng.integers(0, 2**64, size=n - m, dtype=np.uint64, endpoint=False)
    src = base[rng.integers(0, base.size, size=m)]
    k = rng.integers(1, radius + 1, size=m)                          # bits to flip, 1..radius
    positions = rng.random((m, 64)).argsort(axis=1).astype(np.uint64)  # a random bit order per row
    chosen = np.arange(64)[None, :] < k[:, None]                     # first k of that order
    masks = np.bitwise_or.reduce(np.where(chosen, np.uint64(1) << positions, np.uint64(0)), axis=1)
    copies = src ^ masks
    hashes = np.unique(np.concatenate([base, copies]))
    pairs = np.stack([np.searchsorted(hashes, src), np.searchsorted(hashes, copies)], axis=1)
    pairs = np.sort(pairs, axis=1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)  # drop copies that hit their source set
    return hashes, pairs


def codes(pairs: np.ndarray, n: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1].astype(np.int64)


def brute_force_pairs(hashes: np.ndarray, queries: np.ndarray, radius: int) -> np.ndarray:
    """All (i, j), i < j, with one of them a query and popcount(h_i ^ h_j) <= radius."""
    out = []
    for q in queries:
        near = np.flatnonzero(np.bitwise_count(hashes ^ hashes[q]) <= radius)
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
        hashes, planted = make_hashes(n, args.radius, args.planted, rng)
        sets[n] = (hashes, planted)
        print(f"{n:,} hashes -> {hashes.size:,} distinct, {len(planted):,} planted pairs "
              f"(built in {time.perf_counter() - t0:.1f} s)", flush=True)

    times = {n: [] for n in args.sizes}
    found = {}
    near_duplicate_pairs(sets[args.sizes[0]][0][:1000], args.radius)  # warm-up
    for r in range(args.repeats):
        order = args.sizes[r % len(args.sizes):] + args.sizes[: r % len(args.sizes)]
        for n in order:
            t0 = time.perf_counter()
            found[n] = near_duplicate_pairs(sets[n][0], args.radius)
            times[n].append(time.perf_counter() - t0)
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n:,}: {times[n][-1]:.2f} s" for n in args.sizes),
              flush=True)

    rows, per_size = [], {}
    for n in args.sizes:
        hashes, planted = sets[n]
        pairs = found[n]
        t = median(times[n])
        dist = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]]) if len(pairs) else np.empty(0)
        planted_found = np.isin(codes(planted, hashes.size), codes(pairs, hashes.size))
        per_size[n] = {"distinct": int(hashes.size), "median_s": t, "times_s": times[n],
                       "hashes_per_s": hashes.size / t, "pairs_found": int(len(pairs)),
                       "planted_pairs": int(len(planted)),
                       "planted_recall": float(planted_found.mean()) if len(planted) else None,
                       "outside_radius": int((dist > args.radius).sum())}
        rows.append([f"{n:,}", f"{hashes.size:,}", t, f"{hashes.size / t / 1e6:.2f}", f"{len(pairs):,}",
                     f"{per_size[n]['planted_recall']:.4f}", per_size[n]["outside_radius"]])

    lo, hi = args.sizes[0], args.sizes[-1]
    hashes, _ = sets[hi]
    qrng = np.random.default_rng(args.seed + 1)
    n_pl = int(round(args.queries * args.planted_query_share))
    members = np.unique(sets[hi][1].ravel())
    queries = np.unique(np.concatenate([
        qrng.choice(members, size=min(n_pl, members.size), replace=False),
        qrng.choice(hashes.size, size=args.queries - min(n_pl, members.size), replace=False)]))
    t0 = time.perf_counter()
    truth = brute_force_pairs(hashes, queries, args.radius)
    bf_s = time.perf_counter() - t0
    hit = np.isin(codes(truth, hashes.size), codes(found[hi], hashes.size))
    recall = float(hit.mean()) if len(truth) else float("nan")
    ratio = median(times[hi]) / median(times[lo])

    print()
    print(table(["hashes", "distinct", "median s", "M hashes/s", "pairs found", "planted recall", "outside r"],
                rows, title=f"near_duplicate_pairs, radius {args.radius}, {args.planted:.0%} planted, "
                            f"median of {args.repeats}"))
    print()
    print(table(["figure", "value", "target"], [
        [f"time {hi:,} / {lo:,} ({hi / lo:.0f}x the hashes)", ratio, f"<= {1.2 * hi / lo:.0f}"],
        [f"recall vs brute force, {len(queries)} queries, {len(truth)} true pairs", recall, ">= 0.99"],
        ["pairs missed of those", int((~hit).sum()), "0"],
    ]))
    doc = {"benchmark": "near_dups_scale",
           "params": {"sizes": args.sizes, "radius": args.radius, "planted": args.planted,
                      "repeats": args.repeats, "queries": int(len(queries)),
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
