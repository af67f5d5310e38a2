"""Drift: one night's summary.json against the nights before it (alerts.json).

A nightly curate run writes OUT/dt=YYYY-MM-DD/. Its summary is compared with
the complete (_SUCCESS) sibling partitions of earlier dates, the newest
`window` of them (the baseline), on four things a broken camera, a client bug
or an upstream outage moves:

- rejection rate per reason (and overall): alert when the night's rate is
  further from the baseline nights' median rate than max_rate_change, or than
  rate_z binomial standard errors of that median at the night's size,
  whichever is larger (a small night's rates are noisy);
- each feature histogram of the summary (its fixed bins, all images): PSI,
  the population stability index sum_i (p_i - q_i) ln(p_i / q_i), of the
  night's bin proportions p against the baseline's q (per bin the median of
  the nights' proportions, renormalised: one odd night in the window does
  not move it). Zero bins are smoothed by adding 0.5 to every count
  (Jeffreys). Alert when PSI > max_feature_psi plus the PSI two samples of
  the same distribution show by chance, about (k - 1)(1/n + 1/m) for k
  occupied bins, n images tonight and m in the baseline nights together
  (PSI is a symmetrised chi-square divergence);
- the tone mix (images per ITA category, the fairness table): PSI as above
  against max_tone_psi;
- upload volume: matched tonight over the baseline nights' median; alert
  outside [1 / max_volume_ratio, max_volume_ratio].

With fewer than min_baseline_nights baseline nights nothing is judged and
alerts.json says "not enough history". Pure functions, apart from
find_baseline and read_baseline which list and read the sibling partitions.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
import re
import statistics

from schemas.features import ALERTS_FILE, ITA_CATEGORIES, SUMMARY_FILE
from schemas.reasons import REASONS
from transforms.io.run_lock import MARKER

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
SMOOTHING = 0.5  # added to every bin count before proportions (Jeffreys)
TONE_KEY = "ita_category"

COMPARED = {
    "rejection_rate": "rejected / matched per reason and overall ('all'), against the baseline nights' median",
    "histograms": "PSI of each summary histogram (fixed bins, all images) against the baseline's median bin shares",
    "tone_mix": "PSI of images per ITA category (summary fairness table) against the baseline's median shares",
    "volume": "matched tonight / the baseline nights' median matched",
}


def partition_date(output: str) -> str | None:
    """YYYY-MM-DD when the output path's last part is dt=YYYY-MM-DD (a real date), else None."""
    m = _PARTITION.match(posixpath.basename(output.rstrip("/")))
    if not m:
        return None
    try:
        dt.date.fromisoformat(m.group(1))
    except ValueError:
        return None
    return m.group(1)


def _join(parent: str, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(parent, *parts)


def find_baseline(output: str, window: int) -> list[tuple[str, str]]:
    """[(date, folder)] of the complete sibling partitions dated before
    output's, newest `window` of them, oldest first. [] if output is no dt= partition."""
    from apache_beam.io.filesystems import FileSystems
    date = partition_date(output)
    if date is None or window <= 0:
        return []
    parent = posixpath.dirname(output.rstrip("/"))
    found = FileSystems.match([_join(parent, "dt=*", MARKER)])[0].metadata_list
    earlier = []
    for m in found:
        folder = posixpath.dirname(m.path)
        d = partition_date(folder)
        if d is not None and d < date:
            earlier.append((d, folder))
    return sorted(earlier)[-window:]


def _read_json(path: str):
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as f:
        return json.loads(f.read())


def read_baseline(partitions: list[tuple[str, str]]) -> tuple[list[tuple[str, dict]], dict[str, int]]:
    """([(date, summary.json's dict)], {date: alerts that night raised}) of the
    partitions; one with no readable summary is left out (an older layout, a
    damaged file: not a baseline night), one without alerts.json has no count."""
    nights, alerts = [], {}
    for date, folder in partitions:
        try:
            nights.append((date, _read_json(_join(folder, SUMMARY_FILE))))
        except Exception:
            continue
        try:
            alerts[date] = len(_read_json(_join(folder, ALERTS_FILE))["alerts"])
        except Exception:
            pass
    return nights, alerts


# ---- statistics (pure) ----------------------------------------------------

def shares(counts: list[int]) -> list[float]:
    """Bin proportions with SMOOTHING added to every count."""
    total = sum(counts) + SMOOTHING * len(counts)
    return [(c + SMOOTHING) / total for c in counts]


def psi(p: list[float], q: list[float]) -> float:
    """Population stability index of proportions p against q (both > 0, same bins)."""
    if len(p) != len(q):
        raise ValueError(f"PSI needs the same bins, got {len(p)} and {len(q)}")
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q))


