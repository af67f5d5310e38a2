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
# table's leading band (one sort of the values, rotated to put that band on
# top; see near_duplicate_pairs), so every bucket of the table lies
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


def _rotate_right(h: np.ndarray, k: int, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """64-bit values rotated right by k bits (0 < k < 64) into `out`, with
    `tmp` as scratch: fresh 40 MB temporaries per pass cost as much as the
    arithmetic at 5M hashes."""
    np.right_shift(h, np.uint64(k), out=out)
    out |= np.left_shift(h, np.uint64(64 - k), out=tmp)
    return out


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

    Each lead's grouping sorts the values themselves, rotated so that the
    lead band is on top, rather than arg-sorting its band and gathering the
    values through the order: at 5M hashes the random gather and the index
    sort cost ~2.5x per hash what they cost at 500k (the arrays leave the
    cache), a sort of the values ~1.3x. Pairs are found as values and mapped
    back to indices by a search in the sorted hashes, for the few found.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    if h.size > 1 << 40:
        raise ValueError("more than 2**40 hashes: shard the search (the Beam transform does)")
    ascending = bool(np.all(h[1:] > h[:-1]))
    order = None if ascending else np.argsort(h, kind="stable")
    sorted_h = h if ascending else h[order]
    b = bands(radius)
    triples = _triples(radius)
    found = []
    rot, hp, tmp = np.empty_like(h), np.empty_like(h), np.empty_like(h)
    for lead, (shift, width) in enumerate(b):
        rest = [(j, k) for i, j, k in triples if i == lead]
        if not rest or (leads is not None and lead not in leads):
            continue
        top = shift + width                           # < 64: the last bands never lead
        _rotate_right(h, top, rot, tmp).sort()        # by lead band on top, then the other bits
        _rotate_right(rot, 64 - top, hp, tmp)
        edges = _blocks(np.right_shift(rot, np.uint64(64 - width), out=tmp), block)
        for lo, hi in zip(edges[:-1], edges[1:]):
            a, c = _pairs_in_block(hp[lo:hi], b, lead, rest, radius, once)
            if a:
                va, vc = hp[lo + np.concatenate(a)], hp[lo + np.concatenate(c)]
                found.append(np.stack([np.minimum(va, vc), np.maximum(va, vc)], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    p = np.searchsorted(sorted_h, np.concatenate(found)).astype(np.int64)
    if order is not None:
        p = order[p]
        p = np.stack([p.min(axis=1), p.max(axis=1)], axis=1)
    if once:  # no repeats to merge: keep them visible to the tests that count
        return p[np.lexsort((p[:, 1], p[:, 0]))]
    return np.unique(p, axis=0)


def image_pairs(hash_sets, radius: int, block: int = BLOCK) -> np.ndarray:
    """Image index pairs (i, j), i < j, where some hash of image i is within
    `radius` bits of some hash of image j. `hash_sets` is (n_images, k) uint64,
    row i the hashes of image i (repeats allowed). Returns an (n, 2) int64
    array, sorted. (owner_pairs() on every hash with its image index.)
    """
    hs = np.asarray(hash_sets, dtype=np.uint64)
    n, k = hs.shape
    return owner_pairs(hs.ravel(), np.repeat(np.arange(n, dtype=np.int64), k), radius, block)


def _where_in(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions i with values[i] in `wanted` (sorted, distinct, few): a
    lookup of each value's top 20 bits in a 1 MB table, then an exact search
    of the few that pass (one linear pass, no sort of `values`)."""
    if not wanted.size:
        return np.empty(0, dtype=np.intp)
    table = np.zeros(1 << 20, dtype=bool)
    table[wanted >> np.uint64(44)] = True
    at = np.flatnonzero(table[values >> np.uint64(44)])
    v = values[at]
    i = np.minimum(np.searchsorted(wanted, v), wanted.size - 1)
    return at[wanted[i] == v]


def owner_pairs(hashes, owners, radius: int, block: int = BLOCK, leads=None,
                presorted: bool = False) -> np.ndarray:
    """Owner pairs (a, b), a < b, where some hash owned by a is within `radius`
    bits of some hash owned by b. `hashes` (uint64) and `owners` (integers) are
    parallel arrays of entries; repeats allowed, an owner never pairs with itself.
    Returns an (n, 2) array of owners, sorted, without repeats.

    All hashes go through one near_duplicate_pairs() call on their distinct
    values; each pair of distinct hashes is then expanded to every (owner,
    owner) combination, and owners sharing an identical hash pair up too.
    Only the entries of hashes in a pair or repeated are looked up
    (_where_in), so no sort carries the owners. With `leads` only
    those bands' tables are searched, each hash pair from its first table
    (near_duplicate_pairs' `once`), and owners sharing a hash are paired only
    when band 0 is among the leads: the shards of the Beam transform.
    `presorted`: the hashes are in ascending order already.
    """
    flat = np.asarray(hashes, dtype=np.uint64)
    owner = np.asarray(owners)
    ordered = flat if presorted else np.sort(flat)
    first = np.ones(flat.size, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    uniq = ordered[first]
    shared = leads is None or 0 in leads
    repeated = np.unique(ordered[1:][~first[1:]]) if shared else np.empty(0, dtype=np.uint64)
    hp = uniq[near_duplicate_pairs(uniq, radius, block, leads=leads, once=leads is not None)]
    wanted = np.unique(np.concatenate([hp.ravel(), repeated]))
    # The entries of the wanted hashes, grouped by hash.
    at = _where_in(flat, wanted)
    at = at[np.argsort(flat[at], kind="stable")]
    values, mine = flat[at], owner[at]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if values.size else np.empty(0, np.intp)
    counts = np.diff(np.append(starts, values.size))
    found = []
    if len(hp):
        u, v = np.searchsorted(values[starts], hp[:, 0]), np.searchsorted(values[starts], hp[:, 1])
        cv = counts[v]
        reps = counts[u] * cv                          # owner combinations per hash pair
        pu, pv = np.repeat(u, reps), np.repeat(v, reps)
        kk = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        a = mine[starts[pu] + kk // np.repeat(cv, reps)]
        c = mine[starts[pv] + kk % np.repeat(cv, reps)]
        found.append(np.stack([a, c], axis=1))
    if shared:
        for d in np.flatnonzero(counts > 1):           # one hash, several owners: rare
            members = np.unique(mine[starts[d]:starts[d] + counts[d]])
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
