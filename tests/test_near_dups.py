"""Near-duplicate search: exact against brute force, Beam and numpy agree, and
nested centre-crop hashes catch cropped copies of generated photos."""
from __future__ import annotations

import csv
import itertools
import os
import pathlib

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.features import empty_row
from schemas.policy import load_policy
from transforms.image.decode import decode
from transforms.curate.duplicates import (ClusterDuplicates, NearDuplicatePairs, hash_entries, owners_of,
                                          pair_distance)
from transforms.io.packing import pack, unpack
from transforms.curate.near_dups import (BLOCK, bands, connected_components, image_pairs, lead_bands, lsh_keys,
                                  near_duplicate_pairs, owner_pairs_in_bucket)
from transforms.image.phash import (CENTRE_FRACTIONS, TURNS, _low_frequencies, _turned, canonical_turns, centre_crop,
                                   min_hamming, phash64, region_phashes, turned_image)
from transforms.image.quality import compute_features, to_analysis_size

RADIUS = load_policy().dup_radius


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
        assert owner_pairs_in_bucket([(a, 0), (b, 1)], 6) == [(0, 1)]


def test_connected_components_maps_to_smallest_member():
    comps = connected_components([(5, 9), (9, 2), (7, 8)])
    assert comps == {5: 2, 9: 2, 2: 2, 7: 7, 8: 7}


def flip(h: int, n_bits: int, rng) -> int:
    for bit in rng.choice(64, n_bits, replace=False):
        h ^= 1 << int(bit)
    return h


def planted_hash_sets(n, k, planted, radius, seed=0):
    """(n, k) random hashes; `planted` images get one hash within the radius of
    some hash of another image (any level), a few share an identical hash."""
    rng = np.random.default_rng(seed)
    hs = rng.integers(0, 2**64, size=(n, k), dtype=np.uint64, endpoint=False)
    for _ in range(planted):
        i, j = rng.choice(n, 2, replace=False)
        a, b = rng.integers(k, size=2)
        hs[j, b] = flip(int(hs[i, a]), int(rng.integers(0, radius + 1)), rng)
    hs[3] = hs[4]                      # an exact copy: every hash shared
    hs[5, 1] = hs[5, 0]                # an image whose own hashes coincide: no self pair
    return hs


def brute_force_images(hs, radius):
    d = np.bitwise_count(hs[:, None, :, None] ^ hs[None, :, None, :]).min(axis=(2, 3))
    return {(i, j) for i, j in zip(*np.nonzero(d <= radius)) if i < j}


@pytest.mark.parametrize("radius", [2, 4, 6])
def test_image_pairs_equal_brute_force_over_all_hash_combinations(radius):
    hs = planted_hash_sets(600, 1 + len(CENTRE_FRACTIONS), 80, radius, seed=radius)
    got = set(map(tuple, image_pairs(hs, radius, block=64).tolist()))
    assert got == brute_force_images(hs, radius)
    assert (3, 4) in got and len(got) >= 75


def test_bucket_pairs_link_owners_never_an_image_to_itself():
    a, b = 0x0123456789ABCDEF, 0x0123456789ABCDEF ^ 0b1111
    assert owner_pairs_in_bucket([(a, "x"), (b, "x")], 4) == []
    assert owner_pairs_in_bucket([(a, "y"), (b, "x"), (a ^ (0b11111 << 30), "z")], 4) == [("x", "y")]


def test_beam_bucket_scheme_equals_numpy_search():
    """lsh_keys + owner_pairs_in_bucket (what the Beam transform runs) finds
    exactly the pairs image_pairs finds."""
    hs = planted_hash_sets(300, 1 + len(CENTRE_FRACTIONS), 60, RADIUS, seed=9)
    buckets: dict = {}
    for owner, row in enumerate(hs):
        for h in {int(x) for x in row}:
            for key in lsh_keys(h, RADIUS):
                buckets.setdefault(key, []).append((h, owner))
    got = {p for entries in buckets.values() for p in owner_pairs_in_bucket(entries, RADIUS)}
    assert got == set(map(tuple, image_pairs(hs, RADIUS).tolist()))


def test_centre_crop_is_centred_and_never_empty():
    img = np.arange(100 * 60, dtype=np.uint8).reshape(60, 100)
    c = centre_crop(img, 0.9)
    assert c.shape == (54, 90) and c[0, 0] == img[3, 5]
    assert centre_crop(img[:1, :1], 0.5).shape == (1, 1)
    assert compute_features(np.zeros((1, 7, 3), np.uint8))["phash_centre"]  # 1-pixel-high uploads hash too


