"""The relevance model: descriptors, training, the trainer's CLI, the versioned file.

Trained here on generated photos (real ones never enter the tests); how well
the packaged model does on real photos is benchmarks.real_photos' business.
"""
from __future__ import annotations

import csv
import json
import os
import threading

import numpy as np
import pytest

from beam_jobs import train_relevance
from beam_jobs.cli import UsageError
from schemas.policy import DEFAULT_POLICY_PATH, load_policy
from transforms.image import relevance as rel
from transforms.image.decode import decode
from transforms.image.quality import compute_features, to_analysis_size


@pytest.fixture(scope="module")
def generated(labelled):
    """(path, label) of generated skin photos and non-skin scenes."""
    with open(labelled / "ground_truth.csv", newline="") as f:
        truth = list(csv.DictReader(f))
    skin = [t for t in truth if t["defect"] == "none"][:40]
    scenes = [t for t in truth if t["defect"] == "not_skin"][:20]
    return [(labelled / t["image_path"], 1) for t in skin] + [(labelled / t["image_path"], 0) for t in scenes]


def _analysis(path):
    return to_analysis_size(decode(path.read_bytes(), analysis_short_side=224).image, 224)


def test_cells_cover_the_model_size_image_and_are_finite():
    img = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    cells = rel.cell_descriptors(img)
    assert cells.shape == (8 * 10, len(rel.CELL_DESCRIPTORS))   # 224 x 298 -> 8 x 10 cells of 28 px
    assert np.isfinite(cells).all()
    assert np.array_equal(cells, rel.cell_descriptors(img))


def test_lbp_shares_are_each_cells_share_of_each_code_group():
    import cv2
    img = (np.random.default_rng(1).random((300, 400, 3)) * 255).astype(np.uint8)
    cells = rel._cell_grid(img)
    ny, nx = cells.shape[:2]
    at = to_analysis_size(img, rel.SHORT_SIDE)
    y0, x0 = (at.shape[0] - ny * rel.CELL) // 2, (at.shape[1] - nx * rel.CELL) // 2
    lightness = cv2.cvtColor(at[y0:y0 + ny * rel.CELL, x0:x0 + nx * rel.CELL], cv2.COLOR_BGR2Lab)[..., 0]
    groups = rel._lbp_groups(np.ascontiguousarray(lightness))
    blocks = groups.reshape(ny, rel.CELL, nx, rel.CELL).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    shares = np.array([[np.bincount(b, minlength=8) for b in row] for row in blocks]) / rel.CELL ** 2
    column = {name: i for i, name in enumerate(rel.CELL_DESCRIPTORS)}
    np.testing.assert_allclose(cells[..., column["lbp_edges"]], shares[..., 6], rtol=1e-6)
    for k, name in enumerate(("lbp_flat", "lbp_two", "lbp_four", "lbp_six", "lbp_eight", "lbp_irregular")):
        np.testing.assert_allclose(cells[..., column[name]], np.sqrt(shares[..., k]), rtol=1e-6)
    assert 0 < shares[..., 0].mean() < 1 and shares[..., 5].mean() > 0   # the random image has both kinds


@pytest.mark.e2e
def test_descriptors_do_not_depend_on_where_their_arrays_land_in_memory(generated):
    """cv2.magnitude (IPP) rounded the last bit differently with its buffers'
    alignment, and a cell's chroma spread (a difference of nearly equal
    means) turned that into up to 0.01: the same photos gave other
    descriptors on a rerun or in another process, so retraining on the same
    labels gave other networks. Buffers of other sizes in between move where
    the next ones land."""
    images = [_analysis(p) for p, _ in generated]
    first = [rel.cell_descriptors(im) for im in images]
    rng = np.random.default_rng(0)
    held = []
    for _ in range(12):
        held += [np.empty(int(n), np.uint8) for n in rng.integers(1, 1 << 18, 3)]
        differ = sum(not np.array_equal(rel.cell_descriptors(im), cells) for im, cells in zip(images, first))
        assert differ == 0, f"{differ} of {len(images)} photos got other descriptors"


def test_an_image_smaller_than_a_cell_is_never_called_not_skin():
    tiny = np.zeros((20, 30, 3), np.uint8)
    assert rel.cell_descriptors(tiny).shape == (0, len(rel.CELL_DESCRIPTORS))
    assert load_policy().relevance.skin_probability(tiny, grayscale=False) == 1.0


