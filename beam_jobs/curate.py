"""curate: which uploads are usable for training and scoring, and why not.

    images (glob | manifest | SCIN cases)
      -> ReadImageRefs      one ImageRef per distinct URI (deferred listing)
      -> AnalyzeImages      one read, one decode, features, quality verdict
      -> ClusterDuplicates  exact + near-duplicate clusters, keep the best
      -> features/*.parquet, dead_letters/*.jsonl, summary.json, report.html, _SUCCESS
      -> alerts.json        an OUTPUT/dt=YYYY-MM-DD partition against the earlier ones beside it
                            (transforms/curate/drift.py); --fail_on_drift fails the job after _SUCCESS

Run: python -m beam_jobs.curate --input 'gs://bucket/uploads/**' --output DIR

Nightly, by date partition (as score): --date D (or --start_date/--end_date)
curates INPUT/dt=D/ into OUTPUT/dt=D/, the layout above, one night after the
other in date order; a complete night (its _SUCCESS) is skipped unless
--force. With --reference REF, images accepted on earlier nights are an
index (transforms/curate/reference.py) that each night's uploads are checked
against, and each night's accepted images are appended to it:

    python -m beam_jobs.curate --input gs://b/uploads --output gs://b/curated
        --date yesterday --reference gs://b/curated/_reference
"""
from __future__ import annotations

import json
import os
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli import (JobFailed, UsageError, check_not_another_jobs_output, check_output, check_outputs_not_read,
                           check_rows_per_shard, execute, local_spill_root, main, new_pipeline, refuse_bare_folder,
                           runs_on_dataflow)
from beam_jobs.options import DateOptions, JobSpec, LockOptions, SharedOptions, allowed_roots, check_spec, lock_options
from schemas import features as F
from schemas.policy import QualityPolicy, load_policy
from schemas.reasons import DUPLICATE_REASONS
from transforms.io import run_lock, spill
from transforms.io.run_lock import LOCK, MARKER
from transforms.curate import drift
from transforms.curate.analyze_images import AnalyzeImages
from transforms.curate.duplicates import ClusterDuplicates, pair_distance
from transforms.curate.reference import (COMPACTED, PARTS, RejectEarlierDuplicates, compact_quietly, entry_of,
                                        write_part)
from transforms.io.partitions import (dates_of, list_partition, night_glob, publishable, unlisted_message,
                                      unstatable_matches)
from transforms.io.inputs import ReadImageRefs, input_glob, parse_manifest, parse_scin_cases, read_named_text
from transforms.curate.report import example_entry, render_report
from transforms.io.packing import PackInBundles, unpack
from transforms.io.sharded_write import WriteSortedShards, jsonl_encoder, parquet_encoder, write_atomically
from transforms.curate.summary import SummarizeRows
from transforms.image.enhance import BEFORE_ENHANCE
from transforms.image.verdict import thresholds



class CurateOptions(SharedOptions, LockOptions, DateOptions):
    """Options of the curate job (also the Flex Template's parameters).

    Also --input (with dates: the root holding dt=YYYY-MM-DD/ folders),
    --manifest, --scin_cases, --image_root, --policy and --output (features,
    dead letters, summary, report; with dates one dt=YYYY-MM-DD/ folder of
    them per night) from SharedOptions, and the dates from DateOptions.
    """

    reads = ("input", "manifest", "policy", "output", "scin_cases", "image_root", "allowed_roots")
    spec = JobSpec(required=("output",), one_of=(("input", "manifest", "scin_cases"),),
                   needs={"scin_cases": ("image_root",), "date": ("input",),
                          "start_date": ("end_date", "input"), "end_date": ("start_date", "input")},
                   notes={"date": "Instead of --start_date/--end_date.",
                          "manifest": "Not with --date/--start_date/--end_date (manifest rows carry no date).",
                          "scin_cases": "Not with --date/--start_date/--end_date.",
                          "reference": "Needs --date or --start_date/--end_date."},
                   messages={"scin_cases->image_root": "--scin_cases needs --image_root to resolve image paths",
                             "start_date->end_date": "--start_date and --end_date go together",
                             "end_date->start_date": "--start_date and --end_date go together",
                             **{f"{d}->input": "--date/--start_date need --input, the root of the dt=YYYY-MM-DD/ folders"
                                for d in ("date", "start_date", "end_date")}})

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--analysis_size", type=int, help="Override the policy's analysis short side, in pixels.")
        parser.add_argument("--dup_radius", type=int, help="Override the near-duplicate pHash Hamming radius (bits).")
        parser.add_argument("--max_pixels", type=int, help="Override the pixel-bomb limit (declared width x height).")
        parser.add_argument("--rows_per_shard", type=int, default=100_000, help="Feature rows per Parquet shard (at most 1000000).")
        parser.add_argument("--examples_per_reason", type=int, default=6, help="Example thumbnails per reason in the report (0-100).")
        parser.add_argument("--drift_window", type=int, help="Compare a dt=YYYY-MM-DD night with up to this many complete earlier nights beside it (alerts.json; default: the policy's, 7).")
        parser.add_argument("--fail_on_drift", action="store_true", default=False, help="Fail in one line when alerts.json holds an alert, after every output is written.")
        parser.add_argument("--enhance", action="store_true", default=False,
                            help="Rescue photos rejected only for fixable reasons with the policy's recipe (marked enhanced).")
        parser.add_argument("--reference", help="Index of earlier nights' accepted images (folder, local or gs://): rejects their duplicates; each night is appended.")


