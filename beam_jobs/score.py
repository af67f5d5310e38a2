"""score: bulk model scoring into idempotent date partitions.

    dates (--date | --start_date..--end_date), each dt=YYYY-MM-DD/ under --input
      -> SkipComplete        partitions already complete for this model version
                             are skipped unless --force (checked at run time)
      -> ListPartitions      deferred listing, then a reshuffle
      -> Score               ScoreImages: Prepare (one decode; quality gate,
                             curate's policy; the training path's crop/resize/
                             JPEG/decode), then RunInference, batched, model
                             loaded once per process (or shared), then rows
      -> staged shards       Parquet (+ dead-letter JSONL) under _staging/RUN/,
                             then per partition
                             moved into predictions/dt=D/model=V/ (dead letters
                             into dead_letters/dt=D/model=V/, outside the
                             hive-partitioned predictions tree) and _SUCCESS
                             written last; a partition that listed no images is
                             not published (unless --allow_empty) and the job
                             then fails naming it

Run: python -m beam_jobs.score --input gs://b/uploads --model_uri gs://b/models/m1
         --output gs://b/scores --date 2026-11-21 [--force]
"""
from __future__ import annotations

import datetime as dt
import logging
import sys
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli import (MAX_PREPARE_THREADS, UsageError, check_batching, check_not_another_jobs_output,
                           check_outputs_not_read, check_rows_per_shard, execute, main, new_pipeline, quiet_tensorflow,
                           refuse_bare_folder, runs_on_dataflow)
from beam_jobs.options import DateOptions, JobSpec, LockOptions, SharedOptions, allowed_roots, check_spec, load_model_info, lock_options
from schemas import predictions as P
from schemas.model_bundle import image_settings
from schemas.policy import load_policy
from transforms.io import run_lock
from transforms.io.inputs import input_glob
from transforms.io.run_lock import LOCK, MARKER
from transforms.io.sharded_write import WriteGroupedShards, jsonl_encoder, parquet_encoder, shard_name
from transforms.scoring.publish import claim_partition, drop_staging, is_complete, partition_lock_dir, publish_partition
from transforms.io.partitions import (EMPTY, FOUND, MAX_DATES, MISSING, RELATIVE_DATES, UNDATED,  # noqa: F401
                                      dates_of, list_partition, list_refs, parse_date, publishable,
                                      unlisted_message)
from transforms.scoring.rows import partition_of
from transforms.scoring.score_images import ScoreImages
from transforms.image.skin_crop import CROPS

MODEL_CROP = "model"  # --crop default: the bundle's own crop (schemas.model_bundle.image_settings)


class ScoreOptions(SharedOptions, LockOptions, DateOptions):
    """Options of the score job (also the Flex Template's parameters).

    Also --input (with dates: the root holding dt=YYYY-MM-DD/ folders),
    --manifest, --policy and --output from SharedOptions.
    """

    reads = ("input", "manifest", "policy", "output", "allowed_roots")
    # Dates are optional (without them --input is a plain glob) and need
    # --input; --manifest is refused with dates (validate: its rows carry none).
    spec = JobSpec(
        required=("model_uri", "output"), one_of=(("input", "manifest"),),
        needs={"date": ("input",), "start_date": ("end_date", "input"), "end_date": ("start_date", "input")},
        notes={"date": "Instead of --start_date/--end_date.",
               "manifest": "Not with --date/--start_date/--end_date (manifest rows carry no date)."},
        messages={"one_of": "give --input (a glob, or with dates the root of dt=YYYY-MM-DD/ folders) or --manifest",
                  "start_date->end_date": "--start_date and --end_date go together",
                  "end_date->start_date": "--start_date and --end_date go together",
                  **{f"{d}->input": "--date/--start_date need --input, the root of the dt=YYYY-MM-DD/ folders"
                     for d in ("date", "start_date", "end_date")}})

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--model_uri", help="Model directory (model.keras + model_info.json) or the .keras file, local or gs://.")
        parser.add_argument("--crop", default=MODEL_CROP, choices=[MODEL_CROP, *CROPS],
                            help="model: as make_tfrecords cut the model's training images (its bundle's "
                                 "trained_on.sources.crop; center when the bundle does not say); center; or skin "
                                 "(a square around the main skin region, the centre crop where none is found). "
                                 "Rows say which square was cut in crop_used.")
        parser.add_argument("--quality_gate", default="on", choices=["on", "off"], help="Skip images curate's policy would reject (status skipped_quality).")
        parser.add_argument("--enhance", action="store_true", default=False, help="Images the quality gate rejects only for fixable reasons get curate's enhancement recipe (the policy's enhance entry) and are scored on the enhanced input if it then passes, exactly as make_tfrecords prepares curate's enhanced images (column enhanced). Needs --quality_gate on.")
        parser.add_argument("--top_k", type=int, default=3, help="Labels per row in top_labels.")
        parser.add_argument("--min_batch_size", type=int, help="RunInference minimum batch size. Default: --max_batch_size (fixed-size batches, fastest per image on CPU; Beam's adaptive sizing settled at 8-9 images here, 1.4x slower).")
        parser.add_argument("--max_batch_size", type=int, default=64, help="RunInference maximum batch size, at most 1024 (a batch is held in memory).")
        parser.add_argument("--prepare_threads", type=int, default=2, help="Threads per worker process that read and preprocess images ahead of inference (overlaps I/O and decoding with the model), 1 to 64.")
        parser.add_argument("--share_model", action="store_true", default=False, help="Load one model per machine shared by its processes.")
        parser.add_argument("--rows_per_shard", type=int, default=200_000, help="Prediction rows per Parquet file (at most 1000000).")


