"""Wall time, throughput and peak memory of the whole curate job on DirectRunner.

For each sample-set size (default ~1,000 and ~2,000 images at 640x480; the
generator makes ~2.1 images per case, so ~480 and ~960 SCIN cases) runs

    python -m beam_jobs.curate --scin_cases DIR/dataset/scin_cases.csv
        --image_root DIR --output OUT [--direct_num_workers=N ...]

for each --workers setting: 'default' passes no runner flags (the job's own
default, one worker process per core), a count N passes
--direct_num_workers=N (multi_processing when N > 1, in_memory for 1). It runs
as a subprocess and polls /proc every 0.2 s for the job's whole process tree
(runner + SDK worker processes), summing RSS (and PSS, which does not count
shared pages twice, where /proc/PID/smaps_rollup is readable). Reported per
size: wall time, images/s (matched / wall, Beam start-up included), peak
summed RSS and PSS, the summary.json counts; then the marginal images/s between
the two sizes (start-up cancels out) and the ratio of peak memory largest vs
smallest size, which should be ~1: the job's memory must not grow with the
number of images. Also, if --path-baseline (default on), the per-image path
alone (analyze_image over the same files, in this process, one core) and the
ratio job images/s / path images/s on one core (N workers: ~N is the ceiling),
and the same divided by the worker processes: per-core efficiency (issue 18.3
wants >= 0.6).

With --repeats > 1 the sizes are run round-robin and medians are reported.
No assertions; on a shared machine read the ratios.

Run:  cd /work/main && .venv/bin/python -m benchmarks.curate_job
      [--images 1000 2000] [--repeats 1] [--workers default 1] [--json out.json]
Sample sets are generated once into /tmp/bench_cache and reused; job outputs
go to a temporary directory that is removed afterwards (--keep to keep it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from beam_jobs.cli import LOCAL_WORKERS_ENV, local_cores
from benchmarks._common import CACHE_ROOT, cases_for, ground_truth, median, sample_set, table, write_json

PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.curate_job", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[1000, 2000],
                   help="approximate image counts of the sample sets (default 1000 2000)")
    p.add_argument("--size", default="640x480", help="frame WxH of the generated images (default 640x480)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_workers, nargs="+", default=["default", "1"],
                   help="worker settings to compare, each 'default' (the job's own: no runner flags, one "
                        "worker per core) or a --direct_num_workers count (default: default 1)")
    p.add_argument("--repeats", type=int, default=1, help="job runs per size, round-robin (default 1)")
    p.add_argument("--interval", type=float, default=0.2, help="memory poll interval, s (default 0.2)")
    p.add_argument("--no-path-baseline", dest="path_baseline", action="store_false",
                   help="skip timing analyze_image alone on the smallest set")
    p.add_argument("--keep", action="store_true", help="keep the job output directories")
    p.add_argument("--json", help="write the figures as JSON to this path")
    return p.parse_args(argv)


# ---- process-tree memory -------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


HAVE_PSS = os.access("/proc/self/smaps_rollup", os.R_OK)


def _rss_pss(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes of one process; 0 for what cannot be read (it may have just exited)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0, 0
    if HAVE_PSS:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return rss, int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, 0


class TreeMemory(threading.Thread):
    """Polls the process tree under `pid`; keeps peak summed RSS/PSS and process count."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.max_procs = self.samples = 0
        self.pss_ok = HAVE_PSS
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            pids = _tree(self.pid)
            rss = pss = 0
            for p in pids:
                r, s = _rss_pss(p)
                rss, pss = rss + r, pss + s
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, len(pids))
            self.samples += 1
            self.stop.wait(self.interval)


# ---- one job run ---------------------------------------------------------

