"""The lighting label: `well_lit` or `poor_lighting`, from curate's exposure features.

Thresholds live in schemas/lighting.json (versioned, a reason for each).
lighting_label() is the one definition; make_tfrecords writes its index into
every example as `lighting_id` (an auxiliary label for a multitask head) and
evaluate slices by it. Mean brightness is deliberately not an input: on skin
close-ups it measures skin tone as much as light.
"""
from __future__ import annotations

import json
import math
import pathlib

LABELS = ("well_lit", "poor_lighting")  # lighting_id is the index; -1: features missing
UNKNOWN_ID = -1
INPUTS = ("lum_p99", "overexposed_fraction", "underexposed_fraction")
PATH = pathlib.Path(__file__).with_name("lighting.json")


def load_thresholds(path: pathlib.Path = PATH) -> dict:
    """{"version", "max_lum_p99", "min_overexposed_fraction", "min_underexposed_fraction"}."""
    d = json.loads(pathlib.Path(path).read_text())
    return {"version": d["version"], "max_lum_p99": float(d["dim"]["max_lum_p99"]),
            "min_overexposed_fraction": float(d["clipped_highlights"]["min_overexposed_fraction"]),
            "min_underexposed_fraction": float(d["crushed_shadows"]["min_underexposed_fraction"])}


def lighting_label(features: dict, thresholds: dict) -> str | None:
    """`poor_lighting` if any rule fires, else `well_lit`; None if an input is missing."""
    values = [features.get(k) for k in INPUTS]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    p99, over, under = (float(v) for v in values)
    poor = (p99 < thresholds["max_lum_p99"] or over >= thresholds["min_overexposed_fraction"]
            or under >= thresholds["min_underexposed_fraction"])
    return LABELS[1] if poor else LABELS[0]


def lighting_id(features: dict, thresholds: dict) -> int:
    """Index of lighting_label() in LABELS, UNKNOWN_ID without the inputs."""
    label = lighting_label(features, thresholds)
    return UNKNOWN_ID if label is None else LABELS.index(label)
