"""``ground_truth.csv``: what the curate job should conclude about each file."""
from __future__ import annotations

from beam_jobs.sample_data.catalog import EXPECTED_REASON
from beam_jobs.sample_data.plan import CasePlan, DatasetPlan, ImagePlan
from beam_jobs.sample_data.render import RenderedImage

COLUMNS = [
    "image_path", "case_id", "monk_tone", "defect", "expected_status", "expected_reasons",
    "duplicate_of", "width", "height", "orientation", "condition",
]


def ground_truth_row(plan: DatasetPlan, item: ImagePlan, case: CasePlan, result: RenderedImage) -> dict[str, str]:
    """One row: identity, true tone, defect, expected verdict and displayed geometry."""
    reason = EXPECTED_REASON[item.defect]
    original = plan.images[item.duplicate_of].path if item.duplicate_of is not None else ""
    return {
        "image_path": item.path,
        "case_id": case.case_id,
        "monk_tone": _text(item.tone),
        "defect": item.defect,
        "expected_status": "rejected" if reason else "accepted",
        "expected_reasons": reason,
        "duplicate_of": original,
        "width": _text(result.width),
        "height": _text(result.height),
        "orientation": _text(result.orientation),
        "condition": case.condition,
    }


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
