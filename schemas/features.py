"""The curate job's features table: every column, its type, unit and meaning.

This is the one place a feature is defined. The Parquet schema, the README's
feature table (`python -m schemas.features`) and the report all derive from
FIELDS. Pixel features are computed on the decoded image after it is area-
resized so its short side equals the policy's analysis size; that makes blur
and texture measures independent of the upload's resolution.
"""
from __future__ import annotations

import dataclasses

import pyarrow as pa


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType
    unit: str
    doc: str


_F = Field
IDENTITY = [
    _F("uri", pa.string(), "", "where the image was read from"),
    _F("image_id", pa.string(), "", "id from the manifest, or the file stem"),
    _F("case_id", pa.string(), "", "SCIN case id (or manifest case id); null for plain globs"),
    _F("sha256", pa.string(), "hex", "SHA-256 of the file bytes"),
    _F("file_size", pa.int64(), "bytes", "size of the file"),
    _F("format", pa.string(), "", "format sniffed from the bytes (jpeg, png, ...), not the file name"),
]
GEOMETRY = [
    _F("width", pa.int32(), "px", "displayed width at full resolution (after EXIF orientation)"),
    _F("height", pa.int32(), "px", "displayed height at full resolution (after EXIF orientation)"),
    _F("aspect_ratio", pa.float32(), "ratio", "short side / long side (1 = square)"),
    _F("orientation", pa.int8(), "EXIF", "EXIF orientation tag (1 = upright)"),
    _F("decode_scale", pa.int8(), "1/n", "reduction of the one decode: JPEG DCT scale (1, 2, 4, 8); HEIC/AVIF area-reduced by the same factor after a full decode, or a HEIC's embedded thumbnail (full width / thumbnail width, rounded)"),
]
PIXELS = [
    _F("brightness_mean", pa.float32(), "0-1", "mean luminance"),
    _F("brightness_std", pa.float32(), "0-1", "standard deviation of luminance"),
    _F("lum_p01", pa.float32(), "0-1", "1st percentile of luminance"),
    _F("lum_p99", pa.float32(), "0-1", "99th percentile of luminance: the too_dark test"),
    _F("underexposed_fraction", pa.float32(), "fraction", "pixels with luminance <= 10/255 (crushed to black)"),
    _F("overexposed_fraction", pa.float32(), "fraction", "pixels with luminance >= 250/255 (clipped to white)"),
    _F("shadow_fraction", pa.float32(), "fraction", "pixels with luminance < 0.15"),
    _F("rms_contrast", pa.float32(), "0-1", "RMS contrast: luminance std / mean (relative, so dark skin is not penalised)"),
    _F("laplacian_var", pa.float32(), "level^2", "variance of the 3x3 Laplacian of 8-bit luminance"),
    _F("tenengrad", pa.float32(), "level^2", "mean squared Sobel gradient magnitude of 8-bit luminance"),
    _F("sharpness", pa.float32(), "ratio", "at the blur size (224 px): 99th percentile of one-pixel brightness change / local contrast (13 px range), in the softest of 8 directions: the blur test"),
    _F("entropy", pa.float32(), "bits", "Shannon entropy of the 256-bin luminance histogram"),
    _F("colorfulness", pa.float32(), "Hasler-Susstrunk", "colourfulness metric M (0 = grey)"),
    _F("channel_diff", pa.float32(), "level", "mean absolute difference between colour channels"),
    _F("grayscale", pa.bool_(), "", "channel_diff below the policy's grayscale limit (judged on pixels, not file mode)"),
    _F("skin_fraction", pa.float32(), "fraction", "pixels whose Lab hue and chroma fall in the skin range (the skin tone is measured on them)"),
    _F("skin_probability", pa.float32(), "0-1", "the relevance model's probability that the photo shows skin (transforms/image/relevance.py): the no_skin test"),
    _F("ita_deg", pa.float32(), "degrees", "Individual Typology Angle atan2(L*-50, b*) over skin pixels (median L*, b*)"),
    _F("ita_category", pa.string(), "", "very_light > 55 > light > 41 > intermediate > 28 > tan > 10 > brown > -30 > dark"),
    _F("monk_estimate", pa.int8(), "1-10", "Monk skin tone whose swatch ITA is nearest to ita_deg (ITA is less exposure-sensitive than L*)"),
    _F("monk_group", pa.string(), "", "light (Monk 1-3), medium (4-6), dark (7-10)"),
    _F("phash", pa.string(), "hex", "64-bit DCT perceptual hash, 16 hex digits"),
    _F("phash_centre", pa.list_(pa.string()), "hex", "pHashes of the centred 93%, 86.5% and 80.4% of the frame (16 hex digits each): a cropped copy's phash meets one of them"),
    _F("phash_turned", pa.list_(pa.string()), "hex", "pHashes of the frame and of its centre crops, each turned (quarter turns, mirrors) to its canonical orientation, from their own DCTs; two for a near tie, none for a region canonical already or a repeat (transforms/image/phash.py): a rotated, mirrored, EXIF-stripped or cropped-and-rotated copy reaches the same orientation, so its own meet them"),
]
# The main skin region (transforms/image/skin_crop.py): the largest connected
# patch of the skin mask after an opening and a closing, in 0-1 coordinates of
# the oriented image (resolution-independent); make_tfrecords/score --crop skin
# cut their square around it. Null when no patch covers 2% of the frame.
SKIN_REGION = [
    _F("skin_box_x0", pa.float32(), "0-1", "left edge of the main skin region's bounding box, a fraction of the width"),
    _F("skin_box_y0", pa.float32(), "0-1", "top edge of the main skin region's bounding box, a fraction of the height"),
    _F("skin_box_x1", pa.float32(), "0-1", "right edge (exclusive) of the main skin region's bounding box, a fraction of the width"),
    _F("skin_box_y1", pa.float32(), "0-1", "bottom edge (exclusive) of the main skin region's bounding box, a fraction of the height"),
    _F("skin_region_fraction", pa.float32(), "fraction", "share of the frame the main skin region covers (after the clean-up)"),
]
VERDICT = [
    _F("status", pa.string(), "", "accepted or rejected"),
    _F("reasons", pa.list_(pa.string()), "", "rejection reason codes (schemas/reasons.py); empty when accepted"),
    _F("error", pa.string(), "", "error text for input failures; never image bytes"),
    _F("cluster_id", pa.string(), "", "duplicate cluster id; shared by exact and near duplicates"),
    _F("duplicate_of", pa.string(), "", "uri of the kept cluster member, for rejected duplicates (or of the earlier night's image, see duplicate_of_date)"),
    _F("duplicate_of_date", pa.string(), "YYYY-MM-DD", "the night duplicate_of was accepted on, when it is an earlier night's image (--reference); null within a night"),
    _F("policy_version", pa.string(), "", "version of the quality policy that judged this row"),
]
# curate --enhance (transforms/image/enhance.py); null on rows it did not try.
ENHANCE = [
    _F("enhanced", pa.bool_(), "", "true: rejected for a fixable reason, accepted after the enhancement recipe (pixel features are those of the enhanced image); false: tried and not rescued; null: not tried"),
    _F("enhance_outcome", pa.string(), "", "rescued, still_rejected (fails a test after the recipe), refused_ita (skin ITA moved more than the policy allows, or not measurable), strong_defect (beyond the policy's strong bound, not tried), skin_unverified (the upload fails the skin test the verdict hid, or is too dark for it: not tried); null: not eligible"),
    _F("enhance_recipe", pa.string(), "JSON", "the recipe and its parameters (name, ev, denoise_h, clahe_clip, clahe_tiles, unsharp_sigma, unsharp_amount) tried last; make_tfrecords applies it when enhanced"),
    _F("reasons_before_enhance", pa.list_(pa.string()), "", "the rejection reasons the image had before enhancement (rows tried only)"),
    _F("enhance_ita_shift", pa.float32(), "degrees", "median skin ITA of the enhanced image minus the original's"),
]

