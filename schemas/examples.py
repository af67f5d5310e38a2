"""The training-example contract: raw and transformed features, and a reader.

RAW_FEATURE_SPEC is what make_tfrecords feeds tf.Transform; the TFRecords on
disk hold the transformed features (TRANSFORMED_FEATURE_SPEC, also saved by
tf.Transform as transformed_metadata/ beside the data). read_split() is the
one way a trainer or test reads a split back. tfds_features() types the same
records as TFDS features, for make_tfrecords --tfds (tfds.builder_from_directory).
"""
from __future__ import annotations

import json
import os

from schemas.scin import BODY_PARTS

# Quality features carried from curate and z-scored with train statistics.
NUMERIC = ("brightness_mean", "sharpness", "entropy", "colorfulness", "skin_fraction", "ita_deg")
# Categorical metadata mapped to integer ids by vocabularies built on train.
CATEGORICAL = ("fitzpatrick_self", "fitzpatrick_derm", "age_group", "sex_at_birth", "shot_type")
# Kept as they are (ids for tracing, Monk labels for fairness slicing).
PASSTHROUGH_STR = ("key", "image", "label", "split", "case_id", "group_id", "uri", "crop_used")
# crop_used: the square `image` was cut from, "skin" (around the main skin
# region, make_tfrecords --crop skin) or "center"; records made before it read as "center".
# lighting_id: schemas.lighting's label of curate's exposure features (0
# well_lit, 1 poor_lighting, -1 unknown), an auxiliary label for a multitask head.
PASSTHROUGH_INT = ("monk_us", "monk_india", "lighting_id")
LABEL_VOCAB = "label"
UNKNOWN_ID = -1  # label/categorical value not in the train vocabulary
# make_tfrecords --tfds: records and TFDS metadata in OUT/TFDS_DIR/, shards
# named as TFDS names them ({TFDS_NAME}-{split}.tfrecord-SSSSS-of-NNNNN).
TFDS_NAME = "skin_images"
TFDS_DIR = "tfds"
# How the stored images are made (make_tfrecords' --image_size, --crop_fraction,
# --jpeg_quality defaults; dataset_info.json "sources" records the run's, and a
# trained bundle carries them as trained_on.sources). score and evaluate
# --from_images prepare images the same way (schemas.model_bundle.image_settings).
IMAGE_DEFAULTS = {"image_size": 224, "crop_fraction": 0.875, "jpeg_quality": 90}
TFDS_VERSION = "1.0.0"


def raw_feature_spec() -> dict:
    import tensorflow as tf
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in PASSTHROUGH_STR + CATEGORICAL}
    spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in PASSTHROUGH_INT})
    spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in NUMERIC})
    spec["body_parts"] = tf.io.FixedLenFeature([len(BODY_PARTS)], tf.float32)
    return spec


def transformed_feature_spec() -> dict:
    import tensorflow as tf
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in PASSTHROUGH_STR}
    spec["crop_used"] = tf.io.FixedLenFeature([], tf.string, default_value="center")
    spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in PASSTHROUGH_INT})
    spec["label_id"] = tf.io.FixedLenFeature([], tf.int64)
    spec.update({f"{k}_id": tf.io.FixedLenFeature([], tf.int64) for k in CATEGORICAL})
    spec.update({f"{k}_z": tf.io.FixedLenFeature([], tf.float32) for k in NUMERIC})
    spec["body_parts"] = tf.io.FixedLenFeature([len(BODY_PARTS)], tf.float32)
    return spec


def _tfds_safe_names(names) -> bool:
    """TFDS keeps ClassLabel names in a text file it reads back stripped, one a
    line, dropping empty lines: only names that survive that can be given."""
    names = list(names)
    return all(n and n == n.strip() and "\n" not in n for n in names) and len(set(names)) == len(names)


def tfds_features(image_size: int, label_names) -> "tfds.features.FeaturesDict":
    """TRANSFORMED_FEATURE_SPEC as TFDS features: `image` a JPEG Image of
    image_size x image_size x 3, `label_id` a ClassLabel named by the train
    vocabulary (-1, TFDS's "no label", when the label was not seen in train),
    `lighting_id` a ClassLabel named well_lit, poor_lighting, strings Text, numbers Tensors of the spec's dtype and shape."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds
    features = {}
    for name, spec in transformed_feature_spec().items():
        if name == "image":
            features[name] = tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="jpeg")
        elif name == "label_id":
            names = list(label_names)
            features[name] = (tfds.features.ClassLabel(names=names) if _tfds_safe_names(names)
                              else tfds.features.ClassLabel(num_classes=len(names)))
        elif name == "lighting_id":
            from schemas.lighting import LABELS
            features[name] = tfds.features.ClassLabel(names=list(LABELS))
        elif spec.dtype == tf.string:
            features[name] = tfds.features.Text()
        else:
            features[name] = tfds.features.Tensor(shape=tuple(spec.shape), dtype=np.dtype(spec.dtype.as_numpy_dtype))
    return tfds.features.FeaturesDict(features)


# make_tfrecords' dead-letter row (OUT/dead_letters/*.jsonl); reason codes in
# schemas/reasons.py. Never image bytes or per-person metadata.
DEAD_LETTER_FIELDS = ("uri", "case_id", "reason", "error")


def dead_letter(uri, reason, error, case_id=None) -> dict:
    return dict(zip(DEAD_LETTER_FIELDS, (uri, case_id, reason, error), strict=True))


# make_tfrecords' description of its output (counts, shards, vocabulary, class
# weights, sources), written just before its _SUCCESS marker.
DATASET_INFO = "dataset_info.json"


def encode_dataset_info(info: dict) -> bytes:
    """dataset_info.json's bytes: the one writer's format (train_baseline's
    default model version hashes these bytes)."""
    return json.dumps(info, indent=2, sort_keys=True).encode()


def parse_dataset_info(raw: bytes, path: str) -> dict:
    """dataset_info.json's content; ValueError naming `path` unless it is JSON
    with label_vocabulary and splits."""
    try:
        info = json.loads(raw)
        _ = info["label_vocabulary"], info["splits"]  # every reader needs both
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"invalid {DATASET_INFO} ({type(e).__name__}: {e}): {path}") from None
    return info


def dataset_info(dataset_dir: str) -> dict:
    import tensorflow as tf
    path = os.path.join(dataset_dir, DATASET_INFO)
    with tf.io.gfile.GFile(path, "rb") as f:
        return parse_dataset_info(f.read(), path)


def split_files(dataset_dir: str, split: str) -> list[str]:
    """The split's shard paths, in shard order, from dataset_info.json."""
    info = dataset_info(dataset_dir)
    return [os.path.join(dataset_dir, s["file"]) for s in info["splits"][split]["shards"]]


def decode_image(jpeg):
    """The one decode the trainer and the scorer both use (same op, same bytes)."""
    import tensorflow as tf
    return tf.io.decode_jpeg(jpeg, channels=3)


def read_split(dataset_dir: str, split: str, batch_size: int | None = None,
               shuffle_buffer: int = 0, seed: int = 0):
    """tf.data of (features, label_id) with features['image'] decoded to uint8 RGB."""
    import tensorflow as tf
    info = dataset_info(dataset_dir)
    files = split_files(dataset_dir, split)
    compression = "GZIP" if info["compression"] == "gzip" else ""
    spec = transformed_feature_spec()

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        ex["image"] = decode_image(ex["image"])
        return ex, ex["label_id"]

    ds = tf.data.TFRecordDataset(files, compression_type=compression)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size) if batch_size else ds
