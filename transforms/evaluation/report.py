"""evaluate's metrics.json (schemas/metrics.py) and report.html. Pure.

slice_inputs() keys an example by every slice it belongs to; the job combines
those with evaluation_combine.SliceMetricsFn per slice and build_document()
turns the slices' figures into the metrics document (evaluate_set() does the
same in one process); render_html() turns it into a self-contained page.
"""
from __future__ import annotations

import html
from collections import defaultdict

from schemas import metrics as M
from schemas.features import MONK_GROUPS
from transforms.evaluation import combine as EC
from transforms.evaluation import metrics as EM
from transforms.evaluation.examples import FAMILIES

ROLE_NAMES = {"a": "model", "b": "compare"}
# Order of values within a family in the report (others follow alphabetically).
VALUE_ORDER = {"monk_group": MONK_GROUPS, "lighting": ("well_lit", "poor_lighting")}


def _value_key(family: str, value: str):
    order = VALUE_ORDER.get(family, ())
    return (order.index(value) if value in order else len(order), value)


def slice_inputs(key: str, entry: dict, roles) -> list:
    """((family, value), (key, label_id, source, {role: probs})) for each slice
    the example belongs to; none for an example whose class train never had."""
    if entry["label_id"] < 0:
        return []
    probs = {r: entry[r] for r in roles}
    return [((family, value), (key, entry["label_id"], source, probs))
            for family, value, source in entry["slices"]]


def slice_metrics_fn(settings: dict, models: dict) -> EC.SliceMetricsFn:
    roles = [r for r in ("model", "compare") if r in models]
    return EC.SliceMetricsFn(roles, settings["vocabulary"], settings["bins"], settings["resamples"], settings["seed"])


def evaluate_set(by_key: dict, settings: dict, models: dict) -> dict:
    """The metrics document from every example in memory (the job combines the
    same SliceMetricsFn across workers instead). by_key: {key: {"label_id",
    "slices", ROLE: probs}}; settings: split, tfrecords, vocabulary, resamples,
    seed, min_slice_n, bins, evaluated_at; models: {ROLE: {"uri", "version", ...}}."""
    roles = [r for r in ("model", "compare") if r in models]
    grouped: dict = defaultdict(list)
    for k in sorted(by_key):
        for sk, element in slice_inputs(k, by_key[k], roles):
            grouped[sk].append(element)
    fn = slice_metrics_fn(settings, models)
    results = {sk: EC.combine_locally(fn, els) for sk, els in grouped.items()}
    keys = [k for k, e in by_key.items() if e["label_id"] >= 0]
    return build_document(results, keys, len(by_key), settings, models)


def build_document(results: dict, keys, in_split: int, settings: dict, models: dict) -> dict:
    """The metrics document from SliceMetricsFn's output per (family, value) and
    the evaluated example keys (for the fingerprint)."""
    vocabulary = settings["vocabulary"]
    roles = [r for r in ("model", "compare") if r in models]
    slices = []
    for family, value in sorted(results, key=lambda fv: (FAMILIES.index(fv[0]), _value_key(*fv))):
        res = results[(family, value)]
        point = res["point"]
        boot = res["boot"]
        entry = {"family": family, "value": value, "n": int(res["n"]),
                 "below_min_n": bool(res["n"] < settings["min_slice_n"]),
                 "metrics": {r: EM.with_intervals(point[r], boot[r]) for r in roles}}
        if res["sources"]:
            entry["sources"] = dict(sorted(res["sources"].items()))
        if len(roles) == 2:
            diff = EM.paired_differences(point["model"], point["compare"], boot["model"], boot["compare"])
            for d in diff.values():
                # A few examples give degenerate intervals ([1, 1] from n = 1):
                # a small slice's difference is shown but never called significant.
                if entry["below_min_n"]:
                    d["significant"], d["better"] = False, None
                d["better"] = ROLE_NAMES.get(d["better"])
            entry["difference"] = diff
        slices.append(entry)
    keys = list(keys)
    overall = results.get(("all", "all"))
    doc = {
        "schema_version": M.SCHEMA_VERSION,
        "split": settings["split"], "tfrecords": settings["tfrecords"],
        "fingerprint": EM.fingerprint(keys),
        "examples": {"in_split": in_split, "evaluated": len(keys),
                     "skipped_unknown_label": in_split - len(keys)},
        "label_vocabulary": vocabulary,
        "models": {r: {"uri": models[r]["uri"], "version": models[r]["version"]} for r in roles},
        "bootstrap": {"resamples": settings["resamples"], "seed": settings["seed"], "level": 0.95,
                      "method": "percentile; Poisson(1) weights per example seeded by (seed, key), "
                                "shared by both models (paired)"},
        "calibration_bins": settings["bins"], "min_slice_n": settings["min_slice_n"],
        "overall": {r: overall["overall"][r] for r in roles} if overall else {},
        "slices": slices,
        "evaluated_at": settings.get("evaluated_at"),
    }
    doc["verdict"] = verdict(doc)
    return doc