def run_job(root: Path, workers: str, interval: float, keep: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="curate_out_", dir=CACHE_ROOT))
    cmd = [sys.executable, "-m", "beam_jobs.curate",
           "--scin_cases", str(root / "dataset" / "scin_cases.csv"), "--image_root", str(root),
           "--output", str(out / "curate")]
    if workers != "default":  # else the job's own default (beam_jobs.cli.use_cores)
        cmd += [f"--direct_num_workers={workers}",
                f"--direct_running_mode={'multi_processing' if int(workers) > 1 else 'in_memory'}"]
    env = {k: v for k, v in os.environ.items() if k != LOCAL_WORKERS_ENV}
    log = out / "job.log"
    with open(log, "wb") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT)
        mem = TreeMemory(proc.pid, interval)
        mem.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        mem.stop.set()
        mem.join()
    summary_path = out / "curate" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if rc != 0 or not summary:
        tail = log.read_text(errors="replace")[-3000:]
        print(f"curate job failed (exit {rc}); output kept in {out}; log tail:\n{tail}", file=sys.stderr)
        keep = True
    result = {"exit_code": rc, "wall_s": wall, "peak_rss_mb": mem.peak_rss / 2**20,
              "peak_pss_mb": mem.peak_pss / 2**20 if mem.pss_ok else None,
              "max_processes": mem.max_procs, "memory_samples": mem.samples,
              "matched": summary.get("matched"), "accepted": summary.get("accepted"),
              "rejected": summary.get("rejected"), "output": str(out) if keep else None}
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def path_only(root: Path) -> dict:
    """analyze_image over every image of the set (bytes read first), one core."""
    import cv2

    from schemas.policy import load_policy
    from transforms.image.analyze import analyze_image

    cv2.setNumThreads(1)
    policy = load_policy()
    files = [root / r["image_path"] for r in ground_truth(root)]
    datas = [(str(f), f.read_bytes()) for f in files]
    analyze_image(*datas[0], policy, thumbnail_px=96)  # warm-up
    t0 = time.perf_counter()
    for uri, data in datas:
        analyze_image(uri, data, policy, thumbnail_px=96)
    dt = time.perf_counter() - t0
    return {"images": len(datas), "seconds": dt, "images_per_s": len(datas) / dt}


def _workers(text: str) -> str:
    if text != "default" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"a worker count >= 1 or 'default', got {text!r}")
    return text


def _summarise(args, sets, runs, workers, w, h) -> dict:
    """Median figures of one worker setting over every set, printed as a table."""
    rows, figures = [], []
    for s in sets:
        ok = [x for x in runs[workers, s["target"]] if x["exit_code"] == 0]
        if not ok:
            figures.append({**{k: s[k] for k in ("target", "cases", "images")}, "failed": True})
            rows.append([s["images"], s["cases"], "failed", "", "", "", ""])
            continue
        wall = median([x["wall_s"] for x in ok])
        rss = median([x["peak_rss_mb"] for x in ok])
        pss = median([x["peak_pss_mb"] for x in ok]) if all(x["peak_pss_mb"] is not None for x in ok) else None
        last = ok[-1]
        fig = {"target": s["target"], "cases": s["cases"], "images": s["images"], "wall_s": wall,
               "images_per_s": s["images"] / wall, "peak_rss_mb": rss, "peak_pss_mb": pss,
               "matched": last["matched"], "accepted": last["accepted"], "rejected": last["rejected"],
               "runs": runs[workers, s["target"]]}
        figures.append(fig)
        rows.append([s["images"], s["cases"], wall, fig["images_per_s"], rss, pss if pss is not None else "n/a",
                     f"{last['matched']}/{last['accepted']}/{last['rejected']}"])
    print()
    print(table(["images", "cases", "wall s", "images/s", "peak RSS MB", "peak PSS MB", "matched/acc/rej"], rows,
                title=f"curate job, DirectRunner, {_label(workers)}, {w}x{h}, "
                      f"median of {args.repeats}; memory summed over the process tree"))
    return {"workers": workers, "processes": _processes(workers), "sets": figures}


def _label(workers: str) -> str:
    return (f"job default (no runner flags: {local_cores()} workers here)" if workers == "default"
            else f"--direct_num_workers={workers}")


def _processes(workers: str) -> int:
    return local_cores() if workers == "default" else int(workers)