FIELDS: list[Field] = IDENTITY + GEOMETRY + PIXELS + SKIN_REGION + VERDICT + ENHANCE
SCHEMA = pa.schema([pa.field(f.name, f.type) for f in FIELDS])

DEAD_LETTER_FIELDS = ["uri", "image_id", "case_id", "sha256", "status", "reasons",
                      "error", "duplicate_of", "duplicate_of_date", "policy_version"]

# Skin-tone class names, defined here only: ita_category's (lightest first) and
# monk_group's (Monk 1-3, 4-6, 7-10); transforms/image/skin_tone.py assigns them.
ITA_CATEGORIES = ("very_light", "light", "intermediate", "tan", "brown", "dark")
MONK_GROUPS = ("light", "medium", "dark")

# curate's output: OUT/features/*.parquet (SCHEMA), OUT/dead_letters/*.jsonl
# (DEAD_LETTER_FIELDS), OUT/summary.json, OUT/report.html, and OUT/_SUCCESS
# (transforms.io.run_lock.MARKER) written last.
FEATURES_DIR, DEAD_LETTERS_DIR = "features", "dead_letters"
SUMMARY_FILE, REPORT_FILE = "summary.json", "report.html"
ALERTS_FILE = "alerts.json"  # drift against earlier nights (transforms/curate/drift.py)


def features_glob(curated: str) -> str:
    """The features shards of the curate output `curated` (local or gs://)."""
    return f"{curated.rstrip('/')}/{FEATURES_DIR}/*.parquet"


def empty_row(**values) -> dict:
    """A row with every column present (None where unknown), updated by values."""
    row = {f.name: None for f in FIELDS}
    row["reasons"] = []
    unknown = values.keys() - row.keys()
    if unknown:
        raise KeyError(f"not in the features schema: {sorted(unknown)}")
    row.update(values)
    return row


def markdown_table() -> str:
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.type} | {f.unit} | {f.doc} |" for f in FIELDS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
