"""Exact and near-duplicate clusters across all images, and which one to keep.

An image is identified by its full-frame pHash (`phash`, 16-digit hex);
identical pHashes collapse first. Every image also carries the pHashes of its
nested centre crops (`phash_centre`, transforms/image/phash.py), and two images are
near duplicates when any of their hashes are within the radius, so a cropped
copy meets its original.

The search is sharded, not bucketed per key: rows are batched (Beam's
BatchElements, within a bundle) and each batch's distinct (hash, owner pHash)
entries are packed into arrays, one record per (lead band, shard) holding
16 bytes per entry. Every table of transforms/curate/near_dups.py is led by one of
radius + 1 bands, and a shard is the top bits of the lead band's value, so two
hashes that share a table's key always meet in one shard; each shard runs the
vectorised multi-index search over its lead's tables only and reports a hash
pair from the first table it shares, so every pair within the radius is found
exactly once across shards (owners sharing an identical hash pair up in band
0's shards). Shuffle per image: 4 hashes x (radius + 1) leads = 20 entries,
~320 bytes at radius 4, in a few records per batch (the per-key scheme sent
140 records, ~7 KB). Pairs are few (duplicates are the exception), so their
connected components are computed in one place and handed to every worker as
a side input, together with the pHashes that several rows share. Only rows
that may have company (in a component, a shared pHash, or clustered by bytes
because their hash is unreliable) group by cluster, where the best member is
kept and the others are rejected, pointing at it; the rest pass straight on.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.reasons import DUPLICATE_REASONS, ordered
from transforms.curate.near_dups import bands, connected_components, lead_bands, owner_pairs
from transforms.image.phash import min_hamming

# Shards per lead band (rounded up to a power of two, at most 2**band width): the
# search's parallelism is (radius + 1) x SHARDS groups; at 1M images a group
# holds ~50k entries (0.8 MB), which the vectorised search handles in cache-
# sized blocks. More shards cost more, smaller records per batch.
SHARDS = 16
# Rows per batch packed into shard records (BatchElements' bounds).
BATCH_ROWS = (1_000, 10_000)


def hash_is_reliable(row: dict, exact_only_for) -> bool:
    """Whether the row's pHash identifies its content (not a flat/clipped frame)."""
    return bool(row.get("phash")) and not set(row["reasons"]).intersection(exact_only_for)


def hash_entries(row: dict, exact_only_for) -> list[tuple[str, str]]:
    """(hash, owner) for each of a reliable row's hashes; the owner is its
    full-frame pHash, the node its cluster is computed on."""
    if not hash_is_reliable(row, exact_only_for):
        return []
    owner = row["phash"]
    return [(h, owner) for h in [owner, *(row.get("phash_centre") or [])]]


def cluster_id_for(row: dict, components: dict, exact_only_for=()) -> str:
    """Stable id: the smallest pHash of the component, or one from the bytes."""
    if hash_is_reliable(row, exact_only_for):
        return "p" + components.get(row["phash"], row["phash"])
    if row.get("sha256"):
        return f"s{row['sha256'][:16]}"
    return f"u{row['uri']}"  # nothing was read: a cluster of one


def keeper_order(row: dict):
    """Sort key, best first: passes quality, more pixels, more bytes, smaller uri.

    A resized or cropped copy has fewer pixels and a re-encoded one fewer
    bytes, so the original wins; exact copies tie and the smaller uri wins.
    """
    has_own_reasons = any(r not in DUPLICATE_REASONS for r in row["reasons"])
    pixels = (row.get("width") or 0) * (row.get("height") or 0)
    # An original beats a copy that passed only after enhancement.
    return (has_own_reasons, bool(row.get("enhanced")), -pixels, -(row.get("file_size") or 0), row["uri"])


def resolve_cluster(rows: list[dict]) -> list[dict]:
    """Mark every member but the best as a duplicate of it. Pure."""
    if len(rows) == 1 or not rows[0].get("phash"):
        return rows
    keeper = min(rows, key=keeper_order)
    out = []
    for row in rows:
        if row is not keeper:
            kind = "exact_duplicate" if row["sha256"] == keeper["sha256"] else "near_duplicate"
            row = dict(row, status="rejected", duplicate_of=keeper["uri"],
                       reasons=ordered(row["reasons"] + [kind]))
        out.append(row)
    return out


def pair_distance(row: dict, keeper: dict):
    """"exact" for byte-identical rows, else the smallest Hamming distance
    between any of their pHashes (what near-duplicate matching compares);
    None without hashes. Members joined through a chain of close pairs can
    lie beyond the radius from their keeper."""
    if row.get("sha256") and row.get("sha256") == keeper.get("sha256"):
        return "exact"
    if not (row.get("phash") and keeper.get("phash")):
        return None
    return min_hamming(*([int(h, 16) for h in [r["phash"], *(r.get("phash_centre") or [])]]
                         for r in (row, keeper)))


def shard_records(rows, radius: int, exact_only_for=(), shards: int = SHARDS):
    """A batch of rows -> ((lead, shard), packed entries) records: each row's
    distinct (hash, owner) entries under every lead band, as uint64 pairs."""
    # Distinct per row, not per batch: band 0's shards count rows per pHash.
    entries = [e for row in rows for e in {(int(h, 16), int(o, 16)) for h, o in hash_entries(row, exact_only_for)}]
    if not entries:
        return
    e = np.array(entries, dtype=np.uint64)
    b = bands(radius)
    for lead in lead_bands(radius):
        shift, width = b[lead]
        bits = min(int(shards - 1).bit_length(), width)
        shard = (e[:, 0] >> np.uint64(shift + width - bits)) & np.uint64((1 << bits) - 1)
        order = np.argsort(shard, kind="stable")
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, cuts):
            yield (lead, int(shard[part[0]])), e[part].tobytes()