@pytest.mark.e2e
def test_training_separates_skin_from_scenes_it_never_saw(generated):
    photos = [(rel.cell_descriptors(_analysis(p)), y) for p, y in generated]
    train = photos[::2]
    held_out = photos[1::2]
    nets = rel.train_ensemble([c for c, _ in train], [y for _, y in train], members=1, epochs=150)
    scores = np.array([rel.photo_score(nets, c) for c, _ in held_out])
    labels = np.array([y for _, y in held_out])
    assert scores[labels == 1].min() > scores[labels == 0].max()


@pytest.mark.e2e
def test_the_grayscale_network_judges_grayscale_photos(generated):
    policy = load_policy()
    gray = rel.as_grayscale(_analysis(generated[0][0]))
    f = compute_features(gray, 224, 224, policy.relevance, policy.gray_max_channel_diff)
    assert f["grayscale"] is True
    assert f["skin_probability"] == pytest.approx(policy.relevance.skin_probability(gray, grayscale=True))
    assert f["skin_probability"] != pytest.approx(policy.relevance.skin_probability(gray, grayscale=False))


def _labels_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "label", "group"])
        w.writerows(rows)
    return str(path)


@pytest.mark.e2e
def test_trainer_writes_a_loadable_deterministic_model_with_cross_validated_figures(generated, tmp_path):
    labels = _labels_csv(tmp_path / "labels.csv",
                         [[str(p), "skin" if y else "not_skin", p.stem] for p, y in generated[:30] + generated[-12:]])
    for name in ("a.json", "b.json"):
        train_relevance.run(["--labels", labels, "--output", str(tmp_path / name), "--folds", "3"])
    # Same photos, same seed: the same model. Bit-identical floats are not
    # promised (numpy's float32 reductions may round differently by memory
    # alignment), so the weights must agree to 1e-5 and every figure exactly.
    # The threshold is a low quantile of out-of-sample probabilities, where
    # the logistic is steep: weights 1e-6 apart moved it by 3e-5 (seen in CI).
    model, again = (rel.RelevanceModel.load(tmp_path / n) for n in ("a.json", "b.json"))
    assert model.version == again.version
    for kind in ("colour", "grayscale"):
        first, second = (dict(m.doc["training"]["cross_validated"][kind]) for m in (model, again))
        assert first.pop("threshold") == pytest.approx(second.pop("threshold"), abs=1e-4)
        assert first == second
        for n1, n2 in zip(model.nets[kind], again.nets[kind]):
            for key in n1:
                np.testing.assert_allclose(n1[key], n2[key], atol=1e-5)
    cv = model.doc["training"]["cross_validated"]["colour"]
    assert cv["photos"] == 42 and cv["skin"] == 30 and cv["not_skin"] == 12 and 0.5 <= cv["auc"] <= 1.0
    # The compressed copies were trained on and scored out of sample, beside the figures, not in them.
    assert model.doc["training"]["augmented_codecs"] == ["avif q70"]
    assert model.doc["training"]["augmented_noise_sd"] is None   # --noise_copies is off by default
    assert cv["copies"]["avif q70"]["photos"] == 42 and cv["copies"]["-2 EV"]["photos"] == 42
    assert train_relevance.NOISE_COPY not in cv["copies"]
    # A policy can point curate at it.
    policy_doc = json.loads(DEFAULT_POLICY_PATH.read_text())
    policy_doc["no_skin"]["model"] = str(tmp_path / "a.json")
    (tmp_path / "policy.json").write_text(json.dumps(policy_doc))
    assert load_policy(str(tmp_path / "policy.json")).relevance.version == model.version


