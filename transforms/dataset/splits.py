"""Leak-free, stable train/validation/test assignment. Pure.

Each group (a SCIN case, or a labels-CSV group_id) gets a split from a hash of
its key, so adding groups never moves an existing one. Groups joined by a
near-duplicate cluster must share a split: the component takes the
highest-priority split among its members, validation first, so the fixed
validation set never loses an image when a new near-duplicate arrives (it can
only gain one), and test outranks train.
"""
from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")
PRIORITY = ("validation", "test", "train")  # earlier wins when groups are linked


def parse_fractions(text: str) -> dict[str, float]:
    """'0.8,0.1,0.1' -> {'train': .8, 'validation': .1, 'test': .1}; ValueError if bad."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"split fractions {text!r} must be three numbers like 0.8,0.1,0.1") from None
    # `not 0 <= p <= 1` also refuses nan and inf, which every comparison lets through.
    if len(parts) != 3 or any(not 0 <= p <= 1 for p in parts) or abs(sum(parts) - 1.0) > 1e-6 or parts[0] == 0:
        raise ValueError(f"split fractions {text!r} must be three non-negative numbers summing to 1, train > 0")
    return dict(zip(SPLITS, parts))


def unit_hash(key: str, salt: str = "split-v1") -> float:
    """A stable number in [0, 1) for a key."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(group_key: str, fractions: dict[str, float]) -> str:
    u, edge = unit_hash(group_key), 0.0
    for name in SPLITS:
        edge += fractions[name]
        if u < edge:
            return name
    return SPLITS[-1]


def component_split(group_keys, fractions: dict[str, float]) -> str:
    """One split for groups that must stay together."""
    own = {split_of(g, fractions) for g in group_keys}
    return next(s for s in PRIORITY if s in own)
