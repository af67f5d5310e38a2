"""Read one object's bytes: only from allowed places, only regular files, only
up to a byte limit, with bounded, counted retries.

This is the one function every job that reads images (curate, make_tfrecords,
score) reads them through, so its refusals cannot be bypassed by a caller:
  - the allowed roots are checked here, on the path the read really opens: a
    local path is resolved (symlinks followed) and then opened one component at
    a time from the resolved root with O_NOFOLLOW, so a symlink swapped in
    after the check fails the open instead of escaping the root;
  - only regular files are read: a FIFO would block the read forever and a
    link to /dev/zero never ends, so the file is opened O_NONBLOCK and fstat'ed
    before any byte is read;
  - at most max_bytes are read: a local file's size is known from fstat and a
    larger one is refused unread; a gs:// read asks for max_bytes + 1 bytes only.
Refusals raise Refused(reason, message) with a schemas/reasons.py code.

Every retry is counted in the Beam counter `io/read_retries`, and reads that
give up in `io/read_failures`, here rather than in each caller, so every job
shows them in its metrics.
"""
from __future__ import annotations

import errno
import io
import os
import re
import stat
import time

from apache_beam.metrics import Metrics

RETRIES = Metrics.counter("io", "read_retries")
FAILURES = Metrics.counter("io", "read_failures")


class Missing(Exception):
    """The URI names no object."""


class Refused(Exception):
    """Not read (or not read past the limit), for `reason`, a schemas/reasons.py code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


OUTSIDE, SPECIAL, TOO_LARGE, UNREADABLE = "outside_allowed_root", "not_a_regular_file", "too_large", "unreadable"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def listed_name(path: str) -> str:
    """A listed local path as the jobs carry it. A local file name need not be
    UTF-8 (Python holds its stray bytes as surrogates), but every output and
    Beam's own coder is, so one such upload would fail the whole job; its
    undecodable bytes are written \\xNN instead, and the read below refuses
    the name with a message saying so. gs:// names are always UTF-8."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def _unlisted_name(uri: str) -> str | None:
    """The real name behind a listed_name() with escapes, if that file exists."""
    if "\\x" not in uri:
        return None
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), uri.encode("utf-8"))
    try:
        raw.decode("utf-8")
        return None  # the escapes spell valid UTF-8: listed_name never wrote them, the name is just missing
    except UnicodeDecodeError:
        real = os.fsdecode(raw)
    return real if os.path.lexists(real) else None


def _too_large(size: int, max_bytes: int) -> Refused:
    return Refused(TOO_LARGE, f"file is {size} bytes, over max_bytes {max_bytes}")


