"""score throughput against the raw model, batched and per image.

In one run, on generated 640x480 uploads (defect "none") and the baseline CNN
at 224 px (beam_jobs.train_baseline.build_model; weights do not affect speed):

  raw batched   model.predict on already-preprocessed arrays, batches of the
                job's --max_batch_size: the model's own ceiling
  per image     model.predict one image at a time: what a naive loop does
  pipeline      the whole score job (read, decode, crop/resize/JPEG, RunInference,
                Parquet, publish) on DirectRunner, quality gate off so every
                image is scored; measured at two sizes so the marginal rate
                (extra images / extra wall) excludes Beam/TF start-up

Targets (issue): pipeline >= 0.8x raw batched, >= 5x per image. The pipeline
also pays for decoding and preprocessing, which the raw figure excludes.

Run:  cd /work/main && .venv/bin/python -m benchmarks.score_job [--images 200 800] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import cases_for, ground_truth, median, sample_set, table, write_json

REPO = Path(__file__).resolve().parent.parent
BATCH = 64


def _score(uploads: Path, model: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_jobs.score", "--input", str(uploads), "--model_uri", str(model),
                    "--output", str(out), "--date", "2026-11-21", "--quality_gate", "off",
                    "--max_batch_size", str(BATCH), "--force"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.score_job", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, nargs=2, default=[200, 800], help="two partition sizes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    import tensorflow as tf

    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    from schemas.policy import load_policy
    from transforms.score_prep import prepare

    need = max(a.images)
    root = sample_set(cases_for(min_none=need, seed=9), seed=9, size=(640, 480))
    paths = [root / t["image_path"] for t in ground_truth(root) if t["defect"] == "none"][:need]
    work = Path(tempfile.mkdtemp(prefix="bench_score_"))
    vocab = [f"class_{i}" for i in range(9)]
    tf.keras.utils.set_random_seed(0)
    model = build_model(224, len(vocab))
    write_bundle(str(work / "model"), model, {"label_vocabulary": vocab, "version": "bench", "image_size": 224})

    policy = load_policy()
    arrays = np.stack([prepare(p.read_bytes(), policy, image_size=224, crop_fraction=0.875, jpeg_quality=90,
                               gate=False)[1] for p in paths[:min(a.images)]])
    model.predict(arrays[:BATCH], batch_size=BATCH, verbose=0)  # warm-up
    batched, single = [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        model.predict(arrays, batch_size=BATCH, verbose=0)
        batched.append(len(arrays) / (time.perf_counter() - t))
        t = time.perf_counter()
        for x in arrays[:32]:
            model.predict(x[None], verbose=0)
        single.append(32 / (time.perf_counter() - t))

    walls = {}
    for n in a.images:
        uploads = work / f"uploads_{n}" / "dt=2026-11-21"
        uploads.mkdir(parents=True)
        for p in paths[:n]:
            shutil.copy(p, uploads)
        walls[n] = median([_score(uploads.parent, work / "model", work / f"out_{n}") for _ in range(a.repeats)])
    lo, hi = a.images
    marginal = (hi - lo) / (walls[hi] - walls[lo]) if walls[hi] - walls[lo] > 1.0 else float("nan")
    raw, per = median(batched), median(single)
    print(table(["measure", "images/s"], [
        [f"raw model.predict, batches of {BATCH} (preprocessed input)", raw],
        ["raw model.predict, one image per call", per],
        [f"score job, {lo} images incl. start-up ({walls[lo]:.1f} s)", lo / walls[lo]],
        [f"score job, {hi} images incl. start-up ({walls[hi]:.1f} s)", hi / walls[hi]],
        ["score job, marginal (extra images / extra wall)", marginal]],
        title=f"score, baseline CNN at 224 px, DirectRunner, median of {a.repeats}"))
    print(table(["ratio", "value", "target"], [
        ["pipeline marginal / raw batched", marginal / raw, ">= 0.8"],
        ["pipeline marginal / per image", marginal / per, ">= 5"]]))
    write_json(a.json, {"raw_batched_images_per_s": raw, "per_image_images_per_s": per,
                        "job_walls": walls, "marginal_images_per_s": marginal,
                        "ratios": {"vs_raw_batched": marginal / raw, "vs_per_image": marginal / per}})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
