"""Terminal progress for local runs: a line every few seconds per process.

On Dataflow the same numbers are the job's counters; this only prints.
"""
from __future__ import annotations

import os
import sys
import time


class ProgressLog:
    def __init__(self, job: str, every_s: float = 5.0, stream=None):
        self.job, self.every_s, self.stream = job, every_s, stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.done = self.rejected = 0

    def tick(self, rejected: bool) -> None:
        self.done += 1
        self.rejected += rejected
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"{self.job} [pid {os.getpid()}]: {self.done:,} images, {rate:.1f}/s, "
                  f"{self.rejected:,} rejected so far ({100 * self.rejected / self.done:.1f}%)",
                  file=self.stream, flush=True)