def _fmt(x, signed=False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(ci, signed=False) -> str:
    return "[n/a]" if not ci else f"[{_fmt(ci[0], signed)}, {_fmt(ci[1], signed)}]"


def verdict(doc: dict) -> str:
    """One line: the model's headline figures, or with a comparison which model
    is better on what and where the difference is not significant."""
    overall = next(s for s in doc["slices"] if s["family"] == "all")
    n = doc["examples"]["evaluated"]
    models = doc["models"]
    if "difference" not in overall:
        m = overall["metrics"]["model"]
        figs = ", ".join(f"{k} {_fmt(m[k]['value'])} {_ci(m[k]['ci95'])}"
                         for k in ("accuracy", "macro_f1", "ece"))
        return f"model {models['model']['version']} on {n} {doc['split']} examples: {figs}"
    diff = overall["difference"]
    said = {"model": [], "compare": []}
    flat = []
    for k in EM.HEADLINE:
        d = diff[k]
        if d["better"]:
            said[d["better"]].append(f"{k} {_fmt(d['value'], True)} {_ci(d['ci95'], True)}")
        else:
            flat.append(k)
    a, b = models["model"]["version"], models["compare"]["version"]
    parts = []
    if said["model"]:
        parts.append(f"model {a} is better on " + ", ".join(said["model"]))
    if said["compare"]:
        parts.append(f"compare {b} is better on " + ", ".join(said["compare"]) + " (model - compare)")
    if flat:
        parts.append("no significant difference on " + ", ".join(flat))
    return f"{a} vs {b} on {n} {doc['split']} examples: " + "; ".join(parts)


def compare_reports(a: dict, b: dict) -> list[str]:
    """Lines of headline differences a - b of two metrics documents (point values
    only: intervals need the examples, i.e. one evaluate run with both models).
    Raises schemas.metrics.NotComparable for different example sets."""
    M.comparable(a, b)
    ha, hb = a["overall"]["model"]["headline"], b["overall"]["model"]["headline"]
    va, vb = a["models"]["model"]["version"], b["models"]["model"]["version"]
    lines = [f"{va} - {vb} on the same {a['examples']['evaluated']} examples (fingerprint {a['fingerprint'][:12]}):"]
    for k in EM.HEADLINE:
        if ha[k] is None or hb[k] is None:
            lines.append(f"  {k}: n/a")
        else:
            lines.append(f"  {k}: {ha[k]:.3f} - {hb[k]:.3f} = {ha[k] - hb[k]:+.3f}")
    return lines


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}.small{color:#999}.sig{font-weight:bold}
.note{color:#666;font-size:.85em}"""


def _cell(m: dict, k: str) -> str:
    return f"{_fmt(m[k]['value'])} <span class=note>{_ci(m[k]['ci95'])}</span>"


COLOURS = {"model": "#4a7fb5", "compare": "#e08a3c"}


def slice_bars(doc: dict, figure: str = "accuracy", width: int = 560) -> str:
    """SVG: the figure per slice as bars with their 95% interval as whiskers
    (one bar per model; slices below min n in grey)."""
    roles = [r for r in ("model", "compare") if r in doc["models"]]  # metrics.json sorts keys
    bar_h, label_w = 9, 190
    rows = doc["slices"]
    row_h = bar_h * len(roles) + 6
    h = 30 + row_h * len(rows)
    scale = width - label_w - 20
    parts = [f'<svg width="{width}" height="{h}" role="img" aria-label="{figure} by slice">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{figure} by slice, 95% interval</text>']
    for t in (0, 0.5, 1):
        x = label_w + scale * t
        parts.append(f'<line x1="{x}" y1="20" x2="{x}" y2="{h}" stroke="#ddd"/>'
                     f'<text x="{x}" y="{h}" font-size="9" text-anchor="middle" dy="-1">{t:g}</text>')
    for i, sl in enumerate(rows):
        y = 24 + i * row_h
        grey = sl["below_min_n"]
        fill = ' fill="#999"' if grey else ""
        parts.append(f'<text x="{label_w - 6}" y="{y + row_h / 2 + 2}" font-size="10" text-anchor="end"{fill}>'
                     f'{html.escape(sl["family"])}={html.escape(sl["value"])} (n={sl["n"]})</text>')
        for j, role in enumerate(roles):
            fig = sl["metrics"][role][figure]
            if fig["value"] is None:
                continue
            yy = y + j * bar_h
            colour = "#bbb" if grey else COLOURS[role]
            parts.append(f'<rect x="{label_w}" y="{yy}" width="{scale * fig["value"]:.1f}" height="{bar_h - 2}" fill="{colour}"/>')
            if fig["ci95"]:
                lo, hi = (label_w + scale * v for v in fig["ci95"])
                mid = yy + (bar_h - 2) / 2
                parts.append(f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" stroke="#222"/>'
                             f'<line x1="{lo:.1f}" y1="{mid - 3}" x2="{lo:.1f}" y2="{mid + 3}" stroke="#222"/>'
                             f'<line x1="{hi:.1f}" y1="{mid - 3}" x2="{hi:.1f}" y2="{mid + 3}" stroke="#222"/>')
    return "".join(parts) + "</svg>"


def reliability_diagram(reliability: list[dict], role: str, size: int = 240) -> str:
    """SVG: accuracy against confidence per bin (bars), the diagonal is perfect calibration."""
    pad = 28
    inner = size - 2 * pad
    parts = [f'<svg width="{size}" height="{size}" role="img" aria-label="reliability diagram">',
             f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#ccc"/>',
             f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" stroke="#999" stroke-dasharray="4 3"/>',
             f'<text x="{size / 2}" y="{size - 6}" font-size="10" text-anchor="middle">confidence</text>',
             f'<text x="10" y="{size / 2}" font-size="10" text-anchor="middle" transform="rotate(-90 10 {size / 2})">accuracy</text>',
             f'<text x="{pad}" y="16" font-size="12" font-weight="bold">{html.escape(role)}: reliability</text>']
    for b in reliability:
        if not b["n"]:
            continue
        x = pad + inner * b["lower"]
        w = inner * (b["upper"] - b["lower"])
        hgt = inner * b["accuracy"]
        cy = pad + inner * (1 - b["confidence"])
        parts.append(f'<rect x="{x:.1f}" y="{pad + inner - hgt:.1f}" width="{w - 1:.1f}" height="{hgt:.1f}" '
                     f'fill="{COLOURS.get(role, "#4a7fb5")}" opacity="0.8"><title>n={b["n"]}</title></rect>'
                     f'<circle cx="{x + w / 2:.1f}" cy="{cy:.1f}" r="2.5" fill="#c33"/>')
    return "".join(parts) + "</svg>"


def parity_line(p: dict) -> str:
    """One line on --from_images' train/serve parity (metrics.json `parity`)."""
    held = not p["arrays_differ"] and not p["predictions_differ"]
    return (f"train/serve parity {'holds' if held else 'BROKEN'} on {p['examples']} examples: "
            f"{p['arrays_differ']} arrays differ by more than {p['tolerance']} "
            f"(max abs pixel difference {p['max_abs_pixel_diff']}), {p['predictions_differ']} predicted classes "
            f"differ (score's preprocessing at crop {p['settings']['crop_fraction']}, "
            f"JPEG quality {p['settings']['jpeg_quality']})")


def render_html(doc: dict) -> str:
    """report.html: verdict, per-slice tables with intervals, per class, confusion, reliability."""
    e = html.escape
    roles = [r for r in ("model", "compare") if r in doc["models"]]  # metrics.json sorts keys
    out = [f"<!doctype html><meta charset=utf-8><title>evaluate: {e(doc['split'])}</title><style>{_CSS}</style>",
           f"<h1>Evaluation on {e(doc['split'])} ({doc['examples']['evaluated']} examples)</h1>",
           f"<p><b>{e(doc['verdict'])}</b></p>",
           f"<p class=note>fingerprint {e(doc['fingerprint'])}; {doc['examples']['skipped_unknown_label']} "
           f"examples skipped (class unseen in train); 95% percentile bootstrap, {doc['bootstrap']['resamples']} "
           f"resamples, seed {doc['bootstrap']['seed']}; slices under n={doc['min_slice_n']} greyed. "
           + "; ".join(f"{r}: {e(m['version'])} ({e(m['uri'])})" for r, m in doc["models"].items()) + "</p>"]
    if doc.get("parity"):
        p = doc["parity"]
        out.append(f"<h2>Train/serve parity</h2><p><b>{e(parity_line(p))}</b></p><p class=note>The models saw "
                   "each example's source image prepared by score's code, not the stored array; "
                   + (f"examples that differ: {e(', '.join(p['examples_differing']))}" if p["examples_differing"]
                      else "no example differs") + "</p>")
    figs = EM.HEADLINE
    out.append("<h2>Accuracy by slice</h2>" + slice_bars(doc)
               + "<p class=note>" + ", ".join(f'<span style="color:{COLOURS[r]}">&#9632;</span> {e(r)}' for r in roles)
               + "; grey: below min n; whiskers: 95% bootstrap interval</p>")
    for role in roles:
        out.append(f"<h2>{e(role)} {e(doc['models'][role]['version'])}: figures by slice</h2><table><tr><th>slice</th>"
                   "<th>n</th><th>source</th>" + "".join(f"<th>{k}</th>" for k in figs) + "</tr>")
        for s in doc["slices"]:
            src = ", ".join(f"{k} {v}" for k, v in (s.get("sources") or {}).items())
            cls = " class=small" if s["below_min_n"] else ""
            out.append(f"<tr{cls}><td>{e(s['family'])}={e(s['value'])}</td><td>{s['n']}</td><td class=l>{e(src)}</td>"
                       + "".join(f"<td>{_cell(s['metrics'][role], k)}</td>" for k in figs) + "</tr>")
        out.append("</table>")
    if len(roles) == 2:
        out.append("<h2>Differences, model - compare (paired bootstrap; bold: interval excludes 0)</h2>"
                   "<table><tr><th>slice</th><th>n</th>" + "".join(f"<th>{k}</th>" for k in figs) + "</tr>")
        for s in doc["slices"]:
            cls = " class=small" if s["below_min_n"] else ""
            cells = "".join(
                f"<td{' class=sig' if s['difference'][k]['significant'] else ''}>{_fmt(s['difference'][k]['value'], True)}"
                f" <span class=note>{_ci(s['difference'][k]['ci95'], True)}</span></td>" for k in figs)
            out.append(f"<tr{cls}><td>{e(s['family'])}={e(s['value'])}</td><td>{s['n']}</td>{cells}</tr>")
        out.append("</table>")
    vocab = doc["label_vocabulary"]
    for role in roles:
        o = doc["overall"][role]
        out.append(f"<h2>{e(role)}: per class</h2><table><tr><th>class</th><th>support</th><th>precision</th>"
                   "<th>recall</th><th>F1</th><th>AUROC</th></tr>")
        for c in vocab:
            pc = o["per_class"][c]
            out.append(f"<tr><td>{e(c)}</td><td>{pc['support']}</td>" + "".join(
                f"<td>{_fmt(pc[k])}</td>" for k in ("precision", "recall", "f1", "auroc")) + "</tr>")
        out.append("</table>")
        out.append(f"<h2>{e(role)}: confusion matrix (rows true, columns predicted)</h2><table><tr><th></th>"
                   + "".join(f"<th>{e(c)}</th>" for c in vocab) + "</tr>")
        for c, row in zip(vocab, o["confusion_matrix"]):
            total = sum(row) or 1  # shade by the row's share: where a true class goes
            out.append(f"<tr><td>{e(c)}</td>" + "".join(
                f'<td style="background:rgba(74,127,181,{v / total:.2f})">{v or ""}</td>' for v in row) + "</tr>")
        out.append("</table>")
        out.append(f"<h2>{e(role)}: reliability (ECE {_fmt(o['headline']['ece'])})</h2>"
                   + reliability_diagram(o["reliability"], role)
                   + "<p class=note>bars: accuracy per confidence bin; red dots: mean confidence; "
                   "dashed: perfect calibration</p><table><tr><th>confidence bin</th>"
                   "<th>n</th><th>mean confidence</th><th>accuracy</th></tr>")
        for b in o["reliability"]:
            if b["n"]:
                out.append(f"<tr><td>{b['lower']:.2f}-{b['upper']:.2f}</td><td>{b['n']}</td>"
                           f"<td>{_fmt(b['confidence'])}</td><td>{_fmt(b['accuracy'])}</td></tr>")
        out.append("</table>")
    return "\n".join(out) + "\n"