def median_shares(nights: list[list[int]]) -> list[float]:
    """Per bin the median of the nights' smoothed proportions, renormalised."""
    per_night = [shares(c) for c in nights]
    med = [statistics.median(col) for col in zip(*per_night)]
    total = sum(med)
    return [m / total for m in med]


def psi_noise(current: list[int], nights: list[list[int]]) -> float:
    """The PSI two samples of one distribution show by chance, about
    (k - 1)(1/n + 1/m): k bins occupied tonight or on any baseline night,
    n images tonight, m on the baseline nights together."""
    k = sum(1 for i, c in enumerate(current) if c or any(n[i] for n in nights))
    n, m = sum(current), sum(sum(x) for x in nights)
    if k < 2 or not n or not m:
        return 0.0
    return (k - 1) * (1 / n + 1 / m)


def distribution_check(kind: str, name: str, current: list[int], nights: list[list[int]],
                       max_psi: float) -> dict | None:
    """A PSI check of counts against the baseline nights' counts (None if either side is empty)."""
    nights = [c for c in nights if sum(c)]
    if not sum(current) or not nights:
        return None
    value = psi(shares(current), median_shares(nights))
    limit = max_psi + psi_noise(current, nights)
    return {"kind": kind, "name": name, "statistic": "psi", "value": round(value, 4),
            "threshold": round(limit, 4), "alert": value > limit, "images": sum(current)}


def rate_check(name: str, count: int, matched: int, base_rates: list[float], max_change: float,
               z: float) -> dict:
    """Rejection rate count/matched against the median of the baseline nights' rates."""
    rate, base = count / matched, statistics.median(base_rates)
    limit = max(max_change, z * math.sqrt(base * (1 - base) / matched))
    return {"kind": "rejection_rate", "name": name, "statistic": "rate", "value": round(rate, 4),
            "baseline": round(base, 4), "threshold": round(limit, 4),
            "alert": abs(rate - base) > limit, "direction": "up" if rate > base else "down"}


def volume_check(matched: int, base_matched: list[int], max_ratio: float) -> dict:
    base = statistics.median(base_matched)
    ratio = matched / base if base else (math.inf if matched else 1.0)
    return {"kind": "volume", "name": "matched", "statistic": "ratio", "value": matched,
            "baseline": base, "ratio": round(ratio, 4) if math.isfinite(ratio) else None,
            "threshold": max_ratio, "alert": not (1 / max_ratio <= ratio <= max_ratio)}


def _tone_counts(summary: dict) -> list[int]:
    groups = summary.get("fairness", {}).get(TONE_KEY, {})
    return [int(groups.get(g, {}).get("images", 0)) for g in ITA_CATEGORIES]


def _rates(summary: dict) -> dict[str, float]:
    n = summary.get("matched") or 0
    if not n:
        return {}
    out = {r: c / n for r, c in summary.get("reasons", {}).items()}
    out["all"] = summary.get("rejected", 0) / n
    return out


def _message(c: dict) -> str:
    if c["kind"] == "rejection_rate":
        return (f"{c['name']} rejection rate {100 * c['value']:.1f}% vs {100 * c['baseline']:.1f}% "
                f"on the baseline nights (allowed +/-{100 * c['threshold']:.1f} points)")
    if c["kind"] == "volume":
        return (f"{c['value']} uploads vs a median of {c['baseline']:g} on the baseline nights "
                f"(ratio {c['ratio'] if c['ratio'] is not None else 'inf'}, allowed "
                f"{1 / c['threshold']:.2g}-{c['threshold']:g})")
    what = "tone mix (ITA category)" if c["kind"] == "tone_mix" else f"{c['name']} distribution"
    return f"{what} moved: PSI {c['value']:.3f} > {c['threshold']:.3f}"


