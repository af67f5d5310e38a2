"""make_tfrecords: accepted images + labels -> leak-free splits -> tf.Transform -> TFRecords.

    curate features (accepted) + labels (SCIN cases+labels | image_uri,label[,group_id] CSV)
      -> JoinLabels          align by uri; unusable images become dead letters with a reason
      -> rare classes        merged into 'other' (or dropped) below --min_class_count
      -> AssignSplits        hash of the group key; duplicate clusters keep groups together
      -> PreprocessImages    one decode at DCT scale, crop, resize, JPEG (no EXIF)
      -> tf.Transform        analyze on train only, transform every split
      -> {split}-SSSSS-of-NNNNN.tfrecord[.gz], transform_fn/, transformed_metadata/,
         metadata/ (the raw schema, for TFTransformOutput), dataset_info.json, dead_letters/, _SUCCESS
      (--tfds: the records in tfds/ as TFDS names them, uncompressed, with TFDS's
       dataset_info.json and features.json, for tfds.builder_from_directory(OUT/tfds))

Run: python -m beam_jobs.make_tfrecords --curated CURATE_OUT --scin_cases C --scin_labels L
         --image_root ROOT --output DIR [--image_size 224] [--tfds]
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli import (JobFailed, UsageError, check_not_another_jobs_output, execute, main, new_pipeline,
                           quiet_tensorflow, runs_on_dataflow)
from beam_jobs.options import JobSpec, LockOptions, SharedOptions, allowed_roots, check_spec, lock_options
from schemas import examples as E
from schemas import scin
from schemas.lighting import load_thresholds
from schemas.policy import load_policy
from transforms.io import run_lock
from transforms.io.run_lock import LOCK, MARKER
from transforms.dataset.examples import PreprocessImages, record_batch_examples, to_example
from transforms.io.inputs import join_root, normalize_uri, read_named_text
from transforms.dataset.dataset_info import assemble_dataset_info, example_cell
from transforms.dataset.rare_classes import relabel_rare
from transforms.dataset.join_labels import DEAD, LINKS, JoinLabels, ReadCuratedRows, ReadLabelRecords, curated_features
from transforms.dataset.labels import BadLabelRow, plain_record
from transforms.io.sharded_write import WriteSortedShards, jsonl_encoder, write_atomically
from transforms.dataset.assign_splits import UNLABELED, AssignSplits
from transforms.dataset.splits import SPLITS, parse_fractions
from transforms.io.tfds_metadata import write_tfds_metadata
from transforms.io.tfrecords import WriteTFRecordShards
from transforms.image.skin_crop import CROPS


# Examples per record batch into tf.Transform. Fixed, not Beam's default
# adaptive batching: that sizes batches by how long the last ones took, so the
# analyzers' float sums (means, variances for the z-scores) ran in other
# orders from run to run and a rerun's records could differ in their last bits.
TFT_BATCH_SIZE = 256


class MakeTFRecordsOptions(SharedOptions, LockOptions):
    """Options of the make_tfrecords job (also the Flex Template's parameters).

    Also --output (TFRecords, transform_fn, dataset_info.json), --scin_cases
    (with --scin_labels) and --image_root from SharedOptions.
    """

    # It uses the packaged policy and reads images only through --image_root /
    # the curated URIs, which --allowed_roots bounds.
    reads = ("output", "scin_cases", "image_root", "allowed_roots")
    spec = JobSpec(
        required=("curated", "output"), one_of=(("labels_csv", "scin_cases"),),
        needs={"scin_cases": ("scin_labels", "image_root"), "scin_labels": ("scin_cases",),
               "min_label_weight": ("scin_cases",)},
        notes={"labels_csv": "Not with --scin_cases."},
        messages={"one_of": "give either --scin_cases with --scin_labels, or --labels_csv",
                  "scin_cases->scin_labels": "--scin_cases and --scin_labels go together",
                  "scin_labels->scin_cases": "--scin_cases and --scin_labels go together",
                  "scin_cases->image_root": "--image_root is required to resolve SCIN image paths",
                  # a labels CSV carries one label per image, no weights: it was accepted and did nothing
                  "min_label_weight->scin_cases": "--min_label_weight only applies with --scin_cases (a labels CSV "
                                                  "has no label weights)"})

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--curated", help="Output directory of the curate job (its features/ are read), or a glob of several, e.g. CURATED/dt=* for nightly partitions (each must be complete).")
        parser.add_argument("--scin_labels", help="SCIN scin_labels.csv, joined to the cases on case_id.")
        parser.add_argument("--labels_csv", help="Plain labels CSV with columns image_uri,label[,group_id] (instead of SCIN).")
        parser.add_argument("--image_size", type=int, default=E.IMAGE_DEFAULTS["image_size"], help="Side of the square model input, pixels.")
        parser.add_argument("--crop_fraction", type=float, default=E.IMAGE_DEFAULTS["crop_fraction"], help="Centre crop as a fraction of the short side.")
        parser.add_argument("--jpeg_quality", type=int, default=E.IMAGE_DEFAULTS["jpeg_quality"], help="JPEG quality of the stored images (1-100).")
        parser.add_argument("--crop", default="center", choices=list(CROPS),
                            help="center: the centred square of --crop_fraction; skin: a square around the main skin "
                                 "region (transforms/image/skin_crop.py: its long side plus 0.15 of it on each side, at least "
                                 "half the short side, at most the centre crop), or the centre crop where no skin region is found. Records say "
                                 "which in crop_used; score uses the model's.")
        parser.add_argument("--split_fractions", default="0.8,0.1,0.1", help="train,validation,test fractions summing to 1.")
        parser.add_argument("--min_class_count", type=int, default=5, help="Classes with fewer labelled images are rare.")
        parser.add_argument("--rare_classes", default="other", choices=["other", "drop"], help="Merge rare classes into 'other', or drop them.")
        parser.add_argument("--min_label_weight", type=float, help="With --scin_cases: minimum weight of the top weighted_skin_condition_label (default 0).")
        parser.add_argument("--keep_unlabeled", action="store_true", default=False, help="Write unlabeled images to an 'unlabeled' split.")
        parser.add_argument("--target_shard_mb", type=float, default=150.0, help="Target TFRecord shard size in MB (at least one shard per split).")
        parser.add_argument("--compression", default="gzip", choices=["gzip", "none"],
                            help="TFRecord compression (none for --tfds: TFDS reads no GZIP records).")
        parser.add_argument("--tfds", action="store_true", default=False,
                            help="Also make the output a TFDS dataset: the records and TFDS metadata in "
                                 "OUTPUT/tfds/, loaded with tfds.builder_from_directory(OUTPUT/tfds); "
                                 "dataset_info.json lists the same shards. Needs --compression none.")


def validate(o: MakeTFRecordsOptions) -> dict:
    """One-line UsageError for bad options; returns the split fractions."""
    check_spec(o, o.spec)
    if o.labels_csv and (o.scin_cases or o.scin_labels):  # the spec's note: one or the other
        raise UsageError(o.spec.messages["one_of"])
    allowed_roots(o)  # a bad --allowed_roots fails here, before any work
    lock_options(o)   # and a bad lock option or --output name
    if o.output and o.curated and normalize_uri(o.output).rstrip("/") == normalize_uri(o.curated).rstrip("/"):
        # Decided without a listing, so for Dataflow launches too.
        raise UsageError(f"--output {o.output} is --curated: make_tfrecords would replace curate's marker and "
                         f"dead letters there; write to another folder")
    if not 32 <= o.image_size <= 1024:
        raise UsageError(f"--image_size {o.image_size} must be between 32 and 1024")
    if not 0.1 <= o.crop_fraction <= 1.0:
        raise UsageError(f"--crop_fraction {o.crop_fraction} must be in [0.1, 1]")
    if not 1 <= o.jpeg_quality <= 100:
        raise UsageError(f"--jpeg_quality {o.jpeg_quality} must be in 1..100")
    # `not x > 0` and the like also refuse nan, which passes every `<` test.
    if o.min_class_count < 1 or not 0 < o.target_shard_mb < float("inf"):
        raise UsageError(f"--min_class_count and --target_shard_mb must be positive and finite, got "
                         f"{o.min_class_count} and {o.target_shard_mb}")
    if o.min_label_weight is not None and not 0 <= o.min_label_weight <= 1:   # SCIN's label weights are shares of 1
        raise UsageError(f"--min_label_weight must be within [0, 1], got {o.min_label_weight}")
    if o.tfds and o.compression != "none":
        raise UsageError(f"--tfds needs --compression none (TFDS reads no {o.compression} TFRecords)")
    try:
        return parse_fractions(o.split_fractions)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_inputs(o: MakeTFRecordsOptions) -> None:
    """Local runs: fail in one line on missing files or wrong label columns,
    or an --output that holds another job's output (--curated's above all)."""
    check_not_another_jobs_output(o.output, "make_tfrecords")
    try:
        features = curated_features(o.curated)
    except ValueError as e:
        raise UsageError(f"--curated {e}") from None
    if not FileSystems.match([features], limits=[1])[0].metadata_list:
        raise UsageError(f"--curated {o.curated}: no features/*.parquet (is it a curate output?)")
    required = ([("scin_cases", o.scin_cases, scin.REQUIRED_CASE_COLUMNS),
                 ("scin_labels", o.scin_labels, scin.REQUIRED_LABEL_COLUMNS)] if o.scin_cases
                else [("labels_csv", o.labels_csv, ("image_uri", "label"))])
    texts = {}  # each file read once, here
    for flag, path, columns in required:
        try:
            texts[flag] = read_named_text(path, f"--{flag}")
        except ValueError as e:
            raise UsageError(str(e)) from None
        header = texts[flag].partition("\n")[0].strip()
        missing = [c for c in columns if c not in [h.strip() for h in header.split(",")]]
        if missing:
            raise UsageError(f"--{flag} {path}: missing column(s) {', '.join(missing)}")
    check_labels_meet_curated(o, features, texts)


def _csv_rows(flag, path, text, columns) -> list[dict]:
    rows = scin.read_csv_rows(text, columns, path)
    if not rows:
        raise UsageError(f"--{flag} {path} has a header but no rows")
    return rows


def check_labels_meet_curated(o: MakeTFRecordsOptions, features: str, texts: dict) -> None:
    """Local runs: one line when the labels and curate's rows have no accepted
    image in common (a wrong --image_root, a header-only labels file),
    instead of a run that makes 0 examples. Paths compare as the join does
    (normalize_uri). Dataflow runs meet the same case at finalize. `texts`:
    flag -> the text of the labels file it names, as check_inputs read it."""
    import pyarrow.parquet as pq
    try:
        if o.labels_csv:
            named = []
            for row in _csv_rows("labels_csv", o.labels_csv, texts["labels_csv"], ("image_uri", "label")):
                try:
                    named.append(plain_record(row, o.image_root)["uri"])
                except BadLabelRow:
                    continue  # a dead letter at run time
        else:
            cases = _csv_rows("scin_cases", o.scin_cases, texts["scin_cases"], scin.REQUIRED_CASE_COLUMNS)
            labelled = {r[scin.CASE_ID] for r in _csv_rows("scin_labels", o.scin_labels, texts["scin_labels"],
                                                           scin.REQUIRED_LABEL_COLUMNS)}
            named = [join_root(o.image_root, path) for c in cases if c[scin.CASE_ID] in labelled
                     for path, _shot in scin.case_images(c)]
    except ValueError as e:
        raise UsageError(str(e)) from None
    status = {}
    for m in FileSystems.match([features])[0].metadata_list:
        with FileSystems.open(m.path) as f:
            table = pq.read_table(f, columns=["uri", "status"], use_threads=False)  # see evaluate_curate
        status.update((normalize_uri(u), s) for u, s in zip(table["uri"].to_pylist(), table["status"].to_pylist()))
    named = sorted({normalize_uri(u) for u in named})
    found = [u for u in named if u in status]
    if not found:
        example = ""
        if named and status:  # show the same file as both sides name it, if curate has it
            name = "/" + named[0].rsplit("/", 1)[-1]
            twin = next((u for u in sorted(status) if u.endswith(name)), min(status))
            example = f"; e.g. the labels name {named[0]}, curate has {twin}"
        raise UsageError(f"none of the {len(named)} images the labels name is among curate's {len(status)} "
                         f"rows in {o.curated}{example} (check --image_root)")
    if not any(status[u] == "accepted" for u in found):
        raise UsageError(f"curate rejected all {len(found)} labelled images it has: nothing to train on")


def _require_training_examples(output, cells, dead_counts) -> None:
    """JobFailed (and no marker, not even an older run's) when the train split
    is empty: tf.Transform would publish a placeholder vocabulary and a
    trainer would have nothing to learn from."""
    by_split = Counter()
    for (split, _label, _group), n in cells:
        by_split[split] += n
    if by_split["train"]:
        return
    marker = FileSystems.join(output, MARKER)
    if FileSystems.exists(marker):
        FileSystems.delete([marker])
    dead = ", ".join(f"{r} {n}" for r, n in sorted(dead_counts)) or "none"
    if not sum(by_split.values()):
        raise JobFailed(f"no image joined its label: 0 examples (dead letters: {dead}); "
                        f"check --image_root and the label paths")
    raise JobFailed(f"the train split is empty ({', '.join(f'{s} {n}' for s, n in sorted(by_split.items()))}; "
                    f"dead letters: {dead}): too few labelled groups for --split_fractions")


def _write_tfds(output, image_size, vocab, splits) -> dict:
    """TFDS's metadata for the shards in OUT/tfds/ (--tfds); returns where it is."""
    directory = FileSystems.join(output, E.TFDS_DIR)
    write_tfds_metadata(
        directory, E.TFDS_NAME, E.TFDS_VERSION, E.tfds_features(image_size, vocab),
        {s: [sh["examples"] for sh in sorted(v["shards"], key=lambda sh: sh["index"])] for s, v in splits.items()},
        description="Dermatology photos written by make_tfrecords: tf.Transform's output. label_id is the "
                    "train label vocabulary's index (-1: a label not seen in train), *_id categorical ids "
                    "(-1: unseen), *_z z-scores with train statistics; the transform_fn is in the parent "
                    "folder, with its dataset_info.json (class weights, counts by Monk group).",
        supervised_keys=("image", "label_id"))
    return {"dir": E.TFDS_DIR, "name": E.TFDS_NAME, "version": E.TFDS_VERSION}


def _finalize(_, output, compression, class_counts, min_count, rare_policy, cells, shards,
              dead_counts, sources, published, me=None, dead_written=(), tfds=False, image_size=None,
              curated=None):
    """dataset_info.json (counts, shards, vocab, class weights) and, with
    --tfds, TFDS's metadata, stale shards of earlier runs dropped, then the
    marker; each step only while this run holds the lock (released by the
    next step). No examples to train on, or --curated rewritten while it was
    read: JobFailed, and no marker."""
    import tensorflow_transform as tft
    lock_dir = FileSystems.join(output, LOCK)
    if me is not None:
        run_lock.check(lock_dir, me, output)
    _require_training_examples(output, cells, dead_counts)
    vocab = [v.decode() for v in tft.TFTransformOutput(output).vocabulary_by_name(E.LABEL_VOCAB)]
    info = assemble_dataset_info(compression, vocab, class_counts, min_count, rare_policy, cells, shards,
                                 dead_counts, sources)
    info["tfds"] = _write_tfds(output, image_size, vocab, info["splits"]) if tfds else None
    write_atomically(FileSystems.join(output, E.DATASET_INFO), E.encode_dataset_info(info))
    tmp = FileSystems.join(output, "tmp")
    if FileSystems.exists(tmp):
        FileSystems.delete([tmp])  # tf.Transform's scratch space
    if me is not None:
        run_lock.check(lock_dir, me, output)
        _drop_stale_shards(output, {name for *_x, name in shards}, set(dead_written), tfds)
    if curated is not None:  # last, so a rerun of curate at any time before the marker shows
        run_lock.check_unchanged(curated, "--curated", "curate", "make_tfrecords",
                                 "what was read may mix two curate runs; nothing was marked complete")
    write_atomically(FileSystems.join(output, MARKER),
                     json.dumps({s: v["examples"] for s, v in info["splits"].items()}, sort_keys=True).encode())
    return info


# The shard names this job writes at the top of its output: only such files
# are ever deleted there as stale. Any *.tfrecord* was, so an --output shared
# with other datasets' records lost them.
_OWN_SHARD = re.compile(rf"^({'|'.join(SPLITS + (UNLABELED,))})-\d{{5,}}-of-\d{{5,}}\.tfrecord(\.gz)?$")


def _drop_stale_shards(output, records, dead, tfds=False):
    """Delete record and dead-letter shards this run did not write (an earlier
    run's other shard counts, or the other layout of --tfds), so the output
    holds one run's files only. records are paths relative to output. A run
    without --tfds also drops an earlier run's TFDS metadata. Files at the
    top of the output not named as this job names its shards are kept."""
    top = FileSystems.match([FileSystems.join(output, "*.tfrecord*")])[0].metadata_list
    names = {m.path: m.path.rsplit("/", 1)[-1] for m in top}
    stale = [path for path, name in names.items() if name not in records and _OWN_SHARD.match(name)]
    in_tfds = FileSystems.match([FileSystems.join(output, E.TFDS_DIR, "*")])[0].metadata_list
    stale += [m.path for m in in_tfds if not tfds or (
        ".tfrecord" in m.path and f"{E.TFDS_DIR}/{m.path.rsplit('/', 1)[-1]}" not in records)]
    stale += [m.path for m in FileSystems.match([FileSystems.join(output, "dead_letters", "*")])[0].metadata_list
              if m.path not in dead]
    if stale:
        FileSystems.delete(stale)


def _versions(o) -> dict:
    import apache_beam
    import tensorflow_transform
    return {"curated": o.curated, "labels": o.labels_csv or [o.scin_cases, o.scin_labels],
            "image_size": o.image_size, "crop_fraction": o.crop_fraction, "jpeg_quality": o.jpeg_quality,
            "crop": o.crop,
            "split_fractions": o.split_fractions, "lighting": load_thresholds(),
            "apache_beam": apache_beam.__version__,
            "tensorflow_transform": tensorflow_transform.__version__}


def build_pipeline(o: MakeTFRecordsOptions, fractions: dict, me: dict | None = None) -> beam.Pipeline:
    """The make_tfrecords pipeline, constructed but not run. `me` names the
    run in its lock (run_lock.new_lock_info); every write waits for the lock."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.beam.tft_beam_io import beam_metadata_io
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
    from tfx_bsl.public import tfxio

    from transforms.dataset.tft_preprocessing import preprocessing_fn

    out = o.output
    policy = load_policy(with_model=False)
    me, lock = me or run_lock.new_lock_info("make_tfrecords", o.run_id), lock_options(o)
    p = new_pipeline(o)
    locked = p | "LockOutput" >> run_lock.LockOutput(out, me, lock)
    # Every record, the transform_fn and tf.Transform's scratch files derive
    # from the curated rows, so holding them back until the lock is taken
    # orders all those writes after it.
    read_curated = ReadCuratedRows(o.curated)
    curated = (p
               | "ReadCurated" >> read_curated
               | "AfterLock" >> beam.Map(lambda row, _locked: row, beam.pvalue.AsSingleton(locked)))
    labels = p | "ReadLabels" >> ReadLabelRecords(o.image_root, o.scin_cases, o.scin_labels, o.labels_csv,
                                                  o.min_label_weight or 0.0)
    joined = (curated, labels.records, labels[DEAD]) | "JoinLabels" >> JoinLabels(o.keep_unlabeled)

    # Rare classes relabelled as flat steps under the names earlier runs used.
    class_counts = (joined.records
                    | "Labels" >> beam.FlatMap(lambda r: [r["label"]] if r["label"] else [])
                    | "CountPerClass" >> beam.combiners.Count.PerElement()
                    | "ClassCounts" >> beam.combiners.ToDict())
    kept = joined.records | "RareClasses" >> beam.FlatMap(
        relabel_rare, counts=beam.pvalue.AsSingleton(class_counts), min_count=o.min_class_count,
        policy=o.rare_classes).with_outputs(DEAD, main="records")
    split_records = (kept.records, joined[LINKS]) | "AssignSplits" >> AssignSplits(fractions)
    examples = split_records | "PreprocessImages" >> PreprocessImages(
        o.image_size, o.crop_fraction, o.jpeg_quality, policy.max_pixels, allowed_roots(o),
        policy.max_bytes, policy.max_decode_bytes, crop=o.crop)

    schema = schema_utils.schema_from_feature_spec(E.raw_feature_spec())
    coder = tfxio.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=["skin"], schema=schema)
    split_names = list(SPLITS) + ([UNLABELED] if o.keep_unlabeled else [])
    by_split = {}
    for s in split_names:
        by_split[s] = (examples.examples
                       | f"Only{s.title()}" >> beam.Filter(lambda e, s=s: e["split"] == s)
                       | f"Serialize{s.title()}" >> beam.Map(to_example)
                       | f"Batches{s.title()}" >> coder.BeamSource(batch_size=TFT_BATCH_SIZE))
    with tft_beam.Context(temp_dir=FileSystems.join(out, "tmp")):
        transform_fn = ((by_split["train"], coder.TensorAdapterConfig())
                        | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(preprocessing_fn))
        transformed = []
        for s in split_names:
            batches, _ = (((by_split[s], coder.TensorAdapterConfig()), transform_fn)
                          | f"Transform{s.title()}" >> tft_beam.TransformDataset(output_record_batches=True))
            transformed.append(batches | f"Examples{s.title()}" >> beam.FlatMap(record_batch_examples, s))
        published = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out)
        # The raw schema beside transform_fn/ (OUT/metadata/): without it
        # TFTransformOutput.raw_feature_spec() fails and transform_features_layer()
        # names its inputs inputs, inputs_1, ... instead of the raw features.
        # Deferred on the lock, like every other write of the run.
        raw = dataset_metadata.DatasetMetadata(schema)
        raw_written = (beam_metadata_io.BeamDatasetMetadata(
            raw, locked | "RawMetadata" >> beam.Map(lambda _marker: raw), {})
            | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                FileSystems.join(out, tft.TFTransformOutput.RAW_METADATA_DIR), p))
        published = (published, raw_written) | "AllMetadata" >> beam.Flatten()

    records_dir, tfds_name, in_dir = ((FileSystems.join(out, E.TFDS_DIR), E.TFDS_NAME, f"{E.TFDS_DIR}/")
                                      if o.tfds else (out, None, ""))
    shards = (transformed
              | "AllSplits" >> beam.Flatten()
              | "WriteTFRecords" >> WriteTFRecordShards(records_dir, int(o.target_shard_mb * 1e6),
                                                        o.compression == "gzip", tfds_name)
              # dataset_info.json names each shard by its path under OUT
              | "PathUnderOutput" >> beam.Map(lambda w: (*w[:4], in_dir + w[4])))
    dead = ((labels[DEAD], joined[DEAD], kept[DEAD], examples[DEAD])
            | "AllDeadLetters" >> beam.Flatten())
    dead_written = dead | "WriteDeadLetters" >> WriteSortedShards(
        FileSystems.join(out, "dead_letters"), "dead_letters", ".jsonl", jsonl_encoder(),
        key_fn=lambda d: f"{d['uri']}|{d['reason']}", after=locked)
    cells = (examples.examples
             | "Cells" >> beam.Map(example_cell)
             | "CountCells" >> beam.combiners.Count.PerElement()
             | "AllCells" >> beam.combiners.ToList())
    dead_counts = (dead
                   | "DeadReasons" >> beam.Map(lambda d: d["reason"])
                   | "CountDead" >> beam.combiners.Count.PerElement()
                   | "AllDeadCounts" >> beam.combiners.ToList())
    _ = p | "Finalize" >> run_lock.FinalizeOutput(
        out, me, _finalize, output=out, compression=o.compression, min_count=o.min_class_count,
        rare_policy=o.rare_classes, sources=_versions(o),
        class_counts=beam.pvalue.AsSingleton(class_counts),
        cells=beam.pvalue.AsSingleton(cells), shards=beam.pvalue.AsList(shards),
        dead_counts=beam.pvalue.AsSingleton(dead_counts), published=beam.pvalue.AsList(published),
        me=me, dead_written=beam.pvalue.AsList(dead_written), tfds=o.tfds, image_size=o.image_size,
        curated=beam.pvalue.AsSingleton(read_curated.finished))
    return p


def run(argv=None):
    """Parse argv, validate, build and run make_tfrecords; returns the result."""
    options = MakeTFRecordsOptions(argv)
    fractions = validate(options)
    quiet_tensorflow()  # tf.Transform loads TensorFlow: without its start-up lines
    if not runs_on_dataflow(options):
        check_inputs(options)
    me = run_lock.new_lock_info("make_tfrecords", options.run_id)
    done = f"make_tfrecords: done. {FileSystems.join(options.output, E.DATASET_INFO)}"
    if options.tfds:
        done += f"; TFDS: tfds.builder_from_directory({FileSystems.join(options.output, E.TFDS_DIR)!r})"
    return execute(build_pipeline(options, fractions, me), options, done,
                   on_failure=lambda: run_lock.release_quietly(FileSystems.join(options.output, LOCK), me))


if __name__ == "__main__":
    sys.exit(main(run, prog="make_tfrecords"))
