"""benchmarks.real_photos' arithmetic, on made-up labels and rows (no real photo
is needed, or allowed, in the tests)."""
from __future__ import annotations

import csv

from benchmarks import real_photos as rp

IMAGES = "/photos"


def _lab(file, kind="skin_clinical", tone="light", expected="accept", reason="", note="", degradation="",
         derived_from=""):
    return {"file": file, "kind": kind, "tone_group": tone, "expected": expected, "expected_reason": reason,
            "note": note, "degradation": degradation, "derived_from": derived_from}


def _row(file, reasons=(), duplicate_of=None, sha="s"):
    return {"uri": f"{IMAGES}/{file}", "status": "rejected" if reasons else "accepted",
            "reasons": list(reasons), "duplicate_of": f"{IMAGES}/{duplicate_of}" if duplicate_of else None,
            "sha256": sha}


def test_figures_count_what_the_issue_table_asks_for():
    labels = [
        _lab("a.jpg"), _lab("b.jpg", tone="dark"), _lab("c.jpg", tone="dark"),
        _lab("a__blur_strong.jpg", expected="reject", reason="blurry", degradation="blur_strong", derived_from="a.jpg"),
        _lab("b__near_dup.jpg", expected="reject", reason="near_duplicate", degradation="near_dup", derived_from="b.jpg"),
        _lab("c__copy.jpg", expected="pair", reason="exact_duplicate", degradation="exact_dup", derived_from="c.jpg"),
        _lab("cat.jpg", kind="non_skin", tone="na", expected="reject", reason="no_skin", note="SKIN-LIKE"),
        _lab("sky.jpg", kind="non_skin", tone="na", expected="reject", reason="no_skin"),
        _lab("maybe.jpg", expected="either"),
    ]
    rows = {r["uri"]: r for r in [
        _row("a.jpg"), _row("b.jpg"), _row("c.jpg", ["blurry"], sha="c"),
        _row("a__blur_strong.jpg", ["blurry", "near_duplicate"], duplicate_of="a.jpg"),
        _row("b__near_dup.jpg", ["near_duplicate"], duplicate_of="b.jpg"),
        _row("c__copy.jpg", ["blurry", "exact_duplicate"], duplicate_of="c.jpg", sha="c"),
        _row("cat.jpg"), _row("sky.jpg", ["no_skin"]), _row("maybe.jpg", ["no_skin"]),
    ]}
    doc = rp.figures(labels, rows, IMAGES)
    assert doc["usable_wrongly_rejected"] == {"n": 3, "hits": 1, "share": 1 / 3}
    assert doc["usable_wrongly_rejected_by_tone"]["dark"]["share"] == 0.5
    assert doc["tone_spread_pp"] == 50.0
    assert doc["non_skin_rejected"]["share"] == 0.5 and doc["skin_like_rejected"]["share"] == 0.0
    assert doc["defects"]["blur_strong"]["share"] == 1.0
    assert doc["defects"]["near_dup"]["share"] == 1.0 and doc["defects"]["exact_dup"]["share"] == 1.0
    # blurry on the usable c.jpg is wrong; on its copy it is also wrong (the copy is as usable);
    # near_duplicate pointing at a photo of the same origin is right; `either` is not scored.
    assert doc["precision"]["blurry"] == {"n": 3, "hits": 1, "share": 1 / 3}
    assert doc["precision"]["near_duplicate"]["share"] == 1.0
    assert doc["precision"]["no_skin"] == {"n": 1, "hits": 1, "share": 1.0}
    met = rp.check_targets(doc)
    assert met["usable_wrongly_rejected"][3] is False and met["blur_strong"][3] is True
    assert "MISS" in rp.report(doc)


