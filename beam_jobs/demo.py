"""make demo: the jobs end to end on generated sample data, locally.

    python -m beam_jobs.demo --out demo_output [--cases 400] [--seed 7] [--epochs 20] [--image_size 128]

Generates a labelled SCIN-format sample set, runs curate over it on
DirectRunner and scores it against the ground truth, turns the accepted,
labelled images into leak-free TFRecord splits with make_tfrecords, trains the
baseline CNN on them, evaluates it on the frozen validation split (sliced by
skin tone, with bootstrap intervals) and prints its headline against chance
and the majority class, lays the uploads out as two nightly dt=YYYY-MM-DD/
partitions and scores them as a backfill, and prints where every output is.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

from beam_jobs import curate
from beam_jobs.cli import OneLineParser, UsageError, clear_own_outputs, seed_arg
from beam_jobs.cli import main as cli_main
from beam_jobs.evaluate_curate import evaluate, format_report, load_features


# A quarter of the labelled images go to validation (the default is a
# tenth): ~80 examples instead of ~25, so the headline's 95% interval is
# narrow enough to say whether the baseline beats the majority class.
SPLIT_FRACTIONS = "0.65,0.25,0.1"


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def headline(doc: dict) -> str:
    """One line: accuracy with its 95% interval against chance (1/classes) and
    the majority class's rate on the same examples, and macro AUROC."""
    whole = next(s for s in doc["slices"] if s["family"] == "all")["metrics"]["model"]
    support = [c["support"] for c in doc["overall"]["model"]["per_class"].values()]
    acc, auroc = whole["accuracy"], whole["macro_auroc"]
    majority = max(support) / sum(support)
    lo, hi = acc["ci95"] or (float("nan"),) * 2
    beats = "beats" if lo > majority else "does NOT clearly beat"
    return (f"baseline on {sum(support)} validation examples: accuracy {acc['value']:.3f} [{lo:.3f}, {hi:.3f}] "
            f"{beats} the majority class {majority:.3f} and chance {1 / len(doc['label_vocabulary']):.3f}; "
            f"macro AUROC {auroc['value']:.3f}")


# What the demo writes under --out, each replaced on a rerun.
OUTPUTS = ("sample", "curate", "tfrecords", "model", "uploads", "scores", "evaluate")


def clear_out(out: str) -> None:
    """Remove an earlier demo's outputs from `out`; refuse a folder holding
    anything else (--out used to be deleted whole)."""
    clear_own_outputs(out, OUTPUTS, "--out", "demo")


def main(argv=None) -> int:
    return cli_main(run, argv, prog="demo")


