"""What the sample data contains: defect classes, their expected verdicts,
the defect mix, and the condition classes used for labels."""
from __future__ import annotations

NONE = "none"

# Defect class -> the reason code the curate job should emit ("" = accepted).
EXPECTED_REASON = {
    NONE: "",
    "dim_textured": "",
    "too_dark": "too_dark",
    "too_bright": "too_bright",
    "blurry": "blurry",
    "low_information": "low_information",
    "not_skin": "no_skin",
    "exact_duplicate": "exact_duplicate",
    "near_duplicate": "near_duplicate",
    "corrupt": "unreadable",
    "empty": "empty",
    "not_an_image": "unsupported_format",
}
DEFECTS = tuple(EXPECTED_REASON)
DUPLICATES = ("exact_duplicate", "near_duplicate")

# Share of all images per defect; `none` takes the remainder (57%). Every
# defect gets at least MIN_PER_DEFECT images so small runs still cover them.
DEFECT_MIX = {
    "dim_textured": 0.05,
    "too_dark": 0.04,
    "too_bright": 0.04,
    "blurry": 0.05,
    "low_information": 0.03,
    "not_skin": 0.04,
    "exact_duplicate": 0.04,
    "near_duplicate": 0.05,
    "corrupt": 0.03,
    "empty": 0.03,
    "not_an_image": 0.03,
}
MIN_PER_DEFECT = 2

# Primary conditions of labelled cases: a skewed head of common classes
# (weights sum to 1) and one rare class given to only 1-2 cases.
COMMON_CONDITIONS = (
    ("Eczema", 0.27),
    ("Allergic Contact Dermatitis", 0.17),
    ("Urticaria", 0.13),
    ("Insect Bite", 0.11),
    ("Folliculitis", 0.10),
    ("Psoriasis", 0.09),
    ("Tinea", 0.07),
    ("Herpes Zoster", 0.06),
)
RARE_CONDITION = "Erythema Multiforme"
UNLABELED_FRACTION = 0.375

SHOT_TYPES = ("CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE")


def defect_counts(n_images: int) -> dict[str, int]:
    """Return how many images of each defect class a run of ``n_images`` gets."""
    counts = {d: max(MIN_PER_DEFECT, round(f * n_images)) for d, f in DEFECT_MIX.items()}
    if sum(counts.values()) > n_images // 2:
        # Too few images for the minimum: apportion the defect share by
        # largest remainder so a tiny run still gets a spread of defects.
        shares = {d: f * n_images for d, f in DEFECT_MIX.items()}
        counts = {d: int(x) for d, x in shares.items()}
        spare = round(sum(shares.values())) - sum(counts.values())
        for d in sorted(shares, key=lambda d: int(shares[d]) - shares[d])[:spare]:
            counts[d] += 1
    counts[NONE] = n_images - sum(counts.values())
    return counts
