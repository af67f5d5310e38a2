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
import os
import posixpath
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.io import spill as spill_files
from transforms.io.packing import SPILL_RECORDS, PackInBundles, in_global_window, pack, unpack


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
    # The temporary name must not end like the final one: readers glob for
    # `features/*.parquet`, and Beam's `*` also matches names starting with a
    # dot, so `.tmp-...-x.parquet` (a half-written file on a local disk, or
    # one a killed run left behind) would be read as data.
    if "://" not in path and os.path.isdir(path):
        # FileSystems.delete below removes a local folder whole.
        raise IsADirectoryError(f"{path} is a folder: not replaced by a file")
    tmp = posixpath.join(posixpath.dirname(path), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}.partial")
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


def shards_for(total: float, per_shard: float) -> int:
    """Shard count for a group: enough to keep each near per_shard, at least one."""
    return max(1, math.ceil(total / per_shard))


def _packed_by_shard(blob, key_fn, n: dict):
    """A packed list of (group, element) (or a spill reference to one) ->
    ((group, shard index), packed list of its (group, element)) per shard;
    the record itself when all of it goes to one shard (one-shard outputs:
    no repacking)."""
    ges = unpack(spill_files.load(blob))
    keys = [(g, stable_shard(key_fn(e), n[g])) for g, e in ges]
    if all(k == keys[0] for k in keys):
        yield keys[0], blob
        return
    by_shard: dict = {}
    for k, ge in zip(keys, ges):
        by_shard.setdefault(k, []).append(ge)
    for k, part in by_shard.items():
        yield k, pack(part)


class _KeyByShard(beam.DoFn):
    """_packed_by_shard; with `spill`, repacked parts are spilled too."""

    def __init__(self, key_fn, spill: str | None = None):
        self.key_fn, self.spill = key_fn, spill

    def start_bundle(self):
        self.outbox = spill_files.Outbox(self.spill, SPILL_RECORDS) if self.spill else None

    def process(self, blob, n):
        for key, record in _packed_by_shard(blob, self.key_fn, n):
            if self.outbox is None or not isinstance(record, bytes):  # a reference passes on as it came
                yield key, record
            else:
                yield from self.outbox.put(record, key=key)

    def finish_bundle(self):
        if self.outbox is not None:
            yield from in_global_window(self.outbox.release())


class WriteGroupedShards(beam.PTransform):
    """(group, element) -> per group, shard files whose contents follow from keys.

    Per group, the shard count is shards_for(sum of weight_fn, per_shard); an
    element's shard comes from stable_shard(key_fn(e)), its place in the file
    from sorting by order_fn (default key_fn); encode turns the sorted list into
    bytes written atomically to path_fn(group, index, num_shards). Every shard
    index of every group is written, even if empty; pass `groups` (a
    PCollection of group names) to also write groups that have no elements.
    Pass `after` to start writing only once that PCollection is computed.
    Emits (group, index, num_shards, element_count, path). With `spill` (a
    local directory, for DirectRunner, which would hold them in memory), the
    elements wait for their shard there (transforms/io/spill.py); it is
    removed once every shard is written.
    """

    def __init__(self, path_fn, encode, key_fn, per_shard, weight_fn=None, order_fn=None,
                 groups=None, after=None, spill: str | None = None):
        super().__init__()
        self.path_fn, self.encode, self.key_fn, self.per_shard = path_fn, encode, key_fn, per_shard
        self.weight_fn, self.order_fn = weight_fn or (lambda e: 1), order_fn or key_fn
        self.groups, self.after, self.spill = groups, after, spill

    def expand(self, grouped):
        key_fn, order_fn, weight_fn, per_shard = self.key_fn, self.order_fn, self.weight_fn, self.per_shard
        path_fn, encode = self.path_fn, self.encode
        weights = grouped | "Weigh" >> beam.Map(lambda ge: (ge[0], weight_fn(ge[1])))
        if self.groups is not None:
            weights = (weights, self.groups | "NamedGroups" >> beam.Map(lambda g: (g, 0))) | "AllGroups" >> beam.Flatten()
        num_shards = (weights
                      | "WeightPerGroup" >> beam.CombinePerKey(sum)
                      | "ShardsPerGroup" >> beam.Map(lambda gw: (gw[0], shards_for(gw[1], per_shard))))
        n_side = beam.pvalue.AsDict(num_shards)
        every_shard = num_shards | "EveryShard" >> beam.FlatMap(
            lambda gn: [((gn[0], i), None) for i in range(gn[1])])
        # Elements wait for the shard counts and group by shard packed
        # (transforms/io/packing.py): a runner holds all of them meanwhile.
        keyed = (grouped
                 | "PackWaiting" >> beam.ParDo(PackInBundles(spill=self.spill))
                 | "KeyByShard" >> beam.ParDo(_KeyByShard(key_fn, self.spill), n=n_side))
        write_kwargs = {"n": n_side}
        if self.after is not None:
            write_kwargs["_after"] = beam.pvalue.AsList(self.after)

        def write(kv, n, _after=None):
            (group, index), packed = kv
            items = sorted((e for blob in packed if blob is not None for _g, e in unpack(spill_files.load(blob))),
                           key=order_fn)
            path = write_atomically(path_fn(group, index, n[group]), encode(items))
            return group, index, n[group], len(items), path

        written = ((keyed, every_shard)
                   | "WithEmptyShards" >> beam.Flatten()
                   | "GroupByShard" >> beam.GroupByKey()
                   | "WriteShard" >> beam.Map(write, **write_kwargs))
        if self.spill:
            _ = written | "RemoveSpill" >> spill_files.RemoveWhenDone(self.spill)
        return written


class WriteSortedShards(beam.PTransform):
    """Write elements to `directory/prefix-SSSSS-of-NNNNN.suffix`; yields paths.

    key_fn gives each element's unique, stable key (e.g. its uri); encode turns
    a sorted list of elements into file bytes. At least one shard is written,
    even with no elements. Pass `after` (a PCollection) to start writing only
    once it is computed; `spill` as for WriteGroupedShards.
    """

    def __init__(self, directory, prefix, suffix, encode, key_fn, per_shard=50_000, after=None,
                 spill: str | None = None):
        super().__init__()
        self.directory, self.prefix, self.suffix = directory, prefix, suffix
        self.encode, self.key_fn, self.per_shard, self.after = encode, key_fn, per_shard, after
        self.spill = spill

    def expand(self, elements):
        directory, prefix, suffix = self.directory, self.prefix, self.suffix
        return (elements
                | "InOneGroup" >> beam.Map(lambda e: (prefix, e))
                | "Write" >> WriteGroupedShards(
                    lambda _g, i, n: FileSystems.join(directory, shard_name(prefix, i, n, suffix)),
                    self.encode, self.key_fn, self.per_shard,
                    groups=elements.pipeline | "TheGroup" >> beam.Create([prefix]), after=self.after,
                    spill=self.spill)
                | "Paths" >> beam.Map(lambda written: written[4]))
