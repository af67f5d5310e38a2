"""Borderline enhancement (issue 17.1): curate --enhance rescues a low-contrast
skin photo and nothing that must stay rejected, refuses a recipe that moves
skin ITA, and make_tfrecords and score --enhance give the model the same array."""
from __future__ import annotations

import csv
import dataclasses
import json

import cv2
import numpy as np
import pytest

from beam_jobs import curate, make_tfrecords, score
from beam_jobs.cli import main
from beam_jobs.evaluate_curate import load_features
from schemas.examples import read_split
from schemas.policy import load_policy
from transforms.image.analyze import analyze_and_enhance
from transforms.image.enhance import parse_recipe
from transforms.scoring.prepare import prepare, prepare_model_input

POLICY = load_policy()
SETTINGS = {"image_size": 64, "crop_fraction": 0.875, "jpeg_quality": 90}


def squeeze_contrast(image: np.ndarray, k: float) -> np.ndarray:
    """Contrast squeezed to k of itself around the mean colour (fog, a dirty lens)."""
    mean = image.reshape(-1, 3).mean(0)
    return np.clip(np.round(mean + (image.astype(np.float32) - mean) * k), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of generated photos: a low-contrast copy of a Monk 8 skin photo
    (rejected low_information, fixable), the generator's strong too_dark,
    blurry and low_information defects and its non-skin photo, and a few
    other defect-free photos; and the paths by role."""
    from beam_jobs.sample_data import generate
    root = tmp_path_factory.mktemp("enhance_sample")
    generate(root, cases=20, seed=3)
    truth = list(csv.DictReader(open(root / "ground_truth.csv")))
    folder = root / "upload"
    folder.mkdir()
    jpgs = [r for r in truth if r["image_path"].endswith(".jpg") and not r["duplicate_of"]]
    good = [r for r in jpgs if r["defect"] == "none"]
    source = next(r for r in good if r["monk_tone"] == "8")
    roles = {}
    flat = squeeze_contrast(cv2.imread(str(root / source["image_path"])), 0.2)
    roles["low_contrast"] = folder / "low_contrast.png"
    cv2.imwrite(str(roles["low_contrast"]), flat)
    for defect in ("too_dark", "blurry", "low_information", "not_skin"):
        r = next(r for r in truth if r["defect"] == defect)
        roles[defect] = folder / f"{defect}{(root / r['image_path']).suffix}"
        roles[defect].write_bytes((root / r["image_path"]).read_bytes())
    for i, r in enumerate([r for r in good if r is not source][:5]):
        roles[f"good{i}"] = folder / f"good{i}.jpg"
        roles[f"good{i}"].write_bytes((root / r["image_path"]).read_bytes())
    return folder, roles


@pytest.fixture(scope="module")
def curated(photos, tmp_path_factory):
    folder, _ = photos
    out = tmp_path_factory.mktemp("enhance_curated")
    curate.run(["--input", f"{folder}/*", "--output", str(out), "--enhance"])
    return out


def test_curate_enhance_rescues_the_low_contrast_photo_and_nothing_that_must_stay_rejected(photos, curated):
    _, roles = photos
    rows = load_features(str(curated))
    flat = rows[str(roles["low_contrast"])]
    assert flat["status"] == "accepted" and flat["reasons"] == [] and flat["enhanced"] is True
    assert flat["enhance_outcome"] == "rescued" and flat["reasons_before_enhance"] == ["low_information"]
    recipe = parse_recipe(flat["enhance_recipe"])
    assert recipe["clahe_clip"] > 0 and recipe["ev"] == 0 and recipe["unsharp_amount"] == 0
    assert abs(flat["enhance_ita_shift"]) <= POLICY.enhance.max_ita_shift_deg
    assert flat["entropy"] > POLICY.info_max_entropy  # the enhanced image's features, not the upload's
    # Without --enhance the same upload is rejected.
    plain = analyze_and_enhance("x", roles["low_contrast"].read_bytes(), dataclasses.replace(
        POLICY, enhance=dataclasses.replace(POLICY.enhance, fixable=frozenset())))[0]
    assert plain["status"] == "rejected" and plain["reasons"] == ["low_information"]
    # Strong defects are never tried; a non-skin photo is not even eligible.
    for defect, reason in (("too_dark", "too_dark"), ("blurry", "blurry"), ("low_information", "low_information")):
        row = rows[str(roles[defect])]
        assert row["status"] == "rejected" and row["reasons"] == [reason], defect
        assert row["enhanced"] is False and row["enhance_outcome"] == "strong_defect", defect
    not_skin = rows[str(roles["not_skin"])]
    assert not_skin["reasons"] == ["no_skin"] and not_skin["enhanced"] is None
    assert all(rows[str(p)]["status"] == "accepted" and rows[str(p)]["enhanced"] is None
               for k, p in roles.items() if k.startswith("good"))
    summary = json.loads((curated / "summary.json").read_text())
    assert summary["enhancement"]["outcomes"] == {"rescued": 1, "strong_defect": 3}
    assert sum(summary["enhancement"]["rescued_by_monk_group"].values()) == 1
    report = (curated / "report.html").read_text()
    section = report.split("<h2 id=enhanced>", 1)[1].split("<h2", 1)[0]
    assert "low_contrast.png" in section and section.count("data:image/jpeg;base64,") == 2


def test_a_recipe_that_moves_skin_ita_too_far_is_refused(photos):
    _, roles = photos
    data = roles["low_contrast"].read_bytes()
    rescued, _, before = analyze_and_enhance("x", data, POLICY, thumbnail_px=48)
    shift = rescued["enhance_ita_shift"]
    assert rescued["enhanced"] is True and before and 0.3 < abs(shift) <= 3.0
    strict = dataclasses.replace(POLICY, enhance=dataclasses.replace(POLICY.enhance, max_ita_shift_deg=abs(shift) / 2))
    refused, _, before = analyze_and_enhance("x", data, strict, thumbnail_px=48)
    assert refused["status"] == "rejected" and refused["reasons"] == ["low_information"]
    assert refused["enhanced"] is False and refused["enhance_outcome"] == "refused_ita" and before is None
    assert refused["enhance_ita_shift"] == pytest.approx(shift)
    # The refused row keeps the upload's own features.
    assert refused["entropy"] <= POLICY.info_max_entropy


def test_make_tfrecords_and_score_enhance_give_the_model_the_same_array(photos, curated, tmp_path):
    folder, roles = photos
    rows = load_features(str(curated))
    labels = tmp_path / "labels.csv"
    accepted = [u for u, r in rows.items() if r["status"] == "accepted"]
    labels.write_text("image_uri,label\n" + "".join(f"{u},{'ab'[i % 2]}\n" for i, u in enumerate(sorted(accepted))))
    out = tmp_path / "records"
    make_tfrecords.run(["--curated", str(curated), "--labels_csv", str(labels), "--output", str(out),
                        "--image_size", "64", "--min_class_count", "1", "--split_fractions", "1,0,0"])
    trained = {f["uri"].numpy().decode(): f["image"].numpy() for f, _ in read_split(str(out), "train")}
    flat_uri = str(roles["low_contrast"])
    assert flat_uri in trained and set(trained) == set(accepted)
    data = roles["low_contrast"].read_bytes()
    reasons, served, _crop, recipe = prepare_model_input(data, POLICY, gate=True, enhance=True, **SETTINGS)
    assert reasons == [] and recipe == parse_recipe(rows[flat_uri]["enhance_recipe"])
    assert np.array_equal(served, trained[flat_uri])
    # The recipe is really in the array: the plain model input differs.
    _, raw = prepare(data, POLICY, gate=False, **SETTINGS)
    assert not np.array_equal(raw, served)
    # Images curate did not enhance get the plain path on both sides.
    good = str(roles["good0"])
    reasons, served, _crop, recipe = prepare_model_input(roles["good0"].read_bytes(), POLICY, gate=True, enhance=True,
                                                         **SETTINGS)
    assert reasons == [] and recipe is None and np.array_equal(served, trained[good])


@pytest.mark.parametrize("args, message", [
    (["--enhance", "--quality_gate", "off"], "--enhance needs --quality_gate on"),
])
def test_score_enhance_without_the_gate_is_a_one_line_error(args, message, tmp_path, capsys):
    base = ["--input", str(tmp_path), "--model_uri", str(tmp_path / "m"), "--output", str(tmp_path / "o")]
    assert main(score.run, base + args, prog="score") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("score: error:") and message in err and "\n" not in err


def test_a_policy_that_would_enhance_no_skin_is_a_one_line_error(tmp_path, capsys):
    from schemas.policy import DEFAULT_POLICY_PATH
    doc = json.loads(DEFAULT_POLICY_PATH.read_text())
    doc["enhance"]["fixable"] = ["too_dark", "no_skin"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    args = ["--input", f"{tmp_path}/*", "--output", str(tmp_path / "o"), "--enhance", "--policy", str(path)]
    assert main(curate.run, args, prog="curate") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error:") and "enhance.fixable" in err and "\n" not in err


def test_score_enhance_scores_the_rescued_photo_and_skips_the_strong_defect(photos, tmp_path):
    import datetime as dt

    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from helpers import tiny_bundle

    from schemas.model_bundle import image_settings
    from transforms.io.allowed_roots import AllowedRoots
    from transforms.scoring.score_images import ScoreImages

    folder, roles = photos
    tiny_bundle(tmp_path / "m", image_size=32)
    settings = image_settings({"label_vocabulary": ["a", "b", "c"], "version": "tiny", "image_size": 32})
    refs = [("2026-11-21", str(roles[k]), k) for k in ("low_contrast", "too_dark", "good0")]

    def score(enhance):
        return ScoreImages(str(tmp_path / "m"), ["a", "b", "c"], "tiny", dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc),
                           policy=POLICY, settings=settings, gate=True, allowed=AllowedRoots([str(folder)]),
                           top_k=2, min_batch_size=1, max_batch_size=2, share_model=False, prepare_threads=1,
                           enhance=enhance)

    def summary(r):
        return r["image_id"], r["status"], tuple(r["reasons"]), r["enhanced"]

    with TestPipeline() as p:
        rows = p | "Refs" >> beam.Create(refs) | "Enhance" >> score(True)
        assert_that(rows | "Summary" >> beam.Map(summary), equal_to([
            ("low_contrast", "scored", (), True), ("too_dark", "skipped_quality", ("too_dark",), None),
            ("good0", "scored", (), False)]))
        plain = p | "PlainRefs" >> beam.Create(refs[:1]) | "Plain" >> score(False)
        assert_that(plain | "PlainSummary" >> beam.Map(summary),
                    equal_to([("low_contrast", "skipped_quality", ("low_information",), None)]), label="Plain")


def test_the_exposure_lift_is_a_gain_in_linear_light_on_every_channel():
    from transforms.image.enhance import lift_exposure

    def linear(v):
        x = np.asarray(v, np.float64) / 255.0
        return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)

    patch = np.array([[[40, 60, 90], [20, 25, 30], [118, 118, 118]]], np.uint8)  # BGR
    lifted = lift_exposure(patch, 1.0)
    # Twice the light on every channel (to 8-bit rounding), so the chromaticity is kept.
    assert np.allclose(linear(lifted), 2 * linear(patch), rtol=0.03, atol=0.002)
    assert lift_exposure(patch, 0.0) is patch
    assert (lift_exposure(np.full((1, 1, 3), 200, np.uint8), 2.0) == 255).all()  # clipped, never wrapped