def trend_row(date: str | None, summary: dict, alerts: int | None = None) -> dict:
    """One night of the report's trend table."""
    n = summary.get("matched") or 0
    return {"date": date, "matched": n, "rejected": summary.get("rejected", 0),
            "rejection_rate": round(summary.get("rejected", 0) / n, 4) if n else None,
            "reasons": {r: round(c / n, 4) for r, c in summary.get("reasons", {}).items()} if n else {},
            "alerts": alerts}


def compare(summary: dict, baseline: list[tuple[str, dict]], thresholds, date: str | None,
            window: int, past_alerts: dict[str, int] | None = None) -> dict:
    """alerts.json's document: what was compared, against which nights, and the alerts.

    summary: tonight's summary.json dict; baseline: [(date, summary)] oldest
    first; thresholds: schemas.policy.DriftThresholds; past_alerts: {date:
    alerts raised that night} for the trend."""
    past_alerts = past_alerts or {}
    t = thresholds
    doc = {"partition": date, "window_nights": window, "min_baseline_nights": t.min_baseline_nights,
           "baseline_dates": [d for d, _ in baseline], "compared": COMPARED,
           "thresholds": {"max_rate_change": t.max_rate_change, "rate_z": t.rate_z,
                          "max_feature_psi": t.max_feature_psi, "max_tone_psi": t.max_tone_psi,
                          "max_volume_ratio": t.max_volume_ratio},
           "checks": [], "alerts": [],
           "trend": [trend_row(d, s, past_alerts.get(d)) for d, s in baseline] + [trend_row(date, summary)]}
    if date is None:
        doc["status"] = "not a dated partition (the output is not .../dt=YYYY-MM-DD): nothing to compare with"
        return doc
    if len(baseline) < t.min_baseline_nights:
        doc["status"] = (f"not enough history: {len(baseline)} complete earlier night(s), "
                         f"{t.min_baseline_nights} needed")
        return doc
    nights = [s for _, s in baseline]
    checks = [volume_check(summary.get("matched", 0), [s.get("matched", 0) for s in nights], t.max_volume_ratio)]
    n = summary.get("matched") or 0
    if n:
        tonight, before = _rates(summary), [_rates(s) for s in nights]
        before = [b for b in before if b]  # nights with no uploads have no rates
        names = sorted(set(tonight) | {r for b in before for r in b},
                       key=lambda r: (r != "all", list(REASONS).index(r) if r in REASONS else 99, r))
        if before:
            checks += [rate_check(r, round(tonight.get(r, 0) * n), n, [b.get(r, 0.0) for b in before],
                                  t.max_rate_change, t.rate_z) for r in names]
    for name, hist in summary.get("histograms", {}).items():
        past = [s["histograms"][name]["counts"] for s in nights
                if name in s.get("histograms", {}) and len(s["histograms"][name]["counts"]) == len(hist["counts"])]
        c = distribution_check("histogram", name, hist["counts"], past, t.max_feature_psi)
        if c:
            checks.append(c)
    c = distribution_check("tone_mix", TONE_KEY, _tone_counts(summary), [_tone_counts(s) for s in nights],
                           t.max_tone_psi)
    if c:
        checks.append(c)
    doc["checks"] = checks
    # The telling alerts first: a reason's rate, a feature, the tone mix, the volume; the overall rate last.
    order = {"rejection_rate": 0, "histogram": 1, "tone_mix": 2, "volume": 3}
    flagged = sorted((c for c in checks if c["alert"]), key=lambda c: (c["name"] == "all", order[c["kind"]]))
    doc["alerts"] = [dict(c, message=_message(c)) for c in flagged]
    doc["trend"][-1]["alerts"] = len(doc["alerts"])
    doc["status"] = f"compared with {len(baseline)} earlier night(s): {len(doc['alerts'])} alert(s)"
    return doc
