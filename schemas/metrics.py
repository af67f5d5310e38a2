"""The evaluate job's metrics.json: every field and what it means.

FIELDS is the one description of the file (the README's table is printed by
`python -m schemas.metrics`). `load()` reads one back and `comparable()`
refuses two reports measured on different example sets.
"""
from __future__ import annotations

import json

SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"

# (path, meaning). ROLE is `model` (--model_uri) or `compare` (--compare_model_uri);
# FIG is a headline figure (transforms.evaluation.metrics.HEADLINE).
FIELDS = [
    ("schema_version", f"{SCHEMA_VERSION}; bumped when a field changes meaning"),
    ("split, tfrecords", "the split evaluated and the make_tfrecords output it came from"),
    ("fingerprint", "sha256 of the sorted keys of the evaluated examples, newline-joined: two reports compare only if equal"),
    ("examples.in_split", "examples the split's shards hold (checked against dataset_info.json)"),
    ("examples.evaluated", "examples whose label is in the model vocabulary: every figure is over these"),
    ("examples.skipped_unknown_label", "examples whose class the train split never had (label_id -1): no output unit to score"),
    ("label_vocabulary", "class names, index = model output unit = confusion-matrix row/column"),
    ("models.ROLE", "uri and version (model_info.json) of each model evaluated"),
    ("bootstrap", "resamples, seed, level (0.95) and method: percentile intervals over Poisson resamples (each example's weights seeded by seed and key), the same weights for both models (paired)"),
    ("calibration_bins, min_slice_n", "settings: ECE bins; slices below min_slice_n are reported and flagged, not hidden"),
    ("overall.ROLE.headline.FIG", "accuracy, top3_accuracy, balanced_accuracy, macro_f1, macro_auroc, ece on the whole set (null when undefined)"),
    ("overall.ROLE.per_class.CLASS", "precision (null if never predicted), recall (null if no examples), f1, support, one-vs-rest auroc (null without positives and negatives)"),
    ("overall.ROLE.confusion_matrix", "counts, rows true class, columns predicted class, vocabulary order"),
    ("overall.ROLE.reliability", "per confidence bin: lower, upper, n, mean confidence, accuracy (the reliability diagram's points)"),
    ("slices[]", "family (all, monk_group, fitzpatrick, lighting, body_part, shot_type), value, n, below_min_n"),
    ("slices[].sources", "for monk_group and fitzpatrick: how many examples took their value from each source (scin_monk_us, scin_monk_india, curate_ita_estimate; dermatologist, self_reported)"),
    ("slices[].metrics.ROLE.FIG", "value and ci95 [low, high] (null if no resample defined it)"),
    ("slices[].difference.FIG", "model - compare: value, ci95 (paired bootstrap), significant (ci95 excludes 0 and n >= min_slice_n), better (model, compare or null; lower ECE is better)"),
    ("input", "tfrecord_arrays (the stored training-time arrays) or source_images (--from_images: each record's source uri read and prepared by score's code)"),
    ("parity", "null, or with --from_images the train/serve parity over every example of the split: examples, settings (image_size, crop_fraction, jpeg_quality of score's preprocessing), tolerance, arrays_differ (examples whose served array differs from the stored one by more than tolerance at some pixel), max_abs_pixel_diff (0-255), predictions_differ (examples whose predicted class differs between the two arrays), examples_differing (up to 20 keys)"),
    ("verdict", "one line: the headline figures, or which model is better on what and where the difference is not significant"),
    ("evaluated_at", "UTC time of the run"),
]


class NotComparable(ValueError):
    """Two reports that must not be compared (one line)."""


def load(path: str) -> dict:
    """A metrics.json (or the folder holding it), local or gs://; ValueError if it is not one."""
    from apache_beam.io.filesystems import FileSystems
    if not path.endswith(".json"):
        path = FileSystems.join(path, METRICS_FILE)
    if not FileSystems.exists(path):
        raise ValueError(f"{path} not found")
    # A run that failed after writing its metrics (its input rewritten while
    # read, its lock lost) leaves them without the marker: not a result.
    from transforms.io.run_lock import MARKER
    folder = path.rsplit("/", 1)[0] if "/" in path else "."   # a bare metrics.json is in the working folder
    if not FileSystems.exists(FileSystems.join(folder, MARKER)):
        raise ValueError(f"{folder} has no _SUCCESS: evaluate did not finish there (it failed or is still "
                         "running); rerun evaluate")
    from transforms.io.inputs import read_named_file
    raw = read_named_file(path, "metrics")  # a FIFO or folder: one line, never a hang
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path} is not JSON") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or "fingerprint" not in data:
        raise ValueError(f"{path} is not an evaluate metrics.json (schema_version {SCHEMA_VERSION})")
    return data


def comparable(a: dict, b: dict) -> None:
    """NotComparable unless both reports measured the same examples of the same classes."""
    if a["fingerprint"] != b["fingerprint"]:
        raise NotComparable(
            f"different example sets: fingerprint {a['fingerprint'][:12]} ({a['examples']['evaluated']} examples "
            f"of {a['split']}) vs {b['fingerprint'][:12]} ({b['examples']['evaluated']} of {b['split']}); "
            f"evaluate both models on the same split of the same make_tfrecords output")
    if a["label_vocabulary"] != b["label_vocabulary"]:
        raise NotComparable("same examples but different label vocabularies")


if __name__ == "__main__":
    print("| field | meaning |\n|---|---|")
    for name, meaning in FIELDS:
        print(f"| `{name}` | {meaning} |")