# One file of each kind a run writes into OUTPUT (or OUTPUT/dt=D/).
WRITTEN = (MARKER, LOCK, "summary.json", "alerts.json", "report.html",
           f"{F.FEATURES_DIR}/{F.FEATURES_DIR}-00000-of-00001.parquet",
           f"{F.DEAD_LETTERS_DIR}/{F.DEAD_LETTERS_DIR}-00000-of-00001.jsonl")

# Options that override a policy value: (option, QualityPolicy field).
MAX_EXAMPLES_PER_REASON = 100
_POLICY_FLAGS = (("analysis_size", "analysis_short_side"), ("dup_radius", "dup_radius"), ("max_pixels", "max_pixels"))


def resolve(options: CurateOptions):
    """Validate options and return the effective quality policy; UsageError if bad."""
    o = options
    check_spec(o, o.spec)
    dates = dates_of(o)
    if dates:
        if o.manifest or o.scin_cases:
            # A manifest row carries no date: dated runs read dt= folders only.
            raise UsageError("--manifest and --scin_cases cannot be split into date partitions: give --input "
                             "(the root of the dt=YYYY-MM-DD/ folders) with --date/--start_date")
        if any(c in o.input for c in "*?["):
            raise UsageError(f"--input {o.input}: with dates --input is the root of the dt=YYYY-MM-DD/ folders, not a glob")
        o.input = o.input.rstrip("/")
    else:
        if o.reference:
            raise UsageError("--reference needs --date or --start_date/--end_date (index entries carry their night)")
        # Both were accepted here and did nothing: an operator counting on them was never told.
        if o.allow_empty:
            raise UsageError("--allow_empty needs --date or --start_date/--end_date (it marks a night whose dt= folder "
                             "holds no images complete); without dates an --input that matches nothing is an error")
        if (o.drift_window is not None or o.fail_on_drift) and drift.partition_date(o.output) is None:
            raise UsageError("--drift_window and --fail_on_drift compare a night with the complete nights beside it: "
                             "give --date or --start_date/--end_date, or an --output ending in dt=YYYY-MM-DD")
        o.input = input_glob(o.input)  # a folder means everything under it
    allowed_roots(o)  # a bad --allowed_roots fails here, before any work
    check_output(o.reference, "--reference")  # each night appends to it: a file there fails only at the end
    lock_options(o)
    for name in ("examples_per_reason", "drift_window"):
        value = getattr(o, name)
        if value is not None and value < (0 if name == "examples_per_reason" else 1):
            raise UsageError(f"--{name} must be positive, got {value}")
    check_rows_per_shard(o)
    if o.examples_per_reason > MAX_EXAMPLES_PER_REASON:  # thumbnails inlined in report.html
        raise UsageError(f"--examples_per_reason must be at most {MAX_EXAMPLES_PER_REASON}, got {o.examples_per_reason}")
    for flag, field in _POLICY_FLAGS:  # held to the ranges the policy file is
        value = getattr(o, flag)
        _, lo, hi = QualityPolicy.RANGES[field]
        if value is not None and not lo <= value <= hi:
            raise UsageError(f"--{flag} must be within [{lo}, {hi}], got {value}")
    check_outputs_not_read(o.output, [f"dt={d}/{name}" for d in dates for name in WRITTEN] or list(WRITTEN),
                           o.input, dates)
    check_outputs_not_read(o.reference, [f"{PARTS}/dt={d}/part.parquet" for d in dates] + [f"{COMPACTED}/c.parquet"],
                           o.input, dates, "--reference")
    try:
        policy = load_policy(o.policy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    overrides = {field: getattr(o, flag) for flag, field in _POLICY_FLAGS if getattr(o, flag) is not None}
    return policy.with_overrides(**overrides)


def output_of(options, date: str | None) -> str:
    """Where a run writes: OUTPUT, or OUTPUT/dt=DATE/ for a night."""
    return options.output if date is None else partition_output(options.output, date)


def partition_output(output: str, date: str) -> str:
    """OUTPUT/dt=DATE, one night's curate output (the undated layout)."""
    return FileSystems.join(output, f"dt={date}")


def is_complete(output: str) -> bool:
    return FileSystems.exists(FileSystems.join(output, MARKER))


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
        if not found and not (flag == "input" and unstatable_matches(pattern)):
            if flag == "input":
                refuse_bare_folder(pattern)
            raise UsageError(f"--{flag} {pattern} matched no files")
        if flag == "input":
            continue
        for meta in found:
            source = f"--{flag} {meta.path}"
            try:
                text = read_named_text(meta.path, f"--{flag}")  # a FIFO lists as empty: refused here
                if not text:
                    raise ValueError(f"{source} is empty")
                if flag == "manifest":
                    parse_manifest(text, source, require_rows=True)
                else:
                    parse_scin_cases(text, options.image_root, source)
            except ValueError as e:
                raise UsageError(str(e)) from None


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
              reference=None, date=None, entries=(), **report_parts):
    """Write summary.json, alerts.json and report.html, drop stale shards,
    append the night's accepted `entries` to the --reference index, then the
    marker; each step only while this run holds the lock (released by the next
    step). The index part goes before the marker: a complete night always has
    its entries (a run killed in between leaves a part that its rerun supersedes)."""
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
    if reference:
        run_lock.check(lock_dir, me, output)
        write_part(reference, date, list(entries), me)
    run_lock.check(lock_dir, me, output)
    write_atomically(FileSystems.join(output, MARKER),
                     json.dumps({"matched": doc["matched"], "accepted": doc["accepted"],
                                 "rejected": doc["rejected"]}).encode())
    if reference:
        compact_quietly(reference, me)
    return doc


