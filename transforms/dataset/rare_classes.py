"""Rare classes: classes with too few labelled images become 'other', or dead letters
(make_tfrecords' RareClasses step)."""
from __future__ import annotations

import apache_beam as beam

from schemas.examples import dead_letter
from transforms.dataset.join_labels import DEAD

OTHER = "other"


def relabel_rare(record, counts, min_count, policy):
    """The record as it goes on: a rare class (under min_count images) becomes
    OTHER (policy "other", the old label kept as original_label) or a
    rare_class dead letter (policy "drop"); unlabelled records pass."""
    label = record["label"]
    if label is None or counts.get(label, 0) >= min_count:
        yield record
    elif policy == "other":
        yield dict(record, label=OTHER, original_label=label)
    else:
        yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
            record["uri"], "rare_class", f"class {label!r} has {counts[label]} < {min_count} images",
            record["case_id"]))
