"""TFRecord framing and deterministic sharded TFRecord writes.

Records are framed as TFRecord files are (length, masked CRC32C of length,
data, masked CRC32C of data), so files are written through Beam's FileSystems
(local or gs://) without TensorFlow's own file layer. GZIP output uses a zero
mtime so reruns give identical bytes. With a TFDS dataset name, shards are
named as TFDS names them (transforms/io/tfds_metadata.py), uncompressed.
"""
from __future__ import annotations

import gzip
import hashlib
import posixpath
import struct

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystems import FileSystems

from transforms.io.sharded_write import WriteGroupedShards, shard_name
from transforms.io.tfds_metadata import tfds_shard_name


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
    """(split, key, serialized) -> `split-SSSSS-of-NNNNN.tfrecord[.gz]` per split,
    or `{tfds_name}-{split}.tfrecord-SSSSS-of-NNNNN` when tfds_name is given.

    The shard count per split follows from its total size and target_bytes;
    a record's shard from its key; order within a shard from the key's hash.
    Emits (split, shard_index, num_shards, record_count, file_name).
    """

    def __init__(self, directory: str, target_bytes: int, gzip_output: bool, tfds_name: str | None = None):
        super().__init__()
        if tfds_name and gzip_output:
            raise ValueError("TFDS reads uncompressed TFRecords only")
        self.directory, self.target_bytes, self.gzip_output = directory, target_bytes, gzip_output
        self.tfds_name = tfds_name

    def expand(self, records):
        directory, gz, tfds_name = self.directory, self.gzip_output, self.tfds_name
        suffix = ".tfrecord.gz" if gz else ".tfrecord"

        def name(split, i, n):
            return tfds_shard_name(tfds_name, split, i, n) if tfds_name else shard_name(split, i, n, suffix)

        def encode(items) -> bytes:
            data = frame_records(serialized for _key, serialized in items)
            return gzip.compress(data, mtime=0) if gz else data

        return (records
                | "BySplit" >> beam.Map(lambda r: (r[0], (r[1], r[2])))
                | "Write" >> WriteGroupedShards(
                    lambda split, i, n: FileSystems.join(directory, name(split, i, n)),
                    encode, key_fn=lambda item: item[0], per_shard=self.target_bytes,
                    weight_fn=lambda item: len(item[1]) + 16, order_fn=lambda item: example_order(item[0]))
                | "FileNames" >> beam.Map(lambda w: (w[0], w[1], w[2], w[3], posixpath.basename(w[4]))))
