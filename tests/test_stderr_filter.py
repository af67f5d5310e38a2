"""beam_jobs/stderr_filter.py: worker processes print a failing bundle's
traceback to stderr themselves; those of errors a job reports in one line are
dropped, everything else passes. (The whole run:
test_concurrent_runs.py::test_a_refusal_on_multi_process_workers_is_one_line_too.)"""
from __future__ import annotations

import os

from beam_jobs.cli import _reported_here
from beam_jobs.stderr_filter import TracebackFilter, filtered_stderr
from transforms.io import run_lock  # noqa: F401  (defines LockHeld, as every job has imported it)

REFUSAL = """Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in process
  File "/work/transforms/io/run_lock.py", line 225, in acquire
    raise LockHeld(_held_message(where, holder, ttl_hours, time.time()))
transforms.io.run_lock.LockHeld: OUT is locked by run other

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "apache_beam/runners/worker/sdk_worker.py", line 310, in _execute
    response = task()
RuntimeError: transforms.io.run_lock.LockHeld: OUT is locked by run other [while running 'LockOutput']

"""
CRASH = """Traceback (most recent call last):
  File "/work/transforms/image/quality.py", line 3, in compute_features
    x = 1 / 0
ZeroDivisionError: division by zero

"""


def _through(chunks, idle_after=()):
    f, out = TracebackFilter(_reported_here), []
    for i, chunk in enumerate(chunks):
        out.append(f.feed(chunk))
        if i in idle_after:
            out.append(f.idle())
    return "".join(out) + f.end()


def test_a_refusals_traceback_is_dropped_and_everything_else_passes_unchanged():
    before, after = "curate [pid 1]: 10 images, 9.0/s\n", "a real job warning\n"
    assert _through([before, REFUSAL, after]) == before + after
    assert _through([before, CRASH, after]) == before + CRASH + after        # not ours to hide
    assert _through([before + REFUSAL + CRASH + after]) == before + CRASH + after
    # As the pipe delivers it: in pieces, cut anywhere.
    text = before + REFUSAL + CRASH + after
    for n in (1, 3, 7, 64):
        assert _through([text[i:i + n] for i in range(0, len(text), n)]) == before + CRASH + after, n
    # A line still being written passes at once; a traceback without print()'s
    # blank line ends when nothing more comes, or at the end.
    assert _through(["progress 3/10"]) == "progress 3/10"
    assert _through([CRASH.rstrip("\n") + "\n", after], idle_after={0}) == CRASH.rstrip("\n") + "\n" + after
    assert _through([REFUSAL.rstrip("\n") + "\n"]) == ""


def test_file_descriptor_2_passes_bytes_unchanged_and_drops_a_refusal(capfdbinary):
    """Through the pipe, as worker processes write to it: bytes that are not
    UTF-8 (a file name) come out as they went in, a partial line at once, and
    everything is out when the block ends."""
    with filtered_stderr(_reported_here):
        os.write(2, b"cannot read /up/caf\xc3\xa9-\xff\xfe.jpg\n")
        os.write(2, REFUSAL.encode())
        os.write(2, b"progress 3/10")
    assert capfdbinary.readouterr().err == b"cannot read /up/caf\xc3\xa9-\xff\xfe.jpg\nprogress 3/10"
