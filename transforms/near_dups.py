"""Near-duplicate search over 64-bit hashes without all-pairs comparison. Pure.

Multi-index hashing with a pigeonhole guarantee: cut the 64 bits into
m = radius + 3 bands. Two hashes within Hamming distance `radius` differ in at
most `radius` bands, so at least 3 bands agree exactly; keying each hash by
every triple of its bands (C(m,3) keys) puts every such pair in a shared bucket.
For radius 6 that is 84 keys of ~22 bits. Recall is exact within the radius.
Sorting and bucketing grow linearly with N (see BLOCK); only the checks of
unrelated hashes that share a 22-bit key grow faster (N^2 / 2^22 per table,
~15M cheap XOR-popcounts at 1M hashes).

lsh_keys() + pairs_in_bucket() are what the Beam transform uses per element and
per bucket; near_duplicate_pairs() is the same scheme vectorised in numpy, for
one-machine use and the scale benchmark.
"""
from __future__ import annotations

import itertools

import numpy as np


def bands(radius: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: radius + 3 near-equal slices of 64 bits."""
    m = radius + 3
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths))


def _triples(radius: int):
    return list(itertools.combinations(range(radius + 3), 3))


def lsh_keys(h: int, radius: int) -> list[tuple[int, int]]:
    """The (table, key) buckets a hash is filed under."""
    parts = [(h >> s) & ((1 << w) - 1) for s, w in bands(radius)]
    b = bands(radius)
    out = []
    for t, (i, j, k) in enumerate(_triples(radius)):
        key = (parts[i] << (b[j][1] + b[k][1])) | (parts[j] << b[k][1]) | parts[k]
        out.append((t, key))
    return out


def pairs_in_bucket(hashes, radius: int) -> list[tuple[int, int]]:
    """(a, b) with a < b for distinct hashes in one bucket within the radius."""
    hs = sorted(set(hashes))
    return [(a, b) for a, b in itertools.combinations(hs, 2) if (a ^ b).bit_count() <= radius]


# Per-table work is done in cache-sized blocks: hashes are first grouped by the
# table's leading band (a linear radix pass), so every bucket of the table lies
# inside one block and each sort touches ~16k values that stay in L2. Sorting
# whole 1M-element arrays instead ran ~13x slower than at 100k (memory-bound).
BLOCK = 1 << 14


def _blocks(lead: np.ndarray, block: int) -> list[int]:
    """Cut points of lead-sorted positions into ~block-sized runs that never
    split a run of equal lead values (so no bucket spans two blocks)."""
    n = lead.size
    starts = np.flatnonzero(lead[1:] != lead[:-1]) + 1
    if not starts.size:
        return [0, n]
    cuts = starts[np.minimum(np.searchsorted(starts, np.arange(block, n, block)), starts.size - 1)]
    return [0, *np.unique(cuts).tolist(), n]


def _pairs_in_block(hb: np.ndarray, b, lead: int, rest, radius: int):
    """Local index pairs (a, c) within radius among hb, for the tables
    (lead, j, k) for (j, k) in rest.

    Each table sorts (key << index_bits) | local index, packed in one uint64,
    so equal keys are adjacent and no argsort is needed.
    """
    u = np.uint64
    n = hb.size
    index_bits = max(1, int(n - 1).bit_length())
    mask = u((1 << index_bits) - 1)
    parts = {x: (hb >> u(b[x][0])) & u((1 << b[x][1]) - 1) for x in {lead, *(x for jk in rest for x in jk)}}
    local = np.arange(n, dtype=np.uint64)
    leads: dict[int, np.ndarray] = {}
    out_a, out_c = [], []
    for j, k in rest:
        wj, wk = b[j][1], b[k][1]
        shift = wj + wk + index_bits
        if shift not in leads:
            leads[shift] = (parts[lead] << u(shift)) | local
        packed = leads[shift] | (parts[j] << u(wk + index_bits)) | (parts[k] << u(index_bits))
        packed.sort()
        # cand: sorted positions p whose value shares its key with p + off; it only shrinks.
        cand = np.flatnonzero((packed[1:] ^ packed[:-1]) <= mask)
        off = 1
        while cand.size:
            a = (packed[cand] & mask).astype(np.intp)
            c = (packed[cand + off] & mask).astype(np.intp)
            close = np.bitwise_count(hb[a] ^ hb[c]) <= radius
            if close.any():
                out_a.append(a[close])
                out_c.append(c[close])
            nxt = cand + off + 1
            inside = nxt < n
            cand = cand[inside]
            cand = cand[(packed[nxt[inside]] ^ packed[cand]) <= mask]
            off += 1
    return out_a, out_c


def near_duplicate_pairs(hashes: np.ndarray, radius: int, block: int = BLOCK) -> np.ndarray:
    """Index pairs (i, j), i < j, of distinct hashes within `radius` bits.

    `hashes` must be distinct uint64 values (exact repeats are grouped first).
    Returns an (n, 2) int64 array, sorted.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    if h.size > 1 << 40:
        raise ValueError("more than 2**40 hashes: shard the search (the Beam transform does)")
    b = bands(radius)
    triples = _triples(radius)
    found = []
    for lead, (shift, width) in enumerate(b):
        rest = [(j, k) for i, j, k in triples if i == lead]
        if not rest:
            continue
        lead_values = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(
            np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.uint32)
        order = np.argsort(lead_values, kind="stable")  # radix sort for <= 16-bit values: linear
        hp = h[order]
        # Lead values recomputed from hp: sequential, where lead_values[order] is a random gather.
        edges = _blocks((hp >> np.uint64(shift)) & np.uint64((1 << width) - 1), block)
        for lo, hi in zip(edges[:-1], edges[1:]):
            a, c = _pairs_in_block(hp[lo:hi], b, lead, rest, radius)
            if a:
                a, c = order[lo + np.concatenate(a)], order[lo + np.concatenate(c)]
                found.append(np.stack([np.minimum(a, c), np.maximum(a, c)], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def connected_components(edges) -> dict:
    """Map every node in edges to its component's smallest node (union-find)."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}
