"""Exact and near-duplicate clusters across all images, and which one to keep.

An image is identified by its full-frame pHash (`phash`, 16-digit hex);
identical pHashes collapse first. Every image also carries the pHashes of its
nested centre crops (`phash_centre`) and of each of those regions turned to a
canonical orientation (`phash_turned`, transforms/image/phash.py), and two images are
near duplicates when any of their hashes are within the radius, so a cropped
or turned copy meets its original.

The search is sharded, not bucketed per key: each bundle's rows are gathered
and their (hash, owner pHash) entries packed into arrays, one record per
(lead band, shard) per SHARD_ROWS rows, holding 16 bytes per entry. Every
table of transforms/curate/near_dups.py is led by one of radius + 1 bands, and a
shard is the top bits of the lead band's value, so two hashes that share a
table's key always meet in one shard; each shard runs the vectorised
multi-index search over its lead's tables only and reports a hash pair from
the first table it shares, so every pair within the radius is found exactly
once across shards (owners sharing an identical hash pair up in band 0's
shards). Shuffle per image: ~8 hashes x (radius + 1) leads = ~40 entries,
~610 bytes at radius 4, in at most (radius + 1) x SHARDS records per 10,000 rows
(the per-key scheme sent 140 records, ~7 KB, per image).

Pairs are few (duplicates are the exception), so their connected components
are computed in one place and handed on as a side input. Every row must wait
for it, so rows wait packed (transforms/io/packing.py: every 250 rows one
record, ~180 bytes a real row, where one by one each cost ~22 us to decode
and, in a DirectRunner GroupByKey, ~5 KB of memory). Beside it goes a
packed record of the few columns the keeper choice reads. Only rows that may
have company (in a component, a shared pHash, or clustered by bytes because
their hash is unreliable) send those columns through the cluster
GroupByKey, where the best member is kept; the verdicts on the others
(keeper and reason) are a side input of the one step that unpacks the rows
and emits each once, so no Flatten makes the runner re-encode every row.

On DirectRunner (ClusterDuplicates(spill=the temp folder), as curate runs
locally) every one of those records is written to local files once per
SHARD_ROWS rows of a bundle and the runner carries only references
(transforms/io/spill.py), which are removed when the rows are out: the
runner held the shuffle and the waiting rows in memory, ~2 KB per image
(2.0 GB at 1M images), where now the stage adds ~40 MB at 1M and ~70 MB
at 3M (benchmarks/duplicate_stage.py). On Dataflow
the records themselves go through its disk-backed shuffle.
"""
from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.reasons import DUPLICATE_REASONS, ordered
from transforms.curate.near_dups import bands, connected_components, lead_bands, owner_pairs
from transforms.image.phash import min_hamming, parse_hex
from transforms.io import spill as spill_files
from transforms.io.packing import PACK_ELEMENTS, InBundles, pack, unpack

# Shards per lead band (rounded up to a power of two, at most 2**band width): the
# search's parallelism is (radius + 1) x SHARDS groups; at 1M images a group
# holds ~250k entries (4 MB), which the vectorised search handles in cache-
# sized blocks. More shards cost more, smaller records.
SHARDS = 16
# Rows of a bundle whose hash entries go out as one set of shard records (at
# most (radius + 1) x SHARDS records): fewer, larger shuffle records.
SHARD_ROWS = 10_000
# What the keeper choice reads of a row (keeper_order, cluster_id).
KEEPER_FIELDS = ("uri", "sha256", "phash", "reasons", "enhanced", "width", "height", "file_size")


def hash_is_reliable(row: dict, exact_only_for) -> bool:
    """Whether the row's pHash identifies its content (not a flat/clipped frame)."""
    reasons = row["reasons"]
    return bool(row.get("phash")) and not (reasons and set(reasons).intersection(exact_only_for))


def owners_of(rows, exact_only_for) -> list:
    """Each row's owner, the node its cluster is computed on: its full-frame
    pHash when reliable, else None."""
    return [row["phash"] if hash_is_reliable(row, exact_only_for) else None for row in rows]


def row_hashes(row: dict) -> list[str]:
    """A row's pHashes as near-duplicate matching compares them, each once:
    the full frame's first, then its centre crops' (a cropped copy) and its
    regions' canonical orientations' (a turned, mirrored or turned and
    cropped copy; transforms/image/phash.py).
    Rows written before policy 2026.12.2 list all 7 turns instead, among which
    is their canonical one, so they still meet new rows' turned copies."""
    return list(dict.fromkeys([row["phash"], *(row.get("phash_centre") or []), *(row.get("phash_turned") or [])]))


