"""The reference index: every image curate accepted on an earlier night, so a
re-upload days later is rejected instead of landing in another split.

Layout under --reference REF (Parquet, REFERENCE_SCHEMA):

    REF/parts/dt=D/STAMP-ATTEMPT.parquet   the images one run accepted on night D
    REF/compacted/STAMP-ATTEMPT.parquet    parts merged by compaction
    REF/_LOCK/                             held while compacting (transforms/io/run_lock.py)

Append-only: a run adds one part for its night (written atomically, before
the night's _SUCCESS, so a complete night always has its entries) and never
rewrites one. Every row carries its night (`date`) and its run's `part`
stamp; a reader takes, per night, the rows of the newest part only, so a
forced rerun of a night replaces that night's entries and an older run's
part is ignored. Compaction (one at a time, under the lock) writes the newest
rows of every night it read into one new file, then deletes only the files
it read: a part appended meanwhile stays, and a reader that lists between
the write and the delete sees some rows twice, which the per-night newest
rule and the distinct pass merge. No step removes a row before another file
holds it, so two runs updating the index lose nothing.

Which nights a run of night D matches against: those before D only. A rerun
of D never meets its own earlier entries, a backfill in date order sees
exactly what the nightly runs saw (so both give the same bytes), and a
rerun of an old night is judged against the nights before it, as it was the
first time. Later nights are not re-judged by it: rerun them too (--force
over the range) if the old night's accepted set changed.

Matching: an exact duplicate has an earlier entry's sha256; a near duplicate
(reliable pHashes only, as within a night) has some hash within the radius
of some hash of an earlier entry. The earlier image named is the earliest
night's, then the smallest URI. The search files the index's hashes by each
of radius + 1 bands (pigeonhole: two hashes within the radius agree on one
band), each band's values sorted once, and a query looks up its bands with
searchsorted: memory ~12 bytes x hashes x (radius + 1).
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from apache_beam.metrics import Metrics

from schemas.reasons import ordered
from transforms.curate.duplicates import hash_is_reliable
from transforms.curate.near_dups import bit_slices
from transforms.io import run_lock
from transforms.io.sharded_write import write_atomically

REFERENCE_SCHEMA = pa.schema([
    pa.field("date", pa.string()),        # the night the image was accepted, YYYY-MM-DD
    pa.field("uri", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.string()),       # null when the hash is unreliable (flat or clipped frame)
    pa.field("phash_centre", pa.list_(pa.string())),
    pa.field("part", pa.string()),        # the run's stamp: per night, the newest part wins
])
PARTS, COMPACTED = "parts", "compacted"
# Compact once this many part files have piled up (each night adds one).
COMPACT_AT = 8


def entry_of(row: dict, date: str, exact_only_for=()) -> dict:
    """The index entry of an accepted row (without its part stamp)."""
    reliable = hash_is_reliable(row, exact_only_for)
    return {"date": date, "uri": row["uri"], "sha256": row.get("sha256"),
            "phash": row["phash"] if reliable else None,
            "phash_centre": list(row.get("phash_centre") or []) if reliable else []}


def _encode(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=REFERENCE_SCHEMA), buf, compression="zstd")
    return buf.getvalue()


def new_stamp(me: dict | None = None) -> str:
    """A part's stamp: UTC time (sorts by age), then the run's attempt (unique)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{(me or {}).get('attempt') or uuid.uuid4().hex[:12]}"


def write_part(reference: str, date: str, entries: list[dict], me: dict | None = None) -> str:
    """Append night `date`'s entries as a new part; returns its path."""
    stamp = new_stamp(me)
    rows = sorted((dict(e, part=stamp) for e in entries), key=lambda e: e["uri"])
    path = FileSystems.join(reference, PARTS, f"dt={date}", f"{stamp}.parquet")
    return write_atomically(path, _encode(rows))


def _files(reference: str) -> list[str]:
    found = []
    for sub in (PARTS, COMPACTED):
        pattern = FileSystems.join(reference, sub, *(["*", "*.parquet"] if sub == PARTS else ["*.parquet"]))
        found += [m.path for m in FileSystems.match([pattern])[0].metadata_list
                  if not m.path.rsplit("/", 1)[-1].startswith(".")]
    return sorted(found)


def _read(path: str) -> list[dict]:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return pq.read_table(pa.BufferReader(f.read()), schema=REFERENCE_SCHEMA).to_pylist()


def _newest(rows: list[dict]) -> list[dict]:
    """Per night the rows of its newest part, each once, sorted (date, uri)."""
    newest: dict[str, str] = {}
    for r in rows:
        newest[r["date"]] = max(newest.get(r["date"], ""), r["part"])
    keep = {(r["date"], r["uri"]): r for r in rows if r["part"] == newest[r["date"]]}
    return [keep[k] for k in sorted(keep)]


def read_entries(reference: str, before: str | None = None) -> list[dict]:
    """The index's entries (newest part per night), of nights before `before` if given.

    A file deleted by a compaction between listing and reading is skipped:
    the compacted file that holds its rows was written first, so listing
    again finds them.
    """
    for _attempt in range(3):
        rows, gone = [], False
        for path in _files(reference):
            try:
                rows += _read(path)
            except Exception:  # noqa: BLE001  (GCS and local disks say "not found" differently)
                if FileSystems.exists(path):
                    raise
                gone = True
        if not gone:
            break
    return [r for r in _newest(rows) if before is None or r["date"] < before]


