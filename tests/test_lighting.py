"""The well_lit / poor_lighting label: its rules on hand-made rows, and in the real TFRecords."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from schemas import lighting as L
from schemas.examples import read_split

T = L.load_thresholds()
WELL = {"lum_p99": 0.8, "overexposed_fraction": 0.0, "underexposed_fraction": 0.0,
        "brightness_mean": 0.12}  # dark skin, well lit: mean brightness is no input


def test_thresholds_are_the_versioned_ones_with_a_reason_each():
    doc = json.loads(L.PATH.read_text())
    assert T == {"version": doc["version"], "max_lum_p99": 0.2, "min_overexposed_fraction": 0.1,
                 "min_underexposed_fraction": 0.1}
    assert all(doc[k]["why"] for k in ("dim", "clipped_highlights", "crushed_shadows"))


@pytest.mark.parametrize("change, label", [
    ({}, "well_lit"),
    ({"lum_p99": 0.199}, "poor_lighting"),
    ({"lum_p99": 0.2}, "well_lit"),                       # the threshold itself is not below it
    ({"overexposed_fraction": 0.1}, "poor_lighting"),
    ({"overexposed_fraction": 0.099}, "well_lit"),
    ({"underexposed_fraction": 0.1}, "poor_lighting"),
    ({"underexposed_fraction": 0.099}, "well_lit"),
    ({"brightness_mean": 0.01}, "well_lit"),
    ({"lum_p99": None}, None),
    ({"overexposed_fraction": float("nan")}, None),
])
def test_the_label_of_hand_made_rows(change, label):
    row = dict(WELL, **change)
    assert L.lighting_label(row, T) == label
    assert L.lighting_id(row, T) == (L.UNKNOWN_ID if label is None else L.LABELS.index(label))


@pytest.mark.e2e
def test_the_tfrecords_carry_the_label_of_curates_features(tfrecords64, curated):
    rows = {r["uri"]: r for r in pq.read_table(str(curated / "features"), columns=["uri", *L.INPUTS]).to_pylist()}
    seen = []
    for split in ("train", "validation"):
        for features, _ in read_split(str(tfrecords64), split):
            row = rows[features["uri"].numpy().decode()]
            assert int(features["lighting_id"].numpy()) == L.lighting_id(row, T)
            seen.append(int(features["lighting_id"].numpy()))
    assert set(seen) == {0, 1}  # the sample set has dim photos curate keeps
    info = json.loads((tfrecords64 / "dataset_info.json").read_text())
    assert info["sources"]["lighting"] == T


def test_the_readme_states_each_rule_and_threshold():
    import pathlib
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {"dim": f"`lum_p99` < {T['max_lum_p99']:.2f}",
            "clipped_highlights": f"`overexposed_fraction` >= {T['min_overexposed_fraction']:.2f}",
            "crushed_shadows": f"`underexposed_fraction` >= {T['min_underexposed_fraction']:.2f}"}
    for rule, threshold in rows.items():
        assert f"| `{rule}` | {threshold} |" in readme, rule
