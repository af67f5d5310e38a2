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

near_duplicate_pairs() and owner_pairs() run it vectorised in numpy; the Beam
transform (transforms/curate/duplicates.py) runs owner_pairs() per shard of one lead
band's values (`leads`, each pair reported from its first shared table only),
image_pairs() on a whole set in one process (the scale benchmark). lsh_keys()
+ owner_pairs_in_bucket() are the same scheme per hash and per bucket, kept as
the plain reference the tests check the vectorised search against.
"""
from __future__ import annotations

import itertools

import numpy as np


def bit_slices(m: int) -> list[tuple[int, int]]:
    """(shift, width) of m near-equal slices of 64 bits, lowest first."""
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths))


def bands(radius: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: radius + 3 near-equal slices of 64 bits."""
    return bit_slices(radius + 3)


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


def _first_table(x: np.ndarray, b, triple) -> np.ndarray:
    """Whether `triple` is the first three bands on which pairs with XOR `x`
    agree: the one table of all that may report them (each pair once)."""
    i, j, k = triple
    ok = np.ones(x.size, dtype=bool)
    for t in range(k):
        if t not in triple:
            ok &= ((x >> np.uint64(b[t][0])) & np.uint64((1 << b[t][1]) - 1)) != 0
    return ok


def _pairs_in_block(hb: np.ndarray, b, lead: int, rest, radius: int, once: bool = False):
    """Local index pairs (a, c) within radius among hb, for the tables
    (lead, j, k) for (j, k) in rest; with `once`, only from the first table
    whose bands the pair shares (see near_duplicate_pairs).

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
            x = hb[a] ^ hb[c]
            close = np.bitwise_count(x) <= radius
            if once and close.any():
                close[close] = _first_table(x[close], b, (lead, j, k))
            if close.any():
                out_a.append(a[close])
                out_c.append(c[close])
            nxt = cand + off + 1
            inside = nxt < n
            cand = cand[inside]
            cand = cand[(packed[nxt[inside]] ^ packed[cand]) <= mask]
            off += 1
    return out_a, out_c


def lead_bands(radius: int) -> list[int]:
    """Bands that lead a table (i, j, k), i < j < k: all but the last two."""
    return list(range(radius + 1))


def near_duplicate_pairs(hashes: np.ndarray, radius: int, block: int = BLOCK,
                         leads=None, once: bool = False) -> np.ndarray:
    """Index pairs (i, j), i < j, of distinct hashes within `radius` bits.

    `hashes` must be distinct uint64 values (exact repeats are grouped first).
    Returns an (n, 2) int64 array, sorted.

    `leads` restricts the search to the tables led by those bands, and `once`
    reports a pair only from the first table it shares (its three lowest
    agreeing bands), so the searches of the separate leads, run apart (the
    Beam transform's shards), find every pair within the radius exactly once
    between them. Without `once` repeats are merged here.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    if h.size > 1 << 40:
        raise ValueError("more than 2**40 hashes: shard the search (the Beam transform does)")
    b = bands(radius)
    triples = _triples(radius)
    found = []
    for lead, (shift, width) in enumerate(b):
        rest = [(j, k) for i, j, k in triples if i == lead]
        if not rest or (leads is not None and lead not in leads):
            continue
        lead_values = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(
            np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.uint32)
        order = np.argsort(lead_values, kind="stable")  # radix sort for <= 16-bit values: linear
        hp = h[order]
        # Lead values recomputed from hp: sequential, where lead_values[order] is a random gather.
        edges = _blocks((hp >> np.uint64(shift)) & np.uint64((1 << width) - 1), block)
        for lo, hi in zip(edges[:-1], edges[1:]):
            a, c = _pairs_in_block(hp[lo:hi], b, lead, rest, radius, once)
            if a:
                a, c = order[lo + np.concatenate(a)], order[lo + np.concatenate(c)]
                found.append(np.stack([np.minimum(a, c), np.maximum(a, c)], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    p = np.concatenate(found).astype(np.int64)
    if once:  # no repeats to merge: keep them visible to the tests that count
        return p[np.lexsort((p[:, 1], p[:, 0]))]
    return np.unique(p, axis=0)


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
    array, sorted. (owner_pairs() on every hash with its image index.)
    """
    hs = np.asarray(hash_sets, dtype=np.uint64)
    n, k = hs.shape
    return owner_pairs(hs.ravel(), np.repeat(np.arange(n, dtype=np.int64), k), radius, block)


def owner_pairs(hashes, owners, radius: int, block: int = BLOCK, leads=None,
                presorted: bool = False) -> np.ndarray:
    """Owner pairs (a, b), a < b, where some hash owned by a is within `radius`
    bits of some hash owned by b. `hashes` (uint64) and `owners` (integers) are
    parallel arrays of entries; repeats allowed, an owner never pairs with itself.
    Returns an (n, 2) array of owners, sorted, without repeats.

    All hashes go through one near_duplicate_pairs() call on their distinct
    values; each pair of distinct hashes is then expanded to every (owner,
    owner) combination, and owners sharing an identical hash pair up too.
    Owners per distinct hash are ~1, so this stays linear. With `leads` only
    those bands' tables are searched, each hash pair from its first table
    (near_duplicate_pairs' `once`), and owners sharing a hash are paired only
    when band 0 is among the leads: the shards of the Beam transform.
    `presorted`: the hashes are in ascending order already.
    """
    flat = np.asarray(hashes, dtype=np.uint64)
    owner = np.asarray(owners)
    # Owners grouped by distinct hash.
    order = np.arange(flat.size) if presorted else _sort_order(flat, block)
    ordered = flat[order]
    first = np.ones(flat.size, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(first)                     # where each distinct hash's owners begin
    uniq = ordered[starts]
    counts = np.diff(np.append(starts, flat.size))
    found = []
    hp = near_duplicate_pairs(uniq, radius, block, leads=leads, once=leads is not None)
    if len(hp):
        u, v = hp[:, 0], hp[:, 1]
        cv = counts[v]
        reps = counts[u] * cv                          # owner combinations per hash pair
        pu, pv = np.repeat(u, reps), np.repeat(v, reps)
        kk = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        a = owner[order[starts[pu] + kk // np.repeat(cv, reps)]]
        c = owner[order[starts[pv] + kk % np.repeat(cv, reps)]]
        found.append(np.stack([a, c], axis=1))
    if leads is None or 0 in leads:
        for d in np.flatnonzero(counts > 1):           # one hash, several owners: rare
            members = np.unique(owner[order[starts[d]:starts[d] + counts[d]]])
            if members.size > 1:
                found.append(np.array(list(itertools.combinations(members, 2)), dtype=owner.dtype))
    if not found:
        return np.empty((0, 2), dtype=owner.dtype)
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
