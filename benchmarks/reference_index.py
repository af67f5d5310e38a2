"""Loading and querying the cross-night reference index (--reference) as it grows.

Every curate night with --reference loads the index of all earlier nights'
accepted images (transforms/curate/reference.py) and hands it to its workers
as a side input, so what it costs grows with the service's history: a year
of 30,000 uploads a night is ~10 million entries. For each size (default
100,000 and 1,000,000 entries) a synthetic index is written once, as nightly
runs write it (one part per night over 30 nights, realistic URIs, sha256,
a full-frame and three centre pHashes and four turned ones, 5% of entries with no reliable
pHash), under /tmp/bench_cache. Each measurement runs in a fresh child
process, round-robin over sizes and --repeats:

  read      pyarrow reads the index's files into one table: the floor for
            anything that must read the index (the baseline).
  load      reference.load_index(REF, before, radius 4): what a night does
            before its first lookup (read, newest part per night, build).
  ship      pickle.dumps + pickle.loads of the loaded index: what handing it
            to the workers as a side input costs, and its size in bytes.
  lookup    index.match on 2,000 rows of four pHashes each, as uploads
            have: half carry one 1-4 bits from a random entry's (each must be
            found), half only random ones.

Reported per size (medians): seconds for read, load and ship, the ratio
load / read, peak RSS above the process's RSS before the step (the child
resets its high-water mark first), the pickled size in bytes per entry,
lookup ms per row (four hashes), and planted neighbours found. With --compare-rev REV the
same steps also run on the reference.py of git revision REV (sizes <=
--compare-max). No assertions; on a shared machine read the ratios.

Run:  cd /work/main && .venv/bin/python -m benchmarks.reference_index
      [--sizes 100000 1000000] [--repeats 3] [--compare-rev REV] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import CACHE_ROOT, median, proc_status_kb, reset_peak_rss, table, write_json

REPO = Path(__file__).resolve().parent.parent
NIGHTS = 30
RADIUS = 4
QUERIES = 2000
BEFORE = "2099-01-01"   # every night counts


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference_index", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="index entries (default 100000 1000000)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all sizes (default 3)")
    p.add_argument("--compare-rev", help="also measure the reference.py of this git revision")
    p.add_argument("--compare-max", type=int, default=1_000_000, help="largest size for --compare-rev (default 1000000)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--child", nargs=4, metavar=("MODULE", "REF", "N", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- data -----------------------------------------------------------------

def index_folder(n: int) -> Path:
    """A synthetic index of n entries over NIGHTS nights, written once."""
    from transforms.curate import reference as R
    folder = CACHE_ROOT / f"reference_index_{n}_turned"
    if (folder / "_DONE").exists():
        return folder
    rng = np.random.default_rng(n)
    hexes = lambda k, bits: [f"{int(v):0{bits // 4}x}" for v in rng.integers(0, 2 ** 63, k, dtype=np.int64)]  # noqa: E731
    tmp = Path(tempfile.mkdtemp(dir=CACHE_ROOT, prefix=".ref-"))
    for night in range(NIGHTS):
        k = n // NIGHTS + (1 if night < n % NIGHTS else 0)
        date = f"2026-{1 + night // 28:02d}-{1 + night % 28:02d}"
        sha = [a + b + c + d for a, b, c, d in zip(*(hexes(k, 64) for _ in range(4)))]
        full, c1, c2, c3, t0, t1, t2, t3 = (hexes(k, 64) for _ in range(8))
        unreliable = rng.random(k) < 0.05
        entries = [{"date": date, "uri": f"gs://skin-uploads-prod/uploads/dt={date}/user-{rng.integers(1e9)}/{i:07d}.jpg",
                    "sha256": sha[i], "phash": None if unreliable[i] else full[i],
                    "phash_centre": [] if unreliable[i] else [c1[i], c2[i], c3[i]],
                    # the regions turned canonical: 3.6 per real photo, 4 here
                    "phash_turned": [] if unreliable[i] else [t0[i], t1[i], t2[i], t3[i]]} for i in range(k)]
        R.write_part(str(tmp), date, entries)
    (tmp / "_DONE").write_text("")
    os.replace(tmp, folder)
    return folder


# --- child ------------------------------------------------------------------

def _step(fn):
    """(result, seconds, peak MB above the RSS before the step)."""
    before = reset_peak_rss()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, (proc_status_kb("VmHWM") - before) / 1024


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location("reference_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so pickle finds its classes, as a worker finds the real module
    spec.loader.exec_module(module)
    return module


def child(module_path: str, ref: str, n: int, out: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    R = _load_module(module_path)
    files = sorted(str(p) for p in Path(ref).rglob("*.parquet"))

    def read():
        return pa.concat_tables([pq.read_table(f) for f in files])
    rows, t_read, m_read = _step(read)
    picks = np.random.default_rng(1).integers(0, rows.num_rows, QUERIES // 2)
    planted = [rows.slice(int(i), 1).to_pylist()[0] for i in picks]
    del rows
    index, t_load, m_load = _step(lambda: R.load_index(ref, BEFORE, RADIUS))
    blob, t_dump, m_dump = _step(lambda: pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    _copy, t_loads, m_loads = _step(lambda: pickle.loads(blob))
    del _copy
    rng = np.random.default_rng(2)
    queries = []

    def randoms(k):
        return [f"{int(v):016x}" for v in rng.integers(0, 2 ** 63, k, dtype=np.int64)]
    for e in planted:   # four hashes, as an upload has; one of them 1-4 bits from one of the entry's
        h = int((e["phash_centre"] or [e["phash"] or "0" * 16])[-1], 16)
        for b in rng.choice(64, rng.integers(1, RADIUS + 1), replace=False):
            h ^= 1 << int(b)
        queries.append({"uri": "q", "sha256": "f" * 64, "phash": f"{h:016x}", "phash_centre": randoms(3),
                        "reasons": [], "planted": e["phash"] is not None})
    queries += [{"uri": "q", "sha256": "f" * 64, "phash": h, "phash_centre": randoms(3), "reasons": [],
                 "planted": False} for h in randoms(QUERIES - len(queries))]
    t0 = time.perf_counter()
    found = [index.match(q) is not None for q in queries]
    t_lookup = (time.perf_counter() - t0) / len(queries)
    doc = {"n": n, "read_s": t_read, "read_mb": m_read, "load_s": t_load, "load_mb": m_load,
           "ship_s": t_dump + t_loads, "ship_mb": max(m_dump, m_loads), "pickled_bytes": len(blob),
           "lookup_ms": t_lookup * 1e3,
           "planted_found": sum(f for f, q in zip(found, queries) if q["planted"]),
           "planted": sum(q["planted"] for q in queries),
           "random_found": sum(f for f, q in zip(found, queries) if not q["planted"])}
    Path(out).write_text(json.dumps(doc))


# --- parent -----------------------------------------------------------------

def run_child(module_path: str, ref: Path, n: int, tmp: Path) -> dict:
    out = tmp / "child.json"
    subprocess.run([sys.executable, "-m", "benchmarks.reference_index", "--child", module_path, str(ref), str(n),
                    str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        module_path, ref, n, out = args.child
        child(module_path, ref, int(n), out)
        return {}
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    folders = {n: index_folder(n) for n in args.sizes}
    variants = {"current": str(REPO / "transforms" / "curate" / "reference.py")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.compare_rev:
            prev = tmp / "reference_prev.py"
            prev.write_bytes(subprocess.run(["git", "show", f"{args.compare_rev}:transforms/curate/reference.py"],
                                            cwd=REPO, check=True, capture_output=True).stdout)
            variants[args.compare_rev] = str(prev)
        runs = {(v, n): [] for v in variants for n in args.sizes
                if v == "current" or n <= args.compare_max}
        for _ in range(args.repeats):
            for (v, n), acc in runs.items():
                acc.append(run_child(variants[v], folders[n], n, tmp))
    figures = []
    for (v, n), docs in runs.items():
        med = {k: median([d[k] for d in docs]) for k in docs[0] if k != "n"}
        figures.append({"variant": v, "entries": n, **med, "load_vs_read": med["load_s"] / med["read_s"],
                        "pickled_bytes_per_entry": med["pickled_bytes"] / n,
                        "load_mb_per_million": med["load_mb"] / n * 1e6})
    print(table(["code", "entries", "read s", "load s", "load / read", "load peak MB", "ship s",
                 "pickled B/entry", "lookup ms/row", "planted found"],
                [[f["variant"], f["entries"], f["read_s"], f["load_s"], f["load_vs_read"], f["load_mb"], f["ship_s"],
                  f["pickled_bytes_per_entry"], f["lookup_ms"], f"{f['planted_found']:.0f}/{f['planted']:.0f}"]
                 for f in figures],
                title=f"reference index, {NIGHTS} nights, radius {RADIUS} (medians of {args.repeats})"))
    doc = {"benchmark": "reference_index", "repeats": args.repeats, "figures": figures}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
