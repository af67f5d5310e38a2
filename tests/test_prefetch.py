"""PrefetchingDoFn: every element out exactly once, tagged outputs kept,
counters incremented on its worker threads still counted."""
from __future__ import annotations

import random
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from transforms.io.prefetch import PrefetchingDoFn


class _Square(PrefetchingDoFn):
    def setup(self):
        super().setup()
        self.done = Metrics.counter("prefetch_test", "done")

    def work(self, x):
        time.sleep(random.Random(x).random() * 0.01)  # finish out of order
        self.done.inc()
        if x % 5 == 0:
            return [beam.pvalue.TaggedOutput("fives", x)]
        return [x * x]


def test_every_element_once_with_tags_and_counters():
    n = 200
    p = beam.Pipeline()
    out = p | beam.Create(list(range(n))) | beam.ParDo(_Square(threads=3, depth=7)).with_outputs("fives", main="main")
    assert_that(out.main, equal_to([x * x for x in range(n) if x % 5]), label="Main")
    assert_that(out.fives, equal_to([x for x in range(n) if x % 5 == 0]), label="Fives")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("done"))["counters"]
    assert sum(c.committed for c in counters) == n
