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
of radius // 2 + 1 bands (multi-index hashing: two hashes within the radius
differ in at most radius // bands bits, one for radius 2-5, in some band),
each band's values sorted once, and a query looks up its key in each band and
the keys that many bits from it (23 for a 22-bit band) with searchsorted: at
radius 4 that is 69 probes of buckets 256 times smaller than radius + 1 bands
of 13 bits would give, ~18 times fewer candidates, which matters as the index
grows.

Every worker holds the whole index and it grows with every night, so it is
read and held columnar (Arrow tables, numpy arrays), never as a Python object
per entry: ~440 bytes an entry as shipped to the workers (eight hashes; ~300
with the four kept before the turned ones), of which the band
tables are 8 bytes x hashes x bands (benchmarks/reference_index.py).
"""
from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from apache_beam.metrics import Metrics

from schemas.reasons import ordered
from transforms.curate.duplicates import hash_is_reliable, row_hashes
from transforms.curate.near_dups import bit_slices
from transforms.image.phash import parse_hex
from transforms.io import run_lock
from transforms.io.sharded_write import write_atomically

REFERENCE_SCHEMA = pa.schema([
    pa.field("date", pa.string()),        # the night the image was accepted, YYYY-MM-DD
    pa.field("uri", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.string()),       # null when the hash is unreliable (flat or clipped frame)
    pa.field("phash_centre", pa.list_(pa.string())),
    # The regions turned to their canonical orientations (features' phash_turned).
    # Null in parts written before policy 2026.12.2.
    pa.field("phash_turned", pa.list_(pa.string())),
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
            "phash_centre": list(row.get("phash_centre") or []) if reliable else [],
            "phash_turned": list(row.get("phash_turned") or []) if reliable else []}


def _encode(rows: list[dict] | pa.Table) -> bytes:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=REFERENCE_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
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


def _read(path: str) -> pa.Table:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return pq.read_table(pa.BufferReader(f.read()), schema=REFERENCE_SCHEMA)


def _newest(tables: list[pa.Table], before: str | None = None) -> pa.Table:
    """Per night (before `before`, if given) the rows of its newest part, each once.

    A part's rows are the same wherever they lie (its own file, and any
    compacted file that copied it before the part was deleted), so the choice
    is made per (night, part) and file, never per row: per night its newest
    part, taken from the first file that holds it. Columnar throughout: an
    index of millions of entries never becomes a Python object per entry.
    """
    held = []
    for t in tables:
        pairs = t.group_by(["date", "part"]).aggregate([]).to_pydict()
        held.append(set(zip(pairs["date"], pairs["part"])))
    newest: dict[str, str] = {}
    for date, part in set().union(*held):
        if before is None or date < before:
            newest[date] = max(newest.get(date, ""), part)
    taken, out = set(), []
    for t, pairs in zip(tables, held):
        wanted = {(d, p) for d, p in pairs if newest.get(d) == p} - taken
        taken |= wanted
        if wanted == pairs:
            out.append(t)
        elif wanted:
            key = pc.binary_join_element_wise(t["date"], t["part"], "/")
            out.append(t.filter(pc.is_in(key, value_set=pa.array([f"{d}/{p}" for d, p in wanted]))))
    return pa.concat_tables(out) if out else REFERENCE_SCHEMA.empty_table()


def read_table(reference: str, before: str | None = None) -> pa.Table:
    """The index's entries (newest part per night), of nights before `before`
    if given, in no particular order.

    A file deleted by a compaction between listing and reading is skipped:
    the compacted file that holds its rows was written first, so listing
    again finds them.
    """
    for _attempt in range(3):
        tables, gone = [], False
        for path in _files(reference):
            try:
                tables.append(_read(path))
            except Exception:  # noqa: BLE001  (GCS and local disks say "not found" differently)
                if FileSystems.exists(path):
                    raise
                gone = True
        if not gone:
            break
    return _newest(tables, before)


def read_entries(reference: str, before: str | None = None) -> list[dict]:
    """read_table() as rows sorted by (date, uri) (for a look at a small index)."""
    return read_table(reference, before).sort_by([("date", "ascending"), ("uri", "ascending")]).to_pylist()


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
        table = _newest([_read(path) for path in files])
        path = FileSystems.join(reference, COMPACTED, f"{new_stamp(me)}.parquet")
        write_atomically(path, _encode(table))
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
    """Lookups of rows against earlier nights' entries (see the module doc).

    Every worker holds the whole index, and it grows with every night, so it
    is a few flat arrays (~440 bytes per entry, no Python object per entry):
    the entries' URIs and nights, their sha256 sorted for exact lookups, and
    every reliable pHash (row_hashes) filed by band (see the module doc). Which of several
    matching entries a duplicate names (the earliest night's, then the
    smallest URI) is settled among the few that match, at lookup.
    """

    def __init__(self, entries: pa.Table | list[dict], radius: int):
        table = entries if isinstance(entries, pa.Table) else pa.Table.from_pylist(list(entries), schema=REFERENCE_SCHEMA)
        self.radius = radius
        self.uri, self.date = table["uri"], table["date"]
        # Exact: entries sorted by the first 8 bytes of their sha256, checked in full at lookup.
        self.sha = _fixed_width(table["sha256"])
        prefix = _prefix64(self.sha)
        self.sha_order = np.argsort(prefix).astype(np.uint32)
        self.sha_prefix = prefix[self.sha_order]
        # Hashes of entries whose pHash is reliable: the full frame's, the centre
        # crops' and those regions' turned to their canonical orientations.
        full = table["phash"].combine_chunks()
        reliable = pc.is_valid(full).to_numpy(zero_copy_only=False)
        hashes, owners = [_hex64(full.filter(pc.is_valid(full)))], [np.flatnonzero(reliable)]
        for column in ("phash_centre", "phash_turned"):
            lists = table[column].combine_chunks()
            of = pc.list_parent_indices(lists).to_numpy()
            filed = reliable[of] if of.size else np.zeros(0, bool)
            hashes.append(_hex64(pc.list_flatten(lists))[filed])
            owners.append(of[filed])
        self.hashes = np.concatenate(hashes)
        self.owners = np.concatenate(owners).astype(np.uint32)
        self.layout = bit_slices(radius // 2 + 1)
        self.band_radius = radius // len(self.layout)
        self.tables = []
        for shift, width in self.layout:
            values = ((self.hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(_band_dtype(width))
            at = _radix_order(values).astype(np.uint32)
            self.tables.append((values[at], at, _flips(width, self.band_radius).astype(values.dtype)))

    def __len__(self) -> int:
        return len(self.uri)

    def _earliest(self, entries) -> tuple[str, str]:
        """(uri, date) of the entry a duplicate names: the earliest night's, then the smallest URI."""
        date, uri = min((self.date[i].as_py(), self.uri[i].as_py()) for i in set(int(i) for i in entries))
        return uri, date

    def exact(self, sha256: str) -> tuple[str, str] | None:
        """(uri, date) of the entry with these bytes, or None."""
        key = sha256.encode()
        k = np.uint64(int.from_bytes(key[:8].ljust(8, b"\0"), "big"))   # as _prefix64 takes an entry's
        lo, hi = np.searchsorted(self.sha_prefix, k, "left"), np.searchsorted(self.sha_prefix, k, "right")
        cand = self.sha_order[lo:hi]
        same = cand[self.sha[cand] == key]
        return self._earliest(same) if same.size else None

    def near(self, hashes: list[int]) -> tuple[str, str] | None:
        """(uri, date) of the entry named for a row with these hashes, or None."""
        if not self.hashes.size or not hashes:
            return None
        q = np.array(hashes, dtype=np.uint64)
        found = []
        for (shift, width), (values, at, flips) in zip(self.layout, self.tables):
            key = ((q >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(values.dtype)
            probes = (key[:, None] ^ flips[None, :]).ravel()
            lo, hi = np.searchsorted(values, probes, "left"), np.searchsorted(values, probes, "right")
            counts = hi - lo
            total = int(counts.sum())
            if not total:
                continue
            starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
            cand = at[starts + np.arange(total)]
            asked = q[np.repeat(np.arange(probes.size) // flips.size, counts)]
            found.append(self.owners[cand[np.bitwise_count(self.hashes[cand] ^ asked) <= self.radius]])
        close = np.concatenate(found) if found else np.zeros(0, np.uint32)
        return self._earliest(close) if close.size else None

    def match(self, row: dict, exact_only_for=()) -> tuple[str, str, str] | None:
        """("exact_duplicate" | "near_duplicate", uri, date) of the earlier
        night's image a row duplicates, else None."""
        found = self.exact(row["sha256"]) if row.get("sha256") else None
        if found is not None:
            return ("exact_duplicate", *found)
        if not hash_is_reliable(row, exact_only_for):
            return None
        # The index keeps each entry's hashes as row_hashes gives them, so a
        # turned copy meets the entry through their common canonical
        # orientation. An entry written before policy 2026.12.2 has no turned
        # hashes: a turned copy finds it only when the entry's own frame or a
        # crop is canonical as it stands (about 1 in 8).
        found = self.near([int(h, 16) for h in row_hashes(row)])
        return None if found is None else ("near_duplicate", *found)


def _flips(width: int, bits: int) -> np.ndarray:
    """Every XOR mask of at most `bits` set bits in a `width`-bit band: a key and these, its neighbours."""
    return np.array([sum(1 << b for b in chosen) for k in range(bits + 1)
                     for chosen in itertools.combinations(range(width), k)], dtype=np.uint64)


def _radix_order(values: np.ndarray) -> np.ndarray:
    """argsort of unsigned integers, 16 bits a pass: numpy's stable sort is a
    radix sort for 16-bit keys only, and ~5x faster than its sort of wider ones."""
    order = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    for shift in range(16, values.dtype.itemsize * 8, 16):
        order = order[np.argsort(((values[order] >> values.dtype.type(shift)) & 0xFFFF).astype(np.uint16), kind="stable")]
    return order


def _band_dtype(width: int):
    return np.uint16 if width <= 16 else np.uint32 if width <= 32 else np.uint64


def _hex64(strings: pa.Array) -> np.ndarray:
    """16-digit hex strings (as curate writes pHashes) -> uint64, in one pass."""
    if not len(strings):
        return np.zeros(0, np.uint64)
    try:
        fixed = pc.cast(strings, pa.binary(16))
    except pa.ArrowInvalid:  # not all 16 digits: an index written by hand
        return np.array([int(h, 16) for h in strings.to_pylist()], dtype=np.uint64)
    digits = memoryview(fixed.buffers()[1])[fixed.offset * 16:(fixed.offset + len(fixed)) * 16]
    try:
        return parse_hex(bytes(digits).decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the reference index holds a pHash that is not hexadecimal") from None


def _prefix64(fixed: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each value of a fixed-width bytes array, as big-endian uint64 (zero-padded)."""
    raw = fixed.view(np.uint8).reshape(len(fixed), fixed.dtype.itemsize)
    first = np.zeros((len(fixed), 8), np.uint8)
    first[:, :min(8, raw.shape[1])] = raw[:, :8]
    return first.view(">u8").ravel().astype(np.uint64)


def _fixed_width(strings: pa.ChunkedArray) -> np.ndarray:
    """A string column as a fixed-width numpy bytes array (missing values empty),
    without a Python object per value."""
    strings = pc.fill_null(strings.combine_chunks(), "")
    if not len(strings):
        return np.zeros(0, "S1")
    lengths = pc.min_max(pc.binary_length(strings)).as_py()
    width = max(1, lengths["max"])
    try:
        padded = strings if lengths["min"] == width else pc.utf8_rpad(strings, width=width, padding="\0")
        fixed = pc.cast(padded, pa.binary(width))
    except pa.ArrowInvalid:  # multi-byte characters: pad by bytes instead
        return np.array([s.encode() for s in strings.to_pylist()], dtype=f"S{width}")
    return np.frombuffer(fixed.buffers()[1], f"S{width}", count=len(fixed), offset=fixed.offset * width)


def load_index(reference: str, before: str, radius: int) -> ReferenceIndex:
    """The index of nights before `before`, read at run time."""
    return ReferenceIndex(read_table(reference, before=before), radius)


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
        kind, uri, date = found
        self.counters[kind].inc()
        yield dict(row, status="rejected", reasons=ordered(row["reasons"] + [kind]),
                   duplicate_of=uri, duplicate_of_date=date)


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
