"""Read one object's bytes, with bounded, counted retries.

Every retry is counted in the Beam counter `io/read_retries`, and reads that
give up in `io/read_failures`, here rather than in each caller, so every job
that reads images (curate, make_tfrecords, score) shows them in its metrics.
"""
from __future__ import annotations

import time

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

RETRIES = Metrics.counter("io", "read_retries")
FAILURES = Metrics.counter("io", "read_failures")


class Missing(Exception):
    """The URI names no object."""


def _is_not_found(err: BaseException) -> bool:
    # Decide by type where we can: a text match on "404" also matched retried
    # 503s whose message held a URL with 404 in a port or an object name.
    from google.api_core import exceptions as gexc
    if isinstance(err, (FileNotFoundError, gexc.NotFound)):
        return True
    if isinstance(err, gexc.GoogleAPIError):  # any other API error, incl. RetryError
        return False
    text = f"{type(err).__name__}: {err}"
    return "NotFound" in type(err).__name__ or "No such file" in text or "not found" in text.lower()


def _read_gcs(uri: str, deadline: float, first_delay: float) -> tuple[bytes, int]:
    """(bytes, retries): one gs:// object, transient errors retried for up to `deadline` s.

    Why not FileSystems.open here: its reader retries every transient error
    (429, 5xx, resets) inside the client library for up to 120 s per call,
    with no way to bound or observe it, and it spends two requests per object
    (metadata, then a range read). Here the same client Beam's gs:// filesystem
    builds (credentials, STORAGE_EMULATOR_HOST) fetches the object in one
    request, with the library's own retry predicate (the one Beam's gcsio
    uses) and backoff, but our deadline and a callback that sees each failure.
    """
    from apache_beam.io.gcp.gcsio import parse_gcs_path
    from google.api_core.retry import Retry
    from google.cloud.storage.retry import _should_retry

    failures = []
    retry = Retry(predicate=_should_retry, initial=first_delay, maximum=max(first_delay, 16.0),
                  timeout=deadline, on_error=failures.append)
    client = FileSystems.get_filesystem(uri)._gcsIO().client
    bucket, name = parse_gcs_path(uri)
    try:
        # raw_download: the stored bytes, never a transcoded (gunzipped) form, as Beam reads them.
        data = client.bucket(bucket).blob(name).download_as_bytes(raw_download=True, retry=retry)
    except Exception:
        # on_error also saw the failure it gave up on: that one was not retried.
        RETRIES.inc(max(len(failures) - 1, 0))
        raise
    RETRIES.inc(len(failures))
    return data, len(failures)


def read_bytes(uri: str, attempts: int = 3, first_delay: float = 0.2,
               deadline: float = 120.0) -> tuple[bytes, int]:
    """Return (bytes, retries used). Raises Missing, or the last I/O error.

    Transient errors (throttling, resets) are retried with exponential backoff;
    a missing object is not, since retrying cannot make it appear. gs:// reads
    retry the errors GCS clients treat as transient for up to `deadline`
    seconds (the client library's own default window), then raise
    google.api_core.exceptions.RetryError; other filesystems retry any other
    error `attempts` times in all. Retries count in io/read_retries, reads
    that give up in io/read_failures.
    """
    if uri.startswith("gs://"):
        try:
            return _read_gcs(uri, deadline, first_delay)
        except Exception as e:
            if _is_not_found(e):
                raise Missing(f"no object at {uri}") from None
            FAILURES.inc()
            raise
    for attempt in range(attempts):
        try:
            with FileSystems.open(uri, compression_type="uncompressed") as f:
                return f.read(), attempt
        except Exception as e:  # filesystem errors vary by scheme
            if _is_not_found(e):
                raise Missing(f"no object at {uri}") from None
            if attempt == attempts - 1:
                FAILURES.inc()
                raise
            RETRIES.inc()
            time.sleep(first_delay * 2 ** attempt)
    raise AssertionError("unreachable")
