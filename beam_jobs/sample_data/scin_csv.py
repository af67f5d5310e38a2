"""SCIN-format metadata: ``scin_cases.csv`` and ``scin_labels.csv``.

Column names, order and value formats follow the public SCIN release
(github.com/google-research-datasets/scin, dataset_schema.md and the demo
notebook): checkbox answers are "YES" or empty, label lists and the weighted
label are Python literals, Monk labels are 1-10 integers.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from beam_jobs.sample_data.plan import CasePlan, DatasetPlan

_RACES = (
    "american_indian_or_alaska_native", "asian", "black_or_african_american",
    "hispanic_latino_or_spanish_origin", "middle_eastern_or_north_african",
    "native_hawaiian_or_pacific_islander", "white", "other_race", "prefer_not_to_answer",
)
_TEXTURES = ("raised_or_bumpy", "flat", "rough_or_flaky", "fluid_filled")
_BODY_PARTS = (
    "head_or_neck", "arm", "palm", "back_of_hand", "torso_front", "torso_back",
    "genitalia_or_groin", "buttocks", "leg", "foot_top_or_side", "foot_sole", "other",
)
_CONDITION_SYMPTOMS = (
    "bothersome_appearance", "bleeding", "increasing_size", "darkening",
    "itching", "burning", "pain", "no_relevant_experience",
)
_OTHER_SYMPTOMS = (
    "fever", "chills", "fatigue", "joint_pain", "mouth_sores", "shortness_of_breath", "no_relevant_symptoms",
)
_AGE_GROUPS = (
    "AGE_18_TO_29", "AGE_30_TO_39", "AGE_40_TO_49", "AGE_50_TO_59",
    "AGE_60_TO_69", "AGE_70_TO_79", "AGE_80_OR_ABOVE", "AGE_UNKNOWN",
)
_AGE_P = (0.3, 0.22, 0.15, 0.11, 0.07, 0.03, 0.01, 0.11)
_SEXES = ("FEMALE", "MALE", "OTHER_OR_UNSPECIFIED")
_RELATED = (
    "ACNE", "GROWTH_OR_MOLE", "HAIR_LOSS", "OTHER_HAIR_PROBLEM", "NAIL_PROBLEM",
    "PIGMENTARY_PROBLEM", "RASH", "LOOKS_HEALTHY", "OTHER_ISSUE_DESCRIPTION",
)
_DURATIONS = (
    "ONE_DAY", "LESS_THAN_ONE_WEEK", "ONE_TO_FOUR_WEEKS", "ONE_TO_THREE_MONTHS",
    "THREE_TO_TWELVE_MONTHS", "MORE_THAN_ONE_YEAR", "MORE_THAN_FIVE_YEARS", "SINCE_CHILDHOOD", "UNKNOWN",
)
# Monk tone -> typical Fitzpatrick type (1-6).
_FST_OF_TONE = (1, 1, 2, 3, 3, 4, 5, 5, 6, 6)
_GRADABLE = "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT"
_NO_PATHOLOGY = "YES_IMAGE_QUALITY_SUFFICIENT_NO_DISCERNIBLE_PATHOLOGY"

CASES_COLUMNS = (
    ["case_id", "source", "release", "year", "age_group", "sex_at_birth", "fitzpatrick_skin_type"]
    + [f"race_ethnicity_{r}" for r in _RACES]
    + [f"textures_{t}" for t in _TEXTURES]
    + [f"body_parts_{b}" for b in _BODY_PARTS]
    + [f"condition_symptoms_{s}" for s in _CONDITION_SYMPTOMS]
    + [f"other_symptoms_{s}" for s in _OTHER_SYMPTOMS]
    + ["related_category", "condition_duration"]
    + [f"image_{k}_path" for k in (1, 2, 3)]
    + [f"image_{k}_shot_type" for k in (1, 2, 3)]
    + ["combined_race", "race_ethnicity_two_or_more_after_mitigation"]
)
LABELS_COLUMNS = (
    ["case_id"]
    + [f"dermatologist_gradable_for_skin_condition_{k}" for k in (1, 2, 3)]
    + ["dermatologist_skin_condition_on_label_name", "dermatologist_skin_condition_confidence",
       "weighted_skin_condition_label"]
    + [f"dermatologist_gradable_for_fitzpatrick_skin_type_{k}" for k in (1, 2, 3)]
    + [f"dermatologist_fitzpatrick_skin_type_label_{k}" for k in (1, 2, 3)]
    + ["gradable_for_monk_skin_tone_india", "gradable_for_monk_skin_tone_us",
       "monk_skin_tone_label_india", "monk_skin_tone_label_us"]
)


# Random streams (first spawn key) separate from the plan (0) and images (1).
_QUESTIONNAIRE_STREAM, _GRADER_STREAM = 2, 3


def _case_rng(seed: int, stream: int, case_index: int) -> np.random.Generator:
    """An independent generator per (stream, case)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, case_index)))


