"""Load and validate the versioned quality policy (schemas/quality_policy.json).

A run can pass its own policy file (local or gs://) with --policy; it must
carry every key of the default one. Thresholds live only in that file.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

DEFAULT_POLICY_PATH = pathlib.Path(__file__).with_name("quality_policy.json")


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

    @classmethod
    def from_dict(cls, d: dict) -> "DriftThresholds":
        t = cls(window_nights=int(d["window_nights"]), min_baseline_nights=int(d["min_baseline_nights"]),
                max_rate_change=float(d["max_rate_change"]), rate_z=float(d["rate_z"]),
                max_feature_psi=float(d["max_feature_psi"]), max_tone_psi=float(d["max_tone_psi"]),
                max_volume_ratio=float(d["max_volume_ratio"]))
        if t.window_nights < 1 or t.min_baseline_nights < 1 or t.max_volume_ratio <= 1 or min(
                t.max_rate_change, t.rate_z, t.max_feature_psi, t.max_tone_psi) < 0:
            raise ValueError("'drift': window_nights and min_baseline_nights >= 1, max_volume_ratio > 1, "
                             "the other thresholds >= 0")
        return t


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

    @classmethod
    def from_dict(cls, e: dict) -> "EnhancePolicy":
        fixable = frozenset(e["fixable"])
        if not fixable <= {"too_dark", "low_information", "blurry"}:
            raise ValueError(f"enhance.fixable may name only too_dark, low_information, blurry, got {sorted(fixable)}")
        return cls(fixable=fixable, strong_dark_max_p99=float(e["strong_dark_max_lum_p99"]),
                   strong_blur_max_sharpness=float(e["strong_blur_max_sharpness"]),
                   strong_flat_max_entropy=float(e["strong_flat_max_entropy_bits"]),
                   ev_steps=tuple(float(v) for v in e["ev_steps"]),
                   min_lift_p99=float(e["min_lum_p99_after_lift"]), denoise_h=float(e["denoise_h"]),
                   clahe_clip=float(e["clahe_clip"]), clahe_tiles=int(e["clahe_tiles"]),
                   unsharp_sigma=float(e["unsharp_sigma"]), unsharp_amount=float(e["unsharp_amount"]),
                   max_ita_shift_deg=float(e["max_ita_shift_deg"]),
                   min_skin_probability_after=float(e["min_skin_probability_after"]))


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

    @classmethod
    def from_dict(cls, d: dict, with_model: bool = True) -> "QualityPolicy":
        try:
            policy = cls(
                version=str(d["version"]),
                analysis_short_side=int(d["analysis_short_side"]["value"]),
                max_pixels=int(d["max_pixels"]["value"]),
                max_bytes=int(d["max_bytes"]["value"]),
                max_decode_bytes=int(d["max_decode_bytes"]["value"]),
                min_short_side=int(d["too_small"]["min_short_side"]),
                dark_max_p99=float(d["too_dark"]["max_lum_p99"]),
                bright_min_overexposed=float(d["too_bright"]["min_overexposed_fraction"]),
                blur_max_sharpness=float(d["blurry"]["max_sharpness"]),
                blur_short_side=int(d["blurry"]["judged_at_short_side"]),
                info_max_entropy=float(d["low_information"]["max_entropy_bits"]),
                relevance_model=str(d["no_skin"]["model"]),
                skin_min_fraction=float(d["no_skin"]["min_skin_fraction"]),
                skin_min_brightness=float(d["no_skin"]["min_brightness_to_judge"]),
                skin_dim_max_probability=float(d["no_skin"]["dim_max_probability"]),
                gray_max_channel_diff=float(d["grayscale"]["max_channel_diff"]),
                dup_radius=int(d["duplicates"]["radius"]),
                exact_only_for=tuple(d["duplicates"]["exact_only_for"]),
                suppressed_by={k: tuple(v) for k, v in d["suppressed_by"].items() if k != "why"},
                drift=DriftThresholds.from_dict(d["drift"]),
                enhance=EnhancePolicy.from_dict(d["enhance"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"invalid quality policy: missing or bad key {e}") from None
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
