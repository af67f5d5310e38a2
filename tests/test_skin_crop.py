"""--crop skin: the main skin region, its square, the fallback, and the same
model input from make_tfrecords and score (real Beam pipelines)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow.dataset as pads
import pytest

from beam_jobs import make_tfrecords, score
from beam_jobs.cli import main
from beam_jobs.evaluate_curate import load_features
from schemas.examples import read_split
from schemas.model_bundle import image_settings
from schemas.policy import load_policy
from helpers import tiny_bundle
from transforms.image import skin_crop
from transforms.image.quality import compute_features
from transforms.scoring.prepare import prepare_model_input

BLUE = (200, 120, 40)          # BGR: a blue wall, never skin
SKIN = (110, 140, 200)         # BGR: a medium skin tone


def _scene(h=600, w=800, centre=(550, 200), radius=120, seed=1) -> np.ndarray:
    """A noisy skin disc on a blue background, off centre."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = BLUE
    if radius:
        cv2.circle(img, centre, radius, SKIN, -1)
    noise = np.random.default_rng(seed).normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _jpeg(img) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def test_the_main_skin_region_is_the_disc_and_curate_records_the_same_box():
    img = _scene()
    region = skin_crop.skin_region(img)
    x0, y0, x1, y1 = skin_crop.box_of(region)
    # the disc spans x 430-670 of 800, y 80-320 of 600 (a pixel or two at 112 px)
    assert abs(x0 - 430 / 800) < 0.02 and abs(x1 - 670 / 800) < 0.02
    assert abs(y0 - 80 / 600) < 0.02 and abs(y1 - 320 / 600) < 0.02
    features = compute_features(img)
    assert {k: features[k] for k in region} == region
    # a small warm speck elsewhere does not move the box: the largest region wins
    cv2.circle(img, (100, 500), 30, SKIN, -1)
    assert skin_crop.box_of(skin_crop.skin_region(img)) == pytest.approx((x0, y0, x1, y1), abs=0.01)


def test_the_square_holds_the_box_with_its_margin_inside_the_image():
    h, w = 600, 800
    top, left, side = skin_crop.skin_square(h, w, (430 / 800, 80 / 600, 670 / 800, 320 / 600))
    assert side == round(240 * (1 + 2 * skin_crop.MARGIN))
    assert left <= 430 and left + side >= 670 and top <= 80 and top + side >= 320
    # a box at the corner: the square shifts inside the frame
    top, left, side = skin_crop.skin_square(h, w, (0.95, 0.0, 1.0, 0.05))
    assert (top, left + side) == (0, w) and side == round(skin_crop.MIN_SIDE_FRACTION * h)
    # a box wider than the short side: the square is the short side, never beyond the frame
    top, left, side = skin_crop.skin_square(h, w, (0.0, 0.1, 1.0, 0.9))
    assert side == h and top == 0 and 0 <= left <= w - h
    # the model crop is never wider than the centre crop: then it is the centre crop moved onto the box
    top, left, side = skin_crop.skin_square(h, w, (0.0, 0.1, 0.6, 0.9), max_fraction=0.875)
    assert side == round(0.875 * h) and left == 0 and abs(top - (h - side) / 2) <= 0.5


def test_without_a_skin_region_the_skin_crop_falls_back_to_the_centre_crop():
    wall = _scene(radius=0)
    assert skin_crop.box_of(skin_crop.skin_region(wall)) is None
    square, used = skin_crop.crop_resize(wall, 64, 0.875, "skin")
    centre, centre_used = skin_crop.crop_resize(wall, 64, 0.875, "center")
    assert (used, centre_used) == ("center", "center") and np.array_equal(square, centre)
    reasons, array, used, _ = prepare_model_input(_jpeg(wall), load_policy(with_model=False), image_size=64,
                                           crop_fraction=0.875, jpeg_quality=90, gate=False, crop="skin")
    assert reasons == [] and array.shape == (64, 64, 3) and used == "center"
    # with a region, the skin crop shows more skin than the centre crop
    scene = _jpeg(_scene())
    skin = prepare_model_input(scene, load_policy(with_model=False), image_size=64, crop_fraction=0.875,
                           jpeg_quality=90, gate=False, crop="skin")
    centre = prepare_model_input(scene, load_policy(with_model=False), image_size=64, crop_fraction=0.875,
                             jpeg_quality=90, gate=False, crop="center")
    assert (skin[2], centre[2]) == ("skin", "center")

    def skin_share(rgb):
        return skin_crop.skin_mask_of(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 64).mean()
    assert skin_share(skin[1]) > 0.4 > 0.2 > skin_share(centre[1])


def test_a_bundle_names_its_crop_and_old_bundles_read_as_center():
    assert image_settings({"image_size": 32})["crop"] == "center"
    assert image_settings({"image_size": 32, "trained_on": {"sources": {"crop": "skin"}}})["crop"] == "skin"


