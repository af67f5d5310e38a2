"""make_tfrecords throughput per core and bytes per example.

On a generated 640x480 sample set (curated once, untimed), runs the whole
make_tfrecords job on DirectRunner in one process (one core for the per-image
work) and, in the same run, the baseline every such job must pay: the shared
preprocessing path alone (read bytes, transforms.image.preprocess.preprocess_to_jpeg)
over the same images. Reports job examples/s, baseline images/s, their ratio
(pipeline + tf.Transform + write overhead), and TFRecord bytes per example
for gzip and uncompressed output.

Two set sizes separate the fixed cost (Beam and TensorFlow start-up, the
tf.Transform analyze pass) from the per-example cost: the marginal rate is
extra examples / extra wall time.

Run:  cd /work/main && .venv/bin/python -m benchmarks.make_tfrecords_job [--cases 100 2000] [--repeats 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import median, sample_set, table, write_json

REPO = Path(__file__).resolve().parent.parent


def _run(module: str, args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, *args], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - t


def _one_size(cases: int, repeats: int) -> dict:
    """Curate once (untimed), then time make_tfrecords and the baseline."""
    from schemas.examples import dataset_info
    from transforms.image.preprocess import preprocess_to_jpeg
    from transforms.io.allowed_roots import AllowedRoots
    from transforms.io.read import read_bytes

    root = sample_set(cases, seed=5, size=(640, 480))
    work = Path(tempfile.mkdtemp(prefix="bench_tfr_"))
    curated = work / "curated"
    _run("beam_jobs.curate", ["--scin_cases", str(root / "dataset" / "scin_cases.csv"),
                              "--image_root", str(root), "--output", str(curated)])
    base = ["--curated", str(curated), "--scin_cases", str(root / "dataset" / "scin_cases.csv"),
            "--scin_labels", str(root / "dataset" / "scin_labels.csv"), "--image_root", str(root)]
    job_s, baseline_s, sizes, written = [], [], {}, []
    for _ in range(repeats):
        for compression in ("gzip", "none"):
            out = work / f"out_{compression}"
            seconds = _run("beam_jobs.make_tfrecords", base + ["--output", str(out), "--compression", compression])
            info = dataset_info(str(out))
            n = sum(info["splits"][s]["examples"] for s in ("train", "validation", "test"))
            files = [out / sh["file"] for s in ("train", "validation", "test") for sh in info["splits"][s]["shards"]]
            sizes[compression] = sum(f.stat().st_size for f in files) / n
            if compression == "gzip":
                job_s.append(seconds)
        written = written or _example_uris(work / "out_gzip")
        t = time.perf_counter()
        for uri in written:
            preprocess_to_jpeg(read_bytes(uri, allowed=AllowedRoots([str(root)]))[0])
        baseline_s.append(time.perf_counter() - t)
    return {"cases": cases, "examples": len(written), "job_s": median(job_s),
            "baseline_s": median(baseline_s), "bytes_per_example": sizes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.make_tfrecords_job", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, nargs=2, default=[100, 2000], help="two set sizes (SCIN cases)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    small, large = (_one_size(c, a.repeats) for c in a.cases)
    rows = [[r["cases"], r["examples"], r["job_s"], r["examples"] / r["job_s"],
             r["examples"] / r["baseline_s"], r["bytes_per_example"]["gzip"], r["bytes_per_example"]["none"]]
            for r in (small, large)]
    print(table(["cases", "examples", "job wall s", "job ex/s", "baseline img/s", "B/ex gzip", "B/ex raw"], rows,
                title=f"make_tfrecords, DirectRunner in one process, 640x480 -> 224 px, median of {a.repeats}"))
    extra_s = large["job_s"] - small["job_s"]
    # Below ~2 s the difference is start-up noise, not per-example work.
    marginal = (large["examples"] - small["examples"]) / extra_s if extra_s > 2.0 else float("nan")
    baseline = large["examples"] / large["baseline_s"]
    print(table(["figure", "value"], [
        ["fixed cost: Beam/TF start-up + tf.Transform analyze (s, intercept)",
         small["job_s"] - small["examples"] / marginal],
        ["marginal job examples/s (extra examples / extra wall)", marginal],
        ["baseline: preprocess path alone, images/s, 1 core", baseline],
        ["marginal job / baseline", marginal / baseline]]))
    write_json(a.json, {"sizes": [small, large], "examples_per_s": large["examples"] / large["job_s"],
                        "marginal_examples_per_s": marginal, "baseline_images_per_s": baseline,
                        "ratios": {"job_vs_baseline": marginal / baseline},
                        "bytes_per_example": large["bytes_per_example"]})
    return 0


def _example_uris(out: Path) -> list[str]:
    from schemas.examples import read_split
    uris = []
    for split in ("train", "validation", "test"):
        uris += [f["uri"].numpy().decode() for f, _ in read_split(str(out), split)]
    return sorted(uris)


if __name__ == "__main__":
    sys.exit(main())