def compact(reference: str, me: dict, at: int = COMPACT_AT) -> str | None:
    """Merge the index's files into one once `at` parts have piled up; None
    when there is nothing to do or another run is compacting (it will)."""
    parts = [p for p in _files(reference) if f"/{PARTS}/" in p]
    if len(parts) < at:
        return None
    lock_dir = FileSystems.join(reference, run_lock.LOCK)
    try:
        run_lock.acquire(lock_dir, me, reference, retries=1)
    except run_lock.LockHeld:
        return None
    try:
        files = _files(reference)
        rows = _newest([r for path in files for r in _read(path)])
        path = FileSystems.join(reference, COMPACTED, f"{new_stamp(me)}.parquet")
        write_atomically(path, _encode(rows))
        run_lock.check(lock_dir, me, reference)
        old = [f for f in files if f != path]
        if old:
            FileSystems.delete(old)
        return path
    finally:
        run_lock.release_quietly(lock_dir, me)


def compact_quietly(reference: str, me: dict, at: int = COMPACT_AT) -> str | None:
    """compact(), logging instead of failing: the night is already published,
    and the parts stay readable as they are."""
    try:
        return compact(reference, me, at)
    except Exception as e:  # noqa: BLE001
        logging.warning("curate: compacting the reference index %s failed (%s: %s); its parts stay",
                        reference, type(e).__name__, e)
        return None


class ReferenceIndex:
    """Lookups of rows against earlier nights' entries (see the module doc)."""

    def __init__(self, entries: list[dict], radius: int):
        self.radius = radius
        self.uri = [e["uri"] for e in entries]
        self.date = [e["date"] for e in entries]
        # earliest night, then smallest uri: the one a duplicate names
        self.rank = {i: r for r, i in enumerate(sorted(range(len(entries)), key=lambda i: (self.date[i], self.uri[i])))}
        self.by_sha: dict[str, int] = {}
        for i in sorted(range(len(entries)), key=lambda i: self.rank[i], reverse=True):
            if entries[i].get("sha256"):
                self.by_sha[entries[i]["sha256"]] = i
        hashes, owners = [], []
        for i, e in enumerate(entries):
            if e.get("phash"):
                for h in {e["phash"], *(e.get("phash_centre") or [])}:
                    hashes.append(int(h, 16))
                    owners.append(i)
        self.hashes = np.array(hashes, dtype=np.uint64)
        self.owners = np.array(owners, dtype=np.int64)
        self.layout = bit_slices(radius + 1)
        self.tables = []
        for shift, width in self.layout:
            values = (self.hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            order = np.argsort(values, kind="stable")
            self.tables.append((values[order], order.astype(np.uint32)))

    def __len__(self) -> int:
        return len(self.uri)

    def near(self, hashes: list[int]) -> int | None:
        """The entry (index) named for a row with these hashes, or None."""
        if not self.hashes.size or not hashes:
            return None
        q = np.array(hashes, dtype=np.uint64)
        found = []
        for (shift, width), (values, order) in zip(self.layout, self.tables):
            key = (q >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            lo, hi = np.searchsorted(values, key, "left"), np.searchsorted(values, key, "right")
            for qi, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
                if b > a:
                    cand = order[a:b]
                    close = np.bitwise_count(self.hashes[cand] ^ q[qi]) <= self.radius
                    found.append(self.owners[cand[close]])
        owners = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
        if not owners.size:
            return None
        return min(owners.tolist(), key=lambda i: self.rank[i])

    def match(self, row: dict, exact_only_for=()) -> tuple[str, int] | None:
        """("exact_duplicate" | "near_duplicate", entry index) for a row that
        duplicates an earlier night's image, else None."""
        if row.get("sha256") and row["sha256"] in self.by_sha:
            return "exact_duplicate", self.by_sha[row["sha256"]]
        if not hash_is_reliable(row, exact_only_for):
            return None
        i = self.near([int(h, 16) for h in {row["phash"], *(row.get("phash_centre") or [])}])
        return None if i is None else ("near_duplicate", i)


def load_index(reference: str, before: str, radius: int) -> ReferenceIndex:
    """The index of nights before `before`, read at run time."""
    return ReferenceIndex(read_entries(reference, before=before), radius)


class _RejectEarlier(beam.DoFn):
    def __init__(self, exact_only_for):
        self.exact_only_for = tuple(exact_only_for)
        self.counters = {k: Metrics.counter("curate", f"rejected_{k}_of_earlier_night")
                         for k in ("exact_duplicate", "near_duplicate")}

    def process(self, row, index):
        # Like the night's own clusters, a duplicate is marked whatever its
        # quality; a row already pointing at its night's keeper keeps that.
        found = None if row.get("duplicate_of") else index.match(row, self.exact_only_for)
        if found is None:
            yield row
            return
        kind, i = found
        self.counters[kind].inc()
        yield dict(row, status="rejected", reasons=ordered(row["reasons"] + [kind]),
                   duplicate_of=index.uri[i], duplicate_of_date=index.date[i])


class RejectEarlierDuplicates(beam.PTransform):
    """rows -> rows, those that duplicate an image of an earlier night in the
    reference index rejected (exact_duplicate / near_duplicate added to their
    reasons, duplicate_of and duplicate_of_date naming it); a row already a
    duplicate within its night keeps its keeper. See the module doc for which
    nights count as earlier."""

    def __init__(self, reference: str, date: str, radius: int, exact_only_for=()):
        super().__init__()
        self.reference, self.date, self.radius = reference, date, radius
        self.exact_only_for = tuple(exact_only_for)

    def expand(self, rows):
        reference, date, radius = self.reference, self.date, self.radius
        index = (rows.pipeline
                 | "Start" >> beam.Create([None])
                 | "LoadIndex" >> beam.Map(lambda _: load_index(reference, date, radius)))
        return rows | "RejectEarlier" >> beam.ParDo(_RejectEarlier(self.exact_only_for),
                                                    beam.pvalue.AsSingleton(index))
