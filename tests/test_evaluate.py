"""evaluate end to end: real make_tfrecords output, real trained models, real Beam pipelines."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import compare_metrics, evaluate, train_baseline
from beam_jobs.cli import main
from schemas import metrics as M
from schemas.examples import read_split
from schemas.model_bundle import INFO_FILE, load_bundle
from transforms.evaluation import examples as X
from transforms.evaluation.metrics import HEADLINE


@pytest.fixture(scope="module")
def models(tfrecords64, tmp_path_factory):
    """Two versions of the baseline (different seeds), one epoch each."""
    out = []
    for seed in (1, 2):
        d = tmp_path_factory.mktemp(f"eval_model{seed}")
        train_baseline.run(["--tfrecords", str(tfrecords64), "--output", str(d), "--epochs", "1", "--seed", str(seed)])
        out.append(d)
    return out


@pytest.fixture(scope="module")
def single(tfrecords64, models, tmp_path_factory):
    """One model on the validation split (few examples: every slice is small)."""
    out = tmp_path_factory.mktemp("eval_single")
    evaluate.run(["--tfrecords", str(tfrecords64), "--model_uri", str(models[0]), "--output", str(out),
                  "--max_batch_size", "16"])
    return out


@pytest.fixture(scope="module")
def paired(tfrecords64, models, tmp_path_factory):
    """Model 2 against model 1 on the same split."""
    out = tmp_path_factory.mktemp("eval_paired")
    evaluate.run(["--tfrecords", str(tfrecords64), "--model_uri", str(models[1]),
                  "--compare_model_uri", str(models[0]), "--output", str(out), "--min_slice_n", "10"])
    return out


def _doc(out):
    return json.loads((out / M.METRICS_FILE).read_text())


@pytest.mark.e2e
def test_metrics_are_those_of_the_training_arrays(tfrecords64, models, single):
    doc = _doc(single)
    model, info = load_bundle(str(models[0]))
    keys, labels, probs = [], [], []
    for features, label in read_split(str(tfrecords64), "validation", batch_size=64):
        keys += [k.decode() for k in features["key"].numpy()]
        labels += list(label.numpy())
        probs.append(model.predict_on_batch(features["image"]))  # the trainer's own arrays
    probs, labels = np.concatenate(probs), np.array(labels)
    known = labels >= 0
    n_split = json.loads((tfrecords64 / "dataset_info.json").read_text())["splits"]["validation"]["examples"]
    assert doc["examples"] == {"in_split": n_split, "evaluated": int(known.sum()),
                               "skipped_unknown_label": int((~known).sum())}
    assert doc["fingerprint"] == hashlib.sha256("\n".join(sorted(np.array(keys)[known])).encode()).hexdigest()
    head = doc["overall"]["model"]["headline"]
    assert head["accuracy"] == pytest.approx(float(np.mean(np.argmax(probs[known], 1) == labels[known])))
    cm = np.array(doc["overall"]["model"]["confusion_matrix"])
    assert cm.sum() == known.sum() and cm.shape == (len(info["label_vocabulary"]),) * 2
    assert doc["label_vocabulary"] == info["label_vocabulary"]
    assert doc["models"] == {"model": {"uri": str(models[0]), "version": info["version"]}}
    assert doc["bootstrap"]["resamples"] == 1000 and doc["schema_version"] == M.SCHEMA_VERSION


@pytest.mark.e2e
def test_slices_carry_n_intervals_sources_and_small_flags(single):
    doc = _doc(single)
    by = {(s["family"], s["value"]): s for s in doc["slices"]}
    n = doc["examples"]["evaluated"]
    assert by[("all", "all")]["n"] == n
    for family in ("monk_group", "fitzpatrick", "lighting", "shot_type"):  # one value per example
        assert sum(s["n"] for (f, _v), s in by.items() if f == family) == n, family
    assert sum(s["n"] for (f, _v), s in by.items() if f == "body_part") >= n  # several parts per case
    assert {v for f, v in by if f == "lighting"} <= {"well_lit", "poor_lighting", X.UNKNOWN}
    assert ("lighting", "well_lit") in by and ("lighting", "poor_lighting") in by  # seeded set: 3 of 25 dim
    monk = [s for s in doc["slices"] if s["family"] == "monk_group"]
    assert {s["value"] for s in monk} <= {"light", "medium", "dark"} and len(monk) >= 2
    for s in monk:
        assert sum(s["sources"].values()) == s["n"]
        assert set(s["sources"]) <= {X.SCIN_MONK_US, X.SCIN_MONK_INDIA, X.CURATE_ESTIMATE}
    for s in doc["slices"]:
        assert s["below_min_n"] == (s["n"] < doc["min_slice_n"])
        assert set(s["metrics"]["model"]) == set(HEADLINE)
        for k in ("accuracy", "top3_accuracy"):  # means: their resample distribution is centred on them
            fig = s["metrics"]["model"][k]
            assert fig["ci95"][0] - 1e-9 <= fig["value"] <= fig["ci95"][1] + 1e-9, (s["family"], s["value"], k)
    acc = by[("all", "all")]["metrics"]["model"]["accuracy"]
    assert 0 <= acc["ci95"][0] <= acc["value"] <= acc["ci95"][1] <= 1


@pytest.mark.e2e
def test_outputs_marker_last_and_lock_released(single):
    names = sorted(os.listdir(single))
    assert {"metrics.json", "report.html", "_SUCCESS"} <= set(names)
    assert not os.listdir(single / "_LOCK")
    mtime = lambda n: os.stat(single / n).st_mtime_ns
    assert mtime("_SUCCESS") >= max(mtime("metrics.json"), mtime("report.html"))
    doc = _doc(single)
    marker = json.loads((single / "_SUCCESS").read_text())
    assert marker == {"fingerprint": doc["fingerprint"], "examples": doc["examples"]["evaluated"]}
    page = (single / "report.html").read_text()
    assert doc["verdict"].split(":")[0] in page and "monk_group=" in page and "confusion matrix" in page


@pytest.mark.e2e
def test_the_rerun_gives_the_same_figures(tfrecords64, models, single, tmp_path):
    evaluate.run(["--tfrecords", str(tfrecords64), "--model_uri", str(models[0]), "--output", str(tmp_path)])
    strip = lambda d: {k: v for k, v in d.items() if k != "evaluated_at"}
    assert strip(_doc(tmp_path)) == strip(_doc(single))


@pytest.mark.e2e
def test_comparison_on_the_identical_set_with_paired_differences(single, paired, models):
    one, two = _doc(single), _doc(paired)
    assert one["fingerprint"] == two["fingerprint"]
    assert two["overall"]["compare"] == one["overall"]["model"]  # model 1's figures whichever role
    v1, v2 = (load_bundle(str(m))[1]["version"] for m in models)
    assert two["verdict"].startswith(f"{v2} vs {v1} on {one['examples']['evaluated']} validation examples: ")
    for s in two["slices"]:
        for k in HEADLINE:
            d, a, b = s["difference"][k], s["metrics"]["model"][k]["value"], s["metrics"]["compare"][k]["value"]
            if a is not None and b is not None:
                assert d["value"] == pytest.approx(a - b)
            if s["below_min_n"]:
                assert not d["significant"] and d["better"] is None
            if d["significant"]:
                assert d["better"] in ("model", "compare") and not (d["ci95"][0] <= 0 <= d["ci95"][1])
    lines = compare_metrics.run([str(paired), str(single / M.METRICS_FILE)])
    assert lines[0].startswith(f"{v2} - {v1} on the same") and len(lines) == 1 + len(HEADLINE)


@pytest.mark.e2e
def test_a_model_against_itself_differs_by_nothing(tfrecords64, models, tmp_path):
    evaluate.run(["--tfrecords", str(tfrecords64), "--model_uri", str(models[0]),
                  "--compare_model_uri", str(models[0]), "--output", str(tmp_path), "--min_slice_n", "1"])
    doc = _doc(tmp_path)
    for s in doc["slices"]:
        for k in HEADLINE:
            d = s["difference"][k]
            assert d["value"] in (0.0, None) and not d["significant"] and d["better"] is None
            assert d["ci95"] is None or d["ci95"][0] <= 0 <= d["ci95"][1]
    assert "no significant difference on " + ", ".join(HEADLINE) in doc["verdict"]


@pytest.mark.e2e
def test_reports_of_different_sets_refuse_to_compare(tfrecords64, models, single, gcs_emulator, capsys):
    """Also the whole job over gs:// (data, model and output), as on Dataflow."""
    gcs_emulator.upload_tree(tfrecords64, "eval-data", "records")
    gcs_emulator.upload_tree(models[1], "eval-models", "m2")
    gcs_emulator.create_bucket("eval-out")
    evaluate.run(["--tfrecords", "gs://eval-data/records", "--model_uri", "gs://eval-models/m2", "--split", "test",
                  "--output", "gs://eval-out/test"])
    bucket = gcs_emulator.client().bucket("eval-out")
    assert {b.name for b in bucket.list_blobs(prefix="test/")} >= {"test/metrics.json", "test/report.html",
                                                                 "test/_SUCCESS"}
    capsys.readouterr()
    assert main(compare_metrics.run, ["gs://eval-out/test", str(single)], prog="compare_metrics") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compare_metrics: error: different example sets: fingerprint")


