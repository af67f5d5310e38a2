"""evaluate: one or two model versions on a frozen make_tfrecords split -> sliced metrics with intervals.

    DIR/dataset_info.json + the split's TFRecord shards
      -> ReadExamples       every shard the split lists; the count is checked
      -> Prepare            key, label id, slices (Monk group, Fitzpatrick, body
                            part, shot type), the stored JPEG decoded by the
                            trainer's own op: exactly the training-time array
                            (--from_images: the source image the record names,
                            read and prepared by score's own code, and its
                            difference from the stored array)
      -> RunInference       batched, per model (--model_uri, --compare_model_uri;
                            --from_images: the model also on the stored arrays)
      -> JoinRoles          one shuffle per example: its rows of every model
      -> SliceMetrics       per slice it belongs to, a mergeable CombineFn of
                            sufficient statistics and Poisson-bootstrap sums
                            (transforms/evaluation/combine.py)
      -> Evaluate           the slices' figures with seeded bootstrap intervals,
                            paired differences when comparing, a verdict line
      -> OUT/metrics.json (schemas/metrics.py), OUT/report.html, OUT/_SUCCESS last;
         OUT/_LOCK/<attempt>.json while a run writes OUT

Run: python -m beam_jobs.evaluate --tfrecords DIR --model_uri M [--compare_model_uri M0]
         [--split validation] [--from_images --allowed_roots R] --output OUT
"""
from __future__ import annotations

import datetime as dt
import json
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from beam_jobs.cli import (JobFailed, UsageError, check_batching, check_not_another_jobs_output, execute, main,
                           new_pipeline, quiet_tensorflow, runs_on_dataflow, seed_arg)
from beam_jobs.options import JobSpec, LockOptions, SharedOptions, allowed_roots, check_spec, lock_options
from beam_jobs.options import load_model_info as load_bundle_info
from schemas import metrics as M
from schemas import examples as E
from schemas.examples import IMAGE_DEFAULTS
from schemas.model_bundle import image_settings
from transforms.io import run_lock
from transforms.io.run_lock import LOCK, MARKER
from transforms.evaluation.metrics import DEFAULT_BINS, DEFAULT_RESAMPLES
from transforms.evaluation.report import build_document, parity_line, render_html, slice_inputs, slice_metrics_fn
from transforms.scoring.inference import KerasBundleHandler
from transforms.io.sharded_write import write_atomically



# Options that only mean something with --from_images.
SERVING_OPTIONS = ("crop_fraction", "jpeg_quality", "parity_tolerance", "image_root", "allowed_roots")


