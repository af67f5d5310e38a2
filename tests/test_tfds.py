"""make_tfrecords --tfds, read by TensorFlow Datasets as a TFDS user would.

The real job writes the records; tensorflow_datasets' builder_from_directory
reads them back. Everything a TFDS user sees (splits, counts, shard lengths,
feature types, decoded images and labels) is compared with the job's own
dataset_info.json and with the tf.Example records parsed by plain tf.data.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from beam_jobs import make_tfrecords
from beam_jobs.cli import main
from schemas import examples as E

SIZE = 64


def _args(labelled, curated, out, *extra):
    ds = labelled / "dataset"
    return ["--curated", str(curated), "--scin_cases", str(ds / "scin_cases.csv"),
            "--scin_labels", str(ds / "scin_labels.csv"), "--image_root", str(labelled),
            "--output", str(out), "--image_size", str(SIZE), *extra]


@pytest.fixture(scope="module")
def tfds_out(labelled, curated, tmp_path_factory):
    """One --tfds run; a small --target_shard_mb so train spans several shards."""
    out = tmp_path_factory.mktemp("tfds_records")
    make_tfrecords.run(_args(labelled, curated, out, "--tfds", "--compression", "none", "--target_shard_mb", "0.1"))
    return out


def _records_by_uri(files):
    """The raw tf.Example records, parsed with the transformed spec by tf.data alone."""
    import tensorflow as tf
    spec = E.transformed_feature_spec()
    return {ex["uri"].numpy().decode(): ex for ex in
            (tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files))}


@pytest.mark.e2e
def test_tfds_loads_every_split_with_the_jobs_counts_and_typed_features(tfds_out):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    info = json.loads((tfds_out / "dataset_info.json").read_text())
    assert info["compression"] == "none" and info["tfds"] == {"dir": "tfds", "name": E.TFDS_NAME,
                                                            "version": E.TFDS_VERSION}
    builder = tfds.builder_from_directory(str(tfds_out / "tfds"))
    features = builder.info.features
    image = features["image"]
    assert isinstance(image, tfds.features.Image)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.encoding_format == "jpeg"
    label = features["label_id"]
    assert isinstance(label, tfds.features.ClassLabel) and label.names == info["label_vocabulary"]
    for name in ("uri", "label", "key", "case_id", "split"):
        assert isinstance(features[name], tfds.features.Text), name
    assert features["monk_us"].dtype == np.int64 and features["monk_us"].shape == ()
    assert features["sharpness_z"].dtype == np.float32 and features["age_group_id"].dtype == np.int64
    assert features["body_parts"].dtype == np.float32 and features["body_parts"].shape == (12,)
    assert builder.info.supervised_keys == ("image", "label_id")

    assert set(builder.info.splits) == {"train", "validation", "test"}
    assert len(info["splits"]["train"]["shards"]) > 1  # several shards, named and counted as TFDS does
    n_checked = 0
    for split in ("train", "validation", "test"):
        ours = info["splits"][split]
        theirs = builder.info.splits[split]
        assert theirs.num_examples == ours["examples"] > 0
        assert theirs.shard_lengths == [s["examples"] for s in ours["shards"]]
        assert [f.rsplit("/", 1)[-1] for f in theirs.filenames] == [s["file"].split("/")[-1] for s in ours["shards"]]
        assert [s["file"] for s in ours["shards"]] == [
            f"tfds/{E.TFDS_NAME}-{split}.tfrecord-{i:05d}-of-{len(ours['shards']):05d}"
            for i in range(len(ours["shards"]))]

        # Each TFDS example against the same record read with tf.data.
        records = _records_by_uri([str(tfds_out / s["file"]) for s in ours["shards"]])
        loaded = list(builder.as_dataset(split=split))
        assert len(loaded) == len(records) == ours["examples"]
        for ex in loaded:
            record = records.pop(ex["uri"].numpy().decode())
            assert ex["image"].dtype == tf.uint8 and ex["image"].shape == (SIZE, SIZE, 3)
            np.testing.assert_array_equal(ex["image"].numpy(), tf.io.decode_jpeg(record["image"], channels=3).numpy())
            label_id = int(ex["label_id"])
            assert label_id == int(record["label_id"])
            if label_id >= 0:  # -1: a validation/test label that train never saw
                assert label.int2str(label_id) == ex["label"].numpy().decode() == record["label"].numpy().decode()
            else:
                assert split != "train"
            np.testing.assert_array_equal(ex["body_parts"].numpy(), record["body_parts"].numpy())
            assert float(ex["sharpness_z"]) == float(record["sharpness_z"])
            n_checked += 1
        assert not records  # every record came back through TFDS once
    assert n_checked == sum(info["splits"][s]["examples"] for s in ("train", "validation", "test"))

    images, labels = next(iter(builder.as_dataset(split="validation", as_supervised=True, batch_size=4)))
    assert images.shape == (4, SIZE, SIZE, 3) and labels.dtype == tf.int64


@pytest.mark.e2e
def test_project_readers_read_the_tfds_layout(tfds_out):
    """read_split follows dataset_info.json into tfds/: same examples as TFDS."""
    import tensorflow_datasets as tfds
    got = sorted(f["uri"].numpy().decode() for f, _ in E.read_split(str(tfds_out), "validation"))
    builder = tfds.builder_from_directory(str(tfds_out / "tfds"))
    assert got == sorted(ex["uri"].numpy().decode() for ex in builder.as_dataset(split="validation"))
    assert not list(tfds_out.glob("*.tfrecord*"))  # no second copy of the records


@pytest.mark.e2e
def test_stale_shards_of_the_other_layout_are_dropped(tfds_out, tmp_path):
    """Finalize's cleanup on a copy of a --tfds output: a run without --tfds
    drops the whole TFDS dataset (its shards and metadata would describe
    another run); a --tfds run drops top-level shards and TFDS shards it did
    not write, and keeps TFDS's metadata."""
    out = tmp_path / "out"
    shutil.copytree(tfds_out, out)
    info = E.dataset_info(str(out))
    written = {s["file"] for v in info["splits"].values() for s in v["shards"]}
    (out / "train-00000-of-00001.tfrecord.gz").write_bytes(b"old")
    (out / "tfds" / f"{E.TFDS_NAME}-train.tfrecord-00000-of-00009").write_bytes(b"old")
    make_tfrecords._drop_stale_shards(str(out), written, set(), tfds=True)
    assert not list(out.glob("*.tfrecord*"))
    assert {f"tfds/{p.name}" for p in (out / "tfds").glob("*.tfrecord-*")} == written
    assert {p.name for p in (out / "tfds").glob("*.json")} == {"dataset_info.json", "features.json"}

    (out / "train-00000-of-00001.tfrecord.gz").write_bytes(b"new")
    # Records this job does not name as it names its own (another dataset's in
    # a shared folder) were deleted as stale too: they are kept.
    others = ["faces-00000-of-00002.tfrecord", "train.tfrecord", "train-00000-of-00001.tfrecord.bak"]
    for name in others:
        (out / name).write_bytes(b"another dataset's")
    make_tfrecords._drop_stale_shards(str(out), {"train-00000-of-00001.tfrecord.gz"}, set(), tfds=False)
    assert not list((out / "tfds").iterdir())
    assert sorted(p.name for p in out.glob("*.tfrecord*")) == sorted(others + ["train-00000-of-00001.tfrecord.gz"])