# --- generated photos: the real-photo degrade.py near_dup edit --------------

def _analysis(data: bytes):
    return to_analysis_size(decode(data, analysis_short_side=256).image, 256)


def _crop_copy(data: bytes, keep: float) -> bytes:
    """degrade.py's near_dup: centre crop keeping `keep`, x0.85 area resize, JPEG q75."""
    img = decode(data, analysis_short_side=10**6).image
    h, w = img.shape[:2]
    ch, cw = int(h * keep), int(w * keep)
    y, x = (h - ch) // 2, (w - cw) // 2
    small = cv2.resize(img[y:y + ch, x:x + cw], (int(cw * 0.85), int(ch * 0.85)), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()


def _hashes(image) -> list[int]:
    full, centre, _ = region_phashes(image)
    return [full, *centre]


@pytest.fixture(scope="module")
def clean_photos(sample_dir):
    rows = csv.DictReader(open(sample_dir / "ground_truth.csv"))
    return [(sample_dir / r["image_path"]).read_bytes() for r in rows if r["defect"] == "none"]


@pytest.mark.parametrize("keep", [0.97, 0.92, 0.85, 0.8])
def test_cropped_copies_meet_their_original_where_the_full_frame_alone_does_not(clean_photos, keep):
    full, nested = [], []
    for data in clean_photos:
        a, b = _analysis(data), _analysis(_crop_copy(data, keep))
        full.append(phash64(a) ^ phash64(b))
        nested.append(min_hamming(_hashes(a), _hashes(b)))
    assert np.mean(np.array(nested) <= RADIUS) >= 0.95, sorted(nested)
    if keep == 0.92:  # the real-photo figure: full frame alone caught 26% there
        assert np.mean([bin(x).count("1") <= RADIUS for x in full]) < 0.5


def test_distinct_generated_photos_stay_far_apart_by_every_hash(clean_photos):
    hs = np.array([_hashes(_analysis(d)) for d in clean_photos], dtype=np.uint64)
    closest = min(min_hamming(hs[i], hs[j]) for i, j in itertools.combinations(range(len(hs)), 2))
    assert closest > 2 * RADIUS


def test_a_hash_bit_is_set_where_its_coefficient_exceeds_the_rows_median():
    from transforms.image.phash import _hashes as hashes_of_rows   # not this module's _hashes(image)
    rng = np.random.default_rng(0)
    rows = (rng.normal(size=(40, 64)) * 50).astype(np.float32)
    rows[::2] = np.round(rows[::2] / 20)          # ties at the median, as flat blocks give
    bits = rows > np.median(rows, axis=1, keepdims=True)
    expected = [int("".join("1" if b else "0" for b in row), 2) for row in bits]
    assert hashes_of_rows(rows) == expected


def test_every_orientation_of_a_dct_block_reaches_one_canonical_block():
    """The orientation is read off coefficients that turn with the frame, so
    a block and each of its 7 turns land on the same canonical block."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        low = rng.normal(size=(8, 8)).astype(np.float32)
        canonical = [_turned(low, *t) for t in canonical_turns(low)]
        for turn in TURNS:
            turned = _turned(low, *turn)
            reached = [_turned(turned, *t) for t in canonical_turns(turned)]
            assert any(np.array_equal(a, b) for a in canonical for b in reached), turn


def test_a_near_tie_files_both_sides_of_the_decision():
    low = np.random.default_rng(6).normal(size=(8, 8)).astype(np.float32)
    low[0, 1], low[1, 0] = 0.001, 3.0    # transpose, then a horizontal gradient of ~0: mirrored or not
    assert canonical_turns(low) == [(True, False, False), (True, False, True)]
    low[0, 1] = 2.99                     # transpose itself is a near tie
    assert len(canonical_turns(low)) == 2 and {t[0] for t in canonical_turns(low)} == {False, True}
    assert canonical_turns(low, margin=0.0) == [(True, False, False)]


def test_the_canonical_hashes_are_the_hashes_of_each_region_turned(clean_photos):
    """From one DCT per region, exactly; and each exact turn of a frame files
    a hash of its original's canonical orientation."""
    for data in clean_photos[:4]:
        a = _analysis(data)
        full, centre, turned = region_phashes(a)
        assert full == phash64(a) and centre == [phash64(centre_crop(a, f)) for f in CENTRE_FRACTIONS]
        regions = [a, *(centre_crop(a, f) for f in CENTRE_FRACTIONS)]
        want = {phash64(turned_image(r, *t)) for r in regions for t in canonical_turns(_low_frequencies(r))}
        assert set(turned) == want - {full, *centre} and len(turned) == len(set(turned))
        for t in TURNS:
            f, c, ts = region_phashes(turned_image(a, *t))
            assert min_hamming([f, *ts], [full, *turned]) <= 2, t


def test_turned_and_mirrored_copies_are_near_duplicates_and_distinct_photos_are_not(clean_photos):
    """A photo rotated in an editor, mirrored, or whose EXIF orientation was
    stripped (its pixels then display on their side) moved every pHash by
    about half its bits: such copies were never duplicates and could land in
    another split. Re-encoded at q80 and resized, each now meets its original
    by the hash of their common canonical orientation (and none did without)."""
    copies = {"quarter turn": lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
              "half turn": lambda im: cv2.rotate(im, cv2.ROTATE_180),
              "mirrored": lambda im: cv2.flip(im, 1),
              "three quarters, x0.7": lambda im: cv2.resize(cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE), None,
                                                           fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA),
              # A phone editor's crop and rotate: the turned copy meets its
              # original's centre crop nearest its framing, turned.
              "quarter turn, 90% kept": lambda im: np.ascontiguousarray(
                  centre_crop(cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE), 0.9)),
              "mirrored, 85% kept, x0.8": lambda im: cv2.resize(
                  np.ascontiguousarray(centre_crop(cv2.flip(im, 1), 0.85)), None, fx=0.8, fy=0.8,
                  interpolation=cv2.INTER_AREA)}
    originals = [compute_features(_analysis(d)) for d in clean_photos]
    for name, edit in copies.items():
        with_turns, without = [], []
        for data, orig in zip(clean_photos, originals):
            img = decode(data, analysis_short_side=10**6).image
            copy = compute_features(_analysis(cv2.imencode(".jpg", edit(img), [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
                                              .tobytes()))
            with_turns.append(pair_distance(copy, orig))
            without.append(pair_distance(dict(copy, phash_turned=[]), dict(orig, phash_turned=[])))
        assert all(d <= RADIUS for d in with_turns), (name, with_turns)
        assert not any(d <= RADIUS for d in without), (name, without)
    closest = min(pair_distance(a, b) for a, b in itertools.combinations(originals, 2))
    assert closest > RADIUS + 2, closest


def test_the_turned_copies_benchmark_counts_what_matching_catches(clean_photos, tmp_path):
    """benchmarks.turned_copies on generated photos (the real ones stay
    outside the tests): every turned and cropped copy caught, few without
    phash_turned."""
    import json

    from benchmarks import turned_copies
    for i, data in enumerate(clean_photos[:4]):
        (tmp_path / f"p{i}.jpg").write_bytes(data)
    out = tmp_path / "figures.json"
    assert turned_copies.main(["--images", str(tmp_path), "--resize", "0.8", "--quality", "90", "--keep", "0.9",
                               "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    v = doc["variants"]["x0.8_q90_keep_0.9"]
    assert doc["photos"] == 4 and v["copies"] == 4 * len(TURNS) and v["caught"] == v["copies"]
    assert v["caught_without_turned"] < v["copies"] // 2
    assert doc["closest_distinct"] > RADIUS and 4 <= doc["hashes_per_image"] <= 4 * (1 + len(TURNS))


# --- the Beam transform ------------------------------------------------------

def _row(uri, sha, full, centre, reasons=(), w=640, h=480, turned=()):
    return empty_row(uri=uri, sha256=sha, width=w, height=h, file_size=w * h // 10,
                     phash=f"{full:016x}", phash_centre=[f"{c:016x}" for c in centre],
                     phash_turned=[f"{t:016x}" for t in turned],
                     status="rejected" if reasons else "accepted", reasons=list(reasons))


def test_cluster_duplicates_catches_a_crop_by_its_centre_hash_and_a_turn_by_its_canonical_hash():
    rng = np.random.default_rng(3)
    orig = [int(x) for x in rng.integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)]
    other = [int(x) for x in rng.integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)]
    # The crop's full frame is far from the original's, close to its centre 93%.
    crop = [flip(orig[1], RADIUS, rng), *(int(x) for x in rng.integers(0, 2**63, size=3))]
    dark = [flip(orig[0], 2, rng), *orig[1:]]  # close by hash, but too dark: bytes only
    canonical = int(rng.integers(0, 2**63))
    # A quarter-turned copy: every hash of its own frame is far from the
    # original's, the hash of its canonical orientation near theirs.
    turned = [int(x) for x in rng.integers(0, 2**63, size=4)]
    rows = [_row("orig.jpg", "s1", orig[0], orig[1:], turned=[canonical]),
            _row("orig_copy.jpg", "s1", orig[0], orig[1:], turned=[canonical]),
            _row("turned.jpg", "s5", turned[0], turned[1:], w=480, h=640, turned=[flip(canonical, 2, rng)]),
            _row("crop.jpg", "s2", crop[0], crop[1:], w=500, h=375),
            _row("other.jpg", "s3", other[0], other[1:]),
            _row("dark.jpg", "s4", dark[0], dark[1:], reasons=["too_dark"])]
    assert len(hash_entries(rows[:1], owners_of(rows[:1], ()))) == 1 + len(CENTRE_FRACTIONS) + 1
    assert not len(hash_entries(rows[5:], owners_of(rows[5:], ["too_dark"])))
    with TestPipeline() as p:
        out = (p | beam.Create(rows)
               | ClusterDuplicates(RADIUS, ["too_dark"])
               | beam.Map(lambda r: (r["uri"], r["reasons"], r["duplicate_of"])))
        assert_that(out, equal_to([
            ("orig.jpg", [], None), ("orig_copy.jpg", ["exact_duplicate"], "orig.jpg"),
            ("turned.jpg", ["near_duplicate"], "orig.jpg"),
            ("crop.jpg", ["near_duplicate"], "orig.jpg"), ("other.jpg", [], None),
            ("dark.jpg", ["too_dark"], None)]))


@pytest.mark.parametrize("spilled", [False, True])
def test_cluster_duplicates_over_many_packed_batches_marks_each_copy_once(spilled, tmp_path):
    """More rows than one packed record holds (PACK_ROWS), copies far from
    their originals in the input: each copy is rejected once, pointing at its
    original, and shares its cluster id; every other row passes untouched.
    Spilled (as curate runs locally), the same, and the stage leaves no files."""
    from transforms.io.packing import PACK_ELEMENTS as PACK_ROWS

    rng = np.random.default_rng(21)
    n = 3 * PACK_ROWS
    hs = [[int(x) for x in rng.integers(0, 2**64, size=4, dtype=np.uint64)] for _ in range(n)]
    rows = [_row(f"{i:04d}.jpg", f"s{i}", h[0], h[1:]) for i, h in enumerate(hs)]
    originals = list(range(5, n, n // 6))
    copies = [_row(f"copy{i:04d}.jpg", f"c{i}", flip(hs[i][0], 2, rng), hs[i][1:], w=320, h=240) for i in originals]
    rows = copies[:3] + rows + copies[3:]
    with TestPipeline() as p:
        out = (p | beam.Create(rows) | ClusterDuplicates(RADIUS, spill=str(tmp_path) if spilled else None)
               | beam.Map(lambda r: (r["uri"], r["reasons"], r["duplicate_of"], r["cluster_id"])))
        want = {f"{i:04d}.jpg": ([], None) for i in range(n)}
        want.update({f"copy{i:04d}.jpg": (["near_duplicate"], f"{i:04d}.jpg") for i in originals})

        def check(got):
            got = list(got)
            assert len(got) == len(rows) and {u: (r, d) for u, r, d, _ in got} == want
            cluster = {u: c for u, _, _, c in got}
            assert all(cluster[f"copy{i:04d}.jpg"] == cluster[f"{i:04d}.jpg"] for i in originals)
            assert len(set(cluster.values())) == n
        assert_that(out, check)
    assert list(tmp_path.iterdir()) == []


def test_lead_searches_run_apart_find_each_pair_once():
    """near_duplicate_pairs(leads=[l], once=True) over every lead band, run
    separately as the Beam shards run them, reports each close pair exactly
    once: planted pairs share most bands, so several tables see them."""
    h = planted_hashes(2000, 400, RADIUS, seed=11)
    parts = [near_duplicate_pairs(h, RADIUS, block=64, leads=[lead], once=True) for lead in lead_bands(RADIUS)]
    found = [tuple(p) for part in parts for p in part.tolist()]
    assert len(found) == len(set(found))
    assert set(found) == brute_force(h, RADIUS)


@pytest.mark.parametrize("shards,batch,spilled", [(1, 50, False), (4, 1000, False), (64, 7, False), (16, 30, True)])
def test_beam_shards_find_every_pair_within_radius_exactly_once(shards, batch, spilled, tmp_path):
    """The Beam search over small single-hash rows reports every pair of
    images within the radius exactly once, whatever the shards and batches
    (pairs that share most bands lie in several leads' tables; a shard count
    above a band's values is clamped), and a pHash shared by two rows once."""
    h = planted_hashes(500, 150, RADIUS, seed=12)
    rows = [_row(f"{i}.jpg", f"s{i}", int(x), []) for i, x in enumerate(h.tolist())]
    rows.append(_row("copy.jpg", "c", int(h[7]), []))            # a second row with the same pHash
    rows.append(_row("dark.jpg", "d", int(h[8]) ^ 1, [], reasons=["too_dark"]))  # unreliable: no pairs
    expected = [(f"{int(h[i]):016x}", f"{int(h[j]):016x}") for i, j in brute_force(h, RADIUS)]
    expected.append((f"{int(h[7]):016x}",) * 2)
    assert len(expected) > 150
    with TestPipeline() as p:
        pairs = p | beam.Create(rows) | NearDuplicatePairs(RADIUS, ["too_dark"], shards=shards, shard_rows=batch,
                                                          spill=str(tmp_path) if spilled else None)
        assert_that(pairs, equal_to(expected))  # as a multiset: a repeat fails
    assert list(tmp_path.iterdir()) == []


def _outputs(fn, rows):
    """(tag, element) of everything one bundle of a DoFn yields, in order,
    each checked by `fn.on_output` as it goes out."""
    fn.setup() if hasattr(fn, "setup") else None
    fn.start_bundle()
    out = []
    for o in itertools.chain(*(fn.process(r) for r in rows), fn.finish_bundle() or ()):
        tag, value = (o.tag, o.value) if isinstance(o, beam.pvalue.TaggedOutput) else (None, o)
        value = getattr(value, "value", value)  # finish_bundle's WindowedValue
        fn.on_output(value)
        out.append((tag, value))
    return out


def test_spilled_records_are_references_to_files_written_before_they_go_out(tmp_path):
    """With spill, every record the stage sends on (shard entries, packed
    rows, keeper columns) is a small reference, to a file that already
    exists when the reference goes out, and reads back as the very record
    the runner would otherwise have carried."""
    from transforms.curate.duplicates import _PackAndShard
    from transforms.io import spill

    rng = np.random.default_rng(5)
    rows = [_row(f"{i}.jpg", f"s{i}", int(h[0]), [int(x) for x in h[1:]])
            for i, h in enumerate(rng.integers(0, 2**64, size=(1200, 4), dtype=np.uint64))]
    plain = _PackAndShard(RADIUS, (), pack=True, pack_rows=250, shard_rows=500)
    plain.on_output = lambda value: None
    spilled = _PackAndShard(RADIUS, (), pack=True, pack_rows=250, shard_rows=500, spill=str(tmp_path / "d"))

    def written(value):
        path, offset, length = value[1]
        assert pathlib.Path(path).parent == tmp_path / "d" and os.path.getsize(path) >= offset + length
    spilled.on_output = written
    records = _outputs(plain, rows)
    refs = _outputs(spilled, rows)
    assert all(isinstance(v[1], bytes) for _, v in records)
    assert {t for t, _ in records} == {None, "members", "shards"}
    # Three files: two per 500 rows, one at the bundle's end; the records
    # were 16+ bytes per hash entry, the references are a few dozen bytes.
    assert len({v[1][0] for _, v in refs}) == 3
    assert (sorted((t or "", repr(v[0]), spill.load(v[1])) for t, v in refs)
            == sorted((t or "", repr(v[0]), v[1]) for t, v in records))


def test_packed_rows_come_back_equal_and_of_the_same_types():
    """Rows wait for the pair search packed; a numpy scalar or a date in a
    row comes back as itself (marshal, tried for speed, returned numpy
    scalars as bytes)."""
    import datetime

    rows = [_row(f"{i}.jpg", f"s{i}", i, [i + 1, i + 2]) for i in range(3)]
    rows[1].update(brightness_mean=np.float64(0.25), width=np.int64(640), captured=datetime.date(2026, 11, 30))
    owners, back = unpack(pack((["a", None, "c"], rows)))
    assert owners == ["a", None, "c"] and back == rows
    assert [type(v) for v in back[1].values()] == [type(v) for v in rows[1].values()]