def test_trainer_also_learns_each_photo_as_a_phone_would_save_it_again_in_its_fold(tmp_path):
    """AVIF smoothing lifted non-skin photos over the threshold: every photo is
    also learned from as curate decodes it after an AVIF q70 re-encode."""
    import cv2
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (240, 320, 3)), (0, 0), 1.0)
    photo = np.clip(np.array([110, 140, 190]) + texture, 0, 255).astype(np.uint8)   # skin-ish, fine grain
    path, label = tmp_path / "p.jpg", 1
    path.write_bytes(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    photos, failed = train_relevance.describe_photos([{"uri": str(path), "label": label, "group": "g", "source": 0}])
    assert not failed
    by_copy = {p["copy"] or f"{p['ev']:+g} EV": p for p in photos}
    assert set(by_copy) == {"+0 EV", "-2 EV", "avif q70"}
    assert [p for p in photos if train_relevance.is_original(p)] == [by_copy["+0 EV"]]
    assert {p["group"] for p in photos} == {"g"} and {p["label"] for p in photos} == {label}   # one fold
    d = decode(path.read_bytes(), analysis_short_side=224)
    ok, avif = cv2.imencode(".avif", d.image, [cv2.IMWRITE_AVIF_QUALITY, 70])
    assert ok
    again = to_analysis_size(decode(avif.tobytes(), analysis_short_side=224).image, 224)
    # float32 reductions may round differently by memory alignment (as above): 1e-5, not bit-equal
    np.testing.assert_allclose(by_copy["avif q70"]["colour"], rel.cell_descriptors(again), atol=1e-5)
    assert not np.array_equal(by_copy["avif q70"]["colour"], by_copy["+0 EV"]["colour"])


def test_trainer_also_learns_each_photo_with_sensor_noise_added_at_its_own_resolution(tmp_path):
    """Trained on clean photos only, the networks read noise as not-skin
    texture: with --noise_copies every photo is also learned from with 2-8
    levels of noise, added before the analysis resize (as a camera adds it),
    the same on every run."""
    import cv2
    from transforms.image.colour import with_sensor_noise
    photo = np.full((480, 640, 3), (110, 140, 190), np.uint8)   # flat: all the copy's texture is the noise
    path = tmp_path / "p.png"
    path.write_bytes(cv2.imencode(".png", photo)[1].tobytes())
    row = {"uri": str(path), "label": 1, "group": "g", "source": 0}
    assert not [p for p in train_relevance.describe_photos([row])[0] if p["copy"] == train_relevance.NOISE_COPY]
    photos, _ = train_relevance.describe_photos([row], noise_copies=True)
    noisy = next(p for p in photos if p["copy"] == train_relevance.NOISE_COPY)
    assert noisy["ev"] == 0.0 and not train_relevance.is_original(noisy) and noisy["group"] == "g"
    again, _ = train_relevance.describe_photos([row], noise_copies=True)
    np.testing.assert_allclose(next(p for p in again if p["copy"] == train_relevance.NOISE_COPY)["colour"],
                               noisy["colour"], atol=1e-5)
    clean = next(p for p in photos if train_relevance.is_original(p))
    lap = rel.CELL_DESCRIPTORS.index("laplacian")
    assert clean["colour"][:, lap].max() < 0.01 < noisy["colour"][:, lap].min()
    # Added at 640x480, then averaged by the resize to 224 px: weaker than the same noise added at 224 px.
    sd, seed = train_relevance.noise_of(path.read_bytes())
    assert 2.0 <= sd <= 8.0
    at_224 = rel.cell_descriptors(with_sensor_noise(to_analysis_size(photo, 224), sd, seed))
    assert noisy["colour"][:, lap].mean() < at_224[:, lap].mean()


def _scene(seed: int, size=(600, 800)):
    """A photo-like array: smooth shapes and fine grain, different per seed."""
    import cv2
    rng = np.random.default_rng(seed)
    shapes = cv2.GaussianBlur(rng.normal(0, 60, (*size, 3)), (0, 0), 25) * 6
    grain = cv2.GaussianBlur(rng.normal(0, 12, (*size, 3)), (0, 0), 1.0)
    return np.clip(np.array([100, 130, 170]) + shapes + grain, 0, 255).astype(np.uint8)


def test_copies_of_a_photo_fall_in_its_fold_and_distinct_photos_keep_theirs(tmp_path):
    """Folds are drawn by group, and a group was the photo's uri: a photo
    uploaded twice, or cropped and saved again, landed in two folds, and the
    networks that judged one copy had learned the other (cross-validation
    flattered). Photos curate would call exact or near duplicates now share
    one group; copies with two labels are a labelling error."""
    import cv2
    from transforms.curate.duplicates import pair_distance
    from transforms.image.analyze import analyze_image
    def save(name, image, quality=92):
        (tmp_path / name).write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
        return {"uri": str(tmp_path / name), "label": 1, "group": name, "source": 0}
    rows = [save(f"p{i}.jpg", _scene(i)) for i in range(4)]
    (tmp_path / "again.jpg").write_bytes((tmp_path / "p0.jpg").read_bytes())   # uploaded twice
    rows.append({"uri": str(tmp_path / "again.jpg"), "label": 1, "group": "again.jpg", "source": 0})
    h, w = 600, 800   # p1 cropped to its centre 92%, resized x0.85, saved again at q75
    crop = _scene(1)[round(h * 0.04):round(h * 0.96), round(w * 0.04):round(w * 0.96)]
    rows.append(save("crop.jpg", cv2.resize(crop, None, fx=0.85, fy=0.85, interpolation=cv2.INTER_AREA), 75))
    policy = load_policy(with_model=False)
    row = {r["group"]: analyze_image(r["uri"], open(r["uri"], "rb").read(), policy)[0] for r in rows}
    assert pair_distance(row["crop.jpg"], row["p1.jpg"]) <= policy.dup_radius   # curate's near duplicate
    assert min(pair_distance(row[f"p{i}.jpg"], row[f"p{j}.jpg"]) for i in range(4) for j in range(i)) > 12

    notes = []
    photos, failed = train_relevance.describe_photos(rows, notes=notes)
    assert not failed
    group = {os.path.basename(p["uri"]): p["group"] for p in photos}
    assert group["again.jpg"] == group["p0.jpg"] == "again.jpg"   # the smallest name of those joined
    assert group["crop.jpg"] == group["p1.jpg"] == "crop.jpg"
    assert group["p2.jpg"] == "p2.jpg" and group["p3.jpg"] == "p3.jpg"
    assert {p["group"] for p in photos if p["uri"].endswith("p0.jpg")} == {"again.jpg"}   # its training copies too
    originals = [p for p in photos if train_relevance.is_original(p)]
    assert sorted(os.path.basename(p["uri"]) for p in originals if p.get("joined")) == ["p0.jpg", "p1.jpg"]
    assert notes == ["2 groups of photos joined others holding exact or near duplicates of their photos, "
                     "so that each copy falls in the same fold"]

    rows[4]["label"] = 0   # the copy labelled otherwise
    with pytest.raises(UsageError, match=r"again.jpg and .*p0.jpg are the same file, labelled not_skin and skin"):
        train_relevance.describe_photos(rows)
    rows[4]["label"], rows[5]["label"] = 1, 0
    notes = []
    train_relevance.describe_photos(rows, notes=notes)
    assert any(n.startswith("near duplicates labelled differently") and "crop.jpg (not_skin)" in n for n in notes)


def test_an_output_that_is_not_an_earlier_model_is_refused_before_training(tmp_path):
    """--output is replaced whole: naming the labels CSV or a photo wrote the
    model over it, and naming a folder deleted the folder."""
    import cv2
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "p.jpg").write_bytes(cv2.imencode(".jpg", _scene(0))[1].tobytes())
    labels = _labels_csv(tmp_path / "l.csv", [["p.jpg", "skin", ""]])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for output, message in ((labels, "exists and holds no relevance model: it would be replaced"),
                            (str(photos / "p.jpg"), "exists and holds no relevance model"),
                            (str(photos), "a directory, not a regular file")):
        with pytest.raises(UsageError, match=message):
            train_relevance.run(["--labels", labels, "--image_root", str(photos), "--output", output])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    earlier = tmp_path / "model.json"   # an earlier model is what --output is for: replaced
    earlier.write_text(rel.DEFAULT_MODEL_PATH.read_text())
    with pytest.raises(UsageError, match="need at least 2 photos of each label"):   # got past the check
        train_relevance.run(["--labels", labels, "--image_root", str(photos), "--output", str(earlier)])


