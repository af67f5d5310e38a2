"""A DoFn whose per-element work runs ahead on threads, outputs kept in order.

Why: in a fused stage (read+decode -> RunInference) Beam calls the next step
synchronously from our yield, so a plain DoFn leaves the CPU idle for
preprocessing while the model runs, and the model idle while images are read
and decoded. Here up to `depth` elements are in flight on `threads` worker
threads (OpenCV, TensorFlow ops and GCS reads release the GIL); outputs leave
in input order, so results do not depend on thread timing.

Beam finds the metrics container of the running step through a thread-local
state tracker, so a counter incremented on a plain worker thread is silently
dropped; each task therefore runs with the submitting step's state pinned
(transforms/io/compat.py run_in_step).
"""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from transforms.io.compat import current_step_state, run_in_step


class PrefetchingDoFn(beam.DoFn):
    """Subclasses implement work(element) -> list of outputs (values or
    beam.pvalue.TaggedOutput); it must catch its own per-element errors."""

    def __init__(self, threads: int = 2, depth: int = 64):
        self.threads, self.depth = max(1, threads), max(1, depth)

    def work(self, element) -> list:
        raise NotImplementedError

    def setup(self):
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=type(self).__name__)

    def start_bundle(self):
        self._pending = collections.deque()

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        state = current_step_state()
        self._pending.append((self._pool.submit(run_in_step, state, self.work, element), window, timestamp))
        # Emit what is finished at the head; block only when too much is in flight.
        while self._pending and (len(self._pending) > self.depth or self._pending[0][0].done()):
            future, _window, _timestamp = self._pending.popleft()
            yield from future.result()

    def finish_bundle(self):
        while self._pending:
            future, window, timestamp = self._pending.popleft()
            for out in future.result():
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
                else:
                    yield WindowedValue(out, timestamp, [window])

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
