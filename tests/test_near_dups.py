"""Near-duplicate search: exact against brute force, Beam and numpy agree."""
from __future__ import annotations

import numpy as np
import pytest

from transforms.near_dups import (BLOCK, bands, connected_components, lsh_keys, near_duplicate_pairs,
                                  pairs_in_bucket)


def planted_hashes(n, planted, radius, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    src = rng.choice(n, planted, replace=False)
    flips = np.zeros(planted, dtype=np.uint64)
    for i in range(planted):
        for bit in rng.choice(64, rng.integers(1, radius + 1), replace=False):
            flips[i] ^= np.uint64(1) << np.uint64(int(bit))
    return np.unique(np.concatenate([base, base[src] ^ flips]))


def brute_force(h, radius):
    out = set()
    for i in range(h.size):
        d = np.bitwise_count(h[i + 1:] ^ h[i])
        out.update((i, i + 1 + j) for j in np.flatnonzero(d <= radius))
    return out


@pytest.mark.parametrize("radius", [0, 3, 6, 8])
def test_bands_cover_all_64_bits(radius):
    b = bands(radius)
    assert len(b) == radius + 3
    assert sum(w for _, w in b) == 64 and b[0][0] == 0
    assert all(s1 + w1 == s2 for (s1, w1), (s2, _) in zip(b, b[1:]))


@pytest.mark.parametrize("radius", [1, 2, 6])
@pytest.mark.parametrize("block", [BLOCK, 50])  # 50: many small blocks, so bucket edges are exercised
def test_numpy_search_equals_brute_force(radius, block):
    h = planted_hashes(3000, 300, radius, seed=radius)
    np.random.default_rng(radius).shuffle(h)  # callers need not sort
    got = set(map(tuple, near_duplicate_pairs(h, radius, block=block).tolist()))
    assert got == brute_force(h, radius)
    assert len(got) >= 250  # the planted pairs (minus exact repeats) are there


def test_pairs_at_exactly_radius_found_and_radius_plus_one_not():
    a = 0x0123456789ABCDEF
    near = a ^ 0b111111          # 6 bits
    far = a ^ (0b1111111 << 20)  # 7 bits
    h = np.array(sorted([a, near, far]), dtype=np.uint64)
    pairs = {(int(h[i]), int(h[j])) for i, j in near_duplicate_pairs(h, 6)}
    assert pairs == {tuple(sorted((a, near)))}


def test_every_close_pair_shares_an_lsh_bucket():
    rng = np.random.default_rng(5)
    for _ in range(300):
        a = int(rng.integers(0, 2**63)) * 2 + 1
        flips = rng.choice(64, 6, replace=False)
        b = a
        for bit in flips:
            b ^= 1 << int(bit)
        assert set(lsh_keys(a, 6)) & set(lsh_keys(b, 6))
        assert pairs_in_bucket([a, b], 6) == [tuple(sorted((a, b)))]


def test_connected_components_maps_to_smallest_member():
    comps = connected_components([(5, 9), (9, 2), (7, 8)])
    assert comps == {5: 2, 9: 2, 2: 2, 7: 7, 8: 7}
