"""score's predictions rows (schemas/predictions.py): scored, skipped or failed. Pure."""
from __future__ import annotations

import datetime as dt

import numpy as np

from schemas import predictions as P
from transforms.io.partitions import UNDATED  # the partition of a run without dates
from transforms.scoring.inference import first_line, top_k


def prediction_row(uri, partition, version, status, scored_at, **kw) -> dict:
    """A predictions row (schemas/predictions.py), every column present; `partition` is a
    YYYY-MM-DD date or UNDATED."""
    row = {f.name: None for f in P.SCHEMA}
    row.update(uri=uri, partition_date=None if partition == UNDATED else dt.date.fromisoformat(partition),
               model_version=version, status=status, scored_at=scored_at,
               reasons=[], top_labels=[], top_probabilities=[], probabilities=[])
    row.update(kw)
    return row


def key_extras(key) -> tuple[str | None, bool | None]:
    """A scoring key's (crop_used, enhanced): its fifth and sixth elements,
    None where a key has none (enhanced is None without score --enhance)."""
    extras = tuple(key[4:6])
    return extras + (None,) * (2 - len(extras))


def partition_of(row) -> str:
    """The dt= partition a row is published in (undated runs: UNDATED)."""
    return row["partition_date"].isoformat() if row["partition_date"] else UNDATED


def scored_row(result, vocabulary, k, version, scored_at) -> dict:
    """The row of one RunInference result ((partition, uri, image_id, sha256, crop_used, enhanced), probabilities)."""
    key, probabilities = result  # KerasBundleHandler yields bare vectors
    (partition, uri, image_id, sha256), (crop_used, enhanced) = key[:4], key_extras(key)
    probs = np.asarray(probabilities, dtype=np.float32)
    labels, top = top_k(probs, vocabulary, k)
    return prediction_row(uri, partition, version, "scored", scored_at, image_id=image_id, sha256=sha256,
                enhanced=enhanced, crop_used=crop_used, top_labels=labels, top_probabilities=top,
                probabilities=[{"label": l, "probability": float(p)} for l, p in zip(vocabulary, probs)])


def error_line(error) -> str:
    """`Type: message` of the exception Beam's dead-letter output carries as
    (type, repr, formatted traceback): the line, not the ~4 KB stack."""
    if isinstance(error, tuple) and len(error) == 3 and isinstance(error[0], type):
        exc_type, _repr, trace = error
        name = exc_type.__name__
        # The last line opening with the (maybe module-qualified) type name
        # starts the final exception's message; the repr is the fallback.
        heads = [l for l in "".join(trace or []).splitlines()
                 if l[:1].strip() and l.split(":", 1)[0].rsplit(".", 1)[-1] == name]
        return first_line(f"{name}:{heads[-1].split(':', 1)[1]}" if heads and ":" in heads[-1] else f"{name}: {_repr}")
    return first_line(f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error))


def failed_batch_rows(failure, version, scored_at):
    """A failed row per image of a batch RunInference could not score (its dead-letter output)."""
    batch, error = failure
    line = f"inference failed: {error_line(error)}"
    for key, _array in batch:
        (partition, uri, image_id, sha256), (_crop_used, enhanced) = key[:4], key_extras(key)
        yield prediction_row(uri, partition, version, "failed", scored_at, image_id=image_id, sha256=sha256,
                   enhanced=enhanced,
                   reasons=["inference_error"], error=line)
