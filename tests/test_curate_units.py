"""Pure pieces of curate: keeper choice, accounting, manifests, policy, verdicts."""
from __future__ import annotations

import json
import os

import pytest

from schemas.features import empty_row
from schemas.policy import DEFAULT_POLICY_PATH, load_policy
from transforms.curate.duplicates import resolve_cluster
from transforms.io.inputs import join_root, parse_manifest, parse_scin_cases
from transforms.curate.summary import Summary
from transforms.image.verdict import quality_reasons


def _row(uri, sha="a", w=640, h=480, size=1000, reasons=()):
    return empty_row(uri=uri, sha256=sha, width=w, height=h, file_size=size, phash="00ff00ff00ff00ff",
                     status="rejected" if reasons else "accepted", reasons=list(reasons))


def test_keeper_is_best_quality_then_largest_then_smallest_uri():
    rows = [_row("b.jpg", "x"), _row("a.jpg", "x"), _row("c.jpg", "y", w=600, h=450),
            _row("d.jpg", "z", reasons=["blurry"], w=4000, h=3000)]
    out = {r["uri"]: r for r in resolve_cluster(rows)}
    assert out["a.jpg"]["status"] == "accepted" and out["a.jpg"]["duplicate_of"] is None
    assert out["b.jpg"]["reasons"] == ["exact_duplicate"] and out["b.jpg"]["duplicate_of"] == "a.jpg"
    assert out["c.jpg"]["reasons"] == ["near_duplicate"]
    assert out["d.jpg"]["reasons"] == ["blurry", "near_duplicate"]


def test_accounting_mismatch_fails_loudly():
    s = Summary()
    for r in [_row("a"), _row("b", reasons=["blurry"])]:
        s.add(r)
    assert s.to_dict(2, "v")["accounting_ok"]
    with pytest.raises(RuntimeError, match="accounting mismatch: matched 3"):
        s.to_dict(3, "v")


def test_summary_merge_equals_sequential():
    rows = [_row(f"{i}", reasons=["blurry"] if i % 3 == 0 else []) for i in range(10)]
    for r in rows:
        r.update(monk_estimate=(int(r["uri"]) % 10) + 1, brightness_mean=0.1 * int(r["uri"]))
    whole, a, b = Summary(), Summary(), Summary()
    for r in rows:
        whole.add(r)
    for r in rows[:4]:
        a.add(r)
    for r in rows[4:]:
        b.add(r)
    assert a.merge(b).to_dict(10, "v") == whole.to_dict(10, "v")


def test_manifest_csv_and_jsonl():
    csv_refs = parse_manifest("uri,image_id,case_id\ngs://b/x/1.jpg,one,c1\ngs://b/x/2.png,,\n")
    assert csv_refs[0][:3] == ("gs://b/x/1.jpg", "one", "c1")
    assert csv_refs[1][:3] == ("gs://b/x/2.png", "2", None)
    jl = parse_manifest('{"uri": "/d/a.jpg", "case_id": 7}\n\n{"uri": "/d/b.jpg"}\n')
    assert [r.uri for r in jl] == ["/d/a.jpg", "/d/b.jpg"] and jl[0].case_id == "7"
    # Local paths in one form (absolute, normalised), so a file written three ways is one URI;
    # a '..' path stays as written, for the allowed-roots rule to refuse by its spelling.
    forms = parse_manifest(f"uri\nx/a.jpg\n./x/a.jpg\n{os.getcwd()}/x//a.jpg\nimages/../../etc/passwd\n")
    assert [r.uri for r in forms] == [f"{os.getcwd()}/x/a.jpg"] * 3 + ["images/../../etc/passwd"]
    with pytest.raises(ValueError, match="m.csv is empty"):
        parse_manifest(" \n", "m.csv")
    with pytest.raises(ValueError, match="row 1 has no uri"):
        parse_manifest("name\nfoo\n")


def test_scin_cases_resolve_paths_and_keep_case_id():
    text = ("case_id,image_1_path,image_2_path,image_3_path\n"
            "-12,dataset/images/1.png,dataset/images/2.png,\n")
    refs = parse_scin_cases(text, "gs://bkt")
    assert [r.uri for r in refs] == ["gs://bkt/dataset/images/1.png", "gs://bkt/dataset/images/2.png"]
    assert {r.case_id for r in refs} == {"-12"}
    with pytest.raises(ValueError, match="missing required column"):
        parse_scin_cases("case_id,image_1_path\n1,a\n", "/r")
    assert join_root("/data/root", "dataset/a.jpg") == "/data/root/dataset/a.jpg"


def test_policy_is_versioned_and_documented(tmp_path):
    p = load_policy()
    assert p.version and p.analysis_short_side >= 128 and p.dup_radius >= 0
    raw = json.loads(DEFAULT_POLICY_PATH.read_text())
    for key, value in raw.items():
        if isinstance(value, dict) and key != "suppressed_by":
            assert value.get("why"), f"policy entry {key} has no reason"
    bad = tmp_path / "p.json"
    bad.write_text('{"version": "x"}')
    with pytest.raises(ValueError, match="invalid quality policy"):
        load_policy(str(bad))


