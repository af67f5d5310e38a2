"""report.html: a self-contained page a person reads in a browser. Pure.

Charts are inline SVG and example thumbnails inline base64 JPEG (re-encoded,
so no EXIF), so the file can be mailed or opened from a bucket as is.
"""
from __future__ import annotations

import base64
import html

from schemas.reasons import REASONS

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:24px}
.ex img{width:96px;height:96px;object-fit:cover;margin:2px;border-radius:3px}.ok{color:#2a7}.bad{color:#c33}
.note{color:#666;font-size:.85em}"""


def bar_chart(title: str, labels: list[str], values: list[float], fmt="{:g}",
              width=520, bar_h=18, color="#4a7fb5") -> str:
    """Horizontal bar chart as an SVG string."""
    top = max(values) if values and max(values) > 0 else 1
    label_w, h = 130, 24 + bar_h * len(labels)
    parts = [f'<svg width="{width}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 22 + i * bar_h
        w = (width - label_w - 60) * v / top
        parts += [f'<text x="{label_w - 6}" y="{y + 13}" font-size="11" text-anchor="end">{html.escape(str(lab))}</text>',
                  f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="{color}"/>',
                  f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11">{fmt.format(v)}</text>']
    return "".join(parts) + "</svg>"


def histogram_chart(name: str, hist: dict) -> str:
    """Vertical histogram of one feature from summary['histograms']."""
    counts, lo, hi = hist["counts"], hist["low"], hist["high"]
    width, height, n = 340, 150, len(counts)
    top = max(counts) or 1
    bw = (width - 20) / n
    unit = " (log10)" if hist.get("transform") == "log10" else ""
    parts = [f'<svg width="{width}" height="{height + 36}" role="img" aria-label="{name}">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(name + unit)}</text>']
    for i, c in enumerate(counts):
        bh = height * c / top
        parts.append(f'<rect x="{10 + i * bw:.1f}" y="{20 + height - bh:.1f}" width="{bw - 1:.1f}" '
                     f'height="{bh:.1f}" fill="#6a9fd5"><title>{c}</title></rect>')
    parts += [f'<text x="10" y="{height + 34}" font-size="10">{lo:g}</text>',
              f'<text x="{width - 10}" y="{height + 34}" font-size="10" text-anchor="end">{hi:g}</text>']
    return "".join(parts) + "</svg>"


def _fairness_table(groups: dict, title: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(g)}</td><td>{c['images']}</td><td>{c['rejected']}</td>"
        f"<td>{100 * c['rejection_rate']:.1f}%</td><td>{100 * c['quality_rejection_rate']:.1f}%</td>"
        f"<td>{100 * c['exposure_rejection_rate']:.1f}%</td></tr>"
        for g, c in groups.items())
    return (f"<table><caption>{html.escape(title)}</caption><tr><th>group</th><th>images</th>"
            f"<th>rejected</th><th>all reasons</th><th>quality (not exposure)</th><th>exposure</th></tr>"
            f"{rows}</table>")


def render_report(summary: dict, examples: dict[str, list[tuple[str, bytes]]] | None = None,
                  title: str = "Curate report") -> str:
    """The whole page from summary.json's dict and {reason: [(uri, jpeg)]}."""
    s = summary
    reasons = [r for r in REASONS if s["reasons"].get(r)]
    fair = s["fairness"]
    monk = fair.get("monk_estimate", {})
    ita = fair.get("ita_category", {})
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p><b>{s['matched']}</b> images matched: <span class=ok><b>{s['accepted']}</b> accepted</span>, "
            f"<span class=bad><b>{s['rejected']}</b> rejected</span> "
            f"({100 * s['rejected'] / max(1, s['matched']):.1f}%). Policy {html.escape(s['policy_version'])}. "
            f"Accounting {'balances' if s['accounting_ok'] else 'DOES NOT balance'}.</p>",
            "<h2>Rejection reasons</h2>",
            bar_chart("images per reason", reasons, [s["reasons"][r] for r in reasons]) if reasons
            else "<p>No rejections.</p>",
            "<p class=note>" + "<br>".join(f"<b>{r}</b>: {html.escape(REASONS[r])}" for r in reasons) + "</p>",
            "<h2>Rejection rate by skin tone</h2>",
            "<p class=note>Tone is estimated from the pixels (ITA of the median skin colour), so it is "
            "only meaningful for images with skin. Quality rejections (blur, low information, no skin, "
            "size) should be flat across tones. Exposure rejections are shown apart: an overexposed photo "
            "of any skin estimates as light, an underexposed one as dark, so they pile up at the ends by "
            "construction. Duplicates and unreadable inputs are in neither.</p><div class=grid>",
            bar_chart("quality (not exposure) rejection rate by estimated Monk tone",
                      [f"Monk {g}" for g in monk],
                      [100 * c["quality_rejection_rate"] for c in monk.values()], fmt="{:.1f}%", color="#b5744a"),
            bar_chart("exposure rejection rate by estimated Monk tone", [f"Monk {g}" for g in monk],
                      [100 * c["exposure_rejection_rate"] for c in monk.values()], fmt="{:.1f}%", color="#8a8a8a"),
            bar_chart("quality (not exposure) rejection rate by ITA category", list(ita),
                      [100 * c["quality_rejection_rate"] for c in ita.values()], fmt="{:.1f}%", color="#b5744a"),
            "</div><div class=grid>",
            _fairness_table(monk, "by estimated Monk tone"), _fairness_table(ita, "by ITA category"),
            "</div><h2>Feature distributions</h2><div class=grid>",
            *(histogram_chart(k, h) for k, h in s["histograms"].items()), "</div>"]
    if examples:
        body.append("<h2>Examples</h2>")
        for reason in ["accepted"] + list(REASONS):
            items = examples.get(reason)
            if items:
                imgs = "".join(
                    f'<img title="{html.escape(uri)}" alt="{html.escape(reason)}" '
                    f'src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}">' for uri, jpeg in items)
                body.append(f"<div class=ex><b>{html.escape(reason)}</b><br>{imgs}</div>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