def test_a_photo_listed_twice_is_learned_once_and_two_labels_for_it_are_refused(tmp_path, capsys):
    a = _labels_csv(tmp_path / "a.csv", [["x.jpg", "skin", ""], ["y.jpg", "not_skin", ""], ["x.jpg", "yes", ""],
                                         ["z.jpg", "skin", ""], ["w.jpg", "no", ""]])
    rows, _ = train_relevance.read_labels([a, a], str(tmp_path))
    assert [(os.path.basename(r["uri"]), r["label"]) for r in rows] == [("x.jpg", 1), ("y.jpg", 0), ("z.jpg", 1),
                                                                        ("w.jpg", 0)]
    assert "6 label rows repeat a photo listed earlier with the same label" in capsys.readouterr().err
    # a generated sample set's ground truth given twice: its photos once too
    truth = tmp_path / "ground_truth.csv"
    truth.write_text("image_path,case_id,defect\nimages/s.jpg,1,none\nimages/n.jpg,2,not_skin\n")
    rows, _ = train_relevance.read_labels([a, str(truth), str(truth)], str(tmp_path))
    assert len(rows) == 6 and "3 label rows repeat" in capsys.readouterr().err   # x.jpg, and the two
    b = _labels_csv(tmp_path / "b.csv", [["y.jpg", "skin", ""]])
    with pytest.raises(UsageError, match=r"--labels .*b.csv line 2: .*y.jpg is labelled skin here "
                                         r"and not_skin at --labels .*a.csv line 3"):
        train_relevance.read_labels([a, b], str(tmp_path))