def hash_entries(rows, owners) -> np.ndarray:
    """A batch's (hash, owner) uint64 pairs, one per hash of each row with an
    owner (owners_of). Another hash equal to its own row's pHash is left
    out, so that band 0 sees each row's pHash once (it counts rows per pHash)."""
    hexes, counts = [], []
    for row, owner in zip(rows, owners):
        if owner:
            hs = row_hashes(row)  # its owner, the row's pHash, first
            hexes += hs
            counts.append(len(hs))
    if not counts:
        return np.empty((0, 2), dtype=np.uint64)
    # One parse for the batch: int(h, 16) per hash was most of this step.
    h = parse_hex("".join(hexes))
    counts = np.array(counts)
    firsts = np.cumsum(counts) - counts
    owner = np.repeat(h[firsts], counts)
    keep = h != owner
    keep[firsts] = True
    return np.stack([h[keep], owner[keep]], axis=1)


def cluster_id(owner, row: dict, components: dict) -> str:
    """Stable id: the smallest pHash of the owner's component (owners_of),
    or one from the bytes."""
    if owner:
        return "p" + components.get(owner, owner)
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


def duplicate_verdicts(members) -> dict:
    """(key, has_phash, sha256, keeper_order) members of one cluster ->
    {key: (keeper uri, reason)} for every member but the best. Pure.
    Rows without a pHash (nothing decoded) are never resolved."""
    if len(members) == 1 or not all(m[1] for m in members):
        return {}
    keeper = min(members, key=lambda m: m[3])
    return {m[0]: (keeper[3][-1], "exact_duplicate" if m[2] == keeper[2] else "near_duplicate")
            for m in members if m is not keeper}


def member(key, row: dict):
    return key, bool(row.get("phash")), row.get("sha256"), keeper_order(row)


def mark_duplicate(row: dict, verdict) -> dict:
    keeper_uri, kind = verdict
    return dict(row, status="rejected", duplicate_of=keeper_uri, reasons=ordered(row["reasons"] + [kind]))


def resolve_cluster(rows: list[dict]) -> list[dict]:
    """Mark every member but the best as a duplicate of it. Pure."""
    verdicts = duplicate_verdicts([member(i, row) for i, row in enumerate(rows)])
    return [mark_duplicate(row, verdicts[i]) if i in verdicts else row for i, row in enumerate(rows)]


def pair_distance(row: dict, keeper: dict):
    """"exact" for byte-identical rows, else the smallest Hamming distance
    between any of their pHashes (what near-duplicate matching compares);
    None without hashes. Members joined through a chain of close pairs can
    lie beyond the radius from their keeper."""
    if row.get("sha256") and row.get("sha256") == keeper.get("sha256"):
        return "exact"
    if not (row.get("phash") and keeper.get("phash")):
        return None
    return min_hamming(*([int(h, 16) for h in row_hashes(r)] for r in (row, keeper)))


def shard_records(e: np.ndarray, radius: int, shards: int = SHARDS):
    """hash_entries -> ((lead, shard), packed entries) records: every entry
    under every lead band, as uint64 pairs."""
    if not len(e):
        return
    # Each record's entries sorted by hash: the shard merges sorted runs.
    e = e[np.argsort(e[:, 0])]
    b = bands(radius)
    for lead in lead_bands(radius):
        shift, width = b[lead]
        bits = min(int(shards - 1).bit_length(), width)
        shard = ((e[:, 0] >> np.uint64(shift + width - bits)) & np.uint64((1 << bits) - 1)).astype(np.uint16)
        order = np.argsort(shard, kind="stable")  # a radix sort; keeps the hash order
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, cuts):
            yield (lead, int(shard[part[0]])), e[part].tobytes()


def shard_pairs(kv, radius: int):
    """One shard's packed entries -> owner pHash pairs (hex, smaller first),
    plus (owner, owner) for a pHash that several rows share."""
    (lead, _), blobs = kv
    e = np.frombuffer(b"".join(map(spill_files.load, blobs)), dtype=np.uint64).reshape(-1, 2)
    e = e[np.argsort(e[:, 0], kind="stable")]  # merges the records' sorted runs
    same = e[1:, 0] == e[:-1, 0]
    repeats = bool(same.any())
    if repeats:
        # A repeated hash (exact copies, shared pHashes: rare): order its run
        # by owner too, so that repeated entries, whose owner x owner
        # combinations would multiply, are adjacent and dropped. (Sorting all
        # entries by both columns cost ~40% of the shard's search.)
        run = np.zeros(len(e), dtype=bool)
        run[1:] |= same
        run[:-1] |= same
        at = np.flatnonzero(run)
        sub = e[at]
        e[at] = sub[np.lexsort((sub[:, 1], sub[:, 0]))]
    if lead == 0:  # each row's own (phash, phash) entry lands in a band-0 shard, once per row
        own = e[e[:, 0] == e[:, 1], 1]
        for o in np.unique(own[1:][own[1:] == own[:-1]]).tolist():
            yield f"{o:016x}", f"{o:016x}"
    if repeats:
        e = e[np.r_[True, ~(same & (e[1:, 1] == e[:-1, 1]))]]
    for a, c in owner_pairs(e[:, 0], e[:, 1], radius, leads=[lead], presorted=True).tolist():
        yield f"{a:016x}", f"{c:016x}"