class EvaluateOptions(SharedOptions, LockOptions):
    """Options of the evaluate job. Also --output (metrics.json, report.html) from SharedOptions."""

    reads = ("output", "image_root", "allowed_roots")
    spec = JobSpec(
        required=("tfrecords", "model_uri", "output"),
        needs={d: ("from_images",) for d in SERVING_OPTIONS},
        notes={"from_images": "Needs --allowed_roots or --image_root."},
        messages={f"{d}->from_images": f"--{d} only applies with --from_images" for d in SERVING_OPTIONS})

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--tfrecords", help="make_tfrecords output directory, local or gs:// (dataset_info.json, the shards, transform_fn/).")
        parser.add_argument("--model_uri", help="Model directory (model.keras + model_info.json) or the .keras file, local or gs://.")
        parser.add_argument("--compare_model_uri", help="A second model directory or .keras file, local or gs:// (e.g. the version in production), evaluated on the identical examples; differences get paired bootstrap intervals.")
        parser.add_argument("--split", default="validation", help="Split to evaluate on (train, validation, test).")
        parser.add_argument("--bootstrap_resamples", type=int, default=DEFAULT_RESAMPLES, help="Bootstrap resamples per slice (1000 to 5000; memory grows with them).")
        parser.add_argument("--seed", type=seed_arg, default=0, help="Seed of the bootstrap draws.")
        parser.add_argument("--min_slice_n", type=int, default=30, help="Slices with fewer examples are reported but marked below_min_n.")
        parser.add_argument("--calibration_bins", type=int, default=DEFAULT_BINS, help="Equal-width confidence bins of the ECE and the reliability table (1 to 100).")
        parser.add_argument("--min_batch_size", type=int, help="RunInference minimum batch size. Default: --max_batch_size.")
        parser.add_argument("--max_batch_size", type=int, default=64, help="RunInference maximum batch size, at most 1024 (a batch is held in memory).")
        parser.add_argument("--from_images", action="store_true", default=False,
                            help="Read each example's source image (the uri its record names) through score's "
                                 "preprocessing instead of the stored array, and report train/serve parity: "
                                 "examples whose arrays differ, the largest pixel difference, changed predictions. "
                                 "Reads are bounded by --allowed_roots (or --image_root).")
        parser.add_argument("--crop_fraction", type=float,
                            help="With --from_images: the serving crop. Default: make_tfrecords' (dataset_info.json); "
                                 "another value measures what a serving change would do.")
        parser.add_argument("--jpeg_quality", type=int,
                            help="With --from_images: the serving JPEG quality. Default: make_tfrecords'.")
        parser.add_argument("--parity_tolerance", type=int,
                            help="With --from_images: largest per-pixel difference (0-255) still counted as equal. "
                                 "Default 0: the same code on the same bytes gives identical arrays.")


MIN_RESAMPLES, MAX_RESAMPLES, MAX_BINS = 1000, 5000, 100


def validate(o: EvaluateOptions) -> None:
    check_spec(o, o.spec)
    lock_options(o)
    # Every slice holds its sums and bin counts per resample until the end
    # (the demo's: ~0.9 GB per 1000 resamples, 9.8 GB peak at 10000; 1e8 asked
    # for 765 GiB at BySlice); more add little to a 95% interval or an ECE.
    if not MIN_RESAMPLES <= o.bootstrap_resamples <= MAX_RESAMPLES:
        raise UsageError(f"--bootstrap_resamples {o.bootstrap_resamples}: use {MIN_RESAMPLES} to {MAX_RESAMPLES}")
    if not 1 <= o.calibration_bins <= MAX_BINS:
        raise UsageError(f"--calibration_bins must be within [1, {MAX_BINS}], got {o.calibration_bins}")
    check_batching(o, ("min_slice_n",))
    if not o.from_images:  # the spec refused its serving options without it
        return
    if not allowed_roots(o).roots:  # a bad --allowed_roots fails here too, before any work
        raise UsageError("--from_images reads the images the records name: give --allowed_roots "
                         "(or --image_root) bounding where they may be read")
    if o.crop_fraction is not None and not 0.1 <= o.crop_fraction <= 1.0:
        raise UsageError(f"--crop_fraction {o.crop_fraction} must be in [0.1, 1]")
    if o.jpeg_quality is not None and not 1 <= o.jpeg_quality <= 100:
        raise UsageError(f"--jpeg_quality {o.jpeg_quality} must be in 1..100")
    if o.parity_tolerance is not None and not 0 <= o.parity_tolerance <= 255:
        raise UsageError(f"--parity_tolerance {o.parity_tolerance} must be in 0..255")


def serving_settings(o: EvaluateOptions, info: dict, image_size: int) -> dict:
    """transforms.scoring.prepare.prepare's settings for --from_images: make_tfrecords' own
    (dataset_info.json sources), unless overridden."""
    sources = info.get("sources") or {}
    return {"image_size": image_size,
            "crop_fraction": float(o.crop_fraction if o.crop_fraction is not None
                                   else sources.get("crop_fraction", IMAGE_DEFAULTS["crop_fraction"])),
            "jpeg_quality": int(o.jpeg_quality if o.jpeg_quality is not None else sources.get("jpeg_quality", IMAGE_DEFAULTS["jpeg_quality"])),
            # make_tfrecords --crop skin: served as made (named only then, so centre-crop settings read as before)
            **({"crop": sources["crop"]} if sources.get("crop", "center") != "center" else {})}