@pytest.mark.e2e
def test_trainer_names_unreadable_photos_and_keeps_going(generated, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    fifo = tmp_path / "fifo.jpg"  # must be skipped, not hang the trainer
    os.mkfifo(fifo)
    rows = [[str(p), "skin" if y else "not_skin", p.stem] for p, y in generated[:10] + generated[-6:]]
    labels = _labels_csv(tmp_path / "labels.csv", rows + [[str(broken), "skin", "broken"], [str(fifo), "skin", "fifo"]])
    hung = []
    def unblock():  # a watchdog: ends a read blocked on the FIFO, and the test fails
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            hung.append(True)
        except OSError:
            pass
    watchdog = threading.Timer(20, unblock)
    watchdog.start()
    try:
        doc = train_relevance.run(["--labels", labels, "--output", str(tmp_path / "m.json"), "--folds", "2"])
    finally:
        watchdog.cancel()
    assert not hung, "the trainer blocked on a FIFO"
    assert doc["training"]["unreadable"] == 2 and doc["training"]["photos"] == 16
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "not a regular file" in err


@pytest.mark.e2e
@pytest.mark.parametrize("rows, message", [
    ([["a.jpg", "cat"]], "label 'cat' is not skin or not_skin"),
    ([["a.jpg", "skin"]], "need at least 2 photos of each label"),
])
def test_trainer_bad_labels_are_one_line_errors(tmp_path, rows, message):
    path = tmp_path / "l.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["uri", "label"]] + rows)
    with pytest.raises(UsageError, match=message):
        train_relevance.run(["--labels", str(path), "--output", str(tmp_path / "m.json")])


@pytest.mark.e2e
def test_trainer_needs_uri_and_label_columns(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("file,kind\na.jpg,skin\n")
    with pytest.raises(UsageError, match="needs a header with columns uri,label"):
        train_relevance.run(["--labels", str(path), "--output", str(tmp_path / "m.json")])


def test_a_model_from_other_descriptors_is_refused_in_one_line(tmp_path):
    doc = json.loads(rel.DEFAULT_MODEL_PATH.read_text())
    doc["cell_descriptors"] = doc["cell_descriptors"][:-1]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="retrain it"):
        rel.RelevanceModel.load(path)


@pytest.mark.e2e
def test_trainer_reads_a_generated_sample_sets_ground_truth(sample_dir, tmp_path):
    doc = train_relevance.run(["--labels", str(sample_dir / "ground_truth.csv"), "--output",
                               str(tmp_path / "m.json"), "--folds", "2"])
    with open(sample_dir / "ground_truth.csv", newline="") as f:
        truth = list(csv.DictReader(f))
    skin = min(train_relevance.SAMPLE_MAX_PLAIN, sum(t["defect"] == "none" for t in truth)) + sum(
        t["defect"] == "dim_textured" for t in truth)
    assert doc["training"]["skin"] == skin
    assert doc["training"]["not_skin"] == sum(t["defect"] == "not_skin" for t in truth) > 0