def _smallest(n):
    # Smallest (sha256, uri) first: a deterministic pick, the same on a rerun.
    return beam.combiners.Top.PerKey(n, key=lambda r: (r["sha256"], r["uri"]), reverse=True)


def _sub(spill_dir: str | None, name: str) -> str | None:
    """A step's own folder in the run's spill folder (None: no spill)."""
    return os.path.join(spill_dir, name) if spill_dir else None


def _report_parts(rows, thumbnails, n: int, keeper_dir: str | None = None,
                  thumbnail_dir: str | None = None) -> dict:
    """Side inputs of the report: up to n example rows per label (first reason,
    or accepted), n duplicate rows per kind with their keepers, and the
    thumbnails of just those images. Every row and thumbnail waits for that
    pick: the rows packed, spilled to keeper_dir when given; the thumbnails
    as AnalyzeImages sent them (spilled to thumbnail_dir when given).
    Each folder is removed once read."""
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
    keepers = (rows
               | "PackForKeepers" >> beam.ParDo(PackInBundles(spill=keeper_dir))
               | "Keepers" >> beam.FlatMap(lambda blob, want: [r for r in unpack(spill.load(blob)) if r["uri"] in want],
                                           want=beam.pvalue.AsSingleton(keeper_uris)))
    if keeper_dir:
        _ = keepers | "RemoveKeeperSpill" >> spill.RemoveWhenDone(keeper_dir)
    shown = ((examples | "ExampleUris" >> beam.FlatMap(lambda kv: [r["uri"] for r in kv[1]]),
              duplicates | "DuplicateUris" >> beam.FlatMap(lambda kv: [r["uri"] for r in kv[1]]),
              keepers | "KeeperRowUris" >> beam.Map(lambda r: r["uri"]),
              enhanced | "EnhancedUris" >> beam.FlatMap(
                  lambda kv: [u for r in kv[1] for u in (r["uri"], r["uri"] + BEFORE_ENHANCE)]))
             | "ShownUris" >> beam.Flatten()
             | "ShownUriSet" >> beam.combiners.ToSet())
    thumbs = (thumbnails
              | "ShownThumbnails" >> beam.Filter(lambda kv, want: kv[0] in want, want=beam.pvalue.AsSingleton(shown))
              | "ReadThumbnails" >> beam.Map(lambda kv: (kv[0], spill.load(kv[1]))))
    if thumbnail_dir:
        _ = thumbs | "RemoveThumbnailSpill" >> spill.RemoveWhenDone(thumbnail_dir)
    return {"examples": beam.pvalue.AsDict(examples), "duplicates": beam.pvalue.AsDict(duplicates),
            "keepers": beam.pvalue.AsList(keepers), "thumbs": beam.pvalue.AsDict(thumbs),
            "enhanced": beam.pvalue.AsDict(enhanced)}


