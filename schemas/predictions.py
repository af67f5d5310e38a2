"""The score job's predictions table, one Parquet dataset per partition.

Layout: OUTPUT/predictions/dt=YYYY-MM-DD/model=VERSION/predictions-SSSSS-of-NNNNN.parquet
plus _SUCCESS (JSON counts) once the partition is complete, and
OUTPUT/dead_letters/dt=YYYY-MM-DD/model=VERSION/dead_letters-SSSSS-of-NNNNN.jsonl
when some images could not be scored: outside predictions/, so that tree is
one hive-partitioned Parquet dataset (pyarrow.dataset, BigQuery external tables).
"""
from __future__ import annotations

import pyarrow as pa

STATUSES = ("scored", "skipped_quality", "failed")

# One class and its probability. A list of these, rather than a bare float
# list, carries the labels with the numbers: BigQuery (Parquet list inference)
# reads it as ARRAY<STRUCT<label STRING, probability FLOAT64>>, pandas as a
# list of {"label", "probability"} dicts, duckdb as LIST(STRUCT(...)).
LABEL_PROBABILITY = pa.struct([pa.field("label", pa.string()), pa.field("probability", pa.float32())])

# Names that are not reserved in BigQuery and do not clash with the hive keys
# of the path (dt=, model=), which readers add as columns of their own.
SCHEMA = pa.schema([
    pa.field("uri", pa.string()),
    pa.field("image_id", pa.string()),           # as curate's: the manifest's image_id/id, else the file stem
    pa.field("sha256", pa.string()),             # hex SHA-256 of the bytes scored (curate's sha256); null if never read
    pa.field("partition_date", pa.date32()),     # the dt=YYYY-MM-DD input partition; null for undated runs
    pa.field("model_version", pa.string()),
    pa.field("status", pa.string()),             # one of STATUSES
    pa.field("reasons", pa.list_(pa.string())),  # schemas/reasons.py codes: quality when skipped, input/inference when failed
    pa.field("top_labels", pa.list_(pa.string())),
    pa.field("top_probabilities", pa.list_(pa.float32())),  # parallel to top_labels
    pa.field("probabilities", pa.list_(LABEL_PROBABILITY)),  # every class, in label_vocabulary order
    pa.field("error", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),  # run start
    pa.field("enhanced", pa.bool_()),            # score --enhance: true if scored after the enhancement recipe; null without it
    pa.field("crop_used", pa.string()),          # the square the model saw: skin (around the main skin region) or center (--crop center, or no skin region found); null if not scored
])

# Dead-letter JSONL keys: the identifying columns of the same row.
DEAD_LETTER_FIELDS = ("uri", "image_id", "sha256", "partition_date", "model_version", "reasons", "error")


def partition_dir(output: str, date: str, version: str) -> str:
    return f"{output.rstrip('/')}/predictions/dt={date}/model={version}"


def dead_letter_dir(output: str, date: str, version: str) -> str:
    return f"{output.rstrip('/')}/dead_letters/dt={date}/model={version}"