def shard_pairs(kv, radius: int):
    """One shard's packed entries -> owner pHash pairs (hex, smaller first),
    plus (owner, owner) for a pHash that several rows share."""
    (lead, _), blobs = kv
    e = np.frombuffer(b"".join(blobs), dtype=np.uint64).reshape(-1, 2)
    if lead == 0:  # each row's own (phash, phash) entry lands in a band-0 shard, once per row
        own = e[e[:, 0] == e[:, 1], 1]
        values, counts = np.unique(own, return_counts=True)
        for o in values[counts > 1].tolist():
            yield f"{o:016x}", f"{o:016x}"
    # Exact copies repeat entries (their owner x owner combinations would
    # multiply). np.unique(axis=0) was 3x the whole search: lexsort instead.
    e = e[np.lexsort((e[:, 1], e[:, 0]))]
    e = e[np.r_[True, (e[1:] != e[:-1]).any(axis=1)]]
    for a, c in owner_pairs(e[:, 0], e[:, 1], radius, leads=[lead]).tolist():
        yield f"{a:016x}", f"{c:016x}"


class _ShardEntries(beam.DoFn):
    """shard_records, counting what it sends to the shuffle."""

    def __init__(self, radius, exact_only_for, shards):
        self.args = radius, exact_only_for, shards
        self.records = Metrics.counter("duplicates", "shard_records")
        self.bytes = Metrics.counter("duplicates", "shard_bytes")

    def process(self, rows):
        for key, blob in shard_records(rows, *self.args):
            self.records.inc()
            self.bytes.inc(len(blob))
            yield key, blob


def _needs_grouping(row, components, exact_only_for) -> bool:
    """Whether the row may share its cluster: its pHash is linked or shared
    (in `components`), or it clusters by bytes."""
    return not hash_is_reliable(row, exact_only_for) or row["phash"] in components


class _AssignCluster(beam.DoFn):
    """Sets cluster_id; a row that may have company goes, keyed by it, to the
    GROUPED output, the rest straight on (they are their cluster's keeper)."""
    GROUPED = "grouped"

    def __init__(self, exact_only_for):
        self.exact_only_for = exact_only_for
        self.grouped = Metrics.counter("duplicates", "rows_grouped")

    def process(self, row, components):
        row = dict(row, cluster_id=cluster_id_for(row, components, self.exact_only_for))
        if _needs_grouping(row, components, self.exact_only_for):
            self.grouped.inc()
            yield beam.pvalue.TaggedOutput(self.GROUPED, (row["cluster_id"], row))
        else:
            yield row


class _Counted(beam.DoFn):
    def __init__(self):
        self.counters = {r: Metrics.counter("curate", f"rejected_{r}") for r in DUPLICATE_REASONS}

    def process(self, kv):
        for row in resolve_cluster(list(kv[1])):
            for reason in row["reasons"]:
                if reason in self.counters:
                    self.counters[reason].inc()
            yield row


class NearDuplicatePairs(beam.PTransform):
    """rows -> (owner, owner) pHash pairs, smaller first, within the radius:
    each pair of hashes found once (an image pair met through several of its
    hashes may come from several shards, once from each), plus (pHash, pHash)
    for a pHash that several rows share. See the module doc."""

    def __init__(self, radius: int, exact_only_for=(), shards: int = SHARDS, batch_rows=BATCH_ROWS):
        super().__init__()
        self.radius, self.exact_only_for = radius, tuple(exact_only_for)
        self.shards, self.batch_rows = shards, tuple(batch_rows)

    def expand(self, rows):
        return (
            rows
            | "Batch" >> beam.BatchElements(*self.batch_rows)
            | "ShardEntries" >> beam.ParDo(_ShardEntries(self.radius, self.exact_only_for, self.shards))
            | "GroupByShard" >> beam.GroupByKey()
            | "PairsWithinRadius" >> beam.FlatMap(shard_pairs, self.radius))


class ClusterDuplicates(beam.PTransform):
    """rows -> rows with cluster_id set and duplicates rejected (see module doc)."""

    def __init__(self, radius: int, exact_only_for=(), shards: int = SHARDS):
        super().__init__()
        self.radius, self.exact_only_for, self.shards = radius, tuple(exact_only_for), shards

    def expand(self, rows):
        exact_only = self.exact_only_for
        edges = (
            rows
            | "NearPairs" >> NearDuplicatePairs(self.radius, exact_only, self.shards)
            | "DistinctPairs" >> beam.Distinct())
        components = (
            edges
            | "AllPairs" >> beam.combiners.ToList()
            | "Components" >> beam.Map(connected_components))
        assigned = rows | "AssignCluster" >> beam.ParDo(
            _AssignCluster(exact_only), beam.pvalue.AsSingleton(components)).with_outputs(
                _AssignCluster.GROUPED, main="alone")
        resolved = (
            assigned[_AssignCluster.GROUPED]
            | "GroupByCluster" >> beam.GroupByKey()
            | "KeepBestOfCluster" >> beam.ParDo(_Counted()))
        return (assigned.alone, resolved) | "AllRows" >> beam.Flatten()
