"""benchmarks.real_photos' arithmetic, on made-up labels and rows (no real photo
is needed, or allowed, in the tests)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

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
    wrong = doc["usable_wrongly_rejected"]
    assert (wrong["n"], wrong["hits"], wrong["share"]) == (3, 1, 1 / 3)
    lo, hi = wrong["ci95"]  # Wilson: wide at n = 3, never past [0, 1]
    assert 0 < lo < 0.1 and 0.75 < hi < 0.8
    assert doc["usable_wrongly_rejected_by_tone"]["dark"]["share"] == 0.5
    assert doc["tone_spread_pp"] == 50.0
    assert doc["non_skin_rejected"]["share"] == 0.5 and doc["skin_like_rejected"]["share"] == 0.0
    assert doc["defects"]["blur_strong"]["share"] == 1.0
    assert doc["defects"]["near_dup"]["share"] == 1.0 and doc["defects"]["exact_dup"]["share"] == 1.0
    # blurry on the usable c.jpg is wrong; on its copy it is also wrong (the copy is as usable);
    # near_duplicate pointing at a photo of the same origin is right; `either` is not scored.
    assert (doc["precision"]["blurry"]["hits"], doc["precision"]["blurry"]["n"]) == (1, 3)
    assert doc["precision"]["near_duplicate"]["share"] == 1.0
    assert (doc["precision"]["no_skin"]["hits"], doc["precision"]["no_skin"]["n"]) == (1, 1)
    met = rp.check_targets(doc)
    assert met["usable_wrongly_rejected"][3] is False and met["blur_strong"][3] is True
    text = rp.report(doc)
    assert "tone_spread_pp" in text
    doc["tone_spread_pp"] = 1.0  # met: the spread has no interval of its own, and is reported as met
    assert any(line.lstrip().startswith("met") and "tone_spread_pp" in line for line in rp.report(doc).splitlines())
    doc["tone_spread_pp"] = 50.0
    assert "MISS" in text and "95% CI" in text
    # blur_strong is met (1/1), but one photo cannot show that 90% would hold elsewhere
    blur_line = next(line for line in text.splitlines() if "blur_strong" in line and "needed" in line)
    assert blur_line.lstrip().startswith("met") and "not assured on other photos" in blur_line


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


def test_dim_frames_counts_each_stop_and_the_old_rule_as_its_baseline(tmp_path):
    """benchmarks.dim_frames on generated pixels, judged by the real per-image
    path with the packaged networks made to call everything not skin (every
    cell's logit -20, probability 0 after rounding): the sweep counts no_skin on skin photos at every stop where it is
    not too_dark, and the old rule (no skin test under mean brightness 0.2) as
    the baseline that passed dim non-skin frames unjudged."""
    import dataclasses
    import json

    import cv2
    import numpy as np

    from benchmarks import dim_frames as dfr
    from schemas.policy import load_policy
    from transforms.image.relevance import DEFAULT_MODEL_PATH, RelevanceModel

    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # sharp, varied, bright parts
    cv2.imwrite(str(tmp_path / "a.png"), noise)
    doc = json.loads(DEFAULT_MODEL_PATH.read_text())
    for kind in ("colour", "grayscale"):
        for net in doc[kind]["networks"]:
            net["w2"], net["b2"] = [0.0] * len(net["w2"]), -20.0
    policy = dataclasses.replace(load_policy(), relevance=RelevanceModel(doc), skin_dim_max_probability=1.0)
    labels = [_lab("a.png", tone="dark"), dict(_lab("a.png", kind="non_skin", tone="na"))]
    counts, noisy = dfr.sweep(labels, str(tmp_path), lambda lab: policy)
    assert list(counts) == list(dfr.STOPS)
    for stop, c in counts.items():
        too_dark = stop <= -6   # the resized noise's brightest 1% falls under 0.1 at -6 stops
        assert c["skin all"] == c["skin dark"] == 1 and c["non_skin"] == 1
        assert c["too_dark"] == too_dark and c["no_skin all"] == c["no_skin dark"] == (not too_dark)
        assert c["rejected"] == 1
    # Mean brightness 0.5 at 0 stops, 0.18 at -3: from there until too_dark the old rule gave no verdict.
    assert [counts[s]["rejected before"] for s in dfr.STOPS] == [1, 1, 1, 0, 0, 0, 1, 1]
    out = dfr.report(counts)
    assert "100.0% (1/1)" in out and "before 2026.12.1" in out
    # Every photo also judged with noise at 0 and -2 EV; at those stops nothing is too_dark, so all no_skin.
    assert set(noisy) == {(s, sd) for s in dfr.NOISE_STOPS for sd in dfr.NOISE_SD}
    for c in noisy.values():
        assert c["skin all"] == c["no_skin all"] == c["non_skin"] == c["rejected"] == 1
    lines = dfr.noise_report(counts, noisy).splitlines()
    assert sum(line.lstrip().startswith(("+0", "-2")) for line in lines) == len(dfr.NOISE_STOPS) * (1 + len(dfr.NOISE_SD))


@pytest.mark.e2e  # trains networks
def test_fold_models_are_trained_once_and_retrained_when_a_photo_changes(tmp_path, monkeypatch):
    """real_photos and dim_frames --fold_cache: the same photos and code give
    the cached fold models back without training; a changed photo is a new key."""
    import cv2
    import numpy as np

    from beam_jobs import train_relevance
    from benchmarks import real_photos as rp

    rng = np.random.default_rng(1)
    labels = []
    for i in range(8):
        colour = (120, 150, 200) if i % 2 else (60, 160, 60)
        photo = np.clip(np.array(colour) + rng.normal(0, 12, (120, 160, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / f"p{i}.png"), photo)
        labels.append(_lab(f"p{i}.png", kind="skin_clinical" if i % 2 else "non_skin"))
    cache = tmp_path / "cache"
    models, summary = rp.fold_models(labels, str(tmp_path), 2, str(tmp_path), cache=str(cache))
    assert sorted(models) == [0, 1] and len(list(cache.iterdir())) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")
    with monkeypatch.context() as m:
        m.setattr(train_relevance, "cross_validate", no_training)
        again, summary_again = rp.fold_models(labels, str(tmp_path), 2, str(tmp_path), cache=str(cache))
    assert again == models and summary_again == summary
    cv2.imwrite(str(tmp_path / "p3.png"), np.full((120, 160, 3), (120, 150, 200), np.uint8))
    rp.fold_models(labels, str(tmp_path), 2, str(tmp_path), cache=str(cache))
    assert len(list(cache.iterdir())) == 2


def test_the_fold_cache_key_follows_the_decoder_and_the_opencv_build(tmp_path, monkeypatch):
    """The descriptors depend on how a photo is decoded and on OpenCV's
    rounding: a change to either must not hand back models trained before it."""
    import cv2
    import numpy as np

    import transforms.image.decode
    from benchmarks import real_photos as rp

    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((8, 8, 3), np.uint8))
    rows = [{"uri": str(tmp_path / "p.png"), "label": 1}]
    key = rp._fold_cache_path("c", rows, 2, False)
    assert rp._fold_cache_path("c", rows, 2, False) == key
    changed = tmp_path / "decode.py"
    changed.write_bytes(Path(transforms.image.decode.__file__).read_bytes() + b"# changed\n")
    with monkeypatch.context() as m:
        m.setattr(transforms.image.decode, "__file__", str(changed))
        assert rp._fold_cache_path("c", rows, 2, False) != key
    with monkeypatch.context() as m:
        m.setattr(cv2, "__version__", "0.0.0")
        assert rp._fold_cache_path("c", rows, 2, False) != key


@pytest.mark.e2e
def test_the_benchmark_prints_its_figures_without_beams_benign_warnings(tmp_path):
    """curate runs inside the benchmark's process, not through its own entry
    point, so the benchmark must quiet Beam's per-run option warnings as the
    job's main() does (once per fold with --cross_validate)."""
    import subprocess
    import sys

    import cv2
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    labels = []
    for i, colour in enumerate([(120, 150, 200), (60, 160, 60)]):
        photo = np.clip(np.array(colour) + rng.normal(0, 12, (240, 320, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(images / f"p{i}.jpg"), photo)
        labels.append(_lab(f"p{i}.jpg", kind="non_skin" if i else "skin_clinical", tone="na" if i else "light",
                           expected="reject" if i else "accept", reason="no_skin" if i else ""))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(labels[0]))
        w.writeheader()
        w.writerows(labels)
    done = subprocess.run([sys.executable, "-m", "benchmarks.real_photos", "--folder", str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr
    assert "usable skin photos wrongly rejected" in done.stdout
    assert "Discarding" not in done.stderr and "WARNING" not in done.stderr, done.stderr


def test_a_labelled_photo_is_judged_by_the_fold_that_never_saw_it_nor_its_copies():
    """fold_models records which photos each fold's networks never saw
    (train_relevance puts a photo's duplicates in its fold, whatever its file
    name hashes to); a degraded variant goes with its original. Cached models
    from before that record fall back to the file's own fold."""
    from beam_jobs.train_relevance import fold_of
    models = {k: {"training": {"fold": k, "folds": 2, "judges": names}}
              for k, names in ((0, ["a.jpg", "copy_of_a.jpg"]), (1, ["b.jpg"]))}
    judging = rp.fold_judging(models)
    assert [judging({"file": f}) for f in ("a.jpg", "copy_of_a.jpg", "b.jpg")] == [0, 0, 1]
    assert judging({"file": "a_blur.jpg", "derived_from": "copy_of_a.jpg"}) == 0
    old = rp.fold_judging({k: {"training": {"fold": k, "folds": 2}} for k in (0, 1)})
    assert old({"file": "b.jpg"}) == fold_of("b.jpg", 2)
