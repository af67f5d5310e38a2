"""Deterministic sharded files: contents and order are a function of the keys.

Like TFDS's BeamWriter: the shard count follows from the element count, an
element's shard from a stable hash of its key, and each shard is written
sorted by key to a temporary name, then renamed. Rerunning over the same
inputs rewrites the same bytes. Every shard index is written, even if empty,
so readers always find `prefix-00000-of-000NN.suffix` complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def stable_shard(key: str, num_shards: int) -> int:
    """Shard index from a hash that does not vary across processes or runs."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % num_shards


def shard_name(prefix: str, index: int, num_shards: int, suffix: str) -> str:
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}"


def write_atomically(path: str, data: bytes) -> str:
    """Write bytes exactly as given to a temporary sibling, then rename into place.

    UNCOMPRESSED matters: Beam otherwise compresses by file suffix, and a
    .gz payload would be gzipped twice.
    """
    tmp = posixpath.join(posixpath.dirname(path), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return path


def parquet_encoder(schema):
    """rows -> Parquet bytes with a fixed schema."""
    def encode(rows: list[dict]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, compression="zstd")
        return buf.getvalue()
    return encode


def jsonl_encoder(fields=None):
    """rows -> JSON lines (optionally only some fields), keys sorted."""
    def encode(rows: list[dict]) -> bytes:
        pick = (lambda r: {k: r.get(k) for k in fields}) if fields else (lambda r: r)
        return "".join(json.dumps(pick(r), sort_keys=True, default=str) + "\n" for r in rows).encode()
    return encode


class WriteSortedShards(beam.PTransform):
    """Write elements to `directory/prefix-SSSSS-of-NNNNN.suffix`; yields paths.

    key_fn gives each element's unique, stable key (e.g. its uri); encode turns
    a sorted list of elements into file bytes. Pass `after` (a PCollection) to
    start writing only once it is computed.
    """

    def __init__(self, directory, prefix, suffix, encode, key_fn, per_shard=50_000, after=None):
        super().__init__()
        self.directory, self.prefix, self.suffix = directory, prefix, suffix
        self.encode, self.key_fn, self.per_shard, self.after = encode, key_fn, per_shard, after

    def expand(self, elements):
        key_fn, per_shard = self.key_fn, self.per_shard
        num_shards = (elements
                      | "Count" >> beam.combiners.Count.Globally()
                      | "NumShards" >> beam.Map(lambda n: max(1, math.ceil(n / per_shard))))
        n_side = beam.pvalue.AsSingleton(num_shards)
        every_shard = (num_shards
                       | "EveryShard" >> beam.FlatMap(lambda n: [(i, None) for i in range(n)]))
        keyed = elements | "KeyByShard" >> beam.Map(
            lambda e, n: (stable_shard(key_fn(e), n), e), n=n_side)
        write_kwargs = {"n": n_side}
        if self.after is not None:
            write_kwargs["_after"] = beam.pvalue.AsList(self.after)
        directory, prefix, suffix, encode = self.directory, self.prefix, self.suffix, self.encode

        def write(kv, n, _after=None):
            index, items = kv
            rows = sorted((e for e in items if e is not None), key=key_fn)
            path = FileSystems.join(directory, shard_name(prefix, index, n, suffix))
            return write_atomically(path, encode(rows))

        return ((keyed, every_shard)
                | "WithEmptyShards" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.Map(write, **write_kwargs))
