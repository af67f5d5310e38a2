"""AssignSplits: every record gets train/validation/test, leak-free (see splits.py)."""
from __future__ import annotations

from collections import defaultdict

import apache_beam as beam

from transforms.curate.near_dups import connected_components
from transforms.dataset.splits import component_split, split_of

UNLABELED = "unlabeled"


def _links(kv):
    # Groups sharing a duplicate cluster must share a split: chain them.
    groups = sorted(set(kv[1]))
    return list(zip(groups, groups[1:]))


def linked_group_splits(edges, fractions) -> dict:
    """group -> split for groups tied to others by duplicate clusters."""
    comps = connected_components(edges)
    members = defaultdict(list)
    for group, root in comps.items():
        members[root].append(group)
    return {g: component_split(members[root], fractions) for g, root in comps.items()}


class AssignSplits(beam.PTransform):
    """records, or (records, links) -> records with a split. Groups whose
    images share a duplicate cluster share a split: the records' own
    (cluster_id, group_id) pairs, and `links` (JoinLabels' LINKS output),
    which also holds the duplicates curate rejected and so never reach here
    as records; without them a case and the case holding its photo's copy
    were split apart."""

    def __init__(self, fractions: dict):
        super().__init__()
        self.fractions = fractions

    def expand(self, pcolls):
        records, *links = pcolls if isinstance(pcolls, tuple) else (pcolls,)
        fractions = self.fractions
        pairs = records | "ClusterGroups" >> beam.Map(lambda r: (r["cluster_id"], r["group_id"]))
        if links:
            pairs = (pairs, links[0]) | "WithRejectedDuplicates" >> beam.Flatten()
        linked = (pairs
                  | "GroupByCluster" >> beam.GroupByKey()
                  | "LinkGroups" >> beam.FlatMap(_links)
                  | "AllLinks" >> beam.combiners.ToList()
                  | "LinkedSplits" >> beam.Map(linked_group_splits, fractions))

        def assign(r, linked_splits):
            if r["label"] is None:
                return dict(r, split=UNLABELED)
            return dict(r, split=linked_splits.get(r["group_id"]) or split_of(r["group_id"], fractions))

        return records | "Assign" >> beam.Map(assign, linked_splits=beam.pvalue.AsSingleton(linked))


