"""Labels and per-image metadata from SCIN rows or a plain labels CSV. Pure.

A case's label is the highest-weight condition of weighted_skin_condition_label
(at least min_weight), else the first dermatologist label; a case with neither
is unlabeled. Metadata is validated here so a bad value becomes a dead letter
with a reason, never a NaN in the training data.
"""
from __future__ import annotations

from schemas import scin
from transforms.io.inputs import join_root, stem

MISSING_INT = -1  # Monk labels absent (SCIN leaves them blank when not gradable)


class BadLabelRow(ValueError):
    """A labels/cases row whose values cannot be aligned to an image."""


def checked_label(value) -> str | None:
    """A label as the examples carry it: stripped, None when blank. A line
    break inside is a BadLabelRow: tf.Transform's vocabulary file holds one
    label per line and silently leaves such a label out, so its examples
    would train with label_id -1 (a malformed CSV, almost always)."""
    label = str(value).strip() if value is not None else ""
    if "\n" in label or "\r" in label:
        raise BadLabelRow(f"label {label!r} holds a line break, which the label vocabulary file cannot hold")
    return label or None


def case_label(labels_row: dict | None, min_weight: float) -> str | None:
    """The case's condition label, or None when unlabeled."""
    if not labels_row:
        return None
    weighted = scin.parse_literal(labels_row.get(scin.WEIGHTED_LABEL), {})
    if not isinstance(weighted, dict):
        raise BadLabelRow(f"{scin.WEIGHTED_LABEL} is not a dict")
    if weighted:
        # Highest weight; ties broken by name so the choice is deterministic.
        name, weight = min(weighted.items(), key=lambda kv: (-float(kv[1]), kv[0]))
        if float(weight) >= min_weight:
            return checked_label(name)
    names = scin.parse_literal(labels_row.get(scin.LABEL_NAMES), [])
    if not isinstance(names, list):
        raise BadLabelRow(f"{scin.LABEL_NAMES} is not a list")
    return checked_label(names[0]) if names else None


def _monk(value: str | None, column: str) -> int:
    if value is None or not str(value).strip():
        return MISSING_INT
    try:
        tone = int(float(value))
    except ValueError:
        raise BadLabelRow(f"{column}={value!r} is not a number") from None
    if not 1 <= tone <= 10:
        raise BadLabelRow(f"{column}={tone} is outside the Monk scale 1-10")
    return tone


def scin_image_records(case_row: dict, labels_row: dict | None, image_root: str,
                       min_weight: float) -> list[dict]:
    """One labelled record per image of a SCIN case (label may be None)."""
    label = case_label(labels_row, min_weight)
    labels_row = labels_row or {}
    derm = [labels_row.get(c) or "" for c in scin.FITZPATRICK_DERM]
    common = {
        "case_id": case_row[scin.CASE_ID],
        "group_id": f"case:{case_row[scin.CASE_ID]}",
        "label": label,
        "monk_us": _monk(labels_row.get(scin.MONK_US), scin.MONK_US),
        "monk_india": _monk(labels_row.get(scin.MONK_INDIA), scin.MONK_INDIA),
        "fitzpatrick_self": case_row.get(scin.FITZPATRICK_SELF) or "NONE_SELECTED",
        "fitzpatrick_derm": next((d for d in derm if d), "NONE"),
        "age_group": case_row.get("age_group") or "AGE_UNKNOWN",
        "sex_at_birth": case_row.get("sex_at_birth") or "UNKNOWN",
        "body_parts": [1.0 if (case_row.get(c) or "").upper() == "YES" else 0.0
                       for c in scin.BODY_PART_COLUMNS],
    }
    out = []
    for path, shot in scin.case_images(case_row):
        if shot and shot not in scin.SHOT_TYPES:
            raise BadLabelRow(f"shot type {shot!r} is not one of {', '.join(scin.SHOT_TYPES)}")
        out.append(dict(common, uri=join_root(image_root, path), image_id=stem(path),
                        shot_type=shot or "UNKNOWN"))
    return out


def plain_record(row: dict, image_root: str) -> dict:
    """A record from a plain CSV row image_uri,label[,group_id]."""
    uri = (row.get("image_uri") or "").strip()
    if not uri:
        raise BadLabelRow("image_uri is empty")
    uri = join_root(image_root, uri) if image_root else uri
    label = checked_label(row.get("label"))
    group = (row.get("group_id") or "").strip()
    return {"uri": uri, "image_id": stem(uri), "case_id": group or None,
            "group_id": f"group:{group}" if group else f"image:{uri}", "label": label,
            "monk_us": MISSING_INT, "monk_india": MISSING_INT, "fitzpatrick_self": "NONE_SELECTED",
            "fitzpatrick_derm": "NONE", "age_group": "AGE_UNKNOWN", "sex_at_birth": "UNKNOWN",
            "shot_type": "UNKNOWN", "body_parts": [0.0] * len(scin.BODY_PARTS)}
