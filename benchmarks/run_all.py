"""Run every benchmark with its defaults and print all their tables.

Runs, one after another, each as its own process (so one's OpenCV thread
settings or memory do not affect the next):

  benchmarks.curate_per_image  per-image path vs decode-only and naive, 12 MP, 1 core
  benchmarks.curate_job        whole curate job on DirectRunner, time and peak memory
  benchmarks.near_dups_scale   near-duplicate search scaling and recall
  benchmarks.make_tfrecords_job  make_tfrecords examples/s and bytes per example
  benchmarks.score_job         score throughput vs the raw model, batched and per image

then a one-table summary of the headline ratios and their targets. Nothing
asserts on timings; expect a few minutes in total (more on first use, when
the sample images are generated into /tmp/bench_cache).

Run:  cd /work/main && .venv/bin/python -m benchmarks.run_all [--json-dir DIR] [--only NAME ...]
(`make bench` does this). With --json-dir each benchmark writes DIR/<name>.json
and the summary goes to DIR/summary.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import table, write_json

BENCHMARKS = ("curate_per_image", "curate_job", "near_dups_scale", "make_tfrecords_job", "score_job")
REPO = Path(__file__).resolve().parent.parent


def headline(name: str, doc: dict) -> list[list]:
    """(benchmark, figure, value, target) rows from one benchmark's JSON."""
    r = doc.get("ratios", {})
    if name == "curate_per_image":
        ips = doc["images_per_s"]
        return [[name, "path images/s, 12 MP, 1 core", ips["path"], ""],
                [name, "path / decode-only (images/s)", r["path_vs_decode_only"], ">= 0.8"],
                *([[name, "  ... baseline JPEGs only", r["path_vs_decode_only_baseline"], ">= 0.8"]]
                  if "path_vs_decode_only_baseline" in r else []),
                [name, "path / naive (images/s)", r["path_vs_naive"], ">= 6"]]
    if name == "curate_job":
        rows = []
        for st in doc["settings"]:
            tag, r = f"{st['workers']} ({st['processes']} workers)", st.get("ratios", {})
            rows += [[name, f"{tag}: job images/s, {s['images']} images", s["images_per_s"], ""]
                     for s in st["sets"] if not s.get("failed")]
            rows += [[name, f"{tag}: peak memory (MB, RSS sum), {s['images']} images", s["peak_rss_mb"], ""]
                     for s in st["sets"] if not s.get("failed")]
            if "peak_rss_largest_vs_smallest" in r:
                rows.append([name, f"{tag}: peak RSS largest / smallest set", r["peak_rss_largest_vs_smallest"], "~1"])
            if "job_vs_path_per_core" in r:
                rows.append([name, f"{tag}: job images/s / path alone, per core", r["job_vs_path_per_core"],
                             ">= 0.6"])
            if "marginal_job_vs_path_per_core" in r:
                rows.append([name, f"{tag}: marginal job images/s / path alone, per core",
                             r["marginal_job_vs_path_per_core"], ">= 0.6"])
        return rows
    if name == "near_dups_scale":
        sizes = doc["params"]["sizes"]
        return [[name, f"time {sizes[-1]:,} / {sizes[0]:,} hashes", r["time_largest_vs_smallest"],
                 f"<= {doc['targets']['time_ratio_max']:.0f}"],
                [name, f"recall vs brute force ({doc['recall']['true_pairs']} pairs)", doc["recall"]["recall"],
                 ">= 0.99"]]
    if name == "score_job":
        return [[name, "pipeline marginal images/s (MobileNetV2)", doc["marginal_images_per_s"], ""],
                [name, "pipeline / raw model.predict batched", r["vs_raw_batched"], ">= 0.8"],
                [name, "pipeline / per-image predict", r["vs_per_image"], ">= 5"]]
    if name == "make_tfrecords_job":
        return [[name, "marginal job examples/s, 1 process", doc["marginal_examples_per_s"], ""],
                [name, "marginal job / preprocess-only baseline", r["job_vs_baseline"], ""],
                [name, "bytes per example (gzip)", doc["bytes_per_example"]["gzip"], ""]]
    return []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--json-dir", help="keep each benchmark's JSON (and summary.json) in this directory")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = p.parse_args(argv)
    out = Path(args.json_dir) if args.json_dir else Path(tempfile.mkdtemp(prefix="bench_json_"))
    out.mkdir(parents=True, exist_ok=True)
    summary, failed = [], []
    for name in args.only or BENCHMARKS:
        print(f"\n===== benchmarks.{name} =====", flush=True)
        t0 = time.perf_counter()
        path = out / f"{name}.json"
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", "--json", str(path)], cwd=REPO)
        print(f"({name}: {time.perf_counter() - t0:.0f} s, exit {rc})", flush=True)
        if rc != 0 or not path.exists():
            failed.append(name)
            continue
        summary += headline(name, json.loads(path.read_text()))
    print("\n===== summary =====")
    print(table(["benchmark", "figure", "value", "target"], summary))
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    if args.json_dir:
        write_json(str(out / "summary.json"), {"rows": summary, "failed": failed})
    else:
        for f in out.iterdir():
            f.unlink()
        out.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
