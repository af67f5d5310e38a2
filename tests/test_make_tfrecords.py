"""make_tfrecords end to end: read back, leakage, determinism, a trainer, bad input."""
from __future__ import annotations

import ast
import csv
import json
from collections import defaultdict

import numpy as np
import pytest

from beam_jobs import make_tfrecords
from beam_jobs.cli import main
from beam_jobs.evaluate_curate import load_features
from schemas.examples import dataset_info, read_split
from transforms.io.inputs import join_root
from transforms.dataset.splits import component_split, split_of

from helpers import UNREADABLE, returns_without_a_writer, unreadable_file


def _args(labelled, curated, out, *extra):
    ds = labelled / "dataset"
    return ["--curated", str(curated), "--scin_cases", str(ds / "scin_cases.csv"),
            "--scin_labels", str(ds / "scin_labels.csv"), "--image_root", str(labelled),
            "--output", str(out), *extra]


@pytest.fixture(scope="module")
def tfrecords(labelled, curated, tmp_path_factory):
    out = tmp_path_factory.mktemp("tfrecords")
    make_tfrecords.run(_args(labelled, curated, out, "--image_size", "96"))
    return out


def _expected_labelled_accepted(labelled, curated):
    """Independently: accepted by curate and labelled per the SCIN label rule."""
    ds = labelled / "dataset"
    labels = {r["case_id"]: r for r in csv.DictReader(open(ds / "scin_labels.csv"))}
    rows = load_features(str(curated))
    expected = {}
    for case in csv.DictReader(open(ds / "scin_cases.csv")):
        lab = labels.get(case["case_id"], {})
        weighted = ast.literal_eval(lab.get("weighted_skin_condition_label") or "{}")
        names = ast.literal_eval(lab.get("dermatologist_skin_condition_on_label_name") or "[]")
        label = max(sorted(weighted), key=lambda k: weighted[k]) if weighted else (names[0] if names else None)
        for i in (1, 2, 3):
            path = case[f"image_{i}_path"]
            uri = join_root(str(labelled), path) if path else None
            if uri and label and rows[uri]["status"] == "accepted":
                expected[uri] = (label, case["case_id"], rows[uri]["cluster_id"])
    return expected


def _read_all(out):
    got = {}
    for split in ("train", "validation", "test"):
        for features, label_id in read_split(str(out), split):
            got[features["uri"].numpy().decode()] = (split, features, int(label_id))
    return got


@pytest.mark.e2e
def test_every_accepted_labelled_image_is_read_back_once(labelled, curated, tfrecords):
    expected = _expected_labelled_accepted(labelled, curated)
    got = _read_all(tfrecords)
    info = dataset_info(str(tfrecords))
    assert set(got) == set(expected)
    assert sum(info["splits"][s]["examples"] for s in ("train", "validation", "test")) == len(expected)
    vocab = info["label_vocabulary"]
    rare = info["rare_classes"]["classes"]
    for uri, (split, f, label_id) in got.items():
        assert f["image"].shape == (96, 96, 3) and f["image"].dtype.name == "uint8"
        label = f["label"].numpy().decode()
        expected_label = expected[uri][0]
        assert label == ("other" if expected_label in rare else expected_label)
        if label_id >= 0:
            assert vocab[label_id] == label
        else:
            assert split != "train" and label not in vocab
    assert all(label in vocab for uri, (s, f, _) in got.items() if s == "train"
               for label in [f["label"].numpy().decode()])


@pytest.mark.e2e
def test_no_case_or_duplicate_cluster_spans_two_splits(labelled, curated, tfrecords):
    expected = _expected_labelled_accepted(labelled, curated)
    splits_of_case, splits_of_cluster = defaultdict(set), defaultdict(set)
    for uri, (split, _f, _l) in _read_all(tfrecords).items():
        _label, case_id, cluster_id = expected[uri]
        splits_of_case[case_id].add(split)
        splits_of_cluster[cluster_id].add(split)
    assert all(len(s) == 1 for s in splits_of_case.values())
    assert all(len(s) == 1 for s in splits_of_cluster.values())
    assert len({next(iter(s)) for s in splits_of_case.values()}) == 3


@pytest.mark.e2e
def test_dataset_info_and_transform_fn(tfrecords):
    info = dataset_info(str(tfrecords))
    assert (tfrecords / "transform_fn" / "saved_model.pb").exists()
    assert (tfrecords / "transformed_metadata").is_dir() and not (tfrecords / "tmp").exists()
    assert info["compression"] == "gzip" and info["class_weights"]
    for split in ("train", "validation", "test"):
        shards = info["splits"][split]["shards"]
        assert [s["file"] for s in shards] == [f"{split}-{i:05d}-of-{len(shards):05d}.tfrecord.gz"
                                              for i in range(len(shards))]
        assert sum(s["examples"] for s in shards) == info["splits"][split]["examples"]
        assert sum(info["splits"][split]["by_monk_group"].values()) == info["splits"][split]["examples"]
    assert info["dead_letters"]["rejected_by_curate"] > 0 and info["dead_letters"]["unlabeled"] > 0
    assert (tfrecords / "_SUCCESS").exists()


