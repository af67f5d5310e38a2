"""Near-duplicate search over 64-bit hashes without all-pairs comparison. Pure.

An image carries a few hashes (transforms/image/phash.py: the full frame and nested
centre crops); two images are near duplicates when any hash of one is within
`radius` bits of any hash of the other, so a cropped copy's full-frame hash
meets its original's centre-crop hash. The search runs on all hashes at once
and maps hash pairs back to the images that own them.

Multi-index hashing with a pigeonhole guarantee: cut the 64 bits into
m = radius + 3 bands. Two hashes within Hamming distance `radius` differ in at
most `radius` bands, so at least 3 bands agree exactly; keying each hash by
every triple of its bands (C(m,3) keys) puts every such pair in a shared bucket.
For radius 4 that is 35 keys of ~27 bits (radius 6: 84 keys of ~22 bits).
Recall is exact within the radius. Sorting and bucketing grow linearly with
N (see BLOCK); only the checks of unrelated hashes that share a key grow
faster (N^2 / 2^28 per table at radius 4, ~2M cheap XOR-popcounts at 4M
hashes, i.e. 1M images).

lsh_keys() + owner_pairs_in_bucket() are what the Beam transform uses per
hash and per bucket; image_pairs() (on near_duplicate_pairs()) is the same
scheme vectorised in numpy, for one-machine use and the scale benchmark.
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


def owner_pairs_in_bucket(entries, radius: int) -> list[tuple]:
    """(a, b), a < b: owners of (hash, owner) entries in one bucket whose hashes
    are within the radius. An image's own hashes never pair it with itself."""
    es = sorted(set(entries))
    return sorted({(min(o1, o2), max(o1, o2))
                   for (h1, o1), (h2, o2) in itertools.combinations(es, 2)
                   if o1 != o2 and (h1 ^ h2).bit_count() <= radius})


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


def _sort_order(values: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """argsort of uint64 values in near-linear time: a radix pass on the top
    16 bits, then cache-sized block sorts (as in near_duplicate_pairs; one
    argsort of 4M values ran ~18x slower than of 400k)."""
    top = (values >> np.uint64(48)).astype(np.uint16)
    order = np.argsort(top, kind="stable")             # radix sort: linear
    v = values[order]
    edges = _blocks(top[order], block)
    for lo, hi in zip(edges[:-1], edges[1:]):
        order[lo:hi] = order[lo:hi][np.argsort(v[lo:hi], kind="stable")]
    return order


def image_pairs(hash_sets, radius: int, block: int = BLOCK) -> np.ndarray:
    """Image index pairs (i, j), i < j, where some hash of image i is within
    `radius` bits of some hash of image j. `hash_sets` is (n_images, k) uint64,
    row i the hashes of image i (repeats allowed). Returns an (n, 2) int64
    array, sorted.

    All n*k hashes go through one near_duplicate_pairs() call on their
    distinct values; each pair of distinct hashes is then expanded to every
    (owner, owner) combination, and images sharing an identical hash pair up
    too. Owners per distinct hash are ~1, so this stays linear.
    """
    hs = np.asarray(hash_sets, dtype=np.uint64)
    n, k = hs.shape
    owner = np.repeat(np.arange(n, dtype=np.int64), k)
    flat = hs.ravel()
    order = _sort_order(flat)                          # owners grouped by distinct hash
    ordered = flat[order]
    first = np.ones(flat.size, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(first)                     # where each distinct hash's owners begin
    uniq = ordered[starts]
    counts = np.diff(np.append(starts, flat.size))
    found = []
    hp = near_duplicate_pairs(uniq, radius, block)
    if len(hp):
        u, v = hp[:, 0], hp[:, 1]
        cv = counts[v]
        reps = counts[u] * cv                          # owner combinations per hash pair
        pu, pv = np.repeat(u, reps), np.repeat(v, reps)
        kk = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        a = owner[order[starts[pu] + kk // np.repeat(cv, reps)]]
        c = owner[order[starts[pv] + kk % np.repeat(cv, reps)]]
        found.append(np.stack([a, c], axis=1))
    for d in np.flatnonzero(counts > 1):               # one hash, several owners: rare
        members = np.unique(owner[order[starts[d]:starts[d] + counts[d]]])
        if members.size > 1:
            found.append(np.array(list(itertools.combinations(members, 2)), dtype=np.int64))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    p = np.concatenate(found)
    p = np.stack([p.min(axis=1), p.max(axis=1)], axis=1)
    return np.unique(p[p[:, 0] != p[:, 1]], axis=0)


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
