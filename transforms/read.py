"""Read one object's bytes through Beam's FileSystems, with bounded retries."""
from __future__ import annotations

import time

from apache_beam.io.filesystems import FileSystems


class Missing(Exception):
    """The URI names no object."""


def _is_not_found(err: BaseException) -> bool:
    if isinstance(err, FileNotFoundError):
        return True
    text = f"{type(err).__name__}: {err}"
    return "NotFound" in text or "404" in text or "No such file" in text or "not found" in text.lower()


def read_bytes(uri: str, attempts: int = 3, first_delay: float = 0.2) -> tuple[bytes, int]:
    """Return (bytes, retries used). Raises Missing, or the last I/O error.

    Transient errors (throttling, resets) are retried with exponential backoff;
    a missing object is not, since retrying cannot make it appear.
    """
    for attempt in range(attempts):
        try:
            with FileSystems.open(uri, compression_type="uncompressed") as f:
                return f.read(), attempt
        except Exception as e:  # filesystem errors vary by scheme
            if _is_not_found(e):
                raise Missing(f"no object at {uri}") from None
            if attempt == attempts - 1:
                raise
            time.sleep(first_delay * 2 ** attempt)
    raise AssertionError("unreachable")
