"""AnalyzeImages: the expensive per-image step of curate, as a PTransform.

Reads each image once through transforms.io.read (which refuses, unread, URIs
outside the allowed roots, special files and files over max_bytes), runs transforms.image.analyze.analyze_image,
and emits one row per input whatever happens, plus report thumbnails on a
side output (the report picks the few it shows after duplicates are
resolved). Input failures become rows with a reason, never exceptions.

Every thumbnail waits for that pick, ~3 KB an image; with `spill` (a local
directory, as curate runs on DirectRunner, whose runner would hold them in
memory) they are written there every THUMBNAILS_PER_FILE and go out as
references (transforms/io/spill.py), read back only for the few shown.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.policy import QualityPolicy
from transforms.io import spill as spill_files
from transforms.io.packing import in_global_window
from transforms.io.allowed_roots import AllowedRoots
from transforms.image.analyze import analyze_and_enhance, analyze_image, input_failure
from transforms.image.enhance import BEFORE_ENHANCE
from transforms.io.inputs import ImageRef
from transforms.io.progress import ProgressLog
from transforms.io.read import Missing, Refused, read_bytes

THUMBNAILS = "thumbnails"
THUMBNAILS_PER_FILE = 250


class _AnalyzeDoFn(beam.DoFn):
    def __init__(self, policy: QualityPolicy, thumbnail_px: int, allowed: AllowedRoots, enhance: bool = False,
                 spill: str | None = None):
        self.policy, self.thumbnail_px, self.allowed = policy, thumbnail_px, allowed
        self.enhance, self.spill = enhance, spill

    def setup(self):
        self.progress = ProgressLog("curate")
        self.images = Metrics.counter("curate", "images_analyzed")
        self.bytes_read = Metrics.counter("curate", "bytes_read")
        self.internal = Metrics.counter("curate", "internal_errors")
        self.enhanced = Metrics.counter("curate", "enhanced")

    def start_bundle(self):
        self.outbox = spill_files.Outbox(self.spill, THUMBNAILS_PER_FILE) if self.spill else None

    def finish_bundle(self):
        if self.outbox is not None:
            yield from in_global_window(self.outbox.release())

    def _thumbnail(self, key: str, jpeg: bytes):
        if self.outbox is None:
            return [beam.pvalue.TaggedOutput(THUMBNAILS, (key, jpeg))]
        return self.outbox.put(jpeg, THUMBNAILS, key)

    def process(self, ref: ImageRef):
        ids = {"image_id": ref.image_id, "case_id": ref.case_id}
        row, thumb, before = self._read_and_analyze(ref.uri, ids, ref.size)
        self.images.inc()
        self.progress.tick(row["status"] == "rejected")
        yield row
        if thumb:
            yield from self._thumbnail(row["uri"], thumb)
        if row.get("enhanced"):
            self.enhanced.inc()
            if before:
                yield from self._thumbnail(row["uri"] + BEFORE_ENHANCE, before)

    def _read_and_analyze(self, uri: str, ids: dict, listed_size: int | None = None):
        """(row, thumbnail or None, thumbnail before enhancement or None);
        input failures and bugs become rows too."""
        try:
            data, _retries = read_bytes(uri, allowed=self.allowed, max_bytes=self.policy.max_bytes,
                                       listed_size=listed_size)
            self.bytes_read.inc(len(data))
        except Refused as e:  # never read (or not past max_bytes)
            return input_failure(uri, e.reason, str(e), self.policy, **ids), None, None
        except Missing as e:
            return input_failure(uri, "missing", str(e), self.policy, **ids), None, None
        except Exception as e:  # I/O still failing after retries
            return input_failure(uri, "unreadable", f"read failed: {type(e).__name__}: {e}",
                                 self.policy, **ids), None, None
        try:
            if self.enhance:
                return analyze_and_enhance(uri, data, self.policy, thumbnail_px=self.thumbnail_px, **ids)
            return (*analyze_image(uri, data, self.policy, thumbnail_px=self.thumbnail_px, **ids), None)
        except Exception as e:  # a bug must not lose the image: record it
            self.internal.inc()
            return input_failure(uri, "unreadable", f"internal error: {type(e).__name__}: {e}",
                                 self.policy, **ids), None, None


class AnalyzeImages(beam.PTransform):
    """ImageRef -> feature row (main output) and (uri, thumbnail JPEG) on
    `thumbnails` for every decoded image (and, with enhance, the image before
    enhancement under uri + BEFORE_ENHANCE for every rescued one). With
    `spill` (a local directory), (uri, reference) instead: read the JPEG with
    transforms.io.spill.load, remove the directory when done."""

    def __init__(self, policy: QualityPolicy, thumbnail_px: int = 96, allowed: AllowedRoots | None = None,
                 enhance: bool = False, spill: str | None = None):
        super().__init__()
        self.policy, self.thumbnail_px = policy, thumbnail_px
        self.allowed = allowed or AllowedRoots([])
        self.enhance, self.spill = enhance, spill

    def expand(self, refs):
        return refs | "Analyze" >> beam.ParDo(
            _AnalyzeDoFn(self.policy, self.thumbnail_px, self.allowed, self.enhance, self.spill)).with_outputs(
                THUMBNAILS, main="rows")
