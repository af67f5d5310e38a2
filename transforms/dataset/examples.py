"""Build raw training examples: one read and decode per image, JPEG out, tf.Example.

PreprocessImages reads each record's image and runs the shared model-input
path (transforms/image/preprocess.py); a failure becomes a dead letter. to_example /
record_batch_examples convert between dicts, tf.Example and tf.Transform's
Arrow record batches.
"""
from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import examples as E
from transforms.image.decode import ImageRejected
from schemas.examples import dead_letter
from transforms.dataset.join_labels import DEAD
from transforms.image.enhance import parse_recipe
from transforms.image.preprocess import preprocess_to_jpeg
from transforms.io.read import Missing, Refused, read_bytes


def example_key(uri: str) -> str:
    """Stable example key: order and shard placement derive from it."""
    return hashlib.sha256(uri.encode()).hexdigest()[:32]


def to_example(features: dict) -> bytes:
    """dict of str/bytes/int/float/list -> deterministic serialized tf.Example."""
    import tensorflow as tf
    feature = {}
    for name, value in features.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if all(isinstance(v, (bytes, str)) for v in values):
            f = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode() if isinstance(v, str) else v for v in values]))
        elif all(isinstance(v, int) for v in values):
            f = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            f = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
        feature[name] = f
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def raw_features(record: dict, jpeg: bytes, crop_used: str = "center") -> dict:
    """The RAW_FEATURE_SPEC dict for one record and its preprocessed image."""
    out = {k: record[k] for k in E.CATEGORICAL + E.PASSTHROUGH_INT + E.NUMERIC}
    out.update(key=example_key(record["uri"]), image=jpeg, crop_used=crop_used, label=record["label"] or "",
               split=record["split"], case_id=record["case_id"] or "", group_id=record["group_id"],
               uri=record["uri"], body_parts=record["body_parts"])
    return out


def record_batch_examples(batch_and_passthrough, split: str):
    """tf.Transform output batch -> (split, key, serialized transformed example)."""
    batch = batch_and_passthrough[0]
    for row in batch.to_pylist():
        flat = {k: (v[0] if isinstance(v, list) and k != "body_parts" else v) for k, v in row.items()}
        key = flat["key"].decode() if isinstance(flat["key"], bytes) else flat["key"]
        yield split, key, to_example(flat)


class _Preprocess(beam.DoFn):
    def __init__(self, image_size, crop_fraction, quality, max_pixels, allowed, max_bytes, max_decode_bytes,
                 crop="center"):
        self.kw = dict(image_size=image_size, crop_fraction=crop_fraction,
                       quality=quality, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, crop=crop)
        self.allowed, self.max_bytes = allowed, max_bytes

    def setup(self):
        self.done = Metrics.counter("make_tfrecords", "images_preprocessed")
        self.failed = Metrics.counter("make_tfrecords", "dead_unreadable")
        self.changed = Metrics.counter("make_tfrecords", "dead_changed_since_curate")

    def process(self, record):
        try:
            data, _retries = read_bytes(record["uri"], allowed=self.allowed, max_bytes=self.max_bytes)
            # The example must be the image curate judged and deduplicated: a file
            # rewritten since (a black frame, a copy of another upload) keeps the old verdict.
            if record.get("sha256") and hashlib.sha256(data).hexdigest() != record["sha256"]:
                self.changed.inc()
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                    record["uri"], "changed_since_curate", "its bytes are not those curate judged (sha256 "
                    f"{record['sha256'][:12]}...): rewritten after curate ran; rerun curate", record["case_id"]))
                return
            # curate's recipe for an image it rescued by enhancement: the same pixels score --enhance gives
            jpeg, crop_used = preprocess_to_jpeg(data, recipe=parse_recipe(record.get("enhance_recipe")), **self.kw)
        except Refused as e:  # never read: a location or file curate would not read either
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(record["uri"], e.reason, str(e), record["case_id"]))
            return
        except (Missing, ImageRejected, OSError, ValueError) as e:
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                record["uri"], "unreadable", f"{type(e).__name__}: {e}", record["case_id"]))
            return
        self.done.inc()
        yield raw_features(record, jpeg, crop_used)


class PreprocessImages(beam.PTransform):
    """record -> RAW_FEATURE_SPEC dict with the model-ready JPEG (+ `dead`);
    crop: "center" or "skin" (transforms/image/skin_crop.py), crop_used says which was cut."""

    def __init__(self, image_size, crop_fraction, quality, max_pixels, allowed, max_bytes=None,
                 max_decode_bytes=None, crop="center"):
        super().__init__()
        self.args = (image_size, crop_fraction, quality, max_pixels, allowed, max_bytes, max_decode_bytes, crop)

    def expand(self, records):
        return records | "Preprocess" >> beam.ParDo(_Preprocess(*self.args)).with_outputs(DEAD, main="examples")
