"""RelabelRareClasses: classes with too few labelled images become 'other', or dead letters."""
from __future__ import annotations

import apache_beam as beam

from schemas.examples import dead_letter
from transforms.dataset.join_labels import DEAD

OTHER = "other"
CLASS_COUNTS = "class_counts"


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


class RelabelRareClasses(beam.PTransform):
    """Joined records -> {"records": kept or relabelled records, DEAD: rare_class
    dead letters, CLASS_COUNTS: one {class: labelled images} dict, counted
    before relabelling (dataset_info.json's rare_classes)}."""

    def __init__(self, min_count: int, policy: str):
        super().__init__()
        self.min_count, self.policy = min_count, policy

    def expand(self, records):
        class_counts = (records
                        | "Labels" >> beam.FlatMap(lambda r: [r["label"]] if r["label"] else [])
                        | "CountPerClass" >> beam.combiners.Count.PerElement()
                        | "ClassCounts" >> beam.combiners.ToDict())
        kept = records | "Relabel" >> beam.FlatMap(
            relabel_rare, counts=beam.pvalue.AsSingleton(class_counts), min_count=self.min_count,
            policy=self.policy).with_outputs(DEAD, main="records")
        return {"records": kept.records, DEAD: kept[DEAD], CLASS_COUNTS: class_counts}
