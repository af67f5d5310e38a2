"""TFRecord framing and deterministic sharded TFRecord writes.

Records are framed as TFRecord files are (length, masked CRC32C of length,
data, masked CRC32C of data), so files are written through Beam's FileSystems
(local or gs://) without TensorFlow's own file layer. GZIP output uses a zero
mtime so reruns give identical bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import struct

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystems import FileSystems

from transforms.sharded_write import shard_name, stable_shard, write_atomically


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_records(records) -> bytes:
    parts = []
    for data in records:
        length = struct.pack("<Q", len(data))
        parts += [length, struct.pack("<I", _masked_crc(length)), data,
                  struct.pack("<I", _masked_crc(data))]
    return b"".join(parts)


def example_order(key: str) -> str:
    """Examples are ordered by a hash of their key (as TFDS does)."""
    return hashlib.sha256(key.encode()).hexdigest()


class WriteTFRecordShards(beam.PTransform):
    """(split, key, serialized) -> `split-SSSSS-of-NNNNN.tfrecord[.gz]` per split.

    The shard count per split follows from its total size and target_bytes;
    a record's shard from its key; order within a shard from the key's hash.
    Emits (split, shard_index, num_shards, record_count, file_name).
    """

    def __init__(self, directory: str, target_bytes: int, gzip_output: bool):
        super().__init__()
        self.directory, self.target_bytes, self.gzip_output = directory, target_bytes, gzip_output

    def expand(self, records):
        target, directory, gz = self.target_bytes, self.directory, self.gzip_output
        suffix = ".tfrecord.gz" if gz else ".tfrecord"
        counts = (records
                  | "SizePerSplit" >> beam.Map(lambda r: (r[0], len(r[2]) + 16))
                  | "SumPerSplit" >> beam.CombinePerKey(sum)
                  | "ShardsPerSplit" >> beam.Map(lambda kv: (kv[0], max(1, math.ceil(kv[1] / target)))))
        n_side = beam.pvalue.AsDict(counts)
        every = counts | "EveryShard" >> beam.FlatMap(lambda kv: [((kv[0], i), None) for i in range(kv[1])])
        keyed = records | "KeyByShard" >> beam.Map(
            lambda r, n: ((r[0], stable_shard(r[1], n[r[0]])), (r[1], r[2])), n=n_side)

        def write(kv, n):
            (split, index), items = kv
            items = sorted((i for i in items if i is not None), key=lambda i: example_order(i[0]))
            data = frame_records(serialized for _key, serialized in items)
            if gz:
                data = gzip.compress(data, mtime=0)
            name = shard_name(split, index, n[split], suffix)
            write_atomically(FileSystems.join(directory, name), data)
            return split, index, n[split], len(items), name

        return ((keyed, every)
                | "WithEmptyShards" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.Map(write, n=n_side))