class _PackAndShard(InBundles):
    """rows -> ENTRIES: shard_records of every `shard_rows` rows of a bundle,
    counting what goes to the shuffle. With pack, also every `pack_rows`
    rows packed, as (batch id, rows) to the main output, and as (batch id,
    the columns the keeper choice reads plus each row's owner pHash, None
    when unreliable) to MEMBERS, packed apart so that choosing reads no
    whole row. With `spill` (a directory), every record goes out as a
    reference to a file written there (transforms/io/spill.py) once per
    `shard_rows` rows."""
    ENTRIES, MEMBERS = "shards", "members"

    def __init__(self, radius, exact_only_for, shards=SHARDS, pack=False,
                 pack_rows=PACK_ELEMENTS, shard_rows=SHARD_ROWS, spill=None):
        super().__init__(pack_rows)
        self.radius, self.exact_only_for, self.shards, self.pack = radius, exact_only_for, shards, pack
        self.shard_rows, self.spill = shard_rows, spill
        self.records = Metrics.counter("duplicates", "shard_records")
        self.bytes = Metrics.counter("duplicates", "shard_bytes")
        self.packed_bytes = Metrics.counter("duplicates", "packed_row_bytes")
        self.spilled_bytes = Metrics.counter("duplicates", "spilled_bytes")

    def start_bundle(self):
        super().start_bundle()
        self.entries, self.entry_rows = [], 0
        self.outbox = spill_files.Outbox(self.spill) if self.spill else None

    def batch(self, rows, final):
        if rows:
            owners = owners_of(rows, self.exact_only_for)
            self.entries.append(hash_entries(rows, owners))
            self.entry_rows += len(rows)
            if self.pack:
                yield from self._out(self._packed(rows, owners))
        if self.entries and (final or self.entry_rows >= self.shard_rows):
            e = np.concatenate(self.entries)
            self.entries, self.entry_rows = [], 0
            yield from self._out(self._shard_records(e))
        if self.outbox is not None and not self.entries:  # everything gathered so far is in records: write, then send
            self.spilled_bytes.inc(self.outbox.writer.size)
            yield from self.outbox.release()

    def _out(self, records):
        """(tag, key, record) -> outputs now, or into the outbox until written."""
        for tag, key, record in records:
            if self.outbox is not None:
                yield from self.outbox.put(record, tag, key)   # nothing until release(): it has no limit
            else:
                yield beam.pvalue.TaggedOutput(tag, (key, record)) if tag else (key, record)

    def _shard_records(self, e):
        for key, blob in shard_records(e, self.radius, self.shards):
            self.records.inc()
            self.bytes.inc(len(blob))
            yield self.ENTRIES, key, blob

    def _packed(self, rows, owners):
        blob = pack((owners, rows))
        # Identical batches (the same rows twice) share an id, harmlessly.
        batch = hashlib.blake2b(blob, digest_size=8).digest()
        self.packed_bytes.inc(len(blob))
        yield None, batch, blob
        columns = {f: [row.get(f) for row in rows] for f in KEEPER_FIELDS}
        columns["owner"] = owners
        yield self.MEMBERS, batch, pack(columns)


def _needs_grouping(owner, has_phash: bool, components) -> bool:
    """Whether a row may share its cluster: its pHash is linked or shared
    (in `components`), or it clusters by bytes (a pHash, but unreliable)."""
    return owner in components if owner else has_phash


class _GroupedMembers(beam.DoFn):
    """A batch's packed keeper columns -> (cluster_id, member) for each row
    that may have company; the rest are their cluster's keeper."""

    def __init__(self):
        self.grouped = Metrics.counter("duplicates", "rows_grouped")

    def process(self, kv, components):
        batch, blob = kv
        columns = unpack(spill_files.load(blob))
        for i, (owner, phash) in enumerate(zip(columns["owner"], columns["phash"])):
            if _needs_grouping(owner, bool(phash), components):
                self.grouped.inc()
                row = {f: columns[f][i] for f in KEEPER_FIELDS}
                yield cluster_id(owner, row, components), member((batch, i), row)