def load_dataset(tfrecords: str, split: str) -> tuple[dict, list[str], str]:
    """(dataset_info, the split's shard paths, the marker's stamp as read), or
    UsageError naming what is wrong."""
    path = FileSystems.join(tfrecords, E.DATASET_INFO)
    if not FileSystems.exists(path):
        raise UsageError(f"--tfrecords {tfrecords}: no {E.DATASET_INFO} (not a make_tfrecords output?)")
    stamp = run_lock.finished_stamp(tfrecords)  # before anything of it is read
    if stamp is None:
        raise UsageError(f"--tfrecords {tfrecords}: no {MARKER}; make_tfrecords has not finished there")
    with FileSystems.open(path, compression_type="uncompressed") as f:
        raw = f.read()
    try:
        info = E.parse_dataset_info(raw, path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    vocabulary, splits = info["label_vocabulary"], info["splits"]
    if split not in splits:
        raise UsageError(f"--split {split}: {path} has splits {', '.join(sorted(splits))}")
    shards = [FileSystems.join(tfrecords, s["file"]) for s in splits[split]["shards"]]
    if not splits[split].get("examples") or not shards:
        raise UsageError(f"--split {split} is empty in {path}: nothing to evaluate")
    if not vocabulary:
        raise UsageError(f"{path} has no label_vocabulary")
    return info, shards, stamp


def load_model_info(model_uri: str, flag: str, vocabulary: list[str]) -> dict:
    """The bundle's model_info.json, loaded and probed as score loads it;
    UsageError if unusable or if its vocabulary is not the split's."""
    info = load_bundle_info(model_uri, flag)
    if list(info["label_vocabulary"]) != list(vocabulary):
        theirs, ours = list(info["label_vocabulary"]), list(vocabulary)
        diff = sorted(set(theirs) ^ set(ours))
        detail = (f"classes only on one side: {', '.join(diff[:5])}" if diff
                  else "same classes in another order")
        raise UsageError(f"--{flag} {model_uri}: the model's label_vocabulary ({len(theirs)} classes) is not "
                         f"the split's ({len(ours)}; {detail}); its outputs cannot be read against these labels")
    return info


STORED, PIXELS = "stored", "pixels"  # --from_images outputs: the stored arrays, per-example pixel differences


class _Prepare(beam.DoFn):
    """Serialized example -> ((key, label_id, slices), uint8 image).

    With `serving` (--from_images) the image is the source image the record
    names, read and prepared by score's code (transforms/scoring/prepare.py), and
    the stored array and the largest pixel difference go to STORED and PIXELS.
    """

    def __init__(self, context: dict, image_size: int, serving: dict | None = None, allowed=None):
        self.context, self.image_size, self.serving, self.allowed = context, image_size, serving, allowed

    def setup(self):
        from schemas.policy import load_policy
        from transforms.evaluation import examples as eval_examples
        self.ex = eval_examples
        self.quality_policy = load_policy(with_model=False) if self.serving else None

    def process(self, serialized):
        f = self.ex.parse_example(serialized)
        image = self.ex.decode(f["image"])
        if image.shape[:2] != (self.image_size, self.image_size):
            raise JobFailed(f"example {f['key']} is {image.shape[1]}x{image.shape[0]}, the models take "
                            f"{self.image_size}x{self.image_size} images (made with another --image_size?)")
        meta = (f["key"], f["label_id"], self.ex.slices_of(f, self.context))
        if not self.serving:
            yield meta, image
            return
        served = self._serve(f["uri"])
        yield meta, served
        yield beam.pvalue.TaggedOutput(STORED, (meta, image))
        yield beam.pvalue.TaggedOutput(PIXELS, (PIXELS, meta, pixel_difference(served, image)))

    def _serve(self, uri):
        from transforms.image.decode import ImageRejected
        from transforms.io.read import Missing, Refused, read_bytes
        from transforms.scoring.prepare import prepare
        try:
            data, _retries = read_bytes(uri, allowed=self.allowed, max_bytes=self.quality_policy.max_bytes)
            _reasons, served = prepare(data, self.quality_policy, gate=False, **self.serving)
        except (Refused, Missing, ImageRejected, OSError) as e:
            # Every example must be measured, or the figures are of another set.
            raise JobFailed(f"--from_images: cannot prepare {uri}: {type(e).__name__}: {e}") from None
        return served


def pixel_difference(a, b) -> int:
    """Largest absolute per-pixel difference of two uint8 arrays (255 if their shapes differ)."""
    import numpy as np
    if a.shape != b.shape:
        return 255
    return int(np.max(np.abs(a.astype(np.int16) - b.astype(np.int16)))) if a.size else 0


def parity(rows, serving: dict, tolerance: int) -> dict:
    """metrics.json's `parity`: the source images through score's preprocessing
    against the stored arrays, over every example of the split. rows: (key,
    largest pixel difference, whether the predicted class moved) per example."""
    rows = sorted(rows)
    diffs = [d for _k, d, _m in rows]
    moved = [k for k, _d, m in rows if m]
    differ = [k for k, d, _m in rows if d > tolerance]
    return {"examples": len(rows), "settings": serving, "tolerance": tolerance,
            "arrays_differ": len(differ), "max_abs_pixel_diff": max(diffs, default=0),
            "predictions_differ": len(moved), "examples_differing": sorted(set(differ) | set(moved))[:20]}


def join_roles(key, rows) -> tuple:
    """(key, {"label_id", "slices", ROLE: probs, ...}) from one example's outputs."""
    entry: dict = {}
    for role, (_key, label_id, slices), value in rows:
        entry.update(label_id=label_id, slices=slices)
        entry[role] = value
    return key, entry


def key_row(key: str, entry: dict, serving) -> tuple:
    """What the whole-set figures need of one example: its key and label id (the
    fingerprint and counts) and, with --from_images, its parity (pixel difference,
    predicted class moved)."""
    if not serving:
        return key, entry["label_id"], None
    import numpy as np
    moved = int(np.argmax(entry["model"])) != int(np.argmax(entry[STORED]))
    return key, entry["label_id"], (entry[PIXELS], moved)


def _finalize(slice_results, key_rows, output, settings, models, expected, me=None, _locked=None, serving=None,
              tolerance=0, read=None):
    """The metrics document from the slices' combined figures and the keys (and,
    with `serving`, the parity of the source images with the stored arrays),
    written under the lock, then the marker."""
    lock_dir = FileSystems.join(output, LOCK)
    if len(key_rows) != expected:
        raise JobFailed(f"read {len(key_rows)} examples of split {settings['split']}, dataset_info.json "
                        f"lists {expected}: the shards do not match it (rerun make_tfrecords)")
    keys = [k for k, label_id, _p in key_rows if label_id >= 0]
    metrics = build_document(dict(slice_results), keys, len(key_rows), settings, models)
    metrics["input"] = "source_images" if serving else "tfrecord_arrays"
    metrics["parity"] = parity([(k, *p) for k, _l, p in key_rows], serving, tolerance) if serving else None
    def check_read():
        if read:
            run_lock.check_unchanged(read, "--tfrecords", "make_tfrecords", "evaluate",
                                     "the metrics may mix two datasets; nothing was marked complete")

    if me is not None:
        run_lock.check(lock_dir, me, output)
    check_read()  # before writing: a run that read a rewritten dataset leaves no metrics to be read
    write_atomically(FileSystems.join(output, M.METRICS_FILE),
                     (json.dumps(metrics, indent=1, sort_keys=True) + "\n").encode())
    write_atomically(FileSystems.join(output, M.REPORT_FILE), render_html(metrics).encode())
    if me is not None:
        run_lock.check(lock_dir, me, output)
    check_read()  # and last, so a rerun there at any time before shows
    write_atomically(FileSystems.join(output, MARKER), json.dumps(
        {"fingerprint": metrics["fingerprint"], "examples": metrics["examples"]["evaluated"]},
        sort_keys=True).encode())
    return metrics["verdict"]


def shard_records(path: str, compression, tfrecords: str):
    """The serialized examples of one TFRecord shard. A truncated or corrupt
    shard is one line (JobFailed). Beam's own reader (ReadAllFromTFRecord)
    raised with the record's bytes in hex in its message: a traceback, and
    the log, then carried image bytes and case metadata."""
    import zlib

    from apache_beam.io.tfrecordio import _TFRecordUtil  # the record framing Beam's reader uses

    with FileSystems.open(path, compression_type=compression) as f:
        while True:
            try:
                record = _TFRecordUtil.read_record(f)
            except (ValueError, OSError, EOFError, zlib.error) as e:
                raise JobFailed(f"--tfrecords {tfrecords}: {path.rsplit('/', 1)[-1]} is truncated or corrupt "
                                f"({type(e).__name__}); rerun make_tfrecords there") from None
            if record is None:
                return
            yield record


def build_pipeline(o: EvaluateOptions, info: dict, shards: list[str], context: dict, models: dict,
                   me: dict | None = None, stamp: str | None = None) -> beam.Pipeline:
    """The evaluate pipeline, constructed but not run. `models` maps a role
    (model, compare) to {"uri", "version", "image_size", "model_sha256"}; `context` is
    transforms.evaluation.examples.dataset_context(). With --from_images the models see the
    source images as score prepares them, and the model also runs on the
    stored arrays so the parity counts changed predictions. `stamp` is the
    --tfrecords marker's as load_dataset read it, compared before the marker."""
    from apache_beam.io.filesystem import CompressionTypes

    out = o.output
    me, lock = me or run_lock.new_lock_info("evaluate", o.run_id), lock_options(o)
    sizes = {m["image_size"] for m in models.values()}
    if len(sizes) != 1:
        raise UsageError(f"the models take different image sizes ({', '.join(map(str, sorted(sizes)))})")
    image_size = sizes.pop()
    settings = {"split": o.split, "tfrecords": o.tfrecords, "resamples": o.bootstrap_resamples,
                "seed": o.seed, "min_slice_n": o.min_slice_n, "bins": o.calibration_bins,
                "vocabulary": list(info["label_vocabulary"]),
                "evaluated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    compression = CompressionTypes.GZIP if info.get("compression") == "gzip" else CompressionTypes.UNCOMPRESSED

    p = new_pipeline(o)
    locked = p | "LockOutput" >> run_lock.LockOutput(out, me, lock)
    serving = serving_settings(o, info, image_size) if o.from_images else None
    prep = (p
            | "Shards" >> beam.Create(shards)
            | "ReadExamples" >> beam.FlatMap(shard_records, compression, o.tfrecords)
            | "Reshuffle" >> beam.Reshuffle()
            | "Prepare" >> beam.ParDo(_Prepare(context, image_size, serving, allowed_roots(o) if serving else None))
            .with_outputs(STORED, PIXELS, main="images"))
    runs = [(role, m, prep.images) for role, m in models.items()]
    if serving:
        runs.append((STORED, models["model"], prep[STORED]))
    scored = [prep[PIXELS]] if serving else []
    for role, m, images in runs:
        handler = KeyedModelHandler(KerasBundleHandler(
            m["uri"], min_batch_size=o.min_batch_size, max_batch_size=o.max_batch_size, image_size=image_size,
            version=m["version"], model_sha256=m.get("model_sha256")))
        title = role.title()
        # No dead-letter output: a model failing on some examples would leave
        # the two models on different sets, so the job fails instead.
        scored.append(images
                      | f"RunInference{title}" >> RunInference(handler)
                      | f"Tag{title}" >> beam.Map(lambda kv, r=role: (r, kv[0], [float(x) for x in kv[1]])))
    expected = int(info["splits"][o.split]["examples"])
    # One shuffle per example joins its rows; then per example only its key goes
    # to one worker (the fingerprint needs every key) and, per slice it belongs
    # to, its probabilities go to that slice's mergeable accumulator
    # (transforms/evaluation/combine.py): no step holds every prediction.
    examples = (tuple(scored)
                | "AllPredictions" >> beam.Flatten()
                | "ByExample" >> beam.Map(lambda row: (row[1][0], row))
                | "JoinRoles" >> beam.GroupByKey()
                | "Example" >> beam.MapTuple(join_roles))
    key_rows = (examples
                | "KeyRows" >> beam.Map(lambda kv, s=serving: key_row(*kv, s))
                | "Keys" >> beam.combiners.ToList())
    _ = (examples
         | "BySlice" >> beam.FlatMap(lambda kv, r=tuple(models): slice_inputs(*kv, r))
         | "SliceMetrics" >> beam.CombinePerKey(slice_metrics_fn(settings, models))
         | "Slices" >> beam.combiners.ToList()
         | "Evaluate" >> run_lock.FinalizeOutput(
             out, me, _finalize, key_rows=beam.pvalue.AsSingleton(key_rows), output=out,
             settings=settings, models=models, expected=expected, me=me,
             _locked=beam.pvalue.AsSingleton(locked), serving=serving, tolerance=o.parity_tolerance or 0,
             read={o.tfrecords: stamp} if stamp else None))
    return p


def run(argv=None):
    """Parse argv, validate (dataset and models included), build and run evaluate."""
    options = EvaluateOptions(argv)
    validate(options)
    info, shards, stamp = load_dataset(options.tfrecords, options.split)
    quiet_tensorflow()
    models = {}
    for role, flag, uri in (("model", "model_uri", options.model_uri),
                            ("compare", "compare_model_uri", options.compare_model_uri)):
        if uri:
            m = load_model_info(uri, flag, info["label_vocabulary"])
            models[role] = {"uri": uri, "version": m["version"], "image_size": image_settings(m)["image_size"],
                            "model_sha256": m.get("model_sha256")}
            made = (info.get("sources") or {}).get("image_size")
            if made is not None and int(made) != models[role]["image_size"]:
                raise UsageError(f"--{flag} {uri} takes {models[role]['image_size']} px images; the split's "
                                 f"were made at {made} px (make_tfrecords --image_size)")
    from transforms.evaluation.examples import dataset_context
    try:
        context = dataset_context(options.tfrecords)
    except (OSError, ValueError) as e:
        raise UsageError(f"--tfrecords {options.tfrecords}: cannot read transform_fn/ ({str(e).splitlines()[0]})") from None
    if not runs_on_dataflow(options):
        check_not_another_jobs_output(options.output, "evaluate")
    me = run_lock.new_lock_info("evaluate", options.run_id)
    result = execute(build_pipeline(options, info, shards, context, models, me, stamp), options,
                   f"evaluate: done. {FileSystems.join(options.output, M.METRICS_FILE)}  "
                   f"report: {FileSystems.join(options.output, M.REPORT_FILE)}",
                   on_failure=lambda: run_lock.release_quietly(FileSystems.join(options.output, LOCK), me))
    if not runs_on_dataflow(options):
        doc = M.load(options.output)
        print(f"evaluate: {doc['verdict']}", file=sys.stderr)
        if doc.get("parity"):
            print(f"evaluate: {parity_line(doc['parity'])}", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(main(run, prog="evaluate"))
