"""Records kept on local disk between steps, where the runner would keep them in memory.

DirectRunner holds every GroupByKey value and every element that waits for a
side input in memory until the step can go on, so a stage that shuffles a few
hundred bytes per image grows by that (several times over, as the runner
copies it) for every image of the night. Spilled, each record is written to a
file once and the runner carries only its reference (path, offset, length),
~60 bytes, whatever the record's size; the step that needs the record reads
it back with load().

A DoFn puts what it means to send into an Outbox, which writes the records
as one file before it hands back their references, so no reference ever
names a file not yet complete. Files
are named at random, so a retried bundle never overwrites what a finished
one wrote; its own file is left behind and removed with the directory:
RemoveWhenDone after the last step that reads a directory, and the job
(beam_jobs/curate.py run_pipeline) removes its run's whole folder when the
run ends, also when it fails.

Local files only: on Dataflow the runner's shuffle is disk-backed and its
workers share no disk, so the stages there pass records themselves.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import apache_beam as beam


def new_directory(root: str | None = None, prefix: str = "spill") -> str:
    """A fresh directory name under `root` (default: the system's temp
    folder, TMPDIR), made by the first write into it."""
    return os.path.join(root or tempfile.gettempdir(), f"skin-pipeline-{prefix}-{uuid.uuid4().hex}")


class Writer:
    """Records added now, written as one file under `directory` by write()."""

    def __init__(self, directory: str):
        self.directory = directory
        self._start()

    def _start(self):
        self.path = os.path.join(self.directory, uuid.uuid4().hex)
        self.parts, self.size = [], 0

    def add(self, record: bytes) -> tuple:
        """The reference `record` will have once written."""
        ref = (self.path, self.size, len(record))
        self.parts.append(record)
        self.size += len(record)
        return ref

    def write(self) -> None:
        """Writes what was added (nothing when nothing was) and starts a new file."""
        if self.parts:
            os.makedirs(self.directory, exist_ok=True)
            with open(self.path, "wb") as f:
                f.writelines(self.parts)
        self._start()


_ALONE = object()  # put() without a key: the reference goes out alone


class Outbox:
    """Records a DoFn means to send, spilled. put() gathers a record; once
    `limit` wait (never, without one), and on release(), their file is
    written and the outputs to yield come back: (key, reference), or the
    reference alone, as a TaggedOutput when tagged. So no reference goes
    out before its file exists."""

    def __init__(self, directory: str, limit: int | None = None):
        self.writer, self.limit, self.waiting = Writer(directory), limit, []

    def put(self, record: bytes, tag: str | None = None, key=_ALONE) -> list:
        ref = self.writer.add(record)
        out = ref if key is _ALONE else (key, ref)
        self.waiting.append(beam.pvalue.TaggedOutput(tag, out) if tag else out)
        return self.release() if self.limit and len(self.waiting) >= self.limit else []

    def release(self) -> list:
        self.writer.write()
        out, self.waiting = self.waiting, []
        return out


def load(record_or_ref):
    """A record handed on as itself (bytes) or spilled (a reference): its bytes."""
    if isinstance(record_or_ref, bytes):
        return record_or_ref
    path, offset, length = record_or_ref
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"spilled record {path}@{offset} is cut short ({len(data)} of {length} bytes)")
    return data


def run_directory(root: str, job: str) -> str:
    """A job run's own spill folder under `root`, made now and named for
    this process, after removing those of runs that died on this machine
    without cleaning up (SIGKILL, out of memory): their process is gone."""
    prefix = f"skin-pipeline-{job}-run-"
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:
        names = []
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            remove(os.path.join(root, name))
    directory = os.path.join(root, f"{prefix}{os.getpid()}-{uuid.uuid4().hex}")
    os.makedirs(directory)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove(directory: str) -> None:
    """Removes a spill directory (absent is fine: nothing was spilled)."""
    shutil.rmtree(directory, ignore_errors=True)


class RemoveWhenDone(beam.PTransform):
    """Removes a spill directory once every element of its input, the output
    of the last step that reads the directory, is out."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def expand(self, last_reads):
        directory = self.directory
        return (last_reads
                | "ReadsDone" >> beam.combiners.Count.Globally()
                | "Remove" >> beam.Map(lambda _count: remove(directory)))
