"""PrepareImages: score's read, decode, quality gate and model input, on threads
ahead of inference (transforms/io/prefetch.py), one image at a time."""
from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.image.decode import ImageRejected
from transforms.io.prefetch import PrefetchingDoFn
from transforms.io.read import Missing, Refused, read_bytes
from transforms.scoring.inference import first_line
from transforms.scoring.prepare import prepare_model_input
from transforms.scoring.rows import prediction_row

DONE = "done"  # output tag of rows already final (skipped_quality, failed)


class PrepareImages(PrefetchingDoFn):
    """(partition, uri, image_id) -> ((partition, uri, image_id, sha256, crop_used, enhanced), model input),
    or a final row on DONE: skipped_quality (the gate) or failed (reason codes).
    Read, decode, gate and preprocess uploads on threads ahead of inference."""

    def __init__(self, policy, settings, gate, version, scored_at, allowed, threads, depth, enhance=False):
        super().__init__(threads=threads, depth=depth)
        self.enhance = enhance
        self.policy, self.settings, self.gate, self.allowed = policy, settings, gate, allowed
        self.version, self.scored_at = version, scored_at

    def setup(self):
        super().setup()
        self.skipped = Metrics.counter("score", "skipped_quality")
        self.failed = Metrics.counter("score", "failed_input")
        self.internal = Metrics.counter("score", "internal_errors")

    def _failed(self, partition, uri, reason, error, **ids) -> list:
        # curate's reason codes (schemas/reasons.py), so dead letters of both
        # jobs can be counted and filtered the same way.
        self.failed.inc()
        return [beam.pvalue.TaggedOutput(DONE, prediction_row(uri, partition, self.version, "failed", self.scored_at,
                                                    reasons=[reason], error=first_line(error), **ids))]

    def work(self, item) -> list:
        partition, uri, image_id = item
        try:
            data, _retries = read_bytes(uri, allowed=self.allowed, max_bytes=self.policy.max_bytes)
        except Refused as e:  # never read: outside the roots, a special file, over max_bytes
            return self._failed(partition, uri, e.reason, str(e), image_id=image_id)
        except Missing as e:
            return self._failed(partition, uri, "missing", str(e), image_id=image_id)
        except Exception as e:  # I/O still failing after retries
            return self._failed(partition, uri, "unreadable", f"read failed: {type(e).__name__}: {e}",
                                image_id=image_id)
        ids = {"image_id": image_id, "sha256": hashlib.sha256(data).hexdigest()}  # curate's sha256: the join key
        try:
            prepared = prepare_model_input(data, self.policy, gate=self.gate, enhance=self.enhance,
                                           **self.settings)
            reasons, array = prepared.reasons, prepared.array
        except ImageRejected as e:
            return self._failed(partition, uri, e.reason, str(e), **ids)
        except Exception as e:  # a bug must not lose the image: a row, counted
            self.internal.inc()
            return self._failed(partition, uri, "unreadable", f"internal error: {type(e).__name__}: {e}", **ids)
        if reasons:
            self.skipped.inc()
            return [beam.pvalue.TaggedOutput(DONE, prediction_row(uri, partition, self.version, "skipped_quality",
                                                        self.scored_at, reasons=reasons, **ids))]
        # enhanced: None without --enhance, so the column says nothing it was not asked.
        enhanced = (prepared.recipe is not None) if self.enhance else None
        return [((partition, uri, ids["image_id"], ids["sha256"], prepared.crop_used, enhanced), array)]