def _open_under(root: str, real: str, uri: str) -> int:
    """fd of `real` opened from `root` one component at a time, never following a link.

    `real` was resolved, so it holds no links; if one appears now (a swap
    between the check and the open) the open fails and the file is refused.
    """
    parts = [p for p in real[len(root):].split("/") if p]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            flags = _FILE_FLAGS if i == len(parts) - 1 else _DIR_FLAGS
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise Refused(OUTSIDE, f"{uri} changed into a symlink while it was opened") from None
                if e.errno == errno.ENOENT:
                    raise Missing(f"no object at {uri}") from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_local(uri: str, allowed, real: str | None = None) -> int:
    """A read-only fd of the regular file `uri` names, under an allowed root.

    `real` is the resolved path when the caller already has it (tests pass a
    stale one to play a swap between the check and the open).
    """
    real = os.path.realpath(uri) if real is None else real
    root = allowed.local_root(real)
    if root is None:
        raise Refused(OUTSIDE, allowed.outside_message(real))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        if _unlisted_name(uri):
            raise Refused(UNREADABLE, "the file name is not valid UTF-8 (its stray bytes shown as \\xNN), "
                                      "which no output can hold; rename the file (never read)") from None
        raise Missing(f"no object at {uri}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink loop: nothing to read, now or on a retry
            raise Refused(SPECIAL, "a symlink loop, not a regular file (never read)") from None
        raise
    # Checked before opening too: opening a device can itself have effects.
    if not stat.S_ISREG(st.st_mode):
        raise Refused(SPECIAL, f"{_kind(st.st_mode)}, not a regular file (never read)")
    fd = _open_under(root, real, uri)
    st = os.fstat(fd)  # the file actually opened
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused(SPECIAL, f"{_kind(st.st_mode)}, not a regular file (never read)")
    return fd


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "a special file"


def _read_local(uri: str, allowed, max_bytes: int | None) -> bytes:
    fd = open_local(uri, allowed)
    with os.fdopen(fd, "rb", closefd=True) as f:
        size = os.fstat(fd).st_size
        if max_bytes is not None and size > max_bytes:
            raise _too_large(size, max_bytes)  # from the size, before any byte is read
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew after the fstat
        raise _too_large(len(data), max_bytes)
    return data


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


def _read_gcs(uri: str, bucket: str, name: str, deadline: float, first_delay: float,
              max_bytes: int | None = None) -> tuple[bytes, int]:
    """(bytes, retries): one gs:// object, transient errors retried for up to `deadline` s.

    Why not FileSystems.open here: its reader retries every transient error
    (429, 5xx, resets) inside the client library for up to 120 s per call,
    with no way to bound or observe it, and it spends two requests per object
    (metadata, then a range read). Here the same client Beam's gs:// filesystem
    builds (credentials, STORAGE_EMULATOR_HOST) fetches the object in one
    request, with the library's own retry predicate (the one Beam's gcsio
    uses) and backoff, but our deadline and a callback that sees each failure.
    """
    from google.api_core.retry import Retry

    from transforms.io.compat import beam_gcs_client, gcs_should_retry

    failures = []
    retry = Retry(predicate=gcs_should_retry, initial=first_delay, maximum=max(first_delay, 16.0),
                  timeout=deadline, on_error=failures.append)
    client = beam_gcs_client(uri)
    try:
        # raw_download: the stored bytes, never a transcoded (gunzipped) form, as Beam reads them.
        # The response is streamed into a buffer that stops it past max_bytes (not a
        # Range request: GCS answers a range on an empty object with 416).
        sink = _CappedSink(max_bytes)
        client.bucket(bucket).blob(name).download_to_file(sink, raw_download=True, retry=retry)
        data = sink.getvalue()
    except _OverLimit:
        raise Refused(TOO_LARGE, f"object is over max_bytes {max_bytes} (read stopped there)") from None
    except Exception:
        # on_error also saw the failure it gave up on: that one was not retried.
        RETRIES.inc(max(len(failures) - 1, 0))
        raise
    RETRIES.inc(len(failures))
    return data, len(failures)


class _OverLimit(Exception):
    """Raised inside the download to stop it (not a retryable error)."""


class _CappedSink(io.BytesIO):
    def __init__(self, max_bytes: int | None):
        super().__init__()
        self.max_bytes = max_bytes

    def write(self, b) -> int:
        if self.max_bytes is not None and self.tell() + len(b) > self.max_bytes:
            raise _OverLimit()
        return super().write(b)


def read_bytes(uri: str, *, allowed, max_bytes: int | None = None, listed_size: int | None = None,
               attempts: int = 3, first_delay: float = 0.2, deadline: float = 120.0) -> tuple[bytes, int]:
    """Return (bytes, retries used). Raises Refused, Missing, or the last I/O error.

    `allowed` (transforms.io.allowed_roots.AllowedRoots, required so that no
    caller can forget it) decides where reads may go; `max_bytes` caps what is
    read (None: no cap), and a `listed_size` (from a listing) over it is
    refused before any request. Refusals are never retried and read nothing.

    Transient errors (throttling, resets) are retried with exponential backoff;
    a missing object is not, since retrying cannot make it appear. gs:// reads
    retry the errors GCS clients treat as transient for up to `deadline`
    seconds (the client library's own default window), then raise
    google.api_core.exceptions.RetryError; other filesystems retry any other
    error `attempts` times in all. Retries count in io/read_retries, reads
    that give up in io/read_failures.
    """
    refusal = allowed.refusal(uri)  # scheme, '..', roots (local: resolved)
    if refusal:
        raise Refused(OUTSIDE, refusal)
    if max_bytes is not None and listed_size is not None and listed_size > max_bytes:
        raise Refused(TOO_LARGE, f"listed at {listed_size} bytes, over max_bytes {max_bytes}")
    if uri.startswith("gs://"):
        # Not gcsio.parse_gcs_path: its pattern stops at a newline, which an object name may hold.
        bucket, _, name = uri[len("gs://"):].partition("/")
        if not bucket or not name:  # gs://bucket/ names a bucket, not an object
            raise Missing(f"no object at {uri} (no object name)")
        try:
            return _read_gcs(uri, bucket, name, deadline, first_delay, max_bytes)
        except Refused:
            raise
        except Exception as e:
            if _is_not_found(e):
                raise Missing(f"no object at {uri}") from None
            FAILURES.inc()
            raise
    for attempt in range(attempts):
        try:
            return _read_local(uri, allowed, max_bytes), attempt
        except (Refused, Missing):
            raise
        except Exception as e:  # I/O errors
            if _is_not_found(e):
                raise Missing(f"no object at {uri}") from None
            if attempt == attempts - 1:
                FAILURES.inc()
                raise
            RETRIES.inc()
            time.sleep(first_delay * 2 ** attempt)
    raise AssertionError("unreachable")