@pytest.mark.e2e
def test_rerun_gives_byte_identical_records(labelled, curated, tfrecords):
    data = lambda d: {p.name: p.read_bytes() for p in [*d.iterdir(), *(d / "metadata").iterdir()]
                      if p.suffix in (".gz", ".json", ".pbtxt")}
    before = data(tfrecords)
    make_tfrecords.run(_args(labelled, curated, tfrecords, "--image_size", "96"))
    assert data(tfrecords) == before


@pytest.mark.e2e
def test_a_keras_model_trains_on_the_train_split(tfrecords):
    import tensorflow as tf
    info = dataset_info(str(tfrecords))
    n_classes = len(info["label_vocabulary"])
    ds = (read_split(str(tfrecords), "train", shuffle_buffer=256, seed=1)
          .map(lambda f, y: (tf.cast(f["image"], tf.float32) / 255.0, y)).batch(16).repeat())
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([
        tf.keras.Input((96, 96, 3)), tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(n_classes)])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(ds, steps_per_epoch=5, epochs=2, verbose=0)
    losses = hist.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] + 0.5


@pytest.mark.e2e
def test_tf_transform_clients_read_the_records_and_transform_raw_features_by_name(curated, tfrecords):
    """Only tf.data, TFTransformOutput and pyarrow (no project helper): the raw
    schema is saved, the records parse with the transformed spec, and
    transform_features_layer() maps raw features, by name, to what the records hold."""
    import pyarrow.parquet as pq
    import tensorflow as tf
    import tensorflow_transform as tft
    out = tft.TFTransformOutput(str(tfrecords))
    raw_spec = out.raw_feature_spec()  # raised before the raw metadata was written
    assert {"image", "label", "uri", "brightness_mean", "age_group", "body_parts"} <= set(raw_spec)
    files = sorted(tf.io.gfile.glob(str(tfrecords / "train-*.tfrecord.gz")))
    records = [tf.io.parse_single_example(r, out.transformed_feature_spec())
               for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(8)]
    assert records and tf.io.decode_jpeg(records[0]["image"]).shape == (96, 96, 3)

    # Raw features by name: pass-through ones from the records, categoricals
    # back from their vocabularies, numerics from curate's own features table.
    features = pq.read_table(str(curated / "features")).to_pylist()
    curate_row = {r["uri"]: r for r in features}
    numeric = [k[:-2] for k in out.transformed_feature_spec() if k.endswith("_z")]
    categorical = [k[:-3] for k in out.transformed_feature_spec()
                   if k.endswith("_id") and k[:-3] in raw_spec and k != "label_id"]
    assert len(numeric) == 6 and len(categorical) == 5, (numeric, categorical)
    raw = {}
    for name, spec in raw_spec.items():
        if name in numeric:
            values = [curate_row[r["uri"].numpy().decode()][name] for r in records]
        elif name in categorical:
            vocab = out.vocabulary_by_name(name)
            values = [vocab[int(r[f"{name}_id"])] if int(r[f"{name}_id"]) >= 0 else b"never-seen"
                      for r in records]
        else:
            values = [r[name] for r in records]
        raw[name] = tf.constant(np.stack([np.asarray(v) for v in values]), dtype=spec.dtype)
    layer = out.transform_features_layer()
    got = layer(raw)
    for key in ["label_id"] + [f"{k}_id" for k in categorical]:
        np.testing.assert_array_equal(got[key].numpy(), [int(r[key]) for r in records], err_msg=key)
    for k in numeric:
        np.testing.assert_allclose(got[f"{k}_z"].numpy(), [float(r[f"{k}_z"]) for r in records],
                                   rtol=1e-5, atol=1e-5, err_msg=k)
    assert [u.decode() for u in got["uri"].numpy()] == [r["uri"].numpy().decode() for r in records]


def test_split_of_a_group_never_moves_as_groups_are_added():
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    groups = [f"case:{i}" for i in range(5000)]
    first = {g: split_of(g, fractions) for g in groups[:2500]}
    assert {g: split_of(g, fractions) for g in groups[:2500]} == first
    counts = {s: sum(split_of(g, fractions) == s for g in groups) for s in fractions}
    assert abs(counts["validation"] / 5000 - 0.1) < 0.02
    val = next(g for g in groups if split_of(g, fractions) == "validation")
    train = next(g for g in groups if split_of(g, fractions) == "train")
    assert component_split([val, train], fractions) == "validation"