def test_training_csv_lists_each_original_once_with_its_label(tmp_path):
    labels = [_lab("a.jpg"), _lab("cat.jpg", kind="non_skin"),
              _lab("a__tiny.jpg", degradation="tiny", derived_from="a.jpg")]
    n = rp.write_training_csv(labels, IMAGES, str(tmp_path / "t.csv"))
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert n == 2 and [(r["uri"], r["label"]) for r in rows] == [
        (f"{IMAGES}/a.jpg", "skin"), (f"{IMAGES}/cat.jpg", "not_skin")]


def test_phone_formats_reencodes_what_curate_decodes_and_compares_verdicts(tmp_path):
    """benchmarks.phone_formats on generated pixels: each format is written as
    the file type it names (read back by curate's own decoder, P3 tagged where
    asked, exact copies still byte copies, derived_from renamed); agreement
    counts content verdicts per image and duplicate pairs unordered, so a
    swapped kept member is no change but a lost pair and a new reason are."""
    import numpy as np

    from benchmarks import phone_formats as pf
    from transforms.image.decode import decode
    from transforms.image.header import read_header

    src = tmp_path / "src"
    src.mkdir()
    y, x = np.mgrid[0:96, 0:128]
    pixels = np.stack([x * 2, y * 2, 255 - x - y], -1).astype(np.uint8)  # smooth: every codec keeps it
    import cv2
    cv2.imwrite(str(src / "a.png"), pixels)
    (src / "a__copy.png").write_bytes((src / "a.png").read_bytes())
    labels = [_lab("a.png"), _lab("a__copy.png", degradation="exact_dup", derived_from="a.png")]
    for fmt, kind in (("heic", "heic"), ("heic_p3", "heic"), ("avif", "avif"), ("jpeg_p3", "jpeg")):
        new, refused = pf.reencode_folder(labels, str(src), fmt, tmp_path / fmt)
        assert refused == [] and [lab["file"] for lab in new] == ["a" + pf.FORMATS[fmt], "a__copy" + pf.FORMATS[fmt]]
        assert new[1]["derived_from"] == new[0]["file"]
        data = (tmp_path / fmt / "images" / new[0]["file"]).read_bytes()
        assert data == (tmp_path / fmt / "images" / new[1]["file"]).read_bytes()
        assert read_header(data).format == kind
        back = decode(data, analysis_short_side=1 << 30).image
        assert back.shape == pixels.shape and np.abs(back.astype(int) - pixels).mean() < 3
        assert (b"Display P3" in data) == fmt.endswith("_p3")

    base_labels = {"a": _lab("a.png"), "b": _lab("b.png"), "c": _lab("c.png")}
    base = {r["uri"]: r for r in [_row("a.png"), _row("b.png", ["near_duplicate"], duplicate_of="a.png"),
                                  _row("c.png", ["blurry"])]}
    heic = [_lab("a.heic"), _lab("b.heic"), _lab("c.heic")]
    swapped = {f"/h/{r['uri'].split('/')[-1]}": dict(r, uri=f"/h/{r['uri'].split('/')[-1]}") for r in [
        _row("a.heic", ["near_duplicate"], duplicate_of="b.heic"), _row("b.heic"), _row("c.heic", ["blurry"])]}
    for r in swapped.values():
        r["duplicate_of"] = r["duplicate_of"] and r["duplicate_of"].replace(IMAGES, "/h")
    same = pf.agreement(heic, "/h", swapped, base_labels, IMAGES, base)
    assert same["same_content_verdict"] == 1.0 and same["duplicate_pairs_same"] == 1 == same["original_duplicate_pairs"]
    changed = {u: dict(r, reasons=[], duplicate_of=None, status="accepted") for u, r in swapped.items()}
    changed["/h/c.heic"]["reasons"] = ["blurry", "no_skin"]
    worse = pf.agreement(heic, "/h", changed, base_labels, IMAGES, base)
    assert worse["same_content_verdict"] == 2 / 3 and worse["duplicate_pairs_lost"] == ["a+b"]
    assert worse["content_changed"] == [("c.heic", "skin_clinical", "blurry", "blurry,no_skin")]
