"""curate: which uploads are usable for training and scoring, and why not.

    images (glob | manifest | SCIN cases)
      -> ReadImageRefs      one ImageRef per distinct URI (deferred listing)
      -> AnalyzeImages      one read, one decode, features, quality verdict
      -> ClusterDuplicates  exact + near-duplicate clusters, keep the best
      -> features/*.parquet, dead_letters/*.jsonl, summary.json, report.html, _SUCCESS
      -> alerts.json        an OUTPUT/dt=YYYY-MM-DD partition against the earlier ones beside it
                            (transforms/curate/drift.py); --fail_on_drift fails the job after _SUCCESS

Run: python -m beam_jobs.curate --input 'gs://bucket/uploads/**' --output DIR
"""
from __future__ import annotations

import json
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli import JobFailed, UsageError, execute, main, new_pipeline, runs_on_dataflow
from beam_jobs.options import JobSpec, LockOptions, SharedOptions, allowed_roots, check_spec, lock_options
from schemas import features as F
from schemas.policy import load_policy
from schemas.reasons import DUPLICATE_REASONS
from transforms.io import run_lock
from transforms.io.run_lock import LOCK, MARKER
from transforms.io.allowed_roots import AllowedRoots
from transforms.curate import drift
from transforms.curate.analyze_images import AnalyzeImages
from transforms.curate.duplicates import ClusterDuplicates, pair_distance
from transforms.io.inputs import ReadImageRefs, decode_text, input_glob, parse_manifest, parse_scin_cases
from transforms.io.read import read_bytes
from transforms.curate.report import example_entry, render_report
from transforms.io.sharded_write import WriteSortedShards, jsonl_encoder, parquet_encoder, write_atomically
from transforms.curate.summary import SummarizeRows
from transforms.image.enhance import BEFORE_ENHANCE
from transforms.image.verdict import thresholds



class CurateOptions(SharedOptions, LockOptions):
    """Options of the curate job (also the Flex Template's parameters).

    Also --input, --manifest, --scin_cases, --image_root, --policy and
    --output (features, dead letters, summary, report) from SharedOptions.
    """

    reads = ("input", "manifest", "policy", "output", "scin_cases", "image_root", "allowed_roots")
    spec = JobSpec(required=("output",), one_of=(("input", "manifest", "scin_cases"),),
                   needs={"scin_cases": ("image_root",)},
                   messages={"scin_cases->image_root": "--scin_cases needs --image_root to resolve image paths"})

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--analysis_size", type=int, help="Override the policy's analysis short side, in pixels.")
        parser.add_argument("--dup_radius", type=int, help="Override the near-duplicate pHash Hamming radius (bits).")
        parser.add_argument("--max_pixels", type=int, help="Override the pixel-bomb limit (declared width x height).")
        parser.add_argument("--rows_per_shard", type=int, default=100_000, help="Feature rows per Parquet shard.")
        parser.add_argument("--examples_per_reason", type=int, default=6, help="Example thumbnails per reason in the report.")
        parser.add_argument("--drift_window", type=int, help="When --output ends in dt=YYYY-MM-DD: compare this night with up to this many complete earlier dt= partitions beside it (alerts.json; default: the policy's drift.window_nights, 7).")
        parser.add_argument("--fail_on_drift", action="store_true", default=False, help="Exit non-zero (one line) when alerts.json holds any alert; the outputs, alerts.json and _SUCCESS are written first.")
        parser.add_argument("--enhance", action="store_true", default=False,
                            help="Try the policy's enhancement recipe on photos rejected only for fixable reasons (borderline exposure, contrast, blur) and accept those that then pass, marked enhanced.")


