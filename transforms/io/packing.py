"""Many elements as one compact record, for where a runner must hold them.

A step that waits for a side input, or a GroupByKey, makes the runner keep
every element until it can go on. One element at a time, Beam's generic coder
costs ~1 KB and, decoding a curate row, ~22 us each, and DirectRunner keeps
the decoded rows of a GroupByKey in memory (~5 KB each). Packed, a few hundred
elements are one record: pickled, then zstd (pyarrow): on real curate rows
~180 bytes a row and ~3 us to pack and unpack. (marshal is faster but turns
numpy scalars into bytes; zlib took 231 bytes and 6.9 us.)
"""
from __future__ import annotations

import pickle

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from transforms.io import spill as spill_files

# Elements per packed record: small enough that few are alive at once (with
# 10,000 Python's garbage collector, rescanning them, cost ~40% more CPU than
# with 500; 250 was ~5% faster than 500 at 1M rows: benchmarks/duplicate_stage.py).
PACK_ELEMENTS = 250
# Packed records per spill file (~10,000 elements).
SPILL_RECORDS = 40


def pack(obj) -> bytes:
    """Any picklable object as one compact record."""
    raw = pickle.dumps(obj, protocol=5)
    return len(raw).to_bytes(8, "little") + pa.compress(raw, codec="zstd", asbytes=True)


def unpack(blob: bytes):
    size = int.from_bytes(blob[:8], "little")
    return pickle.loads(pa.decompress(memoryview(blob)[8:], decompressed_size=size, codec="zstd", asbytes=True))


def in_global_window(outputs):
    """Outputs, plain or TaggedOutput, as finish_bundle must yield them: in
    the global window (a batch job's)."""
    for out in outputs:
        if isinstance(out, beam.pvalue.TaggedOutput):
            yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
        else:
            yield GlobalWindows.windowed_value(out)


class InBundles(beam.DoFn):
    """Gathers a bundle's elements `size` at a time and hands each run to
    batch(elements, final), final once at the bundle's end (elements may be
    empty then). What batch yields, plain or TaggedOutput, goes out in the
    global window (a batch job's), also from finish_bundle."""

    def __init__(self, size: int):
        self.size = size

    def batch(self, elements: list, final: bool):
        raise NotImplementedError

    def start_bundle(self):
        self.buffer = []

    def process(self, element):
        self.buffer.append(element)
        if len(self.buffer) >= self.size:
            yield from self._take(final=False)

    def finish_bundle(self):
        yield from in_global_window(self._take(final=True))

    def _take(self, final: bool):
        elements, self.buffer = self.buffer, []
        return self.batch(elements, final)


class PackInBundles(InBundles):
    """elements -> packed lists of up to `size` of them, gathered within a bundle.

    With `spill` (a local directory: transforms/io/spill.py), references to
    them instead, written every SPILL_RECORDS records and at the bundle's
    end: read each with spill.load, remove the directory when done."""

    def __init__(self, size: int = PACK_ELEMENTS, spill: str | None = None):
        super().__init__(size)
        self.spill = spill

    def start_bundle(self):
        super().start_bundle()
        self.outbox = spill_files.Outbox(self.spill, SPILL_RECORDS) if self.spill else None

    def batch(self, elements, final):
        if elements:
            if self.outbox is None:
                yield pack(elements)
            else:
                yield from self.outbox.put(pack(elements))
        if final and self.outbox is not None:
            yield from self.outbox.release()
