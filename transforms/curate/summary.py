"""Run summary: counts, feature histograms and the skin-tone fairness table.

Summary is a mergeable accumulator (pure), wrapped in a CombineFn so Beam can
build it in parallel. Histograms use fixed bins so partial results merge.
"""
from __future__ import annotations

import math
from collections import Counter

import apache_beam as beam

from schemas.features import ITA_CATEGORIES
from schemas.reasons import DUPLICATE_REASONS, INPUT_REASONS, REASONS

# feature -> (low, high, bins, transform). Values outside clamp to the ends.
HISTOGRAMS = {
    "sharpness": (0.0, 0.5, 25, None),
    "lum_p99": (0.0, 1.0, 20, None),
    "overexposed_fraction": (0.0, 1.0, 20, None),
    "entropy": (0.0, 8.0, 16, None),
    "skin_probability": (0.0, 1.0, 20, None),
    "skin_fraction": (0.0, 1.0, 20, None),
    "brightness_mean": (0.0, 1.0, 20, None),
    "ita_deg": (-90.0, 90.0, 18, None),
    "underexposed_fraction": (0.0, 1.0, 10, None),
}
# Histogram series: a row rejected only as a duplicate has a keeper's
# features, so it is counted apart rather than blur the rejected series.
SERIES = ("accepted", "rejected", "duplicate")
TONE_KEYS = ("ita_category", "monk_estimate", "monk_group")
# Exposure shifts the tone estimate itself (an overexposed photo of anyone
# reads as light skin), so its rejections are tallied apart from the others.
EXPOSURE_REASONS = ("too_dark", "too_bright")


def _bin(value, low, high, bins, transform):
    if transform == "log10":
        value = math.log10(max(value, 1e-12))
    return min(bins - 1, max(0, int((value - low) / (high - low) * bins)))


class Summary:
    """Mergeable counts over feature rows."""

    def __init__(self):
        self.status = Counter()
        self.reasons = Counter()
        self.formats = Counter()
        self.scales = Counter()
        self.hist = {k: {series: [0] * v[2] for series in SERIES} for k, v in HISTOGRAMS.items()}
        # tone key -> group -> [images, rejected, quality-rejected, exposure-rejected]
        self.tones = {k: {} for k in TONE_KEYS}
        # curate --enhance: outcome -> images tried; monk_group -> images rescued
        self.enhance, self.rescued = Counter(), Counter()

    def add(self, row: dict) -> "Summary":
        self.status[row["status"]] += 1
        self.reasons.update(row["reasons"])
        self.formats[row.get("format") or "none"] += 1
        if row.get("decode_scale"):
            self.scales[str(row["decode_scale"])] += 1
        quality = [r for r in row["reasons"]
                   if r not in DUPLICATE_REASONS and r not in INPUT_REASONS]
        series = "accepted" if row["status"] == "accepted" else ("rejected" if quality else "duplicate")
        for k, spec in HISTOGRAMS.items():
            if row.get(k) is not None:
                self.hist[k][series][_bin(row[k], *spec)] += 1
        exposure = any(r in EXPOSURE_REASONS for r in quality)
        for k in TONE_KEYS:
            if row.get(k) is not None:
                cell = self.tones[k].setdefault(str(row[k]), [0, 0, 0, 0])
                cell[0] += 1
                cell[1] += row["status"] == "rejected"
                cell[2] += bool(quality) and not exposure
                cell[3] += exposure
        if row.get("enhance_outcome"):
            self.enhance[row["enhance_outcome"]] += 1
            if row.get("enhanced"):
                self.rescued[row.get("monk_group") or "none"] += 1
        return self

    def merge(self, other: "Summary") -> "Summary":
        for name in ("status", "reasons", "formats", "scales", "enhance", "rescued"):
            getattr(self, name).update(getattr(other, name))
        for k, by_series in self.hist.items():
            for series, counts in by_series.items():
                by_series[series] = [a + b for a, b in zip(counts, other.hist[k][series])]
        for k in TONE_KEYS:
            for group, cell in other.tones[k].items():
                mine = self.tones[k].setdefault(group, [0, 0, 0, 0])
                for i in range(4):
                    mine[i] += cell[i]
        return self

    def to_dict(self, matched: int, policy_version: str) -> dict:
        """The summary.json document; raises if the accounting does not balance."""
        accepted, rejected = self.status["accepted"], self.status["rejected"]
        if matched != accepted + rejected:
            raise RuntimeError(
                f"accounting mismatch: matched {matched} inputs but accepted {accepted} + "
                f"rejected {rejected} = {accepted + rejected}")
        fairness = {
            k: {g: {"images": n, "rejected": r, "rejected_quality": q, "rejected_exposure": e,
                    "rejection_rate": round(r / n, 4), "quality_rejection_rate": round(q / n, 4),
                    "exposure_rejection_rate": round(e / n, 4)}
                for g, (n, r, q, e) in sorted(groups.items(), key=lambda kv: _group_order(kv[0]))}
            for k, groups in self.tones.items()}
        return {
            "policy_version": policy_version,
            "matched": matched,
            "accepted": accepted,
            "rejected": rejected,
            "accounting_ok": True,
            "reasons": {r: self.reasons[r] for r in REASONS if self.reasons[r]},
            "formats": dict(sorted(self.formats.items())),
            "decode_scales": dict(sorted(self.scales.items())),
            "histograms": {k: {"low": s[0], "high": s[1], "transform": s[3],
                               "counts": [sum(c) for c in zip(*self.hist[k].values())], **self.hist[k]}
                           for k, s in HISTOGRAMS.items()},
            "fairness": fairness,
            "enhancement": {"outcomes": dict(sorted(self.enhance.items())),
                            "rescued_by_monk_group": dict(sorted(self.rescued.items()))},
        }


def _group_order(g: str):
    order = [*ITA_CATEGORIES, "medium"]
    return (0, int(g), "") if g.isdigit() else (1, order.index(g) if g in order else 99, g)


class SummarizeRows(beam.CombineFn):
    """CombineFn building a Summary over all feature rows."""

    def create_accumulator(self):
        return Summary()

    def add_input(self, acc, row):
        return acc.add(row)

    def merge_accumulators(self, accs):
        accs = iter(accs)
        first = next(accs)
        for a in accs:
            first.merge(a)
        return first

    def extract_output(self, acc):
        return acc
