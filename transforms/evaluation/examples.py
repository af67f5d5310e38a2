"""What evaluate reads from a make_tfrecords split: the model input and the slices.

The TFRecords hold tf.Transform's output: categorical metadata as ids of
vocabularies built on train, and curate's ITA z-scored with train statistics.
dataset_context() recovers both mappings from the transform_fn saved beside
the data, once at launch; example_fields() turns one serialized example into
(key, label_id, slices, uint8 image) with the image decoded by the very op the
trainer uses (schemas.examples.decode_image).
"""
from __future__ import annotations

from schemas import examples as E
from schemas.lighting import LABELS as LIGHTING
from schemas.scin import BODY_PARTS
from transforms.image.skin_tone import monk_group, nearest_monk

# Slice families, in report order. Values are strings; an example belongs to
# one value of each family except body_part (SCIN cases name several parts).
FAMILIES = ("all", "monk_group", "fitzpatrick", "lighting", "body_part", "shot_type")
UNKNOWN = "unknown"
NOT_IN_TRAIN = "not_in_train_vocabulary"  # a value the train split never had: its id is -1
FITZPATRICK_TYPES = tuple(f"FST{i}" for i in range(1, 7))
# Where a Monk group / Fitzpatrick type came from (recorded per slice).
SCIN_MONK_US, SCIN_MONK_INDIA, CURATE_ESTIMATE = "scin_monk_us", "scin_monk_india", "curate_ita_estimate"
DERMATOLOGIST, SELF_REPORTED = "dermatologist", "self_reported"


def dataset_context(tfrecords_dir: str) -> dict:
    """{"vocabularies": {name: [values]}, "ita": (mean, std)} from tf.Transform's output.

    The z-score of ita_deg is linear, so transforming two raw rows (ITA 0 and
    1, everything else blank) gives its offset and scale exactly.
    """
    if "://" in tfrecords_dir:
        import tempfile
        with tempfile.TemporaryDirectory() as local:
            _copy_transform_output(tfrecords_dir, local)
            return dataset_context(local)
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft
    out = tft.TFTransformOutput(tfrecords_dir)
    vocabularies = {k: [v.decode() for v in out.vocabulary_by_name(k)] for k in E.CATEGORICAL}
    raw = {}
    for name, spec in E.raw_feature_spec().items():
        shape = [2] + list(spec.shape)
        raw[name] = (tf.constant(np.full(shape, b""), tf.string) if spec.dtype == tf.string
                     else tf.zeros(shape, spec.dtype))
    raw["ita_deg"] = tf.constant([0.0, 1.0], tf.float32)
    z = out.transform_raw_features(raw, drop_unused_features=True)["ita_deg_z"].numpy()
    step = float(z[1] - z[0])  # = 1 / std
    if not np.isfinite(step) or step == 0:
        raise ValueError(f"cannot recover the ITA scale from {tfrecords_dir}/transform_fn")
    return {"vocabularies": vocabularies, "ita": (-float(z[0]) / step, 1.0 / step)}


TRANSFORM_DIRS = ("transform_fn", "transformed_metadata", "metadata")


def _copy_transform_output(remote: str, local: str) -> None:
    """tf.Transform's saved output copied down through Beam's FileSystems, the
    project's one gs:// client (TensorFlow's own would ignore STORAGE_EMULATOR_HOST)."""
    import os
    from apache_beam.io.filesystems import FileSystems
    root = remote.rstrip("/") + "/"
    found = [m.path for d in TRANSFORM_DIRS
             for m in FileSystems.match([FileSystems.join(remote, d, "**")])[0].metadata_list]
    if not found:
        raise ValueError(f"no transform_fn/ under {remote}")
    for path in found:
        if path.endswith("/"):
            continue
        target = os.path.join(local, path[len(root):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(path, compression_type="uncompressed") as src, open(target, "wb") as dst:
            dst.write(src.read())


def _value(vocabulary: list[str], index: int) -> str:
    return vocabulary[index] if 0 <= index < len(vocabulary) else NOT_IN_TRAIN


def _lighting(index: int) -> str:
    """schemas.lighting's label, or unknown (curate's features missing, or records made before it)."""
    return LIGHTING[index] if 0 <= index < len(LIGHTING) else UNKNOWN


def monk_slice(monk_us: int, monk_india: int, ita_deg: float) -> tuple[str, str]:
    """(group, source): SCIN's US label, else its India label, else curate's ITA estimate."""
    if monk_us >= 1:
        return monk_group(monk_us), SCIN_MONK_US
    if monk_india >= 1:
        return monk_group(monk_india), SCIN_MONK_INDIA
    return monk_group(nearest_monk(ita_deg)), CURATE_ESTIMATE


def fitzpatrick_slice(derm: str, self_reported: str) -> tuple[str, str | None]:
    """(type, source): the dermatologist's label, else the self-report, else unknown."""
    if derm in FITZPATRICK_TYPES:
        return derm, DERMATOLOGIST
    if self_reported in FITZPATRICK_TYPES:
        return self_reported, SELF_REPORTED
    return UNKNOWN, None


def slices_of(features: dict, context: dict) -> tuple:
    """((family, value, source or None), ...) for one parsed example (plain values)."""
    vocab = context["vocabularies"]
    mean, std = context["ita"]
    ita = features["ita_deg_z"] * std + mean
    group, monk_source = monk_slice(features["monk_us"], features["monk_india"], ita)
    fitz, fitz_source = fitzpatrick_slice(_value(vocab["fitzpatrick_derm"], features["fitzpatrick_derm_id"]),
                                          _value(vocab["fitzpatrick_self"], features["fitzpatrick_self_id"]))
    out = [("all", "all", None), ("monk_group", group, monk_source), ("fitzpatrick", fitz, fitz_source),
           ("lighting", _lighting(features.get("lighting_id", -1)), None)]
    parts = [p for p, on in zip(BODY_PARTS, features["body_parts"]) if on > 0]
    out += [("body_part", p, None) for p in parts] or [("body_part", UNKNOWN, None)]
    out.append(("shot_type", _value(vocab["shot_type"], features["shot_type_id"]), None))
    return tuple(out)


def parse_example(serialized: bytes) -> dict:
    """The fields evaluate needs from one transformed tf.Example, as plain values."""
    import tensorflow as tf
    f = tf.train.Example.FromString(serialized).features.feature
    ints = ("label_id", "monk_us", "monk_india", "fitzpatrick_derm_id", "fitzpatrick_self_id", "shot_type_id")
    out = {k: int(f[k].int64_list.value[0]) for k in ints}
    # Records made before the lighting label have no lighting_id: their slice is unknown.
    out["lighting_id"] = int(f["lighting_id"].int64_list.value[0]) if "lighting_id" in f else -1
    out.update(key=f["key"].bytes_list.value[0].decode(), uri=f["uri"].bytes_list.value[0].decode(),
               image=f["image"].bytes_list.value[0],
               ita_deg_z=float(f["ita_deg_z"].float_list.value[0]),
               body_parts=list(f["body_parts"].float_list.value))
    return out


def decode(jpeg: bytes):
    """The uint8 HxWx3 array the trainer feeds (schemas.examples.decode_image)."""
    return E.decode_image(jpeg).numpy()