def run(argv=None) -> int:
    ap = OneLineParser(prog="demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_output",
                    help="where everything is written: a new or empty folder, or an earlier demo's (replaced)")
    ap.add_argument("--cases", type=int, default=400, help="SCIN cases to generate (~2 images each)")
    ap.add_argument("--seed", type=seed_arg, default=7, help="sample data seed")
    ap.add_argument("--epochs", type=int, default=20, help="baseline training epochs")
    ap.add_argument("--image_size", type=int, default=128,
                    help="model input side, px (128 keeps CPU training in seconds; the jobs default to 224)")
    a = ap.parse_args(argv)
    if a.cases < 10:
        raise UsageError(f"--cases must be at least 10, got {a.cases}")
    out = os.path.abspath(a.out)
    start = time.monotonic()
    clear_out(out)
    sample, curated = os.path.join(out, "sample"), os.path.join(out, "curate")
    records = os.path.join(out, "tfrecords")
    model, uploads, scores, evaluation = (os.path.join(out, d) for d in ("model", "uploads", "scores", "evaluate"))

    t = _step(f"1/6 sample data: {a.cases} SCIN cases, seed {a.seed}")
    from beam_jobs.sample_data import generate
    generate(sample, cases=a.cases, seed=a.seed)
    print(f"   took {time.monotonic() - t:.1f}s")

    t = _step("2/6 curate on DirectRunner")
    curate.run(["--scin_cases", os.path.join(sample, "dataset", "scin_cases.csv"),
                "--image_root", sample, "--output", curated])
    summary = json.load(open(os.path.join(curated, "summary.json")))
    print(f"   took {time.monotonic() - t:.1f}s: {summary['matched']} images, "
          f"{summary['accepted']} accepted, {summary['rejected']} rejected {summary['reasons']}")
    import csv
    truth = list(csv.DictReader(open(os.path.join(sample, "ground_truth.csv"))))
    print("\n   curate against the generator's ground truth:")
    print("   " + format_report(evaluate(load_features(curated), truth, sample)).replace("\n", "\n   "))

    t = _step("3/6 make_tfrecords: labels, leak-free splits, tf.Transform, TFRecords")
    from beam_jobs import make_tfrecords
    from schemas.examples import dataset_info
    make_tfrecords.run(["--curated", curated, "--scin_cases", os.path.join(sample, "dataset", "scin_cases.csv"),
                        "--scin_labels", os.path.join(sample, "dataset", "scin_labels.csv"),
                        "--image_root", sample, "--output", records,
                        "--image_size", str(a.image_size), "--split_fractions", SPLIT_FRACTIONS])
    info = dataset_info(records)
    print(f"   took {time.monotonic() - t:.1f}s: " + ", ".join(
        f"{s} {v['examples']}" for s, v in info["splits"].items()) +
        f" examples; {len(info['label_vocabulary'])} classes; excluded {info['dead_letters']}")
    if any(info["missing_from"].values()):
        print(f"   classes missing from a split: {info['missing_from']}")

    t = _step("4/6 train_baseline: a compact CNN on the train split (CPU)")
    from beam_jobs import train_baseline
    trained = train_baseline.run(["--tfrecords", records, "--output", model, "--epochs", str(a.epochs)])
    print(f"   took {time.monotonic() - t:.1f}s: {trained}")

    t = _step("5/6 evaluate: the baseline on the frozen validation split, sliced by skin tone")
    from beam_jobs import evaluate as evaluate_job
    from schemas import metrics as M
    evaluate_job.run(["--tfrecords", records, "--model_uri", model, "--output", evaluation])
    doc = M.load(evaluation)
    print(f"   took {time.monotonic() - t:.1f}s")
    print("   " + headline(doc))
    print(f"   report: {os.path.join(evaluation, 'report.html')}")
    for s in doc["slices"]:
        if s["family"] == "monk_group":
            acc = s["metrics"]["model"]["accuracy"]
            ci = acc["ci95"] or [float("nan")] * 2
            print(f"   monk_group={s['value']:<7} n={s['n']:<4} accuracy {acc['value']:.3f} "
                  f"[{ci[0]:.3f}, {ci[1]:.3f}]{'  (below min n)' if s['below_min_n'] else ''}")

    t = _step("6/6 score: backfill of two nightly partitions with RunInference")
    images = sorted(os.listdir(os.path.join(sample, "dataset", "images")))
    dates = ("2026-11-20", "2026-11-21")
    for i, name in enumerate(images):
        folder = os.path.join(uploads, f"dt={dates[i % 2]}")
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(sample, "dataset", "images", name), folder)
    from beam_jobs import score
    score.run(["--input", uploads, "--model_uri", model, "--output", scores,
               "--start_date", dates[0], "--end_date", dates[1]])
    for d in dates:
        marker = [os.path.join(r, "_SUCCESS") for r, _d, f in os.walk(os.path.join(scores, "predictions", f"dt={d}"))
                  if "_SUCCESS" in f]
        print(f"   dt={d}: {open(marker[0]).read()}")
    print(f"   took {time.monotonic() - t:.1f}s")

    print("\n== outputs")
    for label, path in [("sample images", os.path.join(sample, "dataset", "images")),
                        ("SCIN metadata", os.path.join(sample, "dataset")),
                        ("ground truth", os.path.join(sample, "ground_truth.csv")),
                        ("features (Parquet)", os.path.join(curated, "features")),
                        ("dead letters", os.path.join(curated, "dead_letters")),
                        ("summary", os.path.join(curated, "summary.json")),
                        ("report (open in a browser)", os.path.join(curated, "report.html")),
                        ("TFRecords + transform_fn", records),
                        ("dataset info", os.path.join(records, "dataset_info.json")),
                        ("baseline model", model),
                        ("evaluation (metrics.json)", os.path.join(evaluation, "metrics.json")),
                        ("evaluation report", os.path.join(evaluation, "report.html")),
                        ("predictions (dt=/model= partitions)", os.path.join(scores, "predictions")),
                        ("score dead letters", os.path.join(scores, "dead_letters"))]:
        print(f"   {label:<28} {path}")
    print(f"\n== done in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