def main(argv=None) -> dict:
    args = parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    sets = []
    for n in args.images:
        cases = cases_for(min_images=n, seed=args.seed)
        root = sample_set(cases, args.seed, (w, h))
        sets.append({"target": n, "cases": cases, "root": root, "images": len(ground_truth(root))})
    print(f"curate job on DirectRunner, {' vs '.join(_label(x) for x in args.workers)}, {w}x{h} JPEGs; "
          f"sets: " + ", ".join(f"{s['images']} images / {s['cases']} cases" for s in sets), flush=True)

    runs = {(x, s["target"]): [] for x in args.workers for s in sets}
    for r in range(args.repeats):  # round-robin, so a busy spell on the shared machine hits every setting
        for s in sets:
            for x in args.workers:
                res = run_job(s["root"], x, args.interval, args.keep)
                runs[x, s["target"]].append(res)
                print(f"  run {r + 1}/{args.repeats}, {s['images']} images, {_label(x)}: {res['wall_s']:.1f} s, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB over <= {res['max_processes']} processes, "
                      f"exit {res['exit_code']}", flush=True)

    settings = [_summarise(args, sets, runs, x, w, h) for x in args.workers]
    baseline = None
    if args.path_baseline and any(not f.get("failed") for st in settings for f in st["sets"]):
        baseline = path_only(sets[0]["root"])
    trows = []
    for st in settings:
        good = [f for f in st["sets"] if not f.get("failed")]
        ratios = st["ratios"] = {}
        name = _label(st["workers"])
        if len(good) >= 2:
            a, b = good[0], good[-1]
            ratios["peak_rss_largest_vs_smallest"] = b["peak_rss_mb"] / a["peak_rss_mb"]
            if a["peak_pss_mb"] and b["peak_pss_mb"]:
                ratios["peak_pss_largest_vs_smallest"] = b["peak_pss_mb"] / a["peak_pss_mb"]
            if b["wall_s"] > a["wall_s"]:
                ratios["marginal_images_per_s"] = (b["images"] - a["images"]) / (b["wall_s"] - a["wall_s"])
            trows.append([f"{name}: peak RSS {b['images']} / {a['images']} images",
                          ratios["peak_rss_largest_vs_smallest"], "~1"])
        if "marginal_images_per_s" in ratios:
            trows.append([f"{name}: marginal images/s (extra images / extra wall)",
                          ratios["marginal_images_per_s"], ""])
        if baseline and good:
            n = st["processes"]
            ratios["job_vs_path_1core"] = good[-1]["images_per_s"] / baseline["images_per_s"]
            ratios["job_vs_path_per_core"] = ratios["job_vs_path_1core"] / n
            trows.append([f"{name}: job images/s ({good[-1]['images']} images) / path alone 1 core",
                          ratios["job_vs_path_1core"], f"<= {n}"])
            trows.append([f"{name}: the same per core (/ {n})", ratios["job_vs_path_per_core"], ">= 0.6 wanted"])
            if "marginal_images_per_s" in ratios:
                ratios["marginal_job_vs_path_per_core"] = ratios["marginal_images_per_s"] / baseline["images_per_s"] / n
                trows.append([f"{name}: marginal job images/s / path alone, per core",
                              ratios["marginal_job_vs_path_per_core"], ">= 0.6 wanted"])
    if len(settings) >= 2:
        a, b = settings[0]["sets"][-1], settings[1]["sets"][-1]
        if not a.get("failed") and not b.get("failed"):
            trows.append([f"{_label(settings[0]['workers'])} / {_label(settings[1]['workers'])}: "
                          f"images/s ({a['images']} images)", a["images_per_s"] / b["images_per_s"], ""])
    if baseline:
        trows.insert(0, [f"analyze_image alone, 1 core, images/s ({baseline['images']} images)",
                         baseline["images_per_s"], ""])
    print()
    if trows:
        print(table(["figure", "value", "expect"], trows))
    doc = {"benchmark": "curate_job",
           "params": {"images": args.images, "size": [w, h], "seed": args.seed, "workers": args.workers,
                      "cores": local_cores(), "repeats": args.repeats, "interval_s": args.interval},
           "settings": settings, "path_only": baseline}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
