"""train_baseline end to end on a small real dataset, and the model-bundle contract."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from beam_jobs import train_baseline
from schemas.examples import dataset_info, read_split
from schemas.model_bundle import INFO_FILE, MODEL_FILE, load_bundle


@pytest.fixture(scope="module")
def tfrecords(tfrecords64):
    return tfrecords64


@pytest.fixture(scope="module")
def trained(tfrecords, tmp_path_factory):
    out = tmp_path_factory.mktemp("tb_model")
    result = train_baseline.run(["--tfrecords", str(tfrecords), "--output", str(out),
                                 "--epochs", "2", "--batch_size", "16", "--seed", "3"])
    return out, result


@pytest.mark.e2e
def test_bundle_loads_from_the_directory_and_the_keras_file(tfrecords, trained):
    out, result = trained
    vocab = dataset_info(str(tfrecords))["label_vocabulary"]
    for uri in (str(out), str(out / MODEL_FILE)):
        model, info = load_bundle(uri)
        assert info["label_vocabulary"] == vocab and model.output_shape == (None, len(vocab))
        assert info["version"] == result["version"] and info["image_size"] == 64
        assert info["trained_on"]["dataset"] == str(tfrecords)
        assert info["trained_on"]["sources"]["image_size"] == 64
        assert info["metrics"]["validation_accuracy"] == result["metrics"]["validation_accuracy"]


@pytest.mark.e2e
def test_predictions_on_a_validation_batch_are_finite_probabilities(tfrecords, trained):
    model, info = load_bundle(str(trained[0]))
    features, labels = next(iter(read_split(str(tfrecords), "validation", batch_size=16)))
    assert features["image"].dtype.name == "uint8"  # fed exactly as decoded, no scaling outside
    probs = model.predict(features["image"], verbose=0)
    assert probs.shape == (len(labels), len(info["label_vocabulary"]))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.e2e
def test_validation_metrics_skip_unknown_labels(tfrecords, trained):
    m = trained[1]["metrics"]
    n_split = dataset_info(str(tfrecords))["splits"]["validation"]["examples"]
    assert m["validation_examples"] + m["validation_skipped_unknown_label"] == n_split
    assert m["validation_examples"] > 0 and 0.0 <= m["validation_accuracy"] <= 1.0
    assert np.isfinite(m["validation_loss"])


@pytest.mark.e2e
def test_version_is_deterministic_for_dataset_seed_and_settings(tfrecords, trained):
    """The version names score's model=V partitions, which a rerun skips once
    complete: a 1-epoch model took a 30-epoch one's version, and score kept
    the other model's predictions for the nights it had scored."""
    raw = (tfrecords / "dataset_info.json").read_bytes()
    version = trained[1]["version"]
    training = json.loads((trained[0] / INFO_FILE).read_text())["training"]
    settings = {k: training[k] for k in ("epochs", "batch_size", "learning_rate", "class_weighting",
                                         "max_class_weight")}
    assert version == train_baseline.default_version(raw, 3, settings)
    assert train_baseline.default_version(raw, 3, settings) == version   # the same again
    assert version.startswith("baseline-") and version.endswith("-s3")
    assert train_baseline.default_version(raw, 4, settings) != version
    for change in ({"epochs": 1}, {"batch_size": 32}, {"learning_rate": 0.01}, {"class_weighting": "none"}):
        assert train_baseline.default_version(raw, 3, dict(settings, **change)) != version, change


@pytest.mark.e2e
def test_an_empty_validation_split_trains_without_validation_metrics(tfrecords, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tfrecords, data)
    info = json.loads((data / "dataset_info.json").read_text())
    info["splits"]["validation"].update(examples=0, shards=[])
    (data / "dataset_info.json").write_text(json.dumps(info))
    result = train_baseline.run(["--tfrecords", str(data), "--output", str(tmp_path / "m"),
                                 "--epochs", "1", "--batch_size", "32"])
    assert result["metrics"]["validation_accuracy"] is None
    assert "no validation metrics" in capsys.readouterr().err
    assert load_bundle(str(tmp_path / "m"))[1]["metrics"]["validation_examples"] == 0


