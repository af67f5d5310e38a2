"""Score a curate run against the sample generator's ground truth.

    python -m beam_jobs.evaluate_curate --curated OUT --ground_truth GT.csv --image_root ROOT

Prints precision and recall of every rejection reason and the rejection rate of
defect-free images per Monk tone (the fairness check), and returns them.
"""
from __future__ import annotations

import csv
import json
import sys

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli import OneLineParser, UsageError, check_replaceable, is_json_object_with
from beam_jobs.cli import main as cli_main
from schemas.features import features_glob
from schemas.reasons import REASONS
from transforms.io.inputs import join_root, normalize_uri, read_named_text


def load_features(curated: str) -> dict[str, dict]:
    """uri -> row, from every features shard of a curate output."""
    paths = [m.path for m in FileSystems.match([features_glob(curated)])[0].metadata_list]
    rows = {}
    for path in sorted(paths):
        with FileSystems.open(path) as f:
            # use_threads=False: pyarrow's thread pool can abort the process at exit
            # when Beam is loaded too (seen here about half the time).
            for row in pq.read_table(f, use_threads=False).to_pylist():
                rows[row["uri"]] = row
    return rows


def evaluate(rows: dict[str, dict], truth: list[dict], image_root: str) -> dict:
    """Per-reason precision/recall and defect-free rejection rate per Monk tone."""
    stats = {r: {"tp": 0, "fp": 0, "fn": 0} for r in REASONS}
    tones: dict[str, list[int]] = {}
    missing = []
    rows = {normalize_uri(u): r for u, r in rows.items()}  # relative and absolute paths meet
    for t in truth:
        row = rows.get(normalize_uri(join_root(image_root, t["image_path"])))
        if row is None:
            missing.append(t["image_path"])
            continue
        expected = set(filter(None, t["expected_reasons"].split(";")))
        got = set(row["reasons"])
        for r in REASONS:
            if r in got and r in expected:
                stats[r]["tp"] += 1
            elif r in got:
                stats[r]["fp"] += 1
            elif r in expected:
                stats[r]["fn"] += 1
        if t["expected_status"] == "accepted" and t["monk_tone"]:
            cell = tones.setdefault(t["monk_tone"], [0, 0])
            cell[0] += 1
            cell[1] += row["status"] == "rejected"
    per_reason = {}
    for r, s in stats.items():
        if s["tp"] + s["fp"] + s["fn"]:
            per_reason[r] = {
                "precision": s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else 0.0,
                "recall": s["tp"] / (s["tp"] + s["fn"]) if s["tp"] + s["fn"] else 0.0, **s}
    rates = {k: v[1] / v[0] for k, v in sorted(tones.items(), key=lambda kv: int(kv[0]))}
    return {"per_reason": per_reason,
            "defect_free_rejection_by_monk": rates,
            "defect_free_counts_by_monk": {k: tones[k][0] for k in rates},
            "fairness_spread_pp": 100 * (max(rates.values()) - min(rates.values())) if len(rates) > 1 else None,
            "not_in_output": missing}


def format_report(result: dict) -> str:
    lines = ["reason               precision  recall    tp   fp   fn"]
    for r, m in result["per_reason"].items():
        lines.append(f"{r:<20} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['tp']:>5} {m['fp']:>4} {m['fn']:>4}")
    lines.append("defect-free rejection rate by Monk tone: " + "  ".join(
        f"{k}:{100 * v:.1f}%" for k, v in result["defect_free_rejection_by_monk"].items()))
    if len(result["defect_free_rejection_by_monk"]) < 2:
        # A spread needs two tones; 0.0 would read as perfectly fair.
        lines.append("spread across tones: n/a (defect-free images of fewer than 2 tones)")
    else:
        lines.append(f"spread across tones: {result['fairness_spread_pp']:.1f} percentage points")
    if result.get("not_in_output"):
        lines.append(f"not in the curate output: {len(result['not_in_output'])} ground-truth images")
    return "\n".join(lines)


def run(argv=None) -> dict:
    """Parse argv, score the curate output, print the report; returns the metrics."""
    ap = OneLineParser(prog="python -m beam_jobs.evaluate_curate", description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--curated", required=True, help="curate --output directory")
    ap.add_argument("--ground_truth", required=True, help="ground_truth.csv from beam_jobs.sample_data")
    ap.add_argument("--image_root", required=True, help="the root image paths in ground truth are relative to")
    ap.add_argument("--json", help="also write the metrics here")
    a = ap.parse_args(argv)
    if a.json:
        check_replaceable(a.json, "--json", "evaluate_curate metrics", is_json_object_with("per_reason"))
    try:
        truth = list(csv.DictReader(read_named_text(a.ground_truth, "--ground_truth").splitlines()))
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        rows = load_features(a.curated)
    except Exception as e:
        raise UsageError(f"cannot read inputs: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not rows:
        raise UsageError(f"no features found under {a.curated}/features")
    result = evaluate(rows, truth, a.image_root)
    if len(result["not_in_output"]) == len(truth):
        # Scores over nothing would read as perfect (a 0.0-point spread).
        example = f" (e.g. {join_root(a.image_root, truth[0]['image_path'])})" if truth else ""
        raise UsageError(f"none of the {len(truth)} ground-truth images is in {a.curated}'s "
                         f"{len(rows)} rows{example}: check --image_root")
    print(format_report(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def main(argv=None) -> int:
    return cli_main(run, argv, prog="evaluate_curate")


if __name__ == "__main__":
    sys.exit(main())
