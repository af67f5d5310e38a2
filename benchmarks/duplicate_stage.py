"""The curate job's duplicate stage (ClusterDuplicates) on DirectRunner against
the numpy near-duplicate search on the same hashes.

For each size (default 100,000 and 1,000,000 images) the hash sets of
benchmarks.near_dups_scale (8 hashes per image, 1% planted near-duplicates) are
written once to a .npy file; each measurement then runs in a fresh child
process (so its peak RSS is its own), round-robin over sizes and --repeats:

  numpy     transforms.curate.near_dups.image_pairs on the hash sets (what
            benchmarks.near_dups_scale times).
  rows      a DirectRunner pipeline that only makes the synthetic curate rows
            (schemas.features.empty_row with uri, sha256, size, pHashes; from
            the .npy in slices of 10,000) and counts them: the baseline.
  stage     the same pipeline with ClusterDuplicates(policy radius) between
            making and counting, its records spilled to the temp folder as
            curate runs it locally (transforms/io/spill.py).
  shuffle   the same with spill=None: the runner carries the records, as
            on Dataflow (whose shuffle is disk-backed; DirectRunner's is not).
  previous  (with --compare-rev REV, sizes <= --compare-max only) the
            ClusterDuplicates of git revision REV on the same rows.

Reported per size, as medians over the repeats of per-repeat figures: wall and
CPU (time.process_time of the child: DirectRunner runs in that one process)
seconds; the stage's own cost = stage - rows; the ratio of that cost to
numpy's (target <= 3), for stage and shuffle; the peak RSS of each child and
stage - rows (target: bounded, i.e. not growing with the images); and, from
the stage's Beam counters, the records and bytes per image of the search
(duplicates/shard_records, shard_bytes: on Dataflow its shuffle, locally
what it spills), the rows that went through
the cluster GroupByKey (duplicates/rows_grouped) and rows rejected as near
duplicates, checked against the components of numpy's pairs.

Run:  cd /work/main && .venv/bin/python -m benchmarks.duplicate_stage
      [--sizes 100000 1000000] [--repeats 3] [--compare-rev REV] [--json out.json]
No assertions; on a shared machine read the ratios.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import median, proc_status_kb, table, write_json
from benchmarks.near_dups_scale import HASHES_PER_IMAGE, make_hash_sets
from schemas.policy import load_policy
from transforms.image.phash import CENTRE_FRACTIONS

REPO = Path(__file__).resolve().parent.parent
SLICE = 10_000
MODES = ("numpy", "rows", "stage", "shuffle")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.duplicate_stage", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="image counts (default 100000 1000000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per size and mode (default 3)")
    p.add_argument("--planted", type=float, default=0.01, help="share of planted near-duplicates (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-rev", help="also time the ClusterDuplicates of this git revision")
    p.add_argument("--compare-max", type=int, default=100_000,
                   help="largest size to run --compare-rev on (default 100000)")
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--child", nargs=3, metavar=("MODE", "HASHES", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- child ------------------------------------------------------------------

def _rows(start, path, n):
    from schemas.features import empty_row

    hs = np.load(path, mmap_mode="r")[start:min(start + SLICE, n)]
    for i, h in enumerate(hs.tolist(), start):
        yield empty_row(uri=f"gs://bucket/uploads/{i:07d}.jpg", sha256=f"{i:064x}", width=640, height=480,
                        file_size=60_000 + i % 997, phash=f"{h[0]:016x}",
                        phash_centre=[f"{x:016x}" for x in h[1:1 + len(CENTRE_FRACTIONS)]],
                        phash_turned=[f"{x:016x}" for x in h[1 + len(CENTRE_FRACTIONS):]], status="accepted", reasons=[])


def _stage(mode: str):
    if mode in ("stage", "shuffle"):
        import tempfile as tf

        from transforms.curate.duplicates import ClusterDuplicates
        spill = tf.gettempdir() if mode == "stage" else None
        return lambda radius, exact_only_for: ClusterDuplicates(radius, exact_only_for, spill=spill)
    if mode.startswith("previous:"):
        spec = importlib.util.spec_from_file_location("previous_duplicates", mode.split(":", 1)[1])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.ClusterDuplicates
    return None


def child(mode: str, path: str, out: str) -> None:
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.curate.near_dups import image_pairs
    stage = _stage(mode)
    hs = np.load(path)
    n = len(hs)
    doc = {}
    t0, c0 = time.perf_counter(), time.process_time()  # imports and loading excluded
    if mode == "numpy":
        pairs = image_pairs(hs, load_policy().dup_radius)
        doc["pairs"] = int(len(pairs))
    else:
        del hs
        p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
        rows = p | beam.Create(list(range(0, n, SLICE))) | beam.Reshuffle() | beam.FlatMap(_rows, path, n).with_output_types(dict)
        if stage is not None:
            policy = load_policy()
            rows = rows | stage(policy.dup_radius, policy.exact_only_for)
        _ = rows | beam.combiners.Count.Globally()
        result = p.run()
        result.wait_until_finish()
        for c in result.metrics().query(MetricsFilter())["counters"]:
            doc[f"{c.key.metric.namespace}/{c.key.metric.name}"] = c.committed
    doc.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0,
               peak_rss_mb=proc_status_kb("VmHWM") / 1024)
    Path(out).write_text(json.dumps(doc))


# --- parent -----------------------------------------------------------------

def run_child(mode: str, path: Path, tmp: Path) -> dict:
    out = tmp / "child.json"
    subprocess.run([sys.executable, "-m", "benchmarks.duplicate_stage", "--child", mode, str(path), str(out)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def expected_near_duplicates(pairs_path: Path, n: int) -> int:
    """Rows a correct stage rejects: all but one per component of numpy's pairs
    (every synthetic row has its own bytes and pHash)."""
    from transforms.curate.near_dups import connected_components, image_pairs
    comps = connected_components(image_pairs(np.load(pairs_path), load_policy().dup_radius).tolist())
    return len(comps) - len(set(comps.values()))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    radius = load_policy().dup_radius
    tmp = Path(tempfile.mkdtemp(prefix="duplicate_stage-"))
    rng = np.random.default_rng(args.seed)
    paths = {}
    for n in args.sizes:
        paths[n] = tmp / f"hashes_{n}.npy"
        np.save(paths[n], make_hash_sets(n, radius, args.planted, rng)[0])
    modes = {n: list(MODES) for n in args.sizes}
    if args.compare_rev:
        prev = tmp / "previous_duplicates.py"
        prev.write_bytes(subprocess.run(["git", "show", f"{args.compare_rev}:transforms/curate/duplicates.py"],
                                        cwd=REPO, check=True, capture_output=True).stdout)
        for n in args.sizes:
            if n <= args.compare_max:
                modes[n].append(f"previous:{prev}")
    runs = {n: {m: [] for m in modes[n]} for n in args.sizes}
    for r in range(args.repeats):
        order = args.sizes[r % len(args.sizes):] + args.sizes[: r % len(args.sizes)]
        for n in order:
            for m in modes[n]:
                runs[n][m].append(run_child(m, paths[n], tmp))
                d = runs[n][m][-1]
                print(f"  repeat {r + 1}/{args.repeats}, {n:,} images, {m.split(':')[0]}: wall {d['wall_s']:.1f} s, "
                      f"cpu {d['cpu_s']:.1f} s, peak RSS {d['peak_rss_mb']:,.0f} MB", flush=True)

    rows, per_size = [], {}
    for n in args.sizes:
        R = runs[n]
        fig = {"images": n}
        for m in modes[n]:
            name = m.split(":")[0]
            for k in ("wall_s", "cpu_s", "peak_rss_mb"):
                fig[f"{name}_{k}"] = median([d[k] for d in R[m]])
        for k in ("wall_s", "cpu_s"):
            own = [s[k] - b[k] for s, b in zip(R["stage"], R["rows"])]
            fig[f"stage_own_{k}"] = median(own)
            fig[f"stage_own_vs_numpy_{k.split('_')[0]}"] = median([o / x[k] for o, x in zip(own, R["numpy"])])
            fig[f"stage_total_vs_numpy_{k.split('_')[0]}"] = median([s[k] / x[k] for s, x in zip(R["stage"], R["numpy"])])
            for prev in [R[m] for m in modes[n] if m.startswith("previous")]:
                fig[f"previous_own_{k}"] = median([s[k] - b[k] for s, b in zip(prev, R["rows"])])
        for m in ("stage", "shuffle"):
            fig[f"{m}_own_rss_mb"] = median([s["peak_rss_mb"] - b["peak_rss_mb"] for s, b in zip(R[m], R["rows"])])
        fig["shuffle_own_vs_numpy_wall"] = median([(s["wall_s"] - b["wall_s"]) / x["wall_s"]
                                                   for s, b, x in zip(R["shuffle"], R["rows"], R["numpy"])])
        c = R["stage"][-1]
        fig.update(shard_records=c.get("duplicates/shard_records", 0), shard_bytes=c.get("duplicates/shard_bytes", 0),
                   rows_grouped=c.get("duplicates/rows_grouped", 0),
                   near_duplicates=c.get("curate/rejected_near_duplicate", 0),
                   expected_near_duplicates=expected_near_duplicates(paths[n], n))
        per_size[n] = fig
        rows.append([f"{n:,}", fig["numpy_wall_s"], fig["rows_wall_s"], fig["stage_wall_s"], fig["stage_own_wall_s"],
                     fig["stage_own_vs_numpy_wall"], fig["stage_own_vs_numpy_cpu"], fig["stage_total_vs_numpy_wall"],
                     f"{fig['rows_peak_rss_mb']:,.0f} / {fig['stage_peak_rss_mb']:,.0f}",
                     fig["shuffle_own_vs_numpy_wall"], f"{fig['shuffle_peak_rss_mb']:,.0f}",
                     f"{1e6 * fig['stage_own_wall_s'] / n:.1f}",
                     f"{fig['shard_records'] / n:.4f}", f"{fig['shard_bytes'] / n:.0f}",
                     f"{fig['rows_grouped']:,}", f"{fig['near_duplicates']:,} / {fig['expected_near_duplicates']:,}"])
    print()
    print(table(["images", "numpy s", "rows s", "rows+stage s", "stage s", "stage/numpy", "(cpu)",
                 "rows+stage/numpy", "peak RSS MB rows / +stage", "shuffle: stage/numpy", "peak MB",
                 "stage us/image", "shuffle rec/image",
                 "shuffle B/image", "rows grouped", "near dups / expected"], rows,
                title=f"ClusterDuplicates on DirectRunner vs numpy image_pairs, {HASHES_PER_IMAGE} hashes per image, "
                      f"radius {radius}, {args.planted:.0%} planted, median of {args.repeats}"))
    prev_rows = [[f"{n:,}", f["previous_own_wall_s"], f["previous_own_cpu_s"], f["stage_own_wall_s"], f["stage_own_cpu_s"],
                  f"{f['previous_peak_rss_mb']:,.0f}", f"{f['stage_peak_rss_mb']:,.0f}"]
                 for n, f in per_size.items() if "previous_own_wall_s" in f]
    if prev_rows:
        print()
        print(table(["images", "previous stage s", "(cpu)", "this stage s", "(cpu)", "previous peak MB", "this peak MB"],
                    prev_rows, title=f"against ClusterDuplicates of {args.compare_rev}"))
    doc = {"benchmark": "duplicate_stage",
           "params": {"sizes": args.sizes, "radius": radius, "hashes_per_image": HASHES_PER_IMAGE,
                      "planted": args.planted, "repeats": args.repeats, "seed": args.seed,
                      "compare_rev": args.compare_rev},
           "sizes": {str(n): {**f, "runs": runs[n]} for n, f in per_size.items()},
           "targets": {"stage_own_vs_numpy_max": 3}}
    write_json(args.json, doc)
    shutil.rmtree(tmp, ignore_errors=True)
    return doc


if __name__ == "__main__":
    main()