@pytest.mark.e2e
def test_labels_pointing_at_no_image_become_dead_letters(labelled, curated, tmp_path):
    labels = tmp_path / "labels.csv"
    rows = load_features(str(curated))
    accepted = sorted(u for u, r in rows.items() if r["status"] == "accepted")[:12]
    labels.write_text("image_uri,label,group_id\n" + "".join(
        f"{u},{'A' if i % 2 else 'B'},g{i}\n" for i, u in enumerate(accepted)) + f"{tmp_path}/gone.jpg,A,gx\n")
    out = tmp_path / "out"
    make_tfrecords.run(["--curated", str(curated), "--labels_csv", str(labels), "--output", str(out),
                        "--image_size", "64", "--split_fractions", "0.5,0.25,0.25", "--min_class_count", "1"])
    dead = [json.loads(l) for f in (out / "dead_letters").glob("*.jsonl") for l in f.read_text().splitlines()]
    assert {(d["uri"], d["reason"]) for d in dead if d["uri"].endswith("gone.jpg")} == {(f"{tmp_path}/gone.jpg", "no_image")}
    info = dataset_info(str(out))
    assert sum(info["splits"][s]["examples"] for s in ("train", "validation", "test")) == 12


@pytest.mark.e2e
def test_an_image_rewritten_after_curate_is_a_dead_letter_not_an_example(labelled, curated, tmp_path):
    """make_tfrecords read whatever a file held when it made the example: an
    accepted photo overwritten by a black frame trained with the old photo's
    verdict and features, and one overwritten by a copy of another accepted
    photo put the same pixels in two splits."""
    import shutil

    import cv2

    from beam_jobs import curate
    rows = load_features(str(curated))
    photos = sorted(u for u, r in rows.items() if r["status"] == "accepted" and u.endswith(".jpg"))[:6]
    uploads = tmp_path / "in"
    uploads.mkdir()
    for i, u in enumerate(photos):
        shutil.copy(u, uploads / f"p{i}.jpg")
    curate.run(["--input", f"{uploads}/", "--output", str(tmp_path / "curated")])
    assert sum(r["status"] == "accepted" for r in load_features(str(tmp_path / "curated")).values()) == 6
    (uploads / "p0.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))[1].tobytes())
    shutil.copy(uploads / "p2.jpg", uploads / "p1.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_uri,label,group_id\n"
                      + "".join(f"{uploads}/p{i}.jpg,{'AB'[i % 2]},g{i}\n" for i in range(6)))
    out = tmp_path / "out"
    make_tfrecords.run(["--curated", str(tmp_path / "curated"), "--labels_csv", str(labels), "--output", str(out),
                        "--image_size", "32", "--split_fractions", "0.5,0.25,0.25", "--min_class_count", "1"])
    dead = [json.loads(l) for f in (out / "dead_letters").glob("*.jsonl") for l in f.read_text().splitlines()]
    assert sorted((d["uri"], d["reason"]) for d in dead) == [
        (f"{uploads}/p{i}.jpg", "changed_since_curate") for i in (0, 1)]
    assert "rerun curate" in dead[0]["error"]
    info = dataset_info(str(out))
    assert sum(info["splits"][s]["examples"] for s in ("train", "validation", "test")) == 4
    assert info["dead_letters"] == {"changed_since_curate": 2}


@pytest.mark.e2e
@pytest.mark.parametrize("make_args, message", [
    (lambda d, l, c: ["--curated", str(c), "--output", str(d)], "give either --scin_cases with --scin_labels, or --labels_csv"),
    (lambda d, l, c: ["--curated", str(c), "--labels_csv", str(d / "nope.csv"), "--output", str(d)], "cannot read"),
    (lambda d, l, c: ["--curated", str(c), "--labels_csv", str(l / "dataset" / "scin_cases.csv"),
                      "--output", str(d)], "missing column(s) image_uri, label"),
    (lambda d, l, c: ["--curated", str(d), "--labels_csv", "x.csv", "--output", str(d / "out")], "has no _SUCCESS: curate has not finished"),
    (lambda d, l, c: ["--curated", str(c), "--labels_csv", "x", "--output", str(d), "--split_fractions", "0.9,0.2,0"],
     "summing to 1"),
    # nan passes every comparison: 0.5,nan,0.5 ran the job with an empty validation split
    (lambda d, l, c: ["--curated", str(c), "--labels_csv", "x", "--output", str(d), "--split_fractions", "0.5,nan,0.5"],
     "summing to 1"),
    (lambda d, l, c: ["--curated", str(c), "--labels_csv", "x", "--output", str(d), "--split_fractions", "nan,0.5,0.5"],
     "summing to 1"),
])
def test_bad_arguments_give_one_line_errors(make_args, message, labelled, curated, tmp_path, capsys):
    assert main(make_tfrecords.run, make_args(tmp_path, labelled, curated), prog="make_tfrecords") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("make_tfrecords: error:") and message in err and "\n" not in err


@pytest.mark.e2e
@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_labels_file_that_cannot_be_read_is_a_one_line_error_and_a_fifo_never_hangs(kind, curated, tmp_path,
                                                                                      capsys):
    """The label CSVs were opened plainly to check their header: a FIFO hung the job."""
    labels = unreadable_file(kind, tmp_path / "labels.csv")
    argv = ["--curated", str(curated), "--labels_csv", str(labels), "--output", str(tmp_path / "o")]
    assert returns_without_a_writer(lambda: main(make_tfrecords.run, argv, prog="make_tfrecords"), labels) == 2
    err = capsys.readouterr().err.strip()
    assert err == "make_tfrecords: error: " + UNREADABLE[kind].format(flag="--labels_csv", path=labels)
