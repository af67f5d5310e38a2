"""Exact and near-duplicate clusters across all images, and which one to keep.

An image is identified by its full-frame pHash (`phash`, 16-digit hex);
identical pHashes collapse first. Every image also carries the pHashes of its
nested centre crops (`phash_centre`, transforms/image/phash.py), and two images are
near duplicates when any of their hashes are within the radius, so a cropped
copy meets its original. Each distinct (hash, owner pHash) entry is filed
under the LSH band keys of transforms/curate/near_dups.py, so a GroupByKey meets
every close pair without comparing all pairs.

Shuffle volume per image is bounded: 1 + len(CENTRE_FRACTIONS) = 4 hashes,
each under C(radius + 3, 3) keys (35 at the policy's radius 4), i.e. 140
records of a short key and two 16-digit hex strings (~50 bytes), ~7 KB per
image whatever the data (the single-hash radius-6 scheme sent 84). Pairs are
few (duplicates are the exception), so their connected components are
computed in one place and handed to every worker as a side input. Rows then
group by cluster and the best member is kept; the others are rejected,
pointing at it.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.reasons import DUPLICATE_REASONS, ordered
from transforms.curate.near_dups import connected_components, lsh_keys, owner_pairs_in_bucket
from transforms.image.phash import min_hamming


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
    return (has_own_reasons, -pixels, -(row.get("file_size") or 0), row["uri"])


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


def _owner_pairs(entries, radius: int) -> list[tuple[str, str]]:
    # Hashes travel as 16-digit hex: Beam's integer coder is signed 64-bit,
    # and at fixed width hex order equals numeric order.
    return owner_pairs_in_bucket([(int(h, 16), owner) for h, owner in entries], radius)


class _Counted(beam.DoFn):
    def __init__(self):
        self.counters = {r: Metrics.counter("curate", f"rejected_{r}") for r in DUPLICATE_REASONS}

    def process(self, kv):
        for row in resolve_cluster(list(kv[1])):
            for reason in row["reasons"]:
                if reason in self.counters:
                    self.counters[reason].inc()
            yield row


class ClusterDuplicates(beam.PTransform):
    """rows -> rows with cluster_id set and duplicates rejected (see module doc)."""

    def __init__(self, radius: int, exact_only_for=()):
        super().__init__()
        self.radius, self.exact_only_for = radius, tuple(exact_only_for)

    def expand(self, rows):
        radius, exact_only = self.radius, self.exact_only_for
        edges = (
            rows
            | "PHashes" >> beam.FlatMap(hash_entries, exact_only)
            | "DistinctPHashes" >> beam.Distinct()
            | "LshKeys" >> beam.FlatMap(
                lambda e: [(f"{t}:{k:x}", e) for t, k in lsh_keys(int(e[0], 16), radius)])
            | "GroupByBand" >> beam.GroupByKey()
            | "PairsWithinRadius" >> beam.FlatMap(lambda kv: _owner_pairs(kv[1], radius))
            | "DistinctPairs" >> beam.Distinct())
        components = (
            edges
            | "AllPairs" >> beam.combiners.ToList()
            | "Components" >> beam.Map(connected_components))
        return (
            rows
            | "AssignCluster" >> beam.Map(
                lambda r, comps: dict(r, cluster_id=cluster_id_for(r, comps, exact_only)),
                comps=beam.pvalue.AsSingleton(components))
            | "KeyByCluster" >> beam.Map(lambda r: (r["cluster_id"], r))
            | "GroupByCluster" >> beam.GroupByKey()
            | "KeepBestOfCluster" >> beam.ParDo(_Counted()))
