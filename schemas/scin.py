"""The SCIN metadata contract: column names and how their values are written.

SCIN (gs://dx-scin-public-data) ships scin_cases.csv and scin_labels.csv joined
on case_id; list and dict columns are Python literals in strings.
"""
from __future__ import annotations

import ast
import csv
import io

CASE_ID = "case_id"
IMAGE_PATH_COLUMNS = ("image_1_path", "image_2_path", "image_3_path")
SHOT_TYPE_COLUMNS = ("image_1_shot_type", "image_2_shot_type", "image_3_shot_type")
SHOT_TYPES = ("CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE")
LABEL_NAMES = "dermatologist_skin_condition_on_label_name"
WEIGHTED_LABEL = "weighted_skin_condition_label"
MONK_US = "monk_skin_tone_label_us"
MONK_INDIA = "monk_skin_tone_label_india"
FITZPATRICK_SELF = "fitzpatrick_skin_type"
FITZPATRICK_DERM = ("dermatologist_fitzpatrick_skin_type_label_1",
                    "dermatologist_fitzpatrick_skin_type_label_2",
                    "dermatologist_fitzpatrick_skin_type_label_3")
REQUIRED_CASE_COLUMNS = (CASE_ID,) + IMAGE_PATH_COLUMNS
REQUIRED_LABEL_COLUMNS = (CASE_ID, LABEL_NAMES, WEIGHTED_LABEL)
BODY_PARTS = ("head_or_neck", "arm", "palm", "back_of_hand", "torso_front", "torso_back",
              "genitalia_or_groin", "buttocks", "leg", "foot_top_or_side", "foot_sole", "other")
BODY_PART_COLUMNS = tuple(f"body_parts_{b}" for b in BODY_PARTS)


def read_csv_rows(text: str, required: tuple[str, ...], source: str) -> list[dict]:
    """Rows of a CSV as dicts of strings; ValueError naming missing columns."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{source}: missing required column(s) {', '.join(missing)}")
    return list(reader)


def parse_literal(value: str, default):
    """A list/dict column value (`['a', 'b']`, `{'a': 0.5}`); default if blank."""
    if value is None or not value.strip():
        return default
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise ValueError(f"malformed list/dict value: {value[:80]!r}") from None


def case_images(row: dict) -> list[tuple[str, str]]:
    """(image_path, shot_type) for each non-empty image slot of a case row."""
    out = []
    for path_col, shot_col in zip(IMAGE_PATH_COLUMNS, SHOT_TYPE_COLUMNS):
        path = (row.get(path_col) or "").strip()
        if path:
            out.append((path, (row.get(shot_col) or "").strip()))
    return out