def case_row(plan: DatasetPlan, case: CasePlan) -> dict[str, str]:
    """One ``scin_cases.csv`` row: the contributor's questionnaire and image paths."""
    rng = _case_rng(plan.seed, _QUESTIONNAIRE_STREAM, case.index)
    row = dict.fromkeys(CASES_COLUMNS, "")
    row.update(case_id=case.case_id, source="SCIN", release="1.0.0", year="2023")
    row["age_group"] = _AGE_GROUPS[int(rng.choice(len(_AGE_GROUPS), p=_AGE_P))]
    row["sex_at_birth"] = _SEXES[int(rng.choice(3, p=(0.33, 0.16, 0.51)))]
    if rng.random() < 0.5:
        fst = _FST_OF_TONE[case.tone - 1] + int(rng.choice((-1, 0, 0, 0, 1)))
        row["fitzpatrick_skin_type"] = "NONE_SELECTED" if rng.random() < 0.13 else f"FST{min(6, max(1, fst))}"
    races = _tick(rng, row, "race_ethnicity_", _RACES, int(rng.choice((0, 1, 2), p=(0.45, 0.45, 0.1))))
    row["combined_race"] = ("TWO_OR_MORE_AFTER_MITIGATION" if len(races) > 1 else races[0].upper()) if races else ""
    row["race_ethnicity_two_or_more_after_mitigation"] = "YES" if len(races) > 1 else ""
    _tick(rng, row, "textures_", _TEXTURES, int(rng.integers(0, 3)))
    _tick(rng, row, "body_parts_", _BODY_PARTS, int(rng.integers(1, 3)))
    _tick(rng, row, "condition_symptoms_", _CONDITION_SYMPTOMS, int(rng.integers(0, 4)))
    _tick(rng, row, "other_symptoms_", _OTHER_SYMPTOMS, int(rng.integers(0, 2)))
    row["related_category"] = _RELATED[int(rng.integers(len(_RELATED)))] if rng.random() < 0.8 else ""
    row["condition_duration"] = _DURATIONS[int(rng.integers(len(_DURATIONS)))] if rng.random() < 0.85 else ""
    for slot, index in enumerate(case.image_indices, start=1):
        row[f"image_{slot}_path"] = plan.images[index].path
        row[f"image_{slot}_shot_type"] = plan.images[index].shot_type
    return row


def label_row(plan: DatasetPlan, case: CasePlan) -> dict[str, str]:
    """One ``scin_labels.csv`` row: dermatologists' differential, Fitzpatrick
    and Monk labels (graders see the true tone, sometimes off by one)."""
    rng = _case_rng(plan.seed, _GRADER_STREAM, case.index)
    row = dict.fromkeys(LABELS_COLUMNS, "")
    row["case_id"] = case.case_id
    names = [name for derm in case.differential for name, _ in derm]
    confidences = [conf for derm in case.differential for _, conf in derm]
    row["dermatologist_skin_condition_on_label_name"] = repr(names)
    row["dermatologist_skin_condition_confidence"] = repr(confidences)
    row["weighted_skin_condition_label"] = _weighted_label(case.differential)
    shows_skin = _shows_own_skin(plan, case)
    for k in range(1, max(1, len(case.differential)) + 1):
        if case.differential:
            row[f"dermatologist_gradable_for_skin_condition_{k}"] = _GRADABLE
        elif shows_skin and rng.random() < 0.1:
            row[f"dermatologist_gradable_for_skin_condition_{k}"] = _NO_PATHOLOGY
        if shows_skin:
            fst = _FST_OF_TONE[case.tone - 1] + int(rng.choice((-1, 0, 0, 0, 1)))
            row[f"dermatologist_gradable_for_fitzpatrick_skin_type_{k}"] = "YES"
            row[f"dermatologist_fitzpatrick_skin_type_label_{k}"] = f"FST{min(6, max(1, fst))}"
    for pool in ("india", "us"):
        row[f"gradable_for_monk_skin_tone_{pool}"] = str(shows_skin)
        if shows_skin:
            off = int(rng.choice((-1, 0, 1), p=(0.1, 0.8, 0.1)))
            row[f"monk_skin_tone_label_{pool}"] = str(min(10, max(1, case.tone + off)))
    return row


def _shows_own_skin(plan: DatasetPlan, case: CasePlan) -> bool:
    """Whether any image shows the case's own skin (a duplicate copied from
    another case shows someone else)."""
    for index in case.image_indices:
        image = plan.images[index]
        source = image if image.duplicate_of is None else plan.images[image.duplicate_of]
        if image.tone is not None and source.case_index == case.index:
            return True
    return False


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write rows (dicts keyed by ``columns``) with a header, "\\n" line ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _tick(rng: np.random.Generator, row: dict, prefix: str, options: tuple[str, ...], n: int) -> list[str]:
    """Mark ``n`` random checkbox columns ``prefix + option`` as "YES"; return the options."""
    chosen = [options[k] for k in sorted(rng.choice(len(options), size=n, replace=False))]
    for option in chosen:
        row[prefix + option] = "YES"
    return chosen


def _weighted_label(differential: tuple) -> str:
    """SCIN's weighted label: each dermatologist's i-th condition gets weight
    1/i, summed per condition and normalised, as a dict literal ("{}" if none)."""
    totals: dict[str, float] = {}
    for derm in differential:
        for rank, (name, _) in enumerate(derm, start=1):
            totals[name] = totals.get(name, 0.0) + 1 / rank
    total = sum(totals.values())
    ordered = sorted(totals.items(), key=lambda kv: -kv[1])
    return repr({name: round(w / total, 2) for name, w in ordered})