def test_metrics_without_their_marker_are_not_compared(single, tmp_path, capsys, monkeypatch):
    """A run that failed after writing metrics.json (its --tfrecords rewritten
    while read) left them there, and compare_metrics read them as a result."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(single, unfinished)
    (unfinished / "_SUCCESS").unlink()
    for argv in ([str(unfinished), str(single)], [str(single), str(unfinished / "metrics.json")]):
        assert main(compare_metrics.run, argv, prog="compare_metrics") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"compare_metrics: error: {unfinished} has no _SUCCESS: evaluate did not finish there "
                       "(it failed or is still running); rerun evaluate"]
    assert main(compare_metrics.run, [str(single), str(single)], prog="compare_metrics") == 0
    monkeypatch.chdir(single)   # a bare file name: its folder is the working one, which has the marker
    assert main(compare_metrics.run, ["metrics.json", str(single)], prog="compare_metrics") == 0


@pytest.mark.e2e
def test_curate_estimate_stands_in_for_missing_monk_labels(tfrecords64, curated):
    """The ITA recovered from the z-scored feature is curate's, and gives curate's Monk group."""
    context = X.dataset_context(str(tfrecords64))
    table = pq.read_table(str(curated / "features"), columns=["uri", "ita_deg", "monk_group"]).to_pylist()
    by_uri = {r["uri"]: r for r in table}
    mean, std = context["ita"]
    checked = 0
    for features, _ in read_split(str(tfrecords64), "validation").take(20):
        row = by_uri[features["uri"].numpy().decode()]
        ita = float(features["ita_deg_z"].numpy()) * std + mean
        assert ita == pytest.approx(row["ita_deg"], abs=1e-3)
        plain = {"monk_us": -1, "monk_india": -1, "ita_deg_z": float(features["ita_deg_z"].numpy()),
                 "fitzpatrick_derm_id": -1, "fitzpatrick_self_id": -1, "shot_type_id": -1,
                 "body_parts": [0.0] * 12}
        slices = X.slices_of(plain, context)
        assert ("monk_group", row["monk_group"], X.CURATE_ESTIMATE) in slices
        assert ("lighting", X.UNKNOWN, None) in slices  # records without lighting_id
        assert ("fitzpatrick", X.UNKNOWN, None) in slices and ("shot_type", X.NOT_IN_TRAIN, None) in slices
        checked += 1
    assert checked == 20
    assert X.monk_slice(8, 2, 70.0) == ("dark", X.SCIN_MONK_US)
    assert X.monk_slice(-1, 2, -70.0) == ("light", X.SCIN_MONK_INDIA)
    assert X.fitzpatrick_slice("NONE", "FST2") == ("FST2", X.SELF_REPORTED)


def _one_line_error(capsys, argv, *words):
    capsys.readouterr()
    assert main(evaluate.run, argv, prog="evaluate") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluate: error: ") and all(w in err[0] for w in words), err


@pytest.mark.e2e
def test_a_model_of_another_vocabulary_is_a_one_line_error(tfrecords64, models, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(models[0], other)
    info = json.loads((other / INFO_FILE).read_text())
    (other / INFO_FILE).write_text(json.dumps({**info, "label_vocabulary": info["label_vocabulary"][::-1]}))
    out = tmp_path / "out"
    _one_line_error(capsys, ["--tfrecords", str(tfrecords64), "--model_uri", str(models[0]),
                             "--compare_model_uri", str(other), "--output", str(out)],
                    "--compare_model_uri", "label_vocabulary", "same classes in another order")
    assert not out.exists()
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    small = write_bundle(str(tmp_path / "small"), build_model(32, len(info["label_vocabulary"])),
                         {**info, "image_size": 32})
    _one_line_error(capsys, ["--tfrecords", str(tfrecords64), "--model_uri", small, "--output", str(out)],
                    "takes 32 px images", "made at 64 px")
    assert not out.exists()


@pytest.mark.e2e
@pytest.mark.parametrize("extra, words", [
    ([], ("--tfrecords, --model_uri and --output are required",)),
    (["--split", "holdout"], ("--split holdout", "has splits")),
    (["--bootstrap_resamples", "200"], ("use 1000 to 5000",)),
    # held per slice until the end: 1e8 was a MemoryError traceback after the inference
    (["--bootstrap_resamples", "100000000"], ("use 1000 to 5000",)),
    (["--calibration_bins", "1000000000"], ("--calibration_bins must be within [1, 100], got 1000000000",)),
    (["--calibration_bins", "0"], ("--calibration_bins must be within [1, 100], got 0",)),
    (["--min_slice_n", "0"], ("--min_slice_n must be positive",)),
    (["--compare_model", "x"], ("unknown option --compare_model",)),
    (["--jpeg_quality", "60"], ("--jpeg_quality only applies with --from_images",)),
    # was accepted and unused: its default could not be told from an explicit 0
    (["--parity_tolerance", "0"], ("--parity_tolerance only applies with --from_images",)),
    (["--from_images"], ("--from_images reads the images", "--allowed_roots")),
])
def test_bad_arguments_are_one_line_errors(extra, words, tfrecords64, models, tmp_path, capsys):
    base = [] if not extra else ["--tfrecords", str(tfrecords64), "--model_uri", str(models[0]),
                                 "--output", str(tmp_path / "o")]
    _one_line_error(capsys, base + extra, *words)
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_tfrecords_that_are_not_a_make_tfrecords_output(tmp_path, models, capsys):
    _one_line_error(capsys, ["--tfrecords", str(tmp_path), "--model_uri", str(models[0]),
                             "--output", str(tmp_path / "o")], "no dataset_info.json")


@pytest.mark.e2e
def test_from_images_measures_train_serve_parity(tfrecords64, labelled, models, single, tmp_path, capsys):
    """The split's source images through score's preprocessing give the stored
    arrays exactly; another serving JPEG quality is caught on every example."""
    base = ["--tfrecords", str(tfrecords64), "--model_uri", str(models[0]), "--from_images",
            "--image_root", str(labelled), "--max_batch_size", "16"]
    evaluate.run(base + ["--output", str(tmp_path / "same")])
    doc, stored = _doc(tmp_path / "same"), _doc(single)
    p = doc["parity"]
    assert doc["input"] == "source_images" and stored["input"] == "tfrecord_arrays" and stored["parity"] is None
    assert p["examples"] == doc["examples"]["in_split"] > 0
    assert (p["arrays_differ"], p["max_abs_pixel_diff"], p["predictions_differ"], p["examples_differing"]) == (0, 0, 0, [])
    assert p["settings"] == {"image_size": 64, "crop_fraction": 0.875, "jpeg_quality": 90} and p["tolerance"] == 0
    assert doc["overall"] == stored["overall"] and doc["fingerprint"] == stored["fingerprint"]
    assert "train/serve parity holds" in (tmp_path / "same" / M.REPORT_FILE).read_text()
    capsys.readouterr()
    evaluate.run(base + ["--jpeg_quality", "60", "--output", str(tmp_path / "q60")])
    p = _doc(tmp_path / "q60")["parity"]
    assert p["arrays_differ"] == p["examples"] and p["max_abs_pixel_diff"] > 8
    assert p["settings"]["jpeg_quality"] == 60 and len(p["examples_differing"]) == min(20, p["examples"])
    assert "train/serve parity BROKEN" in capsys.readouterr().err


@pytest.mark.e2e
def test_metrics_are_never_marked_complete_from_records_rewritten_while_read(tfrecords64, models, gcs_emulator,
                                                                             tmp_path):
    """evaluate checked make_tfrecords' marker at launch only: a make_tfrecords
    rerun into --tfrecords during the run went unseen, and metrics over shards
    of two runs could be marked complete. The overlap is made certain: the
    records are read through a proxy that holds the first shard download until
    the marker has been rewritten, as a rerun does (deleted first, written last)."""
    import subprocess
    import sys
    import threading
    import time
    import urllib.parse
    import uuid
    from apache_beam.io.filesystems import FileSystems
    from fault_proxy import FaultProxy
    bucket, prefix = "evaluate-reads", uuid.uuid4().hex
    gcs_emulator.upload_tree(tfrecords64, bucket, prefix)
    records, out = f"gs://{bucket}/{prefix}", tmp_path / "eval"
    marker = f"{records}/_SUCCESS"
    reading, go_on = threading.Event(), threading.Event()
    def hold_shard_reads(method, path):
        if method == "GET" and "alt=media" in path and ".tfrecord" in urllib.parse.unquote(path):
            reading.set()
            go_on.wait(240)

    argv = ["--tfrecords", records, "--model_uri", str(models[0]), "--output", str(out), "--min_slice_n", "1"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with FaultProxy(gcs_emulator.host, before_forward=hold_shard_reads) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "beam_jobs.evaluate", *argv], cwd=root, text=True,
                                env=dict(os.environ, STORAGE_EMULATOR_HOST=proxy.host),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 240
            while not reading.wait(0.1):
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "evaluate never read a shard"
            with FileSystems.open(marker) as f:
                counts = f.read()
            FileSystems.delete([marker])
            time.sleep(1.1)  # the same bytes again, written later
            with FileSystems.create(marker) as f:
                f.write(counts)
            go_on.set()
            _, err = proc.communicate(timeout=300)
        finally:
            go_on.set()
            if proc.poll() is None:
                proc.kill()
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1, err[-3000:]
    assert last.startswith(f"evaluate: error: --tfrecords {records} was rewritten while this run read it"), last
    assert not (out / "_SUCCESS").exists()
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()  # nothing to misread


@pytest.mark.e2e
def test_a_truncated_shard_is_one_line_and_its_bytes_are_never_logged(tfrecords64, models, tmp_path):
    """Beam's TFRecord reader raised with the record's bytes in hex: evaluate
    printed a 117-line traceback carrying a partial example (case id, age
    group, JPEG bytes) four times; train_baseline tf.data's 28-line one."""
    import subprocess
    import sys
    data = tmp_path / "data"
    shutil.copytree(tfrecords64, data)
    for shard in data.glob("*.tfrecord*"):
        shard.write_bytes(shard.read_bytes()[:shard.stat().st_size * 2 // 3])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for job, argv in [("evaluate", ["--model_uri", str(models[0]), "--output", str(tmp_path / "eval")]),
                      ("train_baseline", ["--output", str(tmp_path / "model"), "--epochs", "1"])]:
        p = subprocess.run([sys.executable, "-m", f"beam_jobs.{job}", "--tfrecords", str(data), *argv],
                           cwd=root, capture_output=True, text=True, timeout=600)
        assert p.returncode == 1, p.stderr[-3000:]
        lines = [l for l in p.stderr.splitlines() if l.strip() and "epoch" not in l]
        assert len(lines) == 1 and lines[0].startswith(f"{job}: error: --tfrecords {data}: "), p.stderr[-3000:]
        assert "truncated or corrupt" in lines[0] and "rerun make_tfrecords there" in lines[0]
    assert not (tmp_path / "eval" / "_SUCCESS").exists() and not (tmp_path / "model" / INFO_FILE).exists()