@pytest.mark.parametrize("compression", [[], ["--compression", "gzip"]])
def test_tfds_with_gzip_is_a_one_line_error(compression, tmp_path, capsys):
    args = ["--curated", str(tmp_path), "--labels_csv", "x.csv", "--output", str(tmp_path / "o"),
            "--tfds", *compression]
    assert main(make_tfrecords.run, args, prog="make_tfrecords") == 2
    err = capsys.readouterr().err.strip()
    assert err == "make_tfrecords: error: --tfds needs --compression none (TFDS reads no gzip TFRecords)"


def test_label_names_tfds_cannot_keep_become_numbered_classes():
    """TFDS reads ClassLabel names back stripped, one a line: names that would
    not survive give numbered classes rather than a dataset that fails to load."""
    assert E.tfds_features(SIZE, ["Eczema", "other"])["label_id"].names == ["Eczema", "other"]
    for bad in ([" padded", "b"], ["", "b"], ["two\nlines", "b"]):
        label = E.tfds_features(SIZE, bad)["label_id"]
        assert label.num_classes == 2 and label.names == ["0", "1"], bad


def test_a_split_with_no_examples_is_left_out_of_the_tfds_splits(tmp_path):
    """TFDS cannot read a split of 0 examples (it takes 0 for unknown); left
    out, asking for it names the splits there are."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from transforms.dataset.examples import to_example
    from transforms.io.tfds_metadata import tfds_shard_name, write_tfds_metadata
    with tf.io.TFRecordWriter(str(tmp_path / tfds_shard_name("d", "train", 0, 1))) as w:
        w.write(to_example({"uri": "a"}))
    (tmp_path / tfds_shard_name("d", "test", 0, 1)).write_bytes(b"")
    write_tfds_metadata(str(tmp_path), "d", "1.0.0", tfds.features.FeaturesDict({"uri": tfds.features.Text()}),
                        {"train": [1], "test": [0]}, "one example")
    builder = tfds.builder_from_directory(str(tmp_path))
    assert set(builder.info.splits) == {"train"}
    assert [ex["uri"].numpy() for ex in builder.as_dataset(split="train")] == [b"a"]
    with pytest.raises(ValueError, match="Unknown split"):
        builder.as_dataset(split="test")
