"""The curate report: Wilson intervals, captions that match the verdict,
thresholds from the policy, and the real page rendered in headless Chromium
at desktop and phone widths."""
from __future__ import annotations

import html
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess

import pytest

from beam_jobs.evaluate_curate import load_features
from schemas.policy import load_policy
from schemas.reasons import DUPLICATE_REASONS, INPUT_REASONS
from transforms.curate.duplicates import pair_distance
from transforms.curate.report import fmt_value, nice_ticks, render_report
from transforms.curate.stats import wilson_interval
from transforms.curate.summary import HISTOGRAMS
from transforms.image.verdict import explain, thresholds

CHROMIUM = "/usr/bin/chromium"


# Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score).
@pytest.mark.parametrize("k,n,lo,hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                       (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
                                       (29, 29, 0.8830, 1.0)])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo < 0.5 < hi
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_nice_ticks():
    assert nice_ticks(0, 0.5) == [0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert nice_ticks(-90, 90) == [-50, 0, 50]
    assert nice_ticks(0, 8) == [0, 2, 4, 6, 8]
    assert nice_ticks(0, 37, 4) == [0, 10, 20, 30]


@pytest.mark.e2e
def test_every_quality_reason_is_explained_by_a_policy_threshold(curated):
    """The captions' feature-vs-threshold lines come from thresholds(policy):
    each quality reason of a real run is backed by one that holds."""
    policy = load_policy()
    tests = thresholds(policy)
    checked = 0
    for row in load_features(str(curated)).values():
        own = [r for r in row["reasons"] if r not in DUPLICATE_REASONS and r not in INPUT_REASONS]
        explained = explain(row, tests)
        assert {e[0] for e in explained} == set(own), row["uri"]
        checked += bool(own)
    assert checked >= 20


@pytest.mark.e2e
def test_duplicate_distances(curated):
    policy = load_policy(with_model=False)
    rows = load_features(str(curated))
    kinds = set()
    for row in rows.values():
        if row["duplicate_of"]:
            d = pair_distance(row, rows[row["duplicate_of"]])
            if "exact_duplicate" in row["reasons"]:
                assert d == "exact"
            else:
                assert isinstance(d, int) and 0 <= d <= policy.dup_radius
            kinds.update(r for r in row["reasons"] if r in DUPLICATE_REASONS)
    assert kinds == set(DUPLICATE_REASONS)


@pytest.mark.e2e
def test_histogram_series_add_up(curated):
    summary = json.loads((curated / "summary.json").read_text())
    for name, h in summary["histograms"].items():
        assert [a + r + d for a, r, d in zip(h["accepted"], h["rejected"], h["duplicate"])] == h["counts"]
    assert sum(summary["histograms"]["sharpness"]["accepted"]) == summary["accepted"]


@pytest.mark.e2e
def test_threshold_lines_follow_the_policy(curated):
    """Change a threshold in the policy and the drawn line's label follows."""
    summary = json.loads((curated / "summary.json").read_text())
    policy = load_policy().with_overrides(blur_max_sharpness=0.21, dark_max_p99=0.07)
    page = render_report(summary, tests=thresholds(policy))
    assert "blurry ≤ 0.21<" in page and "too_dark ≤ 0.07<" in page
    assert "blurry ≤ 0.165<" not in page


@pytest.mark.e2e
def test_real_report_captions_give_the_deciding_value_against_the_policy(curated):
    page = (curated / "report.html").read_text()
    policy = load_policy(with_model=False)
    for feature, sign, limit in [("sharpness", "≤", policy.blur_max_sharpness),
                                 ("lum_p99", "≤", policy.dark_max_p99),
                                 ("overexposed_fraction", "≥", policy.bright_min_overexposed),
                                 ("entropy", "≤", policy.info_max_entropy)]:
        values = re.findall(rf"<br>{feature} ([0-9.e-]+) {sign} {fmt_value(limit)}(?:<br>|</figcaption>)", page)
        assert values and all(float(v) <= limit if sign == "≤" else float(v) >= limit for v in values), feature
    assert re.search(r"pHash distance <b>\d+</b> bits?", page) and "byte-identical (exact)" in page


# --- the real page in headless Chromium ---------------------------------------

# Headless Chromium will not make a window narrower than 500 px, so the
# report is laid out in an iframe of the width under test (srcdoc: same
# origin, so the harness can look inside). Once everything has loaded, the
# harness writes what the test asserts into an attribute --dump-dom prints.
_PROBE = """<script>
addEventListener('load', () => {
  const w = document.getElementById('report').contentWindow, d = w.document;
  const all = sel => [...d.querySelectorAll(sel)];
  const imgs = [...d.images];
  const facts = {
    innerWidth: w.innerWidth,
    scrollWidth: d.documentElement.scrollWidth,
    widestRight: Math.max(...all('body *').map(e => e.getBoundingClientRect().right)),
    scrollers: all('.scroll').filter(e => e.scrollWidth > e.clientWidth).length,
    scripts: d.scripts.length,
    images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    figures: all('figure').length,
    captioned: all('figure').filter(f => f.querySelector('img') &&
               f.querySelector('figcaption .name') && f.querySelector('figcaption b')).length,
    pairs: all('#gallery .pair').length,
    pairImages: all('#gallery .pair').map(p => p.querySelectorAll('img').length),
    pairDistances: all('#gallery .dist').map(e => e.textContent),
    histograms: all('#histograms svg').length,
    histogramWidths: all('#histograms svg').map(s => s.getBoundingClientRect().width),
    thresholds: all('#histograms .threshold').length,
    texts: all('#histograms svg').map(s => s.querySelectorAll('text').length),
  };
  document.body.setAttribute('data-facts', JSON.stringify(facts));
});
</script>"""


def _harness(page: str, width: int, height: int, probe: str = "") -> str:
    return (f'<!doctype html><html><body style="margin:0"><iframe id=report style="width:{width}px;'
            f'height:{height}px;border:0;display:block" srcdoc="{html.escape(page)}"></iframe>{probe}</body></html>')


def _chromium(profile, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
@pytest.mark.parametrize("width", [1280, 390])
def test_report_renders_in_chromium(curated, tmp_path, width):
    page = (curated / "report.html").read_text()
    # Self-contained: no script, stylesheet, font or image from anywhere.
    assert "<script" not in page and "<link" not in page and not re.search(r"""(src|href)=["']?https?:""", page)
    probe = tmp_path / "probe.html"
    probe.write_text(_harness(page, width, 900, _PROBE))
    dom = _chromium(tmp_path / "profile", f"--window-size={max(width, 500)},900", "--dump-dom", probe.as_uri())
    facts = json.loads(html.unescape(re.search(r'data-facts="([^"]*)"', dom).group(1)))
    print(width, {k: v for k, v in facts.items() if k not in ("pairDistances", "histogramWidths", "texts")})

    assert facts["innerWidth"] == width and facts["scripts"] == 0
    assert facts["scrollWidth"] <= facts["innerWidth"], "the page scrolls sideways"
    assert facts["widestRight"] <= facts["innerWidth"] + 0.5
    assert facts["scrollers"] == 0, "a table needs its own sideways scroll"
    assert facts["images"] >= 30 and facts["loaded"] == facts["images"], "a thumbnail did not load"
    assert facts["captioned"] == facts["figures"] == facts["images"]
    assert facts["pairs"] >= 6 and set(facts["pairImages"]) == {2}
    assert any("exact" in d for d in facts["pairDistances"]) and any("bit" in d for d in facts["pairDistances"])
    assert facts["histograms"] == len(HISTOGRAMS)
    assert facts["thresholds"] >= 6
    assert min(facts["texts"]) >= 8  # title, legend, axis labels and ticks
    assert max(facts["histogramWidths"]) <= width and min(facts["histogramWidths"]) >= min(300, width - 60)

    shots = pathlib.Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path)  # set it to keep them
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"report-{width}.png"
    framed = tmp_path / "framed.html"
    framed.write_text(_harness(page, width, 2400))
    _chromium(tmp_path / "profile", f"--window-size={width},2400", "--hide-scrollbars",
              f"--screenshot={shot}", framed.as_uri())
    assert _png_size(shot) == (width, 2400)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