def _one_line_value_error(uri, *words):
    with pytest.raises(ValueError) as e:
        load_bundle(str(uri))
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.e2e
def test_load_bundle_errors_are_one_line(trained, tmp_path):
    _one_line_value_error(tmp_path / "nowhere", "not found", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    _one_line_value_error(tmp_path / "empty", MODEL_FILE, "not found")
    bad = tmp_path / "bad"
    shutil.copytree(trained[0], bad)
    info = json.loads((bad / INFO_FILE).read_text())
    (bad / INFO_FILE).write_text(json.dumps({**info, "label_vocabulary": info["label_vocabulary"][:-1]}))
    _one_line_value_error(bad, "label_vocabulary", "units", str(bad))
    (bad / INFO_FILE).write_text("{not json")
    _one_line_value_error(bad / MODEL_FILE, "not valid JSON", str(bad / INFO_FILE))
    (bad / INFO_FILE).unlink()
    _one_line_value_error(bad, "model info not found", str(bad / INFO_FILE))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "beam_jobs.train_baseline", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_arguments_exit_2_with_one_line(tmp_path):
    empty_train = tmp_path / "empty_train"
    empty_train.mkdir()
    (empty_train / "dataset_info.json").write_text(json.dumps(
        {"label_vocabulary": [], "splits": {"train": {"examples": 0, "shards": []}}}))
    (tmp_path / "no_info").mkdir()
    cases = {"nowhere": "not found", "no_info": "no dataset_info.json", "empty_train": "train split is empty"}
    for name, words in cases.items():
        p = _cli("--tfrecords", str(tmp_path / name), "--output", str(tmp_path / "m"))
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert lines[0].startswith("train_baseline: error:") and words in lines[0], lines[0]
    p = _cli("--output", str(tmp_path / "m"))
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "train_baseline: error: the following arguments are required: --tfrecords"]
    assert not (tmp_path / "m").exists()


