"""report.html: a self-contained page a person reads in a browser. Pure.

Charts are inline SVG and thumbnails inline base64 JPEG (re-encoded, so no
EXIF): no script, no font or image from the network, so the file can be
mailed or opened from a bucket as is. The layout is a CSS grid that fills the
window and folds to one column on a phone.
"""
from __future__ import annotations

import base64
import html
import math
import posixpath

from schemas.examples import IMAGE_DEFAULTS
from schemas.features import FIELDS
from schemas.reasons import REASONS
from transforms.curate.stats import wilson_interval
from transforms.image.enhance import BEFORE_ENHANCE
from transforms.image.skin_crop import box_of, skin_square
from transforms.image.verdict import closest_call, explain, scope

_UNITS = {f.name: f.unit for f in FIELDS}
_UNITS["short_side"] = "px"
_SIGNS = {"<": "<", "<=": "≤", ">=": "≥", ">": ">", "=": "="}
ACCEPTED_COLOUR, REJECTED_COLOUR = "#2a9d5c", "#d0453b"

_CSS = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1800px;color:#222;line-height:1.35}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:.85em}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}caption{text-align:left;font-weight:bold;padding:4px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));gap:20px 28px}
.chart{width:100%;height:auto;display:block}
.scroll{overflow-x:auto;max-width:100%}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,330px),1fr));gap:14px}
.pair{border:1px solid #ddd;border-radius:6px;padding:8px}
.pair .two{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.pair .dist{font-size:.85em;margin-bottom:6px}
figure{margin:0;min-width:0}
figure img{width:96px;height:96px;object-fit:cover;border-radius:3px;display:block;background:#eee}
.thumb{position:relative;width:96px;height:96px}.thumb svg.crop{position:absolute;left:0;top:0;width:96px;height:96px;pointer-events:none}
figcaption{font-size:.78em;overflow-wrap:anywhere;margin-top:3px}
figcaption .name{font-family:ui-monospace,monospace}
.ok{color:#1e7d47}.bad{color:#b8322a}.note{color:#555;font-size:.85em}
.ci{color:#666;font-size:.85em;white-space:nowrap}
.ctitle{font-weight:bold;font-size:.85em;margin-bottom:4px}
@media (max-width:600px){body{padding:.5em .7em}td,th{padding:3px 4px}table{font-size:.8em}}"""


def fmt_value(v) -> str:
    """A feature value or threshold, short: 3 significant digits, ints as is."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
        return str(int(v))
    return f"{v:.3g}"


def _svg_open(width: int, height: int, label: str) -> str:
    return (f'<svg class=chart viewBox="0 0 {width} {height}" style="max-width:{width}px" '
            f'role="img" aria-label="{html.escape(label)}">')


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def bar_chart(title: str, labels: list[str], values: list[float], fmt="{:g}",
              width=440, bar_h=18, color="#4a7fb5", intervals=None) -> str:
    """Horizontal bar chart: an HTML title (it wraps on a phone) over an SVG;
    intervals [(lo, hi)] in the values' units are drawn as whiskers (the
    scale then reaches their top)."""
    top = max(values + [hi for _lo, hi in intervals or []], default=0) or 1
    label_w = 10 + 6.2 * max((len(str(lab)) for lab in labels), default=0)
    h = 4 + bar_h * len(labels)
    span = width - label_w - 50
    parts = [f'<div class=chartbox><div class=ctitle>{html.escape(title)}</div>', _svg_open(width, h, title)]
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 2 + i * bar_h
        w = span * v / top
        parts += [f'<text x="{label_w - 6:.1f}" y="{y + 13}" font-size="11" text-anchor="end">{html.escape(str(lab))}</text>',
                  f'<rect x="{label_w:.1f}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="{color}"/>']
        end = label_w + w
        if intervals:
            lo, hi = (label_w + span * x / top for x in intervals[i])
            parts.append(f'<path d="M{lo:.1f} {y + 9}H{hi:.1f}M{lo:.1f} {y + 5}v8M{hi:.1f} {y + 5}v8" '
                         f'stroke="#222" stroke-width="1" fill="none"/>')
            end = max(end, hi)
        parts.append(f'<text x="{end + 4:.1f}" y="{y + 13}" font-size="11">{fmt.format(v)}</text>')
    return "".join(parts) + "</svg></div>"


def histogram_chart(name: str, hist: dict, lines=()) -> str:
    """One feature's histogram from summary['histograms']: accepted and
    rejected overlaid on the same bins, axes with ticks, and each policy
    threshold in `lines` [(value, label)] drawn where it cuts the axis."""
    lo, hi, n = hist["low"], hist["high"], len(hist["counts"])
    log = hist.get("transform") == "log10"
    series = [("accepted", ACCEPTED_COLOUR, hist.get("accepted", hist["counts"])),
              ("rejected", REJECTED_COLOUR, hist.get("rejected", [0] * n))]
    W, H, left, right, top_m, bottom = 380, 232, 46, 12, 40, 44
    pw, ph = W - left - right, H - top_m - bottom
    ymax = max(max(c) for _s, _c, c in series) or 1
    yticks = [t for t in nice_ticks(0, ymax, 4) if t == int(t)] or [0]
    ytop = max(ymax, yticks[-1])

    def x_of(v):
        return left + pw * (v - lo) / (hi - lo)

    def y_of(c):
        return top_m + ph - ph * c / ytop

    unit = _UNITS.get(name, "")
    xlabel = f"{'log10 ' if log else ''}{name}" + (f" ({unit})" if unit else "")
    parts = [_svg_open(W, H, f"histogram of {name}: accepted and rejected"),
             f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(name)}</text>']
    lx = 0
    for label, colour, counts in series:
        parts.append(f'<rect x="{lx}" y="22" width="10" height="10" fill="{colour}" fill-opacity=".6"/>'
                     f'<text x="{lx + 14}" y="31" font-size="11">{label} ({sum(counts)})</text>')
        lx += 110
    bw = pw / n
    for label, colour, counts in series:
        for i, c in enumerate(counts):
            if c:
                parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{y_of(c):.1f}" width="{bw - 1:.1f}" '
                             f'height="{ph * c / ytop:.1f}" fill="{colour}" fill-opacity=".6">'
                             f'<title>{label}: {c}</title></rect>')
    # axes, ticks, labels
    parts.append(f'<path d="M{left} {top_m}V{top_m + ph}H{left + pw}" stroke="#444" fill="none"/>')
    for t in yticks:
        y = y_of(t)
        parts.append(f'<path d="M{left - 4} {y:.1f}H{left}" stroke="#444"/>'
                     f'<text x="{left - 6}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end">{int(t)}</text>')
    for t in nice_ticks(lo, hi, 5):
        x = x_of(t)
        parts.append(f'<path d="M{x:.1f} {top_m + ph}v4" stroke="#444"/>'
                     f'<text x="{x:.1f}" y="{top_m + ph + 15}" font-size="10" text-anchor="middle">{t:g}</text>')
    parts += [f'<text x="{left + pw / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>',
              f'<text transform="translate(11 {top_m + ph / 2}) rotate(-90)" font-size="11" '
              f'text-anchor="middle">images</text>']
    for i, (value, label) in enumerate(sorted(lines)):
        v = math.log10(max(value, 1e-12)) if log else value
        if lo <= v <= hi:
            x = x_of(v)
            anchor = "end" if x > left + pw * 0.6 else "start"
            dx = -3 if anchor == "end" else 3
            parts.append(f'<path class=threshold d="M{x:.1f} {top_m - 2}V{top_m + ph}" stroke="#111" '
                         f'stroke-width="1.5" stroke-dasharray="4 3"/>'
                         f'<text x="{x + dx:.1f}" y="{top_m + 9 + 12 * i}" font-size="10" '
                         f'text-anchor="{anchor}" paint-order="stroke" stroke="#fff" stroke-width="3">'
                         f'{html.escape(label)}</text>')
    return "".join(parts) + "</svg>"


def _pct(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f}%<br><span class=ci>{100 * lo:.1f}–{100 * hi:.1f}</span>" if n else "n/a"


def _fairness_table(groups: dict, title: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(g)}</td><td>{c['images']}</td><td>{_pct(c['rejected'], c['images'])}</td>"
        f"<td>{_pct(c['rejected_quality'], c['images'])}</td>"
        f"<td>{_pct(c['rejected_exposure'], c['images'])}</td></tr>"
        for g, c in groups.items())
    return (f"<div class=scroll><table><caption>{html.escape(title)}: rejection rate, "
            f"95% interval under it</caption><tr><th>group</th><th>n</th>"
            f"<th>all reasons</th><th>quality</th><th>exposure</th></tr>"
            f"{rows}</table></div>")


def _rate_chart(title: str, groups: dict, count_key: str, color: str, prefix: str = "") -> str:
    labels = [f"{prefix}{g} (n={c['images']})" for g, c in groups.items()]
    values = [100 * c[count_key] / c["images"] for c in groups.values()]
    intervals = [tuple(100 * x for x in wilson_interval(c[count_key], c["images"])) for c in groups.values()]
    return bar_chart(title, labels, values, fmt="{:.1f}%", color=color, intervals=intervals)


def example_entry(row: dict, tests) -> dict:
    """What a thumbnail's caption needs from a feature row (see caption_lines);
    tests are transforms.image.verdict.thresholds(policy)."""
    return {"uri": row["uri"], "reasons": list(row["reasons"]), "duplicate_of": row.get("duplicate_of"),
            "explained": explain(row, tests), "closest": None if row["reasons"] else closest_call(row, tests),
            **skin_crop_entry(row)}


def skin_crop_entry(row: dict) -> dict:
    """The main skin region and the square --crop skin would cut (at the
    default crop_fraction), in 0-1 image coordinates, for the thumbnail."""
    box = box_of(row)
    if box is None or not row.get("width") or not row.get("height"):
        return {}
    w, h = int(row["width"]), int(row["height"])
    top, left, side = skin_square(h, w, box, IMAGE_DEFAULTS["crop_fraction"])
    return {"size": (w, h), "skin_box": box, "crop_square": (left / w, top / h, (left + side) / w, (top + side) / h)}


def _crop_overlay(entry: dict) -> str:
    """An SVG laid over the thumbnail that crops as it does (object-fit cover =
    preserveAspectRatio slice): the skin region dashed, the skin crop solid."""
    w, h = entry["size"]
    scale = 96 / min(w, h)  # any frame of the photo's aspect: 96 px on the short side
    vw, vh = w * scale, h * scale

    def rect(box, style):
        x0, y0, x1, y1 = box
        return (f'<rect x="{x0 * vw:.1f}" y="{y0 * vh:.1f}" width="{(x1 - x0) * vw:.1f}" '
                f'height="{(y1 - y0) * vh:.1f}" fill="none" {style}/>')
    return (f'<svg class=crop viewBox="0 0 {vw:.1f} {vh:.1f}" preserveAspectRatio="xMidYMid slice" '
            f'aria-label="skin region dashed, skin crop solid">'
            + rect(entry["skin_box"], 'stroke="#ffd400" stroke-width="1.5" stroke-dasharray="3 2"')
            + rect(entry["crop_square"], 'stroke="#00c8ff" stroke-width="2"') + "</svg>")


def caption_lines(entry: dict) -> list[str]:
    """The lines under a thumbnail, as HTML: file name, reasons, and the
    feature values that decided them against their thresholds."""
    name = posixpath.basename(entry["uri"].rstrip("/")) or entry["uri"]
    lines = [f'<span class=name title="{html.escape(entry["uri"])}">{html.escape(name)}</span>']
    reasons = entry.get("reasons") or []
    lines.append(f"<b class=bad>{html.escape(', '.join(reasons))}</b>" if reasons else "<b class=ok>accepted</b>")
    for _reason, feature, value, op, limit in entry.get("explained") or []:
        lines.append(html.escape(f"{feature} {fmt_value(value)} {_SIGNS[op]} {fmt_value(limit)}"))
    if not reasons and entry.get("closest"):
        feature, value, op, limit = entry["closest"]
        lines.append(html.escape(f"closest: {feature} {fmt_value(value)} {_SIGNS[op]} {fmt_value(limit)}"))
    if entry.get("duplicate_of"):
        keeper = posixpath.basename(entry["duplicate_of"])
        lines.append(f'duplicate of <span class=name title="{html.escape(entry["duplicate_of"])}">'
                     f'{html.escape(keeper)}</span>')
    return lines


def _figure(entry: dict, thumbs: dict[str, bytes]) -> str:
    jpeg = thumbs.get(entry["uri"])
    alt = html.escape(", ".join(entry.get("reasons") or ["accepted"]))
    img = (f'<img alt="{alt}" width=96 height=96 src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}">'
           if jpeg else "")
    if jpeg and entry.get("skin_box"):
        img = f"<div class=thumb>{img}{_crop_overlay(entry)}</div>"
    return f"<figure>{img}<figcaption>{'<br>'.join(caption_lines(entry))}</figcaption></figure>"


def _pair(pair: dict, thumbs: dict[str, bytes]) -> str:
    dist = pair["distance"]
    what = ("byte-identical (exact)" if dist == "exact"
            else f"pHash distance <b>{dist}</b> bit{'s' if dist != 1 else ''}" if dist is not None
            else "distance unknown")
    keeper = dict(pair["keeper"], duplicate_of=None)
    dup = dict(pair["duplicate"], duplicate_of=None)
    return (f"<div class=pair><div class=dist>{html.escape(pair['kind'])}: {what}</div><div class=two>"
            f"<div><div class=note>kept</div>{_figure(keeper, thumbs)}</div>"
            f"<div><div class=note>rejected</div>{_figure(dup, thumbs)}</div></div></div>")


def _enhanced_pair(row: dict, thumbs: dict[str, bytes]) -> str:
    """One rescued image: before and after thumbnails, the reasons it had,
    the recipe and the ITA shift."""
    name = posixpath.basename(row["uri"].rstrip("/")) or row["uri"]
    shift = row.get("enhance_ita_shift")

    def img(key, alt):
        jpeg = thumbs.get(key)
        return (f'<figure><img alt="{alt}" width=96 height=96 src="data:image/jpeg;base64,'
                f'{base64.b64encode(jpeg).decode()}"></figure>' if jpeg else "<figure></figure>")
    return (f"<div class=pair><div class=dist><span class=name title=\"{html.escape(row['uri'])}\">"
            f"{html.escape(name)}</span>: was <b class=bad>{html.escape(', '.join(row.get('reasons_before_enhance') or []))}"
            f"</b>, now <b class={'ok' if row['status'] == 'accepted' else 'bad'}>"
            f"{html.escape(', '.join(row['reasons']) or 'accepted')}</b>"
            f"{'' if shift is None else f'; ITA moved {shift:+.1f}°'}</div><div class=two>"
            f"<div><div class=note>before</div>{img(row['uri'] + BEFORE_ENHANCE, 'before enhancement')}</div>"
            f"<div><div class=note>after</div>{img(row['uri'], 'after enhancement')}</div></div>"
            f"<div class=note>{html.escape(row.get('enhance_recipe') or '')}</div></div>")


def threshold_lines(tests) -> dict[str, list[tuple[float, str]]]:
    """feature -> [(threshold, label)] from transforms.image.verdict.thresholds()."""
    out: dict[str, list] = {}
    for reason, feature, op, limit, applies_to in tests:
        where = scope(applies_to) if feature == "skin_probability" else ""
        label = f"{reason}{f' ({where})' if where else ''} {_SIGNS[op]} {fmt_value(limit)}"
        out.setdefault(feature, []).append((limit, label))
    return out


def drift_section(alerts: dict) -> str:
    """The night against the nights before it: status, alerts, and a trend
    table (uploads, rejection rate and a few reasons' rates per night, oldest
    first) from alerts.json's document (transforms/curate/drift.py)."""
    rows = alerts.get("trend", [])
    items = "".join(f"<li class=bad>{html.escape(a['message'])}</li>" for a in alerts.get("alerts", []))
    out = ("<h2 id=drift>Drift against earlier nights</h2>"
           f"<p>{html.escape(alerts.get('status', ''))}.</p>" + (f"<ul>{items}</ul>" if items else ""))
    if len(rows) < 2:  # no earlier night: nothing to trend
        return out
    flagged = [a["name"] for a in alerts.get("alerts", []) if a["kind"] == "rejection_rate" and a["name"] != "all"]
    seen = {r for row in rows for r in row.get("reasons", {})}
    # At most 2 reasons, so the table fits a phone: the alerting ones, then the commonest.
    common = sorted(seen - set(flagged), key=lambda r: (-max(row["reasons"].get(r, 0) for row in rows), r))
    reasons = (flagged + common)[:2]
    head = "".join(f"<th>{html.escape(h).replace('_', '_<wbr>')}</th>"
                   for h in ["night", "uploads", "rejected", *reasons, "alerts"])
    body = []
    for i, row in enumerate(rows):
        tonight = i == len(rows) - 1
        cells = [html.escape(str(row["date"] or "this run")), str(row["matched"]),
                 f"{100 * row['rejection_rate']:.1f}%" if row["rejection_rate"] is not None else "n/a",
                 *(f"{100 * row['reasons'].get(r, 0):.1f}%" for r in reasons),
                 "" if row.get("alerts") is None else str(row["alerts"])]
        style = " style='font-weight:bold'" if tonight else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (out + "<div class=scroll><table><caption>trend over nights, this run last (rates are of "
                  f"uploads)</caption><tr>{head}</tr>{''.join(body)}</table></div>"
            + "<p class=note>Compared: " + "; ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}"
                                                    for k, v in alerts.get("compared", {}).items()) + ".</p>")


def render_report(summary: dict, examples: dict[str, list[dict]] | None = None,
                  thumbs: dict[str, bytes] | None = None, pairs: list[dict] | None = None,
                  tests=(), title: str = "Curate report", drift: dict | None = None,
                  enhanced: list[dict] | None = None) -> str:
    """The whole page.

    summary: summary.json's dict. examples: {label: [entry]} where an entry
    is {uri, reasons, explained, closest, duplicate_of} (see caption_lines).
    thumbs: {uri: jpeg}. pairs: [{kind, distance ("exact" or bits), keeper,
    duplicate}] with entries as above. tests: transforms.image.verdict.thresholds().
    drift: alerts.json's document, shown with the trend over nights.
    enhanced: feature rows of images curate --enhance rescued, shown before and
    after (thumbs keyed uri + BEFORE_ENHANCE and uri).
    """
    s, thumbs = summary, thumbs or {}
    reasons = [r for r in REASONS if s["reasons"].get(r)]
    fair = s["fairness"]
    monk = {g: c for g, c in fair.get("monk_estimate", {}).items() if c["images"]}
    ita = {g: c for g, c in fair.get("ita_category", {}).items() if c["images"]}
    lines = threshold_lines(tests)
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p><b>{s['matched']}</b> images matched: <span class=ok><b>{s['accepted']}</b> accepted</span>, "
            f"<span class=bad><b>{s['rejected']}</b> rejected</span> "
            f"({100 * s['rejected'] / max(1, s['matched']):.1f}%). Policy {html.escape(s['policy_version'])}. "
            f"Accounting {'balances' if s['accounting_ok'] else 'DOES NOT balance'}.</p>",
            "<h2>Rejection reasons</h2>",
            bar_chart("images per reason", reasons, [s["reasons"][r] for r in reasons]) if reasons
            else "<p>No rejections.</p>",
            "<p class=note>" + "<br>".join(f"<b>{r}</b>: {html.escape(REASONS[r])}" for r in reasons) + "</p>"]
    if drift:
        body.insert(2, drift_section(drift))
    if pairs:
        body += ["<h2 id=duplicates>Duplicates: kept and rejected side by side</h2>",
                 "<p class=note>The distance is the smallest Hamming distance between any of the two images' "
                 "pHashes (full frame and centre crops); byte-identical files are exact. The kept member has "
                 "no quality rejection of its own and the most pixels, then the most bytes.</p>",
                 "<div class=pairs id=gallery>", *(_pair(p, thumbs) for p in pairs), "</div>"]
    outcomes = s.get("enhancement", {}).get("outcomes")
    if outcomes or enhanced:
        body += ["<h2 id=enhanced>Enhanced: before and after</h2>",
                 "<p class=note>With --enhance, photos rejected only for a fixable reason (too dark, low "
                 "information, blurry; not beyond the policy's strong bounds) get the policy's recipe and are "
                 "judged again; accepted only if every test passes and the skin's ITA moved within the policy's "
                 "limit. Outcomes: " + html.escape(", ".join(f"{k} {v}" for k, v in (outcomes or {}).items()))
                 + ".</p>", "<div class=pairs>", *(_enhanced_pair(r, thumbs) for r in enhanced or []), "</div>"]
    body += ["<h2>Feature distributions</h2>",
             "<p class=note>Accepted and rejected images overlaid on the same bins (images rejected only as "
             "duplicates are left out: they look like what they duplicate). Dashed lines: the policy's "
             "thresholds.</p><div class=grid id=histograms>",
             *(histogram_chart(k, h, lines.get(k, ())) for k, h in s["histograms"].items()), "</div>",
             "<h2>Rejection rate by skin tone</h2>",
             "<p class=note>Each rate with its group size n and a 95% Wilson interval (whiskers; under each rate in "
             "the tables): a small group's rate is uncertain. Tone is estimated from the pixels "
             "(ITA of the median skin colour), so it is only meaningful for images with skin. Quality "
             "rejections (blur, low information, no skin, size) should be flat across tones. Exposure "
             "rejections are shown apart: an overexposed photo of any skin estimates as light, an "
             "underexposed one as dark, so they pile up at the ends by construction. Duplicates and "
             "unreadable inputs are in neither.</p><div class=grid>",
             _rate_chart("quality (not exposure) rejection rate by estimated Monk tone", monk,
                         "rejected_quality", "#b5744a", "Monk "),
             _rate_chart("exposure rejection rate by estimated Monk tone", monk, "rejected_exposure",
                         "#8a8a8a", "Monk "),
             _rate_chart("quality (not exposure) rejection rate by ITA category", ita, "rejected_quality",
                         "#b5744a"),
             "</div><div class=grid>",
             _fairness_table(monk, "by estimated Monk tone"), _fairness_table(ita, "by ITA category"), "</div>"]
    if examples:
        body.append("<h2>Examples</h2>")
        for label in ["accepted"] + list(REASONS):
            items = examples.get(label)
            if items:
                body.append(f"<h3>{html.escape(label)}</h3><div class=cards>"
                            + "".join(_figure(e, thumbs) for e in items) + "</div>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f'<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>")