@pytest.fixture(scope="module")
def skin_records(curated, tmp_path_factory):
    """make_tfrecords --crop skin over 16 accepted images of the labelled set."""
    tmp = tmp_path_factory.mktemp("skin_records")
    rows = load_features(str(curated))
    accepted = sorted(u for u, r in rows.items() if r["status"] == "accepted")[:16]
    labels = tmp / "labels.csv"
    labels.write_text("image_uri,label,group_id\n" + "".join(
        f"{u},{'A' if i % 2 else 'B'},g{i}\n" for i, u in enumerate(accepted)))
    out = tmp / "records"
    make_tfrecords.run(["--curated", str(curated), "--labels_csv", str(labels), "--output", str(out),
                        "--image_size", "64", "--split_fractions", "0.5,0.25,0.25", "--min_class_count", "1",
                        "--crop", "skin"])
    got = {}
    for split in ("train", "validation", "test"):
        for f, _label in read_split(str(out), split):
            got[f["uri"].numpy().decode()] = (f["image"].numpy(), f["crop_used"].numpy().decode())
    return out, got


@pytest.mark.e2e
def test_make_tfrecords_and_score_give_the_same_model_input_with_skin_crops(skin_records, tmp_path, capsys):
    out, records = skin_records
    sources = json.loads((out / "dataset_info.json").read_text())["sources"]
    assert sources["crop"] == "skin" and len(records) == 16
    assert {used for _a, used in records.values()} <= {"skin", "center"}
    assert any(used == "skin" for _a, used in records.values())
    # Parity, array by array: score's preparation of each upload is the stored record.
    policy = load_policy()
    settings = {k: sources[k] for k in ("image_size", "crop_fraction", "jpeg_quality", "crop")}
    for uri, (stored, used) in records.items():
        with open(uri, "rb") as f:
            reasons, served, served_used, _ = prepare_model_input(f.read(), policy, gate=False, **settings)
        assert reasons == [] and served_used == used and np.array_equal(served, stored), uri
    # The score job itself, --crop skin, on the same uploads and one with no skin at all:
    # its rows name the crop the records name, and its probabilities are the model's on the stored arrays.
    wall = tmp_path / "wall.jpg"
    wall.write_bytes(_jpeg(_scene(radius=0)))
    manifest = tmp_path / "uploads.csv"
    manifest.write_text("uri\n" + "".join(f"{u}\n" for u in sorted(records)) + f"{wall}\n")
    model = tiny_bundle(tmp_path / "model", image_size=64)
    allowed = ",".join(sorted({u.rsplit("/", 2)[0] for u in records} | {str(tmp_path)}))
    score.run(["--manifest", str(manifest), "--model_uri", str(tmp_path / "model"), "--output",
               str(tmp_path / "scores"), "--quality_gate", "off", "--crop", "skin", "--allowed_roots", allowed])
    rows = {r["uri"]: r for r in pads.dataset(str(tmp_path / "scores" / "predictions"), format="parquet",
                                              partitioning="hive").to_table().to_pylist()}
    assert set(rows) == set(records) | {str(wall)} and {r["status"] for r in rows.values()} == {"scored"}
    assert rows[str(wall)]["crop_used"] == "center"   # no skin region: the centre crop, said so
    # tiny_bundle's model was trained on centre crops: serving it skin crops is said, once.
    assert capsys.readouterr().err.count("--crop skin differs from the crop model") == 1
    uris = sorted(records)
    expected = model.predict(np.stack([records[u][0] for u in uris]), verbose=0)
    for uri, probs in zip(uris, expected):
        assert rows[uri]["crop_used"] == records[uri][1]
        got = [p["probability"] for p in rows[uri]["probabilities"]]
        np.testing.assert_allclose(got, probs, atol=1e-5)


@pytest.mark.e2e
@pytest.mark.parametrize("job, args, message", [
    (make_tfrecords.run, ["--curated", "C", "--labels_csv", "x.csv", "--output", "O", "--crop", "lesion"],
     "argument --crop: invalid choice: 'lesion'"),
    (score.run, ["--input", "I", "--model_uri", "M", "--output", "O", "--crop", "centre"],
     "argument --crop: invalid choice: 'centre'"),
])
def test_a_bad_crop_is_a_one_line_error(job, args, message, tmp_path, capsys):
    args = [str(tmp_path / a) if a in ("C", "O", "I", "M") else a for a in args]
    prog = "make_tfrecords" if job is make_tfrecords.run else "score"
    assert main(job, args, prog=prog) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "O").exists()


def test_the_curate_report_draws_the_skin_region_and_crop_on_thumbnails():
    from transforms.curate.report import _figure, skin_crop_entry
    from transforms.image.analyze import thumbnail_jpeg
    img = _scene()
    row = dict(compute_features(img), uri="/u/disc.jpg", reasons=[], duplicate_of=None, width=800, height=600)
    entry = {"uri": row["uri"], "reasons": [], "explained": [], "closest": None, **skin_crop_entry(row)}
    x0, y0, x1, y1 = entry["crop_square"]
    assert x0 <= row["skin_box_x0"] and x1 >= row["skin_box_x1"] and y0 <= row["skin_box_y0"]
    assert (x1 - x0) * 800 == pytest.approx((y1 - y0) * 600)   # a square in pixels
    figure = _figure(entry, {row["uri"]: thumbnail_jpeg(img, 96)})
    assert "<img" in figure and "<svg class=crop" in figure and figure.count("<rect") == 2
    assert "skin crop solid" in figure
    # no region: the plain thumbnail
    assert skin_crop_entry(dict(row, skin_box_x0=None)) == {}