def _labelled_arrays(tfrecords, splits):
    images, labels = [], []
    for split in splits:
        for features, label_id in read_split(str(tfrecords), split, batch_size=64):
            images.append(features["image"].numpy())
            labels.append(label_id.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    return images[labels >= 0], labels[labels >= 0]


@pytest.mark.e2e  # trains on the shared generated set
def test_the_default_baseline_learns_the_lesions_beyond_the_majority_class(tfrecords, tmp_path):
    # The generator draws each condition's own lesion pattern; a baseline that
    # only learned the class frequencies would score the majority rate. Held-out
    # validation + test images (~40), default settings but the epochs.
    result = train_baseline.run(["--tfrecords", str(tfrecords), "--output", str(tmp_path / "m"), "--seed", "0"])
    model, _ = load_bundle(result["model_dir"])
    images, labels = _labelled_arrays(tfrecords, ("validation", "test"))
    accuracy = float((model.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    majority = np.bincount(labels).max() / len(labels)
    print(f"baseline on {len(labels)} held-out images: accuracy {accuracy:.3f}, majority class {majority:.3f}")
    assert len(labels) >= 30 and accuracy >= majority + 0.15, (accuracy, majority, len(labels))


def test_class_weights_are_square_rooted_and_capped_by_default():
    vocab = ["common", "rare", "unseen"]
    balanced = {"common": 0.25, "rare": 11.7}
    assert train_baseline.class_weights(vocab, balanced, "sqrt", 3.0) == {0: 0.5, 1: 3.0, 2: 1.0}
    assert train_baseline.class_weights(vocab, balanced, "sqrt", 5.0) == {0: 0.5, 1: round(11.7 ** 0.5, 6), 2: 1.0}
    assert train_baseline.class_weights(vocab, balanced, "balanced", 20.0) == {0: 0.25, 1: 11.7, 2: 1.0}
    assert train_baseline.class_weights(vocab, balanced, "none", 3.0) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_bad_learning_rate_or_weight_cap_is_a_one_line_error(tmp_path):
    from beam_jobs.cli import UsageError
    for flag, value in (("--learning_rate", "0"), ("--learning_rate", "inf"), ("--learning_rate", "nan"),
                        ("--max_class_weight", "0.5")):
        with pytest.raises(UsageError) as e:
            train_baseline.run(["--tfrecords", str(tmp_path), "--output", str(tmp_path / "m"), flag, value])
        assert "\n" not in str(e.value) and flag in str(e.value)
    with pytest.raises(UsageError, match="class_weighting"):
        train_baseline.run(["--tfrecords", str(tmp_path), "--output", str(tmp_path / "m"), "--class_weighting", "log"])


@pytest.mark.e2e  # trains on the shared generated set
def test_a_run_whose_training_diverged_writes_no_model(tfrecords, tmp_path, capsys):
    """A learning rate far too large sent the weights to nan and the run wrote
    the model anyway, "done", exit 0: every prediction one class. Now it fails
    in one line and writes nothing; a sane rate on the same data writes."""
    from beam_jobs.cli import main
    args = ["--tfrecords", str(tfrecords), "--output", str(tmp_path / "m"), "--epochs", "2", "--batch_size", "32"]
    assert main(train_baseline.run, args + ["--learning_rate", "1e9"], prog="train_baseline") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train_baseline: error: training diverged") and "--learning_rate" in err
    assert [p.name for p in (tmp_path / "m").rglob("*")] == ["_LOCK"]   # no model; its lock released
    assert main(train_baseline.run, args, prog="train_baseline") == 0
    assert load_bundle(str(tmp_path / "m"))[1]["training"]["learning_rate"] == 3e-3


def test_divergence_is_told_from_a_finite_loss_and_finite_weights():
    from beam_jobs.cli import JobFailed
    ok = [np.ones((2, 2), np.float32)]
    train_baseline.check_converged([2.0, 1.5], ok)
    with pytest.raises(JobFailed, match="the loss was nan at epoch 2"):
        train_baseline.check_converged([2.0, float("nan")], ok)
    with pytest.raises(JobFailed, match="weights are not all finite"):
        train_baseline.check_converged([2.0, 1.5], ok + [np.array([np.inf], np.float32)])


def _bundle(path, seed, version, size=32):
    import keras
    keras.utils.set_random_seed(seed)
    from schemas.model_bundle import write_bundle
    return write_bundle(str(path), train_baseline.build_model(size, 2),
                        {"label_vocabulary": ["a", "b"], "version": version, "image_size": size})


def test_a_bundle_whose_two_files_come_from_two_runs_is_refused(tmp_path):
    """A bundle is two files: a reader during a rewrite, or two trainers
    writing one folder, paired one run's weights with the other's version
    (score would name its partitions after a model it did not run)."""
    _bundle(tmp_path / "a", 1, "v1")
    _bundle(tmp_path / "b", 2, "v2")
    info = json.loads((tmp_path / "a" / INFO_FILE).read_text())
    assert len(info["model_sha256"]) == 64
    assert load_bundle(str(tmp_path / "a"))[1]["version"] == "v1"
    shutil.copy(tmp_path / "b" / MODEL_FILE, tmp_path / "a" / MODEL_FILE)   # v2's weights under v1's info
    for uri in (tmp_path / "a", tmp_path / "a" / MODEL_FILE):
        with pytest.raises(ValueError, match=rf"{tmp_path / 'a' / MODEL_FILE} is not the model .*{INFO_FILE} "
                                             r"describes \(sha256 \w{12}, not \w{12}\): the bundle is being rewritten"):
            load_bundle(str(uri))
    del info["model_sha256"]   # a bundle from before the hash: trusted as before
    (tmp_path / "a" / INFO_FILE).write_text(json.dumps(info))
    assert load_bundle(str(tmp_path / "a"))[1]["version"] == "v1"


def test_workers_refuse_a_model_retrained_into_its_folder_since_launch(tmp_path):
    """score names its rows and partitions model=VERSION from the bundle it
    read at launch; a worker loading the folder later must run that model."""
    from transforms.scoring.inference import KerasBundleHandler
    _bundle(tmp_path / "m", 1, "v2")
    with pytest.raises(ValueError, match=r"holds model v2 now, not v1, which this run was launched with"):
        KerasBundleHandler(str(tmp_path / "m"), version="v1").load_model()
    assert KerasBundleHandler(str(tmp_path / "m"), version="v2", image_size=32).load_model().output_shape[-1] == 2
    # Or another training reusing the version (--version v2 given again): other weights under the launch's name.
    launched = load_bundle(str(tmp_path / "m"))[1]["model_sha256"]
    _bundle(tmp_path / "m", 2, "v2")
    with pytest.raises(ValueError, match=rf"holds other weights under version v2 now .* launched with {launched[:12]}"):
        KerasBundleHandler(str(tmp_path / "m"), version="v2", model_sha256=launched).load_model()


@pytest.mark.e2e  # trains on the shared generated set
def test_a_run_into_a_folder_another_run_is_writing_is_refused(tfrecords, tmp_path, capsys):
    """Two trainers writing one folder could leave one's weights under the
    other's model_info.json; it takes the output's lock as every job does."""
    import os
    from beam_jobs.cli import main
    from transforms.io import run_lock
    from transforms.io.sharded_write import write_atomically
    out = tmp_path / "m"
    holder = dict(run_lock.new_lock_info("train_baseline", "the-first-run"), pid=os.getpid())  # alive: this process
    write_atomically(str(out / "_LOCK" / f"{holder['attempt']}.json"), json.dumps(holder).encode())
    args = ["--tfrecords", str(tfrecords), "--output", str(out), "--epochs", "1", "--batch_size", "32"]
    assert main(train_baseline.run, args, prog="train_baseline") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"train_baseline: error: {out} is locked by run the-first-run")
    assert sorted(p.name for p in out.iterdir()) == ["_LOCK"]   # nothing written
    assert main(train_baseline.run, args + ["--break_lock"], prog="train_baseline") == 0   # declared dead
    assert load_bundle(str(out))[1]["training"]["epochs"] == 1
    assert list((out / "_LOCK").iterdir()) == []   # released


@pytest.mark.e2e
def test_an_unfinished_or_rewritten_dataset_writes_no_model(tfrecords, tmp_path):
    """train_baseline read dataset_info.json and never looked for
    make_tfrecords' marker: a killed or still-running make_tfrecords (its
    shards half replaced) was trained on, and a rerun there during training
    went unseen. The rerun is made certain: the trainer is frozen after its
    first epoch while the marker is rewritten, as a rerun does (deleted
    first, written last)."""
    import os
    import signal
    import time
    data = tmp_path / "data"
    shutil.copytree(tfrecords, data)
    marker = data / "_SUCCESS"
    counts = marker.read_bytes()
    marker.unlink()
    p = _cli("--tfrecords", str(data), "--output", str(tmp_path / "m0"))
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"train_baseline: error: --tfrecords {data}: no _SUCCESS; make_tfrecords has not finished there"]
    marker.write_bytes(counts)

    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "beam_jobs.train_baseline", "--tfrecords", str(data),
                             "--output", str(out), "--epochs", "2", "--batch_size", "16"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "epoch 1/2" in line:
                break
        assert "epoch 1/2" in seen[-1], "".join(seen)[-3000:]
        os.killpg(proc.pid, signal.SIGSTOP)
        marker.unlink()
        time.sleep(0.05)
        marker.write_bytes(counts)  # the same bytes, written later
        os.killpg(proc.pid, signal.SIGCONT)
        rest = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, rest[-3000:]
    assert rest.strip().splitlines()[-1] == (
        f"train_baseline: error: --tfrecords {data} was rewritten while this run read it (make_tfrecords ran "
        f"there again): the model may have learned from two datasets; no model was written: rerun "
        f"train_baseline once make_tfrecords is done there")
    assert not (out / MODEL_FILE).exists() and not (out / INFO_FILE).exists()