def _check_listed(marker, date, input_root, allow_empty):
    # At run time too (a Dataflow launch lists nothing): a night with no
    # folder, or an empty one without --allow_empty, is never marked complete.
    _uris, state = list_partition(date, input_root, None, allow_empty, limit=3)
    if not publishable(state, allow_empty):
        raise UnlistedPartition("curate: " + unlisted_message({date: state}, input_root, None, "curated"))
    return marker


class UnlistedPartition(RuntimeError):
    """A night with no dt= folder, or an empty one without --allow_empty."""


def build_pipeline(options: CurateOptions, policy, me: dict | None = None, date: str | None = None,
                   spill_dir: str | None = None) -> beam.Pipeline:
    """The curate pipeline, constructed but not run. `me` names the run in
    its lock (run_lock.new_lock_info); every write waits for the lock.
    With `date`, it curates the night INPUT/dt=DATE/ into OUTPUT/dt=DATE/.
    With `spill_dir` (a local folder: see run_pipeline), what waits for the
    whole night (the thumbnails, the duplicate search, the writers' rows, the
    rows the report's keeper pick reads) waits there, not in the runner's
    memory."""
    o = options
    out = output_of(o, date)
    glob = night_glob(o.input, date)
    me, lock = me or run_lock.new_lock_info("curate", o.run_id), lock_options(o)
    p = new_pipeline(options, cores=True)
    started = p | "LockOutput" >> run_lock.LockOutput(out, me, lock)
    if date is not None:
        started = started | "CheckListed" >> beam.Map(_check_listed, date, o.input, o.allow_empty)

    refs = p | "ReadImageRefs" >> ReadImageRefs(glob, o.manifest, o.scin_cases, o.image_root,
                                                allow_empty=date is not None and o.allow_empty)
    thumbnail_dir = _sub(spill_dir, "thumbnails")
    analyzed = refs | "AnalyzeImages" >> AnalyzeImages(policy, allowed=allowed_roots(o), enhance=o.enhance,
                                                       spill=thumbnail_dir)
    rows = analyzed.rows | "ClusterDuplicates" >> ClusterDuplicates(policy.dup_radius, policy.exact_only_for,
                                                                    spill=spill_dir)
    reference = o.reference if date is not None else None
    if reference:
        rows = rows | "RejectEarlierNights" >> RejectEarlierDuplicates(
            reference, date, policy.dup_radius, policy.exact_only_for)

    features = rows | "WriteFeatures" >> WriteSortedShards(
        FileSystems.join(out, F.FEATURES_DIR), F.FEATURES_DIR, ".parquet", parquet_encoder(F.SCHEMA),
        key_fn=lambda r: r["uri"], per_shard=o.rows_per_shard, after=started, spill=_sub(spill_dir, "features"))
    dead = (rows
            | "Rejected" >> beam.Filter(lambda r: r["status"] == "rejected")
            | "WriteDeadLetters" >> WriteSortedShards(
                FileSystems.join(out, F.DEAD_LETTERS_DIR), F.DEAD_LETTERS_DIR, ".jsonl",
                jsonl_encoder(F.DEAD_LETTER_FIELDS), key_fn=lambda r: r["uri"],
                per_shard=o.rows_per_shard, after=started, spill=_sub(spill_dir, "dead_letters")))

    matched = refs | "CountMatched" >> beam.combiners.Count.Globally()
    summary = rows | "Summarize" >> beam.CombineGlobally(SummarizeRows())
    report_parts = _report_parts(rows, analyzed.thumbnails, o.examples_per_reason,
                                 _sub(spill_dir, "keepers"), thumbnail_dir)
    written = (features, dead) | "AllWrittenFiles" >> beam.Flatten()
    if reference:
        exact_only = tuple(policy.exact_only_for)
        entries = beam.pvalue.AsList(
            rows
            | "AcceptedRows" >> beam.Filter(lambda r: r["status"] == "accepted")
            | "IndexEntries" >> beam.Map(entry_of, date, exact_only))
        report_parts.update(reference=reference, date=date, entries=entries)
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