def test_root_cause_suppresses_derived_reasons():
    p = load_policy()
    black = dict(width=640, height=480, underexposed_fraction=0.95, lum_p99=0.02, brightness_mean=0.01,
                 overexposed_fraction=0.0, entropy=0.5, sharpness=0.0, skin_probability=0.0, grayscale=True)
    assert quality_reasons(black, p) == ["too_dark"]
    flat_blue = dict(black, underexposed_fraction=0.0, lum_p99=0.5, brightness_mean=0.45, grayscale=False)
    assert quality_reasons(flat_blue, p) == ["low_information"]
    small = dict(flat_blue, width=100, height=80, entropy=6.0, sharpness=0.3, skin_probability=0.99)
    assert quality_reasons(small, p) == ["too_small"]


def test_in_a_dim_frame_only_a_sure_model_calls_no_skin_and_the_skin_colour_share_abstains():
    p = load_policy()
    t, bar = p.relevance.threshold["colour"], p.skin_dim_max_probability
    assert bar < t
    # Dimmed light skin reads as dark grey: no skin-coloured pixels, yet skin.
    dim_light_skin = dict(width=640, height=480, underexposed_fraction=0.01, lum_p99=0.2,
                          brightness_mean=0.13, overexposed_fraction=0.0, entropy=5.0,
                          sharpness=0.3, skin_fraction=0.0, skin_probability=t + 0.2, grayscale=False)
    assert quality_reasons(dim_light_skin, p) == []
    assert quality_reasons(dict(dim_light_skin, brightness_mean=0.35), p) == ["no_skin"]
    # A dim scene with bright parts (a night street, a dark screen) is not too_dark;
    # the model still judges it, and a sure "not skin" is no_skin.
    night_scene = dict(dim_light_skin, lum_p99=0.6, skin_fraction=0.3, skin_probability=bar - 0.01)
    assert quality_reasons(night_scene, p) == ["no_skin"]
    # Under the threshold but not sure (noise reads as not-skin texture): no verdict in a dim frame.
    unsure = dict(night_scene, skin_probability=(bar + t) / 2)
    assert quality_reasons(unsure, p) == []
    assert quality_reasons(dict(unsure, brightness_mean=0.35), p) == ["no_skin"]
    # Too dark for anything: too_dark says so, and no_skin defers to it.
    assert quality_reasons(dict(night_scene, lum_p99=0.05), p) == ["too_dark"]


def test_no_skin_uses_the_threshold_of_the_network_that_judged_the_photo():
    p = load_policy()
    row = dict(width=640, height=480, lum_p99=0.6, brightness_mean=0.5, overexposed_fraction=0.0,
               entropy=6.0, sharpness=0.3)
    for grayscale in (False, True):
        t = p.relevance.threshold["grayscale" if grayscale else "colour"]
        assert quality_reasons(dict(row, grayscale=grayscale, skin_probability=t), p) == []
        assert quality_reasons(dict(row, grayscale=grayscale, skin_probability=t - 1e-3), p) == ["no_skin"]
    # No probability (no model, or nothing to judge): no_skin is never claimed.
    assert quality_reasons(dict(row, grayscale=False, skin_probability=None), p) == []


def test_a_dim_frames_caption_names_only_the_tests_that_judged_it():
    """The report explains a rejection by the tests that decided it: in a dim
    frame that is the model and its dim-frame bar, not the skin-colour share
    it did not use."""
    from transforms.curate.report import threshold_lines
    from transforms.image.verdict import closest_call, explain, thresholds
    p = load_policy()
    tests = thresholds(p)
    t = p.relevance.threshold["colour"]
    night = dict(width=640, height=480, lum_p99=0.6, brightness_mean=0.12, overexposed_fraction=0.0,
                 entropy=5.0, sharpness=0.3, skin_fraction=0.01, skin_probability=0.01, grayscale=False)
    night["reasons"] = quality_reasons(night, p)
    assert [(e[1], e[4]) for e in explain(night, tests)] == [
        ("skin_probability", t), ("skin_probability", p.skin_dim_max_probability)]
    lit = dict(night, brightness_mean=0.4)
    lit["reasons"] = quality_reasons(lit, p)
    assert [(e[1], e[4]) for e in explain(lit, tests)] == [("skin_fraction", p.skin_min_fraction),
                                                           ("skin_probability", t)]
    # An accepted dim frame's closest call is never the colour rule it was not judged by.
    dim_skin = dict(night, skin_fraction=0.06, skin_probability=t + 0.3, reasons=[])
    assert quality_reasons(dim_skin, p) == [] and closest_call(dim_skin, tests)[0] != "skin_fraction"
    assert closest_call(dict(dim_skin, brightness_mean=0.4), tests)[0] == "skin_fraction"
    labels = [label.rsplit(" ", 1)[0] for _, label in threshold_lines(tests)["skin_probability"]]
    assert labels == ["no_skin (colour) <", "no_skin (grayscale) <", "no_skin (dim frames) <"]