def resolve(options: CurateOptions):
    """Validate options and return the effective quality policy; UsageError if bad."""
    o = options
    check_spec(o, o.spec)
    o.input = input_glob(o.input)  # a folder means everything under it
    allowed_roots(o)  # a bad --allowed_roots fails here, before any work
    lock_options(o)
    for name in ("analysis_size", "dup_radius", "max_pixels", "rows_per_shard", "examples_per_reason", "drift_window"):
        value = getattr(o, name)
        if value is not None and value < (0 if name in ("dup_radius", "examples_per_reason") else 1):
            raise UsageError(f"--{name} must be positive, got {value}")
    if o.dup_radius is not None and o.dup_radius > 20:
        raise UsageError(f"--dup_radius {o.dup_radius} is too wide for 64-bit hashes (max 20)")
    try:
        policy = load_policy(o.policy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    overrides = {k: v for k, v in (("analysis_short_side", o.analysis_size), ("dup_radius", o.dup_radius),
                                   ("max_pixels", o.max_pixels)) if v is not None}
    return policy.with_overrides(**overrides)


def check_inputs_exist(options: CurateOptions) -> None:
    """Fail fast, in one line, when a local run's inputs match nothing or a
    manifest / cases file lists nothing or cannot be parsed.

    Dataflow launches skip this (no listing at construction); there the
    deferred MatchFiles and parsers fail the job with the same message instead.
    """
    for flag in ("input", "manifest", "scin_cases"):
        pattern = getattr(options, flag)
        if not pattern:
            continue
        try:
            found = FileSystems.match([pattern], limits=[None if flag != "input" else 1])[0].metadata_list
        except Exception as e:
            raise UsageError(f"--{flag} {pattern}: cannot list: {e}") from None
        if not found:
            if flag == "input" and FileSystems.match([pattern.rstrip("/") + "/**"], limits=[1])[0].metadata_list:
                raise UsageError(f"--input {pattern} is a folder: end it with / or give a glob "
                                 f"({pattern.rstrip('/')}/**)")
            raise UsageError(f"--{flag} {pattern} matched no files")
        if flag == "input":
            continue
        for meta in found:
            if meta.size_in_bytes == 0:
                raise UsageError(f"--{flag} {meta.path} is empty")
            try:
                # The operator names this file: no roots, but only a regular file (a FIFO would hang).
                data, _retries = read_bytes(meta.path, allowed=AllowedRoots([]))  # retried as the pipeline's reads are
            except Exception as e:
                raise UsageError(f"--{flag} {meta.path}: cannot read: {type(e).__name__}") from None
            try:
                text = decode_text(data, meta.path)
                if flag == "manifest":
                    parse_manifest(text, meta.path, require_rows=True)
                else:
                    parse_scin_cases(text, options.image_root, meta.path)
            except ValueError as e:
                raise UsageError(f"--{flag} {e}") from None


def _report(doc, examples, duplicates, keepers, thumbs, tests, drift=None, enhanced=None) -> str:
    """report.html from the summary and the rows picked for it (see build_pipeline)."""
    keepers = {r["uri"]: r for r in keepers}
    pairs = [{"kind": kind, "distance": pair_distance(r, keepers[r["duplicate_of"]]),
              "keeper": example_entry(keepers[r["duplicate_of"]], tests), "duplicate": example_entry(r, tests)}
             for kind in DUPLICATE_REASONS for r in duplicates.get(kind, []) if r["duplicate_of"] in keepers]
    examples = {label: [example_entry(r, tests) for r in rows] for label, rows in examples.items()}
    return render_report(doc, examples, thumbs, pairs, tests, drift=drift,
                         enhanced=(enhanced or {}).get("enhanced"))


def _drift(doc: dict, output: str, thresholds, window: int) -> dict:
    """alerts.json's document: this partition against the earlier ones beside it."""
    nights, past_alerts = drift.read_baseline(drift.find_baseline(output, window))
    alerts = drift.compare(doc, nights, thresholds, drift.partition_date(output), window, past_alerts)
    beam.metrics.Metrics.counter("curate", "drift_alerts").inc(len(alerts["alerts"]))
    return alerts


def _finalize(_, output, summary, matched, policy_version, written, me, drift_thresholds, drift_window,
              **report_parts):
    """Write summary.json, alerts.json and report.html, drop stale shards,
    then the marker; each step only while this run holds the lock (released
    by the next step)."""
    lock_dir = FileSystems.join(output, LOCK)
    doc = summary.to_dict(matched, policy_version)  # raises if accounting fails
    alerts = _drift(doc, output, drift_thresholds, drift_window)
    run_lock.check(lock_dir, me, output)
    write_atomically(FileSystems.join(output, F.SUMMARY_FILE),
                     json.dumps(doc, indent=2, sort_keys=True).encode())
    write_atomically(FileSystems.join(output, drift.ALERTS_FILE),
                     json.dumps(alerts, indent=2, sort_keys=True).encode())
    write_atomically(FileSystems.join(output, F.REPORT_FILE), _report(doc, drift=alerts, **report_parts).encode())
    keep = set(written)
    run_lock.check(lock_dir, me, output)  # "stale" must never mean another live run's shards
    for sub in (F.FEATURES_DIR, F.DEAD_LETTERS_DIR):
        pattern = FileSystems.join(output, sub, "*")
        stale = [m.path for m in FileSystems.match([pattern])[0].metadata_list if m.path not in keep]
        if stale:
            FileSystems.delete(stale)
    run_lock.check(lock_dir, me, output)
    write_atomically(FileSystems.join(output, MARKER),
                     json.dumps({"matched": doc["matched"], "accepted": doc["accepted"],
                                 "rejected": doc["rejected"]}).encode())
    return doc


def _smallest(n):
    # Smallest (sha256, uri) first: a deterministic pick, the same on a rerun.
    return beam.combiners.Top.PerKey(n, key=lambda r: (r["sha256"], r["uri"]), reverse=True)


def _report_parts(rows, thumbnails, n: int) -> dict:
    """Side inputs of the report: up to n example rows per label (first reason,
    or accepted), n duplicate rows per kind with their keepers, and the
    thumbnails of just those images."""
    examples = (rows
                | "Decoded" >> beam.Filter(lambda r: bool(r.get("phash")))  # these have thumbnails
                | "ByLabel" >> beam.Map(lambda r: (r["reasons"][0] if r["reasons"] else "accepted", r))
                | "ExamplesPerLabel" >> _smallest(n))
    duplicates = (rows
                  | "Duplicates" >> beam.Filter(lambda r: bool(r.get("duplicate_of")))
                  | "ByKind" >> beam.Map(lambda r: (next(k for k in DUPLICATE_REASONS if k in r["reasons"]), r))
                  | "DuplicatesPerKind" >> _smallest(n))
    keeper_uris = (duplicates
                   | "KeeperUris" >> beam.FlatMap(lambda kv: [r["duplicate_of"] for r in kv[1]])
                   | "KeeperUriSet" >> beam.combiners.ToSet())
    enhanced = (rows
                | "Enhanced" >> beam.Filter(lambda r: bool(r.get("enhanced")))
                | "EnhancedKey" >> beam.Map(lambda r: ("enhanced", r))
                | "EnhancedShown" >> _smallest(n))
    keepers = rows | "Keepers" >> beam.Filter(lambda r, want: r["uri"] in want,
                                              want=beam.pvalue.AsSingleton(keeper_uris))
    shown = ((examples | "ExampleUris" >> beam.FlatMap(lambda kv: [r["uri"] for r in kv[1]]),
              duplicates | "DuplicateUris" >> beam.FlatMap(lambda kv: [r["uri"] for r in kv[1]]),
              keepers | "KeeperRowUris" >> beam.Map(lambda r: r["uri"]),
              enhanced | "EnhancedUris" >> beam.FlatMap(
                  lambda kv: [u for r in kv[1] for u in (r["uri"], r["uri"] + BEFORE_ENHANCE)]))
             | "ShownUris" >> beam.Flatten()
             | "ShownUriSet" >> beam.combiners.ToSet())
    thumbs = thumbnails | "ShownThumbnails" >> beam.Filter(lambda kv, want: kv[0] in want,
                                                           want=beam.pvalue.AsSingleton(shown))
    return {"examples": beam.pvalue.AsDict(examples), "duplicates": beam.pvalue.AsDict(duplicates),
            "keepers": beam.pvalue.AsList(keepers), "thumbs": beam.pvalue.AsDict(thumbs),
            "enhanced": beam.pvalue.AsDict(enhanced)}


def build_pipeline(options: CurateOptions, policy, me: dict | None = None) -> beam.Pipeline:
    """The curate pipeline, constructed but not run. `me` names the run in
    its lock (run_lock.new_lock_info); every write waits for the lock."""
    o = options
    out = o.output
    me, lock = me or run_lock.new_lock_info("curate", o.run_id), lock_options(o)
    p = new_pipeline(options, cores=True)
    started = p | "LockOutput" >> run_lock.LockOutput(out, me, lock)

    refs = p | "ReadImageRefs" >> ReadImageRefs(o.input, o.manifest, o.scin_cases, o.image_root)
    analyzed = refs | "AnalyzeImages" >> AnalyzeImages(policy, allowed=allowed_roots(o), enhance=o.enhance)
    rows = analyzed.rows | "ClusterDuplicates" >> ClusterDuplicates(policy.dup_radius, policy.exact_only_for)

    features = rows | "WriteFeatures" >> WriteSortedShards(
        FileSystems.join(out, F.FEATURES_DIR), F.FEATURES_DIR, ".parquet", parquet_encoder(F.SCHEMA),
        key_fn=lambda r: r["uri"], per_shard=o.rows_per_shard, after=started)
    dead = (rows
            | "Rejected" >> beam.Filter(lambda r: r["status"] == "rejected")
            | "WriteDeadLetters" >> WriteSortedShards(
                FileSystems.join(out, F.DEAD_LETTERS_DIR), F.DEAD_LETTERS_DIR, ".jsonl",
                jsonl_encoder(F.DEAD_LETTER_FIELDS), key_fn=lambda r: r["uri"],
                per_shard=o.rows_per_shard, after=started))

    matched = refs | "CountMatched" >> beam.combiners.Count.Globally()
    summary = rows | "Summarize" >> beam.CombineGlobally(SummarizeRows())
    report_parts = _report_parts(rows, analyzed.thumbnails, o.examples_per_reason)
    written = (features, dead) | "AllWrittenFiles" >> beam.Flatten()
    released = p | "Finalize" >> run_lock.FinalizeOutput(
        out, me, _finalize, output=out, policy_version=policy.version,
        summary=beam.pvalue.AsSingleton(summary), matched=beam.pvalue.AsSingleton(matched),
        written=beam.pvalue.AsList(written), me=me, tests=thresholds(policy),
        drift_thresholds=policy.drift, drift_window=o.drift_window or policy.drift.window_nights, **report_parts)
    _ = released | "FailOnDrift" >> beam.Map(_fail_on_drift, output=out, fail=bool(o.fail_on_drift))
    return p


def _fail_on_drift(_released, output: str, fail: bool) -> None:
    """With --fail_on_drift, after the output is complete (marker written,
    lock released): one line and a failed job when alerts.json holds alerts,
    so a scheduler sees it."""
    if not fail:
        return
    with FileSystems.open(FileSystems.join(output, drift.ALERTS_FILE)) as f:
        doc = json.loads(f.read())
    alerts = doc["alerts"]
    if alerts:
        more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
        raise JobFailed(f"drift: {len(alerts)} alert(s) against {len(doc['baseline_dates'])} earlier night(s): "
                        f"{alerts[0]['message']}{more}. The outputs are complete; see "
                        f"{FileSystems.join(output, drift.ALERTS_FILE)}")


def run(argv=None):
    """Parse argv, validate, build and run the curate job; returns the result."""
    options = CurateOptions(argv)
    policy = resolve(options)
    if not runs_on_dataflow(options):
        check_inputs_exist(options)
    me = run_lock.new_lock_info("curate", options.run_id)
    return execute(build_pipeline(options, policy, me), options,
                   f"curate: done. features: {FileSystems.join(options.output, 'features')}  "
                   f"report: {FileSystems.join(options.output, 'report.html')}",
                   on_failure=lambda: run_lock.release_quietly(FileSystems.join(options.output, LOCK), me))


if __name__ == "__main__":
    sys.exit(main(run, prog="curate"))