def run_partitions(options: CurateOptions, policy, dates: list[str]):
    """Curate each night of `dates` not yet complete (all with --force), in
    date order, each as one pipeline into OUTPUT/dt=D/: a night's index
    entries are in --reference before the next night is matched against it,
    so a backfill gives what the nightly runs gave. Local runs check every
    night's listing before any work; a Dataflow launch (which must not wait
    for its job, nor list at launch) takes one night, checked at run time."""
    o = options
    local = not runs_on_dataflow(o)
    # A Dataflow launch touches no storage: it recurates its night even when
    # complete (the same bytes: a night is matched against earlier ones only).
    todo = dates if o.force or not local else [d for d in dates if not is_complete(partition_output(o.output, d))]
    done = [d for d in dates if d not in todo]
    if done:
        print(f"curate: skipping {len(done)} partition(s) already complete: "
              + ", ".join(f"dt={d}" for d in done) + "; --force recurates them", file=sys.stderr)
    if local:
        states = {d: list_partition(d, o.input, None, o.allow_empty, limit=3)[1] for d in todo}
        bad = {d: s for d, s in states.items() if not publishable(s, o.allow_empty)}
        if bad:
            raise UsageError(unlisted_message(bad, o.input, None, "curated"))
    elif len(todo) > 1:
        raise UsageError(f"a Dataflow launch curates one night, and {len(todo)} are to do "
                         f"({todo[0]}..{todo[-1]}): launch one per --date, in date order (the Airflow DAG does)")
    result = None
    for d in todo:
        result = run_pipeline(o, policy, date=d)
    return result


def run_pipeline(options: CurateOptions, policy, date: str | None = None):
    """Build and execute one curate pipeline (one night with `date`). A
    local run spills into a folder of its own under the temp folder
    (local_spill_root), removed when the run ends, also when it fails; a
    killed run's is removed by the next run on the machine."""
    o = options
    me = run_lock.new_lock_info("curate", o.run_id)
    out = output_of(o, date)
    root = local_spill_root(o)
    # Made now: an unwritable temp folder fails the run before any work.
    spill_dir = spill.run_directory(root, "curate") if root else None
    try:
        return execute(build_pipeline(o, policy, me, date=date, spill_dir=spill_dir), o,
                       f"curate: {'' if date is None else f'dt={date} '}done. "
                       f"features: {FileSystems.join(out, 'features')}  report: {FileSystems.join(out, 'report.html')}",
                       on_failure=lambda: run_lock.release_quietly(FileSystems.join(out, LOCK), me))
    finally:
        if spill_dir:
            spill.remove(spill_dir)


def run(argv=None):
    """Parse argv, validate, build and run the curate job; returns the result
    (with dates, the last night's)."""
    options = CurateOptions(argv)
    policy = resolve(options)
    if not runs_on_dataflow(options):
        check_not_another_jobs_output(options.output, "curate")
    dates = dates_of(options)
    if dates:
        return run_partitions(options, policy, dates)
    if not runs_on_dataflow(options):
        check_inputs_exist(options)
    return run_pipeline(options, policy)


if __name__ == "__main__":
    sys.exit(main(run, prog="curate"))