class _AssignCluster(beam.DoFn):
    """A packed batch -> its rows with cluster_id set and, where the cluster's
    keeper is another row, rejected as its duplicate. With done, also a
    DONE element per batch, so that a later step knows when all are read."""
    DONE = "done"

    def __init__(self, done: bool = False):
        self.done = done
        self.counters = {r: Metrics.counter("curate", f"rejected_{r}") for r in DUPLICATE_REASONS}

    def process(self, kv, components, verdicts):
        batch, blob = kv
        owners, rows = unpack(spill_files.load(blob))
        for i, (owner, row) in enumerate(zip(owners, rows)):
            row["cluster_id"] = cluster_id(owner, row, components)
            verdict = verdicts.get((batch, i))
            if verdict:
                self.counters[verdict[1]].inc()
                row = mark_duplicate(row, verdict)
            yield row
        if self.done:
            yield beam.pvalue.TaggedOutput(self.DONE, None)


class _SearchShards(beam.PTransform):
    """(lead, shard) records -> distinct owner pHash pairs within the radius."""

    def __init__(self, radius: int):
        super().__init__()
        self.radius = radius

    def expand(self, records):
        return (
            records
            | "GroupByShard" >> beam.GroupByKey()
            | "PairsWithinRadius" >> beam.FlatMap(shard_pairs, self.radius))


class NearDuplicatePairs(beam.PTransform):
    """rows -> (owner, owner) pHash pairs, smaller first, within the radius:
    each pair of hashes found once (an image pair met through several of its
    hashes may come from several shards, once from each), plus (pHash, pHash)
    for a pHash that several rows share. See the module doc; `spill` as for
    ClusterDuplicates."""

    def __init__(self, radius: int, exact_only_for=(), shards: int = SHARDS, shard_rows: int = SHARD_ROWS,
                 spill: str | None = None):
        super().__init__()
        self.radius, self.exact_only_for = radius, tuple(exact_only_for)
        self.shards, self.shard_rows, self.spill = shards, shard_rows, spill

    def expand(self, rows):
        directory = spill_files.new_directory(self.spill, "duplicates") if self.spill else None
        entries = rows | "ShardEntries" >> beam.ParDo(_PackAndShard(
            self.radius, self.exact_only_for, self.shards, pack_rows=self.shard_rows,
            shard_rows=self.shard_rows, spill=directory)).with_outputs(_PackAndShard.ENTRIES, main="none")
        pairs = entries[_PackAndShard.ENTRIES] | "Search" >> _SearchShards(self.radius)
        if directory:
            _ = pairs | "RemoveSpill" >> spill_files.RemoveWhenDone(directory)
        return pairs


class ClusterDuplicates(beam.PTransform):
    """rows -> rows with cluster_id set and duplicates rejected (see module doc).

    spill: None to let the runner carry the stage's records (Dataflow: its
    shuffle is disk-backed), or a local folder (the machine's temp folder for
    a DirectRunner run, where the runner would hold them in memory) under
    which they are spilled while the stage runs and removed after it.
    """

    def __init__(self, radius: int, exact_only_for=(), shards: int = SHARDS, spill: str | None = None):
        super().__init__()
        self.radius, self.exact_only_for, self.shards, self.spill = radius, tuple(exact_only_for), shards, spill

    def expand(self, rows):
        exact_only = self.exact_only_for
        directory = spill_files.new_directory(self.spill, "duplicates") if self.spill else None
        batches = rows | "PackAndShard" >> beam.ParDo(
            _PackAndShard(self.radius, exact_only, self.shards, pack=True, spill=directory)).with_outputs(
                _PackAndShard.ENTRIES, _PackAndShard.MEMBERS, main="packed")
        components = beam.pvalue.AsSingleton(
            batches[_PackAndShard.ENTRIES]
            | "NearPairs" >> _SearchShards(self.radius)
            | "DistinctPairs" >> beam.Distinct()
            | "AllPairs" >> beam.combiners.ToList()
            | "Components" >> beam.Map(connected_components))
        verdicts = (
            batches[_PackAndShard.MEMBERS]
            | "MayHaveCompany" >> beam.ParDo(_GroupedMembers(), components)
            | "GroupByCluster" >> beam.GroupByKey()
            | "KeepBestOfCluster" >> beam.FlatMap(lambda kv: duplicate_verdicts(list(kv[1])).items()))
        assigned = batches.packed | "AssignCluster" >> beam.ParDo(
            _AssignCluster(done=bool(directory)), components, beam.pvalue.AsDict(verdicts)).with_outputs(
                _AssignCluster.DONE, main="rows")
        if directory:
            _ = assigned[_AssignCluster.DONE] | "RemoveSpill" >> spill_files.RemoveWhenDone(directory)
        return assigned.rows

