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

SCHEMA = pa.schema([
    pa.field("uri", pa.string()),
    pa.field("partition", pa.string()),          # the dt=YYYY-MM-DD date
    pa.field("model_version", pa.string()),
    pa.field("status", pa.string()),             # one of STATUSES
    pa.field("reasons", pa.list_(pa.string())),  # schemas/reasons.py codes: quality when skipped, input/inference when failed
    pa.field("top_labels", pa.list_(pa.string())),
    pa.field("top_probabilities", pa.list_(pa.float32())),
    pa.field("probabilities", pa.list_(pa.float32())),  # in label_vocabulary order
    pa.field("error", pa.string()),
    pa.field("scored_at", pa.string()),          # run start, UTC ISO 8601
])


def partition_dir(output: str, date: str, version: str) -> str:
    return f"{output.rstrip('/')}/predictions/dt={date}/model={version}"


def dead_letter_dir(output: str, date: str, version: str) -> str:
    return f"{output.rstrip('/')}/dead_letters/dt={date}/model={version}"
