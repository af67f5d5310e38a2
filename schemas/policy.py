"""Load and validate the versioned quality policy (schemas/quality_policy.json).

A run can pass its own policy file (local or gs://) with --policy; it must
carry every key of the default one. Thresholds live only in that file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib

DEFAULT_POLICY_PATH = pathlib.Path(__file__).with_name("quality_policy.json")

# The widest duplicates.radius (and --dup_radius): the LSH index keys each of
# an image's hashes C(radius + 3, 3) times (1,771 at 20) on bands of 64 /
# (radius + 3) bits (3 at 20); past that, bands of 2 bits or fewer put most
# hashes in every bucket and one night's index outgrows memory.
MAX_DUP_RADIUS = 20


def _at(d: dict, key: str):
    """The value at a dotted policy key ("too_dark.max_lum_p99"); KeyError naming it."""
    v = d
    for part in key.split("."):
        if not isinstance(v, dict) or part not in v:
            raise KeyError(key)
        v = v[part]
    return v


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)  # JSON true would read as 1


def _value(d: dict, key: str, integer: bool = False):
    """The number at a dotted policy key: a JSON number, not a string or
    true/false. KeyError names a missing key, ValueError a bad value."""
    v = _at(d, key)
    if not _is_number(v):
        raise ValueError(f"{key} must be a number, got {json.dumps(v)}")
    if integer and not (math.isfinite(v) and float(v).is_integer()):
        raise ValueError(f"{key} must be a whole number, got {v}")
    return int(v) if integer else float(v)


def _names(d: dict, key: str) -> list:
    """The list of reason names at a dotted policy key."""
    v = _at(d, key)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{key} must be a list of reason names, got {json.dumps(v)}")
    return v


def _check_ranges(obj, ranges: dict) -> None:
    """ValueError naming the policy key of the first field outside its range.

    Ranges are those of the feature or quantity a threshold is compared with,
    so a typo (a percentage for a fraction, a negative size, NaN) fails at
    launch instead of silently rejecting, or accepting, a whole night."""
    for field, (key, lo, hi) in ranges.items():
        v = getattr(obj, field)
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"{key} must be within [{lo}, {hi}], got {v}")


@dataclasses.dataclass(frozen=True)
class DriftThresholds:
    """When a night's summary has drifted from the nights before it
    (transforms/curate/drift.py; the policy's "drift" entry)."""
    window_nights: int
    min_baseline_nights: int
    max_rate_change: float
    rate_z: float
    max_feature_psi: float
    max_tone_psi: float
    max_volume_ratio: float

    RANGES = {"window_nights": ("drift.window_nights", 1, 366),
              "min_baseline_nights": ("drift.min_baseline_nights", 1, 366),
              "max_rate_change": ("drift.max_rate_change", 0, 1), "rate_z": ("drift.rate_z", 0, 100),
              "max_feature_psi": ("drift.max_feature_psi", 0, 100), "max_tone_psi": ("drift.max_tone_psi", 0, 100),
              "max_volume_ratio": ("drift.max_volume_ratio", 1, 1e6)}

    def __post_init__(self):
        _check_ranges(self, self.RANGES)
        if self.max_volume_ratio <= 1:  # a ratio of 1 would alert on any change of volume
            raise ValueError(f"drift.max_volume_ratio must be > 1, got {self.max_volume_ratio}")

    @classmethod
    def from_dict(cls, d: dict) -> "DriftThresholds":
        d = {"drift": d}
        return cls(window_nights=_value(d, "drift.window_nights", True),
                   min_baseline_nights=_value(d, "drift.min_baseline_nights", True),
                   max_rate_change=_value(d, "drift.max_rate_change"), rate_z=_value(d, "drift.rate_z"),
                   max_feature_psi=_value(d, "drift.max_feature_psi"), max_tone_psi=_value(d, "drift.max_tone_psi"),
                   max_volume_ratio=_value(d, "drift.max_volume_ratio"))


@dataclasses.dataclass(frozen=True)
class EnhancePolicy:
    """The policy's `enhance` entry: which rejections the recipe may try to
    fix (transforms/image/enhance.py), the strong bounds it never tries past,
    the recipe's parameters and the ITA shift it may cause."""
    fixable: frozenset
    strong_dark_max_p99: float
    strong_blur_max_sharpness: float
    strong_flat_max_entropy: float
    ev_steps: tuple
    min_lift_p99: float
    denoise_h: float
    clahe_clip: float
    clahe_tiles: int
    unsharp_sigma: float
    unsharp_amount: float
    max_ita_shift_deg: float
    min_skin_probability_after: float

    RANGES = {"strong_dark_max_p99": ("enhance.strong_dark_max_lum_p99", 0, 1),
              "strong_blur_max_sharpness": ("enhance.strong_blur_max_sharpness", 0, 0.5),
              "strong_flat_max_entropy": ("enhance.strong_flat_max_entropy_bits", 0, 8),
              "min_lift_p99": ("enhance.min_lum_p99_after_lift", 0, 1),
              "denoise_h": ("enhance.denoise_h", 0, 100), "clahe_clip": ("enhance.clahe_clip", 0, 100),
              "clahe_tiles": ("enhance.clahe_tiles", 1, 64),
              # OpenCV derives a Gaussian's size from sigma; 0 would be an error on every photo.
              "unsharp_sigma": ("enhance.unsharp_sigma", 0.1, 50), "unsharp_amount": ("enhance.unsharp_amount", 0, 10),
              "max_ita_shift_deg": ("enhance.max_ita_shift_deg", 0, 180),
              "min_skin_probability_after": ("enhance.min_skin_probability_after", 0, 1)}

    def __post_init__(self):
        if not self.fixable <= {"too_dark", "low_information", "blurry"}:
            raise ValueError(f"enhance.fixable may name only too_dark, low_information, blurry, got {sorted(self.fixable)}")
        _check_ranges(self, self.RANGES)
        # Stops of exposure lift, tried in order; past 16 every pixel that is not black turns white.
        if not self.ev_steps or not all(math.isfinite(v) and 0 < v <= 16 for v in self.ev_steps):
            raise ValueError(f"enhance.ev_steps must be one or more numbers within (0, 16], got {list(self.ev_steps)}")

    @classmethod
    def from_dict(cls, e: dict) -> "EnhancePolicy":
        d = {"enhance": e}
        steps = _at(d, "enhance.ev_steps")
        if not isinstance(steps, list) or not all(_is_number(v) for v in steps):
            raise ValueError(f"enhance.ev_steps must be a list of numbers, got {json.dumps(steps)}")
        return cls(fixable=frozenset(_names(d, "enhance.fixable")),
                   strong_dark_max_p99=_value(d, "enhance.strong_dark_max_lum_p99"),
                   strong_blur_max_sharpness=_value(d, "enhance.strong_blur_max_sharpness"),
                   strong_flat_max_entropy=_value(d, "enhance.strong_flat_max_entropy_bits"),
                   ev_steps=tuple(float(v) for v in steps),
                   min_lift_p99=_value(d, "enhance.min_lum_p99_after_lift"), denoise_h=_value(d, "enhance.denoise_h"),
                   clahe_clip=_value(d, "enhance.clahe_clip"), clahe_tiles=_value(d, "enhance.clahe_tiles", True),
                   unsharp_sigma=_value(d, "enhance.unsharp_sigma"), unsharp_amount=_value(d, "enhance.unsharp_amount"),
                   max_ita_shift_deg=_value(d, "enhance.max_ita_shift_deg"),
                   min_skin_probability_after=_value(d, "enhance.min_skin_probability_after"))


@dataclasses.dataclass(frozen=True)
class QualityPolicy:
    version: str
    analysis_short_side: int
    max_pixels: int
    max_bytes: int
    max_decode_bytes: int
    min_short_side: int
    dark_max_p99: float
    bright_min_overexposed: float
    blur_max_sharpness: float
    blur_short_side: int
    info_max_entropy: float
    relevance_model: str
    skin_min_fraction: float
    skin_min_brightness: float
    skin_dim_max_probability: float
    gray_max_channel_diff: float
    dup_radius: int
    exact_only_for: tuple
    suppressed_by: dict
    drift: DriftThresholds
    enhance: EnhancePolicy | None = None
    # The loaded relevance model; filled by from_dict, not part of equality.
    relevance: object = dataclasses.field(default=None, compare=False, repr=False)

    # field -> (policy key, lowest, highest): each threshold within the range of
    # the feature it is compared with (schemas/features.py), each size within
    # what a decode can give.
    RANGES = {
        # Below one relevance cell (28 px) the model has nothing to score.
        "analysis_short_side": ("analysis_short_side.value", 28, 4096),
        "max_pixels": ("max_pixels.value", 1, 10 ** 12),
        "max_bytes": ("max_bytes.value", 1, 2 ** 40),
        "max_decode_bytes": ("max_decode_bytes.value", 1, 2 ** 40),
        "min_short_side": ("too_small.min_short_side", 0, 10 ** 6),
        "dark_max_p99": ("too_dark.max_lum_p99", 0, 1),
        "bright_min_overexposed": ("too_bright.min_overexposed_fraction", 0, 1),
        "blur_max_sharpness": ("blurry.max_sharpness", 0, 0.5),
        "blur_short_side": ("blurry.judged_at_short_side", 28, 4096),
        "info_max_entropy": ("low_information.max_entropy_bits", 0, 8),
        "skin_min_fraction": ("no_skin.min_skin_fraction", 0, 1),
        "skin_min_brightness": ("no_skin.min_brightness_to_judge", 0, 1),
        "skin_dim_max_probability": ("no_skin.dim_max_probability", 0, 1),
        "gray_max_channel_diff": ("grayscale.max_channel_diff", 0, 255),
        "dup_radius": ("duplicates.radius", 0, MAX_DUP_RADIUS),
    }

    def __post_init__(self):
        """Every value within its range and every reason named a quality
        reason: a misspelt one would silently never apply. Checked here, so
        with_overrides (curate's --analysis_size, --dup_radius, --max_pixels)
        is held to the same ranges as the file."""
        from schemas.reasons import DUPLICATE_REASONS, INPUT_REASONS, REASONS
        _check_ranges(self, self.RANGES)
        quality = [r for r in REASONS if r not in INPUT_REASONS + DUPLICATE_REASONS and r != "inference_error"]
        named = [("duplicates.exact_only_for", self.exact_only_for), ("suppressed_by", self.suppressed_by)]
        named += [(f"suppressed_by.{k}", v) for k, v in self.suppressed_by.items()]
        for key, names in named:
            unknown = sorted(set(names) - set(quality))
            if unknown:
                raise ValueError(f"{key} names {', '.join(unknown)}, not a quality reason "
                                 f"({', '.join(quality)})")

    @classmethod
    def from_dict(cls, d: dict, with_model: bool = True) -> "QualityPolicy":
        try:
            version, model = _at(d, "version"), _at(d, "no_skin.model")
            if not isinstance(version, str) or not version.strip():
                raise ValueError(f"version must be a non-empty string, got {json.dumps(version)}")
            if not isinstance(model, str) or not model.strip():
                raise ValueError(f"no_skin.model must be a file name or path, got {json.dumps(model)}")
            suppressed = _at(d, "suppressed_by")
            if not isinstance(suppressed, dict):
                raise ValueError("suppressed_by must map reasons to lists of reasons")
            policy = cls(
                version=version,
                analysis_short_side=_value(d, "analysis_short_side.value", True),
                max_pixels=_value(d, "max_pixels.value", True),
                max_bytes=_value(d, "max_bytes.value", True),
                max_decode_bytes=_value(d, "max_decode_bytes.value", True),
                min_short_side=_value(d, "too_small.min_short_side", True),
                dark_max_p99=_value(d, "too_dark.max_lum_p99"),
                bright_min_overexposed=_value(d, "too_bright.min_overexposed_fraction"),
                blur_max_sharpness=_value(d, "blurry.max_sharpness"),
                blur_short_side=_value(d, "blurry.judged_at_short_side", True),
                info_max_entropy=_value(d, "low_information.max_entropy_bits"),
                relevance_model=model,
                skin_min_fraction=_value(d, "no_skin.min_skin_fraction"),
                skin_min_brightness=_value(d, "no_skin.min_brightness_to_judge"),
                skin_dim_max_probability=_value(d, "no_skin.dim_max_probability"),
                gray_max_channel_diff=_value(d, "grayscale.max_channel_diff"),
                dup_radius=_value(d, "duplicates.radius", True),
                exact_only_for=tuple(_names(d, "duplicates.exact_only_for")),
                suppressed_by={k: tuple(_names(d, f"suppressed_by.{k}")) for k in suppressed if k != "why"},
                drift=DriftThresholds.from_dict(_at(d, "drift")),
                enhance=EnhancePolicy.from_dict(_at(d, "enhance")),
            )
        except KeyError as e:
            raise ValueError(f"invalid quality policy: missing key {e}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid quality policy: {e}") from None
        return policy.with_relevance() if with_model else policy

    def with_relevance(self) -> "QualityPolicy":
        """This policy with its relevance model loaded (ValueError if it cannot be)."""
        from transforms.image.relevance import load_model
        return dataclasses.replace(self, relevance=load_model(resolve_model_path(self.relevance_model)))

    def with_overrides(self, **changes) -> "QualityPolicy":
        return dataclasses.replace(self, **changes)


def resolve_model_path(name: str) -> str:
    """A bare file name is one packaged beside the default policy; anything else
    (an absolute path, gs://...) is used as given."""
    if "/" not in name:
        return str(DEFAULT_POLICY_PATH.with_name(name))
    return name


def read_text(path: str, what: str) -> str:
    """The text of a local or gs:// file; anything unreadable (a filesystem
    error, a FIFO or folder, not UTF-8) is one ValueError line, `cannot read
    <what> <path>: ...` (transforms.io.inputs.read_named_text)."""
    from transforms.io.inputs import read_named_text
    return read_named_text(str(path), what)


def load_policy(path: str | None = None, with_model: bool = True) -> QualityPolicy:
    """Load the default policy, or a JSON file at a local or gs:// path, and
    the relevance model it names (with_model=False leaves it unloaded)."""
    text = DEFAULT_POLICY_PATH.read_text() if path is None else read_text(path, "policy file")
    try:
        return QualityPolicy.from_dict(json.loads(text), with_model)
    except json.JSONDecodeError as e:
        raise ValueError(f"policy file {path} is not valid JSON: {e}") from None


def markdown_table(path=DEFAULT_POLICY_PATH) -> str:
    """The policy's entries, defaults and reasons as a README table."""
    d = json.loads(pathlib.Path(path).read_text())
    rows = ["| entry | default | why |", "|---|---|---|"]
    for key, value in d.items():
        if isinstance(value, dict) and key != "suppressed_by":
            defaults = ", ".join(f"{k}={v}" for k, v in value.items() if k != "why")
            rows.append(f"| `{key}` | {defaults} | {value['why']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
