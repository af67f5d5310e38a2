"""Worker tracebacks of errors a job reports in one line, kept off stderr.

A multi-process DirectRunner's worker processes print a failing bundle's
traceback straight to their stderr (Beam's sdk_worker, before the job hears of
it), so a refusal such as "OUT is locked by run X" reached the operator as
~70 lines of Beam internals above the one line main() prints for it. While a
job runs, file descriptor 2, which the workers inherit, is a pipe read by a
thread that passes everything through except a traceback naming an error
main() reports itself (drop(block) is true). Any other traceback, and every
other line, reaches the real stderr unchanged.
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import threading

_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_START = "Traceback (most recent call last):"


class TracebackFilter:
    """Line filter: feed() text as it arrives, get back what passes; idle()
    when nothing arrived for a while, end() at the end. Pure.

    A traceback block runs from its "Traceback" line through its exception
    line(s) and the blank line print() ends it with; chained tracebacks
    ("During handling ...") belong to the same block. A block is held until
    it ends, then passed or dropped as a whole."""

    def __init__(self, drop):
        self.drop = drop
        self.partial = ""        # the start of a line, held: it may begin a traceback
        self.mid_line = False    # the start of the current line was passed on already
        self.block: list[str] | None = None
        self.seen_error = self.may_end = False

    def feed(self, text: str) -> str:
        out = []
        *lines, last = (self.partial + text).split("\n")
        self.partial = ""
        for line in lines:
            if self.mid_line:    # the rest of a line passed on in part
                out.append(line + "\n")
                self.mid_line = False
            else:
                out.append(self._line(line))
        if self.mid_line or (self.block is None and last and not _START.startswith(last)):
            out.append(last)     # a line still being written (progress, a prompt): pass it on
            self.mid_line = self.mid_line or bool(last)
        else:
            self.partial = last
        return "".join(out)

    def idle(self) -> str:
        """Nothing more came for a while: a block that has its exception line is complete."""
        return self._close() if self.block is not None and self.seen_error else ""

    def end(self) -> str:
        tail = self._close() if self.block is not None else ""
        tail += self.partial
        self.partial = ""
        return tail

    def _line(self, line: str) -> str:
        if self.block is None:
            if line.startswith(_START):
                self.block, self.seen_error, self.may_end = [line], False, False
                return ""
            return line + "\n"
        if self.may_end and line.strip() and not line.startswith(_CHAINED):  # a new traceback too
            return self._close() + self._line(line)
        self.block.append(line)
        if line.startswith((_START, *_CHAINED)):
            self.seen_error = self.may_end = False
        elif not line.strip():
            self.may_end = self.seen_error
        elif not line.startswith((" ", "\t")):
            self.seen_error = True   # an exception line: its type and message
        return ""

    def _close(self) -> str:
        block, self.block = self.block, None
        self.seen_error = self.may_end = False
        text = "".join(line + "\n" for line in block)
        return "" if self.drop(text) else text


def _write_all(fd: int, text: str) -> None:
    """All of text to fd: os.write may take less than it is given."""
    data = memoryview(text.encode("utf-8", "surrogateescape"))
    while data:
        data = data[os.write(fd, data):]


@contextlib.contextmanager
def filtered_stderr(drop, idle_seconds: float = 0.3):
    """File descriptor 2 through TracebackFilter(drop) for the block's
    duration, for this process and the processes it starts. The thread never
    stops reading (a full pipe would block every writer): should filtering
    fail, it passes the rest through as it comes."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    flt = TracebackFilter(drop)
    out = os.dup(real)   # the thread's own, closed by it: it may outlive the block

    def forward():
        filtering = True
        try:
            while True:
                ready, _, _ = select.select([read_end], [], [], idle_seconds)
                if not ready:
                    text = flt.idle() if filtering else ""
                else:
                    data = os.read(read_end, 65536)
                    if not data:
                        break
                    text = data.decode("utf-8", "surrogateescape")  # any bytes, back as they came
                    if filtering:
                        try:
                            text = flt.feed(text)
                        except Exception:  # noqa: BLE001  (never lose output to a filter bug)
                            filtering, text = False, flt.end() + text
                _write_all(out, text)
            if filtering:
                _write_all(out, flt.end())
        finally:
            os.close(read_end)
            os.close(out)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)   # this process's own fd 2 no longer holds the pipe
        os.close(real)
        # Worker processes that are still shutting down may hold the pipe a little longer.
        thread.join(timeout=5)