def validate(o: ScoreOptions):
    if o.date and (o.start_date or o.end_date):  # the spec's note on --date: one form or the other
        raise UsageError("give --date or --start_date/--end_date, not both")
    check_spec(o, o.spec)
    if o.input and not (o.date or o.start_date or o.end_date):
        # A folder means everything under it, as in curate: listed as it was
        # given, the folder itself was the night's one "image" (a
        # not_a_regular_file dead letter) and the run ended complete.
        o.input = input_glob(o.input)
    allowed_roots(o)  # a bad --allowed_roots fails here, before any work
    lock_options(o)
    dates = dates_of(o)
    if dates and o.manifest:
        # A manifest row carries no date: copying it into every partition scored
        # each image once per date. Dated runs read dt= folders only.
        raise UsageError("--manifest cannot be split into date partitions: give --input (the root of the "
                         "dt=YYYY-MM-DD/ folders) with --date/--start_date, or --manifest without dates")
    if o.enhance and o.quality_gate != "on":
        raise UsageError("--enhance needs --quality_gate on: the gate decides which images the recipe may rescue")
    check_batching(o, ("top_k", "prepare_threads"))
    check_rows_per_shard(o)
    if o.prepare_threads > MAX_PREPARE_THREADS:
        raise UsageError(f"--prepare_threads must be at most {MAX_PREPARE_THREADS}, got {o.prepare_threads}")
    check_outputs_not_read(o.output, [name.format(d=d) for d in dates or [UNDATED] for name in WRITTEN], o.input, dates)
    try:
        policy = load_policy(o.policy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return dates, policy


# One file of each kind a run writes into OUTPUT, for partition {d} (a model version stands in as v).
WRITTEN = ("predictions/dt={d}/model=v/" + MARKER, "predictions/dt={d}/model=v/predictions-00000-of-00001.parquet",
           "predictions/_locks/dt={d}/model=v/" + LOCK, "dead_letters/dt={d}/model=v/dead_letters-00000-of-00001.jsonl",
           "_staging/run/dt={d}/predictions-00000-of-00001.parquet")


LISTING = "listing"


def _list_partition(partition, input_root, manifest, allow_empty):
    """(partition, uri, image_id) for every image of one partition, listed at
    run time, and (partition, FOUND | EMPTY | MISSING) on LISTING."""
    refs, state = list_refs(partition, input_root, manifest, allow_empty)
    if state == MISSING:
        logging.warning("score: dt=%s has no folder under %s: not scored, not marked complete", partition, input_root)
    yield beam.pvalue.TaggedOutput(LISTING, (partition, state))
    for uri in sorted(refs):
        yield partition, uri, refs[uri]


def _publishable(state: str | None, allow_empty: bool) -> bool:
    return publishable(state, allow_empty)


def _unlisted_message(states: dict, input_root: str | None, manifest: str | None) -> str:
    return unlisted_message(states, input_root, manifest, "scored")


class UnlistedPartitions(RuntimeError):
    """Raised at the end of a run in which some partitions listed no images."""


def _fail_on_unlisted(_published, states: dict, allow_empty: bool, input_root, manifest, release=None):
    # After the other partitions are published: a night with no uploads fails
    # the job (rc != 0, the message in its log) instead of looking scored.
    bad = {d: s for d, s in states.items() if not _publishable(s, allow_empty)}
    for d in sorted(bad) if release else ():
        release(d)  # never published, so never released by ReleaseLocks
    if bad:
        raise UnlistedPartitions("score: " + _unlisted_message(bad, input_root, manifest))
    return sorted(states)


def build_pipeline(o: ScoreOptions, dates: list[str], policy, info: dict, me: dict | None = None) -> beam.Pipeline:
    """The score pipeline, constructed but not run. `me` names the run in the
    partitions' locks (run_lock.new_lock_info)."""
    version, vocabulary, model_sha256 = info["version"], list(info["label_vocabulary"]), info.get("model_sha256")
    settings = image_settings(info)  # the model sees images made as its training images were
    if o.crop != MODEL_CROP:
        settings["crop"] = o.crop
    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # a UTC TIMESTAMP column
    # Beside predictions/, not in it: readers of that tree (BigQuery external
    # tables, pyarrow.dataset) see only published partitions, even mid-run.
    staging = FileSystems.join(o.output, "_staging", uuid.uuid4().hex)
    partitions = dates or [UNDATED]
    force, output = o.force, o.output
    me, lock = me or run_lock.new_lock_info("score", o.run_id), lock_options(o)

    allow_empty, input_root, manifest = o.allow_empty, o.input, o.manifest

    p = new_pipeline(o)
    # Each partition is locked before anything about it is decided or written.
    todo = (p
            | "Partitions" >> beam.Create(partitions)
            | "SkipComplete" >> beam.Filter(claim_partition, output, version, force, me, lock, model_sha256))
    listed = todo | "ListPartitions" >> beam.FlatMap(
        _list_partition, input_root, manifest, allow_empty).with_outputs(LISTING, main="images")
    images = listed.images | "Reshuffle" >> beam.Reshuffle()
    states = beam.pvalue.AsDict(listed[LISTING])
    rows = images | "Score" >> ScoreImages(
        o.model_uri, vocabulary, version, scored_at, policy=policy, settings=settings,
        gate=o.quality_gate == "on", allowed=allowed_roots(o), top_k=o.top_k, min_batch_size=o.min_batch_size,
        max_batch_size=o.max_batch_size, share_model=o.share_model, prepare_threads=o.prepare_threads,
        enhance=o.enhance, model_sha256=model_sha256)

    status_counts = (rows
                     | "StatusOf" >> beam.Map(lambda r: ((partition_of(r), r["status"]), 1))
                     | "CountStatus" >> beam.CombinePerKey(sum)
                     | "StatusList" >> beam.combiners.ToList()
                     | "StatusDict" >> beam.Map(_nest))
    # Steps that need side inputs computed from `todo`'s own descendants start
    # from a fresh root; consuming `todo` directly would fuse them into the
    # stage that produces those side inputs and deadlock it.
    todo_list = todo | "TodoList" >> beam.combiners.ToList()
    todo_again = (p
                  | "AfterScoring" >> beam.Create([None])
                  | "Todo" >> beam.FlatMap(lambda _, t: t, t=beam.pvalue.AsSingleton(todo_list)))

    def staged(prefix, suffix):
        return lambda d, i, n: FileSystems.join(staging, f"dt={d}", shard_name(prefix, i, n, suffix))

    by_partition = rows | "ByPartition" >> beam.Map(lambda r: (partition_of(r), r))
    written = by_partition | "WriteStaged" >> WriteGroupedShards(
        staged("predictions", ".parquet"), parquet_encoder(P.SCHEMA), key_fn=lambda r: r["uri"],
        per_shard=o.rows_per_shard, groups=todo_again)
    dead = (by_partition
            | "Failed" >> beam.Filter(lambda pr: pr[1]["status"] == "failed")
            | "WriteStagedDeadLetters" >> WriteGroupedShards(
                staged("dead_letters", ".jsonl"), jsonl_encoder(list(P.DEAD_LETTER_FIELDS)),
                key_fn=lambda r: r["uri"], per_shard=o.rows_per_shard))
    all_written = (written, dead) | "AllStaged" >> beam.Flatten()
    _ = (todo_again
         | "OnlyListed" >> beam.Filter(lambda d, st: _publishable(st.get(d), allow_empty), st=states)
         | "Publish" >> beam.Map(
             lambda d, w, sc: publish_partition(d, output, version, sc, w, me, model_sha256),
             w=beam.pvalue.AsList(all_written), sc=beam.pvalue.AsSingleton(status_counts))
         | "ReleaseLocks" >> beam.Map(lambda d: (run_lock.release_own(partition_lock_dir(output, d, version), me), d)[1])
         | "AllPublished" >> beam.combiners.ToList()
         | "DropStaging" >> beam.Map(lambda _: drop_staging(staging))
         | "FailOnUnlisted" >> beam.Map(_fail_on_unlisted, states, allow_empty, input_root, manifest,
                                        release=lambda d: run_lock.release_own(partition_lock_dir(output, d, version), me)))
    return p


def check_partitions(o: ScoreOptions, dates: list[str], version: str, model_sha256: str | None = None) -> None:
    """Before any work (where the launcher can list the input: local runs;
    a Dataflow launch builds without touching storage, and its pipeline does
    the same checks at run time): say which complete partitions are skipped,
    and refuse, in one line, partitions with no images to score."""
    todo = dates or [UNDATED]
    if not o.force:  # an undated run too: it said only "done", whatever --input now matched
        done = [d for d in todo if is_complete(o.output, d, version, model_sha256)]
        if done:
            print(f"score: skipping {len(done)} partition(s) already complete for model {version}: "
                  + ", ".join(f"dt={d}" for d in done) + "; --force rescores them", file=sys.stderr)
        todo = [d for d in todo if d not in done]
    states = {}
    for d in todo:
        try:
            # a few names tell found from empty: the pipeline lists in full
            _uris, states[d] = list_partition(d, o.input, o.manifest, o.allow_empty, limit=3)
        except ValueError as e:  # an unparseable or empty manifest
            raise UsageError(f"{e} (--allow_empty accepts an empty manifest)" if "is empty" in str(e)
                             else str(e)) from None
    bad = {d: s for d, s in states.items() if not _publishable(s, o.allow_empty)}
    if UNDATED in bad and o.input and not o.manifest:
        refuse_bare_folder(o.input)
    if bad:
        raise UsageError(_unlisted_message(bad, o.input, o.manifest))


def _nest(kvs) -> dict:
    out: dict = {}
    for (partition, status), n in kvs:
        out.setdefault(partition, {})[status] = n
    return out


def run(argv=None):
    """Parse argv, validate (model included), build and run the score job."""
    options = ScoreOptions(argv)
    dates, policy = validate(options)
    quiet_tensorflow()  # the model is Keras: load TensorFlow without its start-up lines
    info = load_model_info(options.model_uri)
    trained_crop = image_settings(info)["crop"]
    if options.crop not in (MODEL_CROP, trained_crop):
        # Allowed (a comparison run), but never silently: the scores are not
        # the ones the model was validated on.
        print(f"score: --crop {options.crop} differs from the crop model {info['version']} was trained on "
              f"({trained_crop}); its validated figures do not hold for these scores", file=sys.stderr)
    if not runs_on_dataflow(options):
        check_not_another_jobs_output(options.output, "score")
        check_partitions(options, dates, info["version"], info.get("model_sha256"))
    me = run_lock.new_lock_info("score", options.run_id)

    def release_all():  # a failed local run leaves no lock of its own behind
        for d in dates or [UNDATED]:
            run_lock.release_quietly(partition_lock_dir(options.output, d, info["version"]), me)

    return execute(build_pipeline(options, dates, policy, info, me), options,
                   f"score: done. predictions under {FileSystems.join(options.output, 'predictions')}",
                   on_failure=release_all)


if __name__ == "__main__":
    sys.exit(main(run, prog="score"))
