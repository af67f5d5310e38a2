"""score end to end: gs:// partitions, skip/force, recovery, parity, errors."""
from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs import score, train_baseline
from beam_jobs.cli import main
from schemas.examples import read_split
from schemas.policy import load_policy
from transforms.io.partitions import UNDATED
from transforms.scoring.prepare import prepare
from transforms.scoring.publish import drop_staging
from transforms.scoring.rows import failed_batch_rows

from helpers import UNREADABLE, returns_without_a_writer, unreadable_file

DATES = ("2026-11-20", "2026-11-21")


@pytest.fixture(scope="module")
def model_dir(tfrecords64, tmp_path_factory):
    """A model trained by train_baseline on make_tfrecords output (64 px)."""
    records = tfrecords64
    model = tmp_path_factory.mktemp("model")
    train_baseline.run(["--tfrecords", str(records), "--output", str(model), "--epochs", "1"])
    return model, records


@pytest.fixture(scope="module")
def uploads(labelled, tmp_path_factory):
    """dt=YYYY-MM-DD/ folders with a mix of good, defective and corrupt uploads."""
    truth = list(csv.DictReader(open(labelled / "ground_truth.csv")))
    root = tmp_path_factory.mktemp("uploads")
    for i, date in enumerate(DATES):
        folder = root / f"dt={date}"
        folder.mkdir()
        for t in truth[i * 12:(i + 1) * 12]:
            shutil.copy(labelled / t["image_path"], folder / os.path.basename(t["image_path"]))
    good = next(labelled / t["image_path"] for t in truth if t["defect"] == "none")
    (root / f"dt={DATES[1]}" / "zz_truncated.jpg").write_bytes(good.read_bytes()[:2000])
    return root


def _partition(output, date, version):
    return f"{output}/predictions/dt={date}/model={version}"


def _rows(folder):
    return [r for f in sorted(os.listdir(folder)) if f.endswith(".parquet")
            for r in pq.read_table(os.path.join(folder, f), use_threads=False).to_pylist()]


def _version(model):
    return json.loads((model / "model_info.json").read_text())["version"]


@pytest.mark.e2e
def test_backfill_over_gcs_partitions_with_a_gcs_model(model_dir, uploads, gcs_emulator):
    model, _ = model_dir
    gcs_emulator.upload_tree(uploads, "nightly", "uploads")
    gcs_emulator.upload_tree(model, "models", "m1")
    gcs_emulator.create_bucket("scores")
    score.run(["--input", "gs://nightly/uploads", "--model_uri", "gs://models/m1", "--output", "gs://scores/run",
               "--start_date", DATES[0], "--end_date", DATES[1], "--max_batch_size", "8"])
    bucket = gcs_emulator.client().bucket("scores")
    version = _version(model)
    vocab = json.loads((model / "model_info.json").read_text())["label_vocabulary"]
    for date in DATES:
        prefix = f"run/predictions/dt={date}/model={version}/"
        names = {b.name for b in bucket.list_blobs(prefix=prefix)}
        assert prefix + "_SUCCESS" in names
        marker = json.loads(bucket.blob(prefix + "_SUCCESS").download_as_text())
        n_files = len(os.listdir(uploads / f"dt={date}"))
        assert marker["images"] == n_files == sum(marker.get(s, 0) for s in ("scored", "skipped_quality", "failed"))
        assert marker["scored"] > 0
    truncated_date = DATES[1]
    prefix = f"run/predictions/dt={truncated_date}/model={version}/"
    table = pq.read_table(pa.BufferReader(bucket.blob(prefix + "predictions-00000-of-00001.parquet")
                                          .download_as_bytes()), use_threads=False).to_pylist()
    by_uri = {r["uri"].rsplit("/", 1)[1]: r for r in table}
    assert by_uri["zz_truncated.jpg"]["status"] == "failed" and "truncated" in by_uri["zz_truncated.jpg"]["error"]
    for r in table:
        assert r["partition_date"].isoformat() == truncated_date and r["model_version"] == version
        if r["status"] == "scored":
            assert [p["label"] for p in r["probabilities"]] == vocab
            probs = [p["probability"] for p in r["probabilities"]]
            assert abs(sum(probs) - 1) < 1e-3 and r["top_labels"][0] == vocab[int(np.argmax(probs))]
        if r["status"] == "skipped_quality":
            assert r["reasons"] and not r["probabilities"]
    assert by_uri["zz_truncated.jpg"]["reasons"] == ["unreadable"]
    assert not [b.name for b in bucket.list_blobs(prefix=prefix) if "dead_letters" in b.name]
    dead = [b.name for b in bucket.list_blobs(prefix=f"run/dead_letters/dt={truncated_date}/model={version}/")]
    assert dead and "zz_truncated.jpg" in bucket.blob(dead[0]).download_as_text()


@pytest.mark.e2e
def test_complete_partitions_are_skipped_unless_forced(model_dir, uploads, tmp_path, capsys):
    model, _ = model_dir
    args = ["--input", str(uploads), "--model_uri", str(model), "--output", str(tmp_path), "--date", DATES[0]]
    score.run(args)
    folder = _partition(tmp_path, DATES[0], _version(model))
    first = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}
    capsys.readouterr()
    score.run(args)
    assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)} == first
    said = capsys.readouterr().err  # the rerun says what it skipped and how to redo it
    assert f"skipping 1 partition(s) already complete for model {_version(model)}: dt={DATES[0]}" in said
    assert "--force rescores them" in said
    rows_before = _rows(folder)
    score.run(args + ["--force"])
    assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)} != first
    strip = lambda rows: [{k: v for k, v in r.items() if k != "scored_at"} for r in rows]
    assert strip(_rows(folder)) == strip(rows_before)


@pytest.mark.e2e
def test_an_undated_rerun_says_it_skipped_its_complete_partition(model_dir, uploads, tmp_path, capsys):
    """Without dates the rerun skipped as well but said only "done", also when
    its --input matched other images than the run that completed it."""
    model, _ = model_dir
    base = ["--model_uri", str(model), "--output", str(tmp_path)]
    score.run(base + ["--input", str(uploads / f"dt={DATES[0]}" / "*")])
    folder = _partition(tmp_path, UNDATED, _version(model))
    first = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}
    capsys.readouterr()
    score.run(base + ["--input", str(uploads / f"dt={DATES[1]}" / "*")])
    assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)} == first
    said = capsys.readouterr().err
    assert f"skipping 1 partition(s) already complete for model {_version(model)}: dt={UNDATED}" in said
    assert "--force rescores them" in said


@pytest.mark.e2e
def test_an_interrupted_partition_is_invisible_and_rerun_completes_it(model_dir, uploads, tmp_path):
    model, _ = model_dir
    folder = _partition(tmp_path, DATES[1], _version(model))
    os.makedirs(folder)
    with open(os.path.join(folder, "predictions-00000-of-00003.parquet"), "wb") as f:
        f.write(b"half written")  # what a killed run could leave, without _SUCCESS
    score.run(["--input", str(uploads), "--model_uri", str(model / "model.keras"), "--output", str(tmp_path),
               "--date", DATES[1]])
    assert os.path.exists(os.path.join(folder, "_SUCCESS"))
    assert "predictions-00000-of-00003.parquet" not in os.listdir(folder)
    assert len(_rows(folder)) == len(os.listdir(uploads / f"dt={DATES[1]}"))


@pytest.mark.e2e
def test_serving_input_equals_training_input(model_dir):
    _, records = model_dir
    info = json.loads((records / "dataset_info.json").read_text())["sources"]
    for features, _label in read_split(str(records), "train").take(5):
        uri = features["uri"].numpy().decode()
        with open(uri, "rb") as f:
            reasons, served = prepare(f.read(), load_policy(), image_size=info["image_size"],
                                      crop_fraction=info["crop_fraction"], jpeg_quality=info["jpeg_quality"],
                                      gate=False)
        assert reasons == [] and np.array_equal(served, features["image"].numpy())


def test_the_gate_skips_exactly_what_curate_rejects_whatever_scale_the_model_decodes_at():
    """Score's gate judges curate's own array. It used the model's decode,
    which for a small model (or a 224 px model on a 2560x1920 photo) is another
    DCT scale: features of a differently sized array, and verdicts that flip
    (this flat purple frame read low_information for a 32 px model, where
    curate says no_skin)."""
    import cv2

    from transforms.image.analyze import analyze_image
    from transforms.scoring.prepare import prepare_model_input
    rng = np.random.default_rng(0)
    flat = np.clip(np.array([200, 120, 150]) + rng.normal(0, 10, (300, 400, 3)), 0, 255).astype(np.uint8)
    data = cv2.imencode(".jpg", flat)[1].tobytes()
    policy = load_policy()
    row, _ = analyze_image("flat.jpg", data, policy)
    assert row["reasons"] == ["no_skin"]
    for size in (32, 64, 224):
        gate = prepare_model_input(data, policy, image_size=size, crop_fraction=0.875, jpeg_quality=90, gate=True)
        assert gate.reasons == row["reasons"], (size, gate.reasons)


@pytest.mark.parametrize("thumbnail, decodes", [(None, 1), (320, 2), (400, 1)])
def test_the_gate_decodes_a_heic_again_only_when_curate_would_decode_another_array(
        labelled, monkeypatch, thumbnail, decodes):
    """A HEIC has no reduced decode: each libheif decode of a 12 MP photo is
    ~0.4 s. The gate reused the model's decode only when it could plan both
    from the header, which it never could for HEIC, so a HEIC without a
    usable thumbnail was decoded whole twice. Now it decodes again only when
    curate's decode takes another source: the 320 px thumbnail that covers
    curate's 224 px but not the model's 256 px."""
    import pillow_heif
    from PIL import Image

    from helpers import heic
    from transforms.image.analyze import analyze_image
    from transforms.scoring.prepare import prepare_model_input
    truth = list(csv.DictReader(open(labelled / "ground_truth.csv")))
    good = next(r for r in truth if r["expected_status"] == "accepted" and r["image_path"].endswith(".jpg"))
    photo = Image.open(labelled / good["image_path"]).convert("RGB").resize((1600, 1200))
    data = heic(photo, thumbnails=[thumbnail] if thumbnail else [])
    policy = load_policy()
    row, _ = analyze_image("photo.heic", data, policy)
    opened, open_heif = [], pillow_heif.open_heif
    monkeypatch.setattr(pillow_heif, "open_heif", lambda *a, **k: opened.append(1) or open_heif(*a, **k))
    gate = prepare_model_input(data, policy, image_size=224, crop_fraction=0.875, jpeg_quality=90, gate=True)
    assert len(opened) == decodes
    assert gate.reasons == row["reasons"]


@pytest.mark.e2e
@pytest.mark.parametrize("extra, message", [
    (["--model_uri", "/nonexistent/model", "--date", "2026-11-20"], "/nonexistent/model"),
    (["--model_uri", "MODEL", "--date", "2026-13-01"], "--date 2026-13-01"),
    (["--model_uri", "MODEL", "--start_date", "2026-11-21", "--end_date", "2026-11-20"], "is before --start_date"),
    (["--model_uri", "MODEL", "--date", "2026-11-20", "--start_date", "2026-11-20"], "not both"),
])
def test_bad_arguments_and_models_fail_in_one_line_before_work(extra, message, model_dir, uploads, tmp_path, capsys):
    model, _ = model_dir
    args = ["--input", str(uploads), "--output", str(tmp_path / "out")] + [
        str(model) if a == "MODEL" else a for a in extra]
    assert main(score.run, args, prog="score") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("score: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_stale_staging_of_killed_runs_is_dropped_and_young_staging_kept(tmp_path):
    """A killed run leaves _staging/RUN/; the next run deletes it
    once it is older than any run could stage, but not a run still going."""
    root = tmp_path / "_staging"
    for run, age_h in (("killed", 30), ("running", 1), ("mine", 0)):
        f = root / run / "dt=2026-11-20" / "predictions-00000-of-00001.parquet"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
        t = f.stat().st_mtime - age_h * 3600
        os.utime(f, (t, t))
    gone = drop_staging(str(root / "mine"))
    assert sorted(os.path.basename(g) for g in gone) == ["killed", "mine"]
    assert sorted(os.listdir(root)) == ["running"]


# ------------------------------------------------ issue 12: small real bundles

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 32 px, 2-class bundle: enough for what a run writes."""
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    out = tmp_path_factory.mktemp("tiny") / "m"
    write_bundle(str(out), build_model(32, 2), {"label_vocabulary": ["a", "b"], "version": "tiny", "image_size": 32})
    return out


@pytest.fixture
def few_uploads(sample_dir, tmp_path):
    """dt=2026-11-20/ with two real photos; dt=2026-11-23/ an empty folder."""
    root = tmp_path / "up"
    (root / "dt=2026-11-20").mkdir(parents=True)
    (root / "dt=2026-11-23").mkdir()
    for p in sorted((sample_dir / "dataset" / "images").iterdir())[:2]:
        shutil.copy(p, root / "dt=2026-11-20" / p.name)
    return root


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("score: error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.e2e
def test_a_folder_given_as_input_scores_the_images_in_it_as_curate_reads_them(tiny_model, few_uploads, tmp_path):
    """Without dates, --input naming a folder was listed as itself: the
    night's one "image" was the folder (a not_a_regular_file dead letter),
    none of its photos was scored, and the run ended complete."""
    import pyarrow.dataset as ds
    night = few_uploads / "dt=2026-11-20"
    for folder in (str(night), f"{night}/"):
        out = tmp_path / f"o{len(folder)}"
        score.run(["--input", folder, "--model_uri", str(tiny_model), "--output", str(out), "--quality_gate", "off"])
        rows = ds.dataset(str(out / "predictions"), format="parquet", partitioning="hive").to_table().to_pylist()
        assert sorted(r["uri"] for r in rows) == sorted(str(p) for p in night.iterdir())
        assert {r["status"] for r in rows} == {"scored"}


@pytest.mark.e2e
def test_missing_or_empty_partitions_are_refused_and_never_marked_complete(tiny_model, few_uploads, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["--input", str(few_uploads), "--model_uri", str(tiny_model), "--output", str(out), "--quality_gate", "off"]
    # A backfill over a date with no folder (typo, uploads not there yet): one line, nothing done.
    assert main(score.run, base + ["--start_date", "2026-11-20", "--end_date", "2026-11-22"], prog="score") == 2
    _one_line_error(capsys, "dt=2026-11-21, dt=2026-11-22", str(few_uploads))
    assert not out.exists()
    # A typo in --input: every date is missing, whatever --allow_empty says.
    typo = ["--input", str(tmp_path / "uplods")] + base[2:]
    assert main(score.run, typo + ["--date", "2026-11-20", "--allow_empty"], prog="score") == 2
    _one_line_error(capsys, "no folder under --input", "dt=2026-11-20")
    # An empty night: refused unless empty nights are expected.
    assert main(score.run, base + ["--date", "2026-11-23"], prog="score") == 2
    _one_line_error(capsys, "no images in dt=2026-11-23", "--allow_empty")
    assert not out.exists()
    # Undated, a glob that matches nothing is the same mistake.
    glob = ["--input", str(few_uploads / "dt=2026-11-20" / "*.tiff")] + base[2:]
    assert main(score.run, glob, prog="score") == 2
    _one_line_error(capsys, "*.tiff matches no files", "--allow_empty")
    assert not out.exists()
    assert main(score.run, base + ["--date", "2026-11-23", "--allow_empty"], prog="score") == 0
    marker = json.loads((out / "predictions" / "dt=2026-11-23" / "model=tiny" / "_SUCCESS").read_text())
    assert marker["images"] == 0


@pytest.mark.e2e
def test_a_version_given_to_other_weights_is_refused_not_skipped(tiny_model, few_uploads, tmp_path, capsys):
    """Skipping looked at the version alone: a model trained again under an
    explicit --version it reused was 'already complete' and its scores never
    written, the other model's kept under the shared name. The partition's
    _SUCCESS now records the model's sha256; another model is refused (also
    in the pipeline, as on Dataflow), --force replaces its scores."""
    import keras
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import load_bundle, write_bundle
    from transforms.errors import Refused
    from transforms.scoring.publish import claim_partition, partition_lock_dir
    keras.utils.set_random_seed(7)
    other = tmp_path / "other"
    write_bundle(str(other), build_model(32, 2), {"label_vocabulary": ["a", "b"], "version": "tiny", "image_size": 32})
    sha = {m: load_bundle(str(m))[1]["model_sha256"] for m in (tiny_model, other)}
    assert sha[tiny_model] != sha[other]
    out = tmp_path / "o"
    base = ["--input", str(few_uploads), "--output", str(out), "--date", "2026-11-20", "--quality_gate", "off"]
    assert main(score.run, base + ["--model_uri", str(tiny_model)], prog="score") == 0
    folder = out / "predictions" / "dt=2026-11-20" / "model=tiny"
    marker = json.loads((folder / "_SUCCESS").read_text())
    assert marker["model_sha256"] == sha[tiny_model]
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert main(score.run, base + ["--model_uri", str(other)], prog="score") == 2
    _one_line_error(capsys, "dt=2026-11-20 model=tiny is complete from another model with the same version",
                    sha[tiny_model][:12], sha[other][:12], "--force")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    # A Dataflow launch lists nothing: the pipeline's own claim refuses, and lets the lock go.
    me = score.run_lock.new_lock_info("score", "launched")
    with pytest.raises(Refused, match="another model with the same version"):
        claim_partition("2026-11-20", str(out), "tiny", False, me, {}, sha[other])
    assert not os.listdir(partition_lock_dir(str(out), "2026-11-20", "tiny"))
    assert claim_partition("2026-11-20", str(out), "tiny", False, me, {}, sha[tiny_model]) is False  # same: skip
    assert main(score.run, base + ["--model_uri", str(other), "--force"], prog="score") == 0
    assert json.loads((folder / "_SUCCESS").read_text())["model_sha256"] == sha[other]
    capsys.readouterr()
    assert main(score.run, base + ["--model_uri", str(other)], prog="score") == 0  # its own scores: skipped
    assert "skipping 1 partition(s) already complete for model tiny" in capsys.readouterr().err


@pytest.mark.e2e
def test_on_dataflow_an_unlisted_partition_fails_the_job_after_the_others_publish(tiny_model, few_uploads, tmp_path):
    """The launcher of a Dataflow job lists nothing, so the pipeline itself
    refuses: the listed date is published, the missing one is not, the job fails."""
    out = tmp_path / "o"
    options = score.ScoreOptions(["--input", str(few_uploads), "--model_uri", str(tiny_model), "--output", str(out),
                                  "--start_date", "2026-11-20", "--end_date", "2026-11-21", "--quality_gate", "off"])
    dates, policy = score.validate(options)
    info = score.load_model_info(options.model_uri)
    with pytest.raises(Exception, match=r"no folder under --input .* dt=2026-11-21"):
        score.build_pipeline(options, dates, policy, info).run().wait_until_finish()
    assert (out / "predictions" / "dt=2026-11-20" / "model=tiny" / "_SUCCESS").exists()
    assert not (out / "predictions" / "dt=2026-11-21").exists()


@pytest.mark.e2e
def test_manifest_with_dates_or_without_rows_is_a_one_line_error(tiny_model, few_uploads, tmp_path, capsys):
    out = tmp_path / "o"
    image = next((few_uploads / "dt=2026-11-20").iterdir())
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri\n{image}\n")
    base = ["--model_uri", str(tiny_model), "--output", str(out), "--quality_gate", "off"]
    assert main(score.run, base + ["--input", str(few_uploads), "--manifest", str(manifest),
                                   "--start_date", "2026-11-20", "--end_date", "2026-11-21"], prog="score") == 2
    _one_line_error(capsys, "--manifest cannot be split into date partitions")
    manifest.write_text("uri\n")
    assert main(score.run, base + ["--manifest", str(manifest)], prog="score") == 2
    _one_line_error(capsys, f"--manifest {manifest} lists no images", "--allow_empty")
    manifest.write_text("")
    assert main(score.run, base + ["--manifest", str(manifest)], prog="score") == 2
    _one_line_error(capsys, "is empty")
    assert not out.exists()
    manifest.write_text("uri\n")
    assert main(score.run, base + ["--manifest", str(manifest), "--allow_empty"], prog="score") == 0
    assert json.loads((out / "predictions" / "dt=undated" / "model=tiny" / "_SUCCESS").read_text())["images"] == 0
    # Undated, a glob and a manifest together score both (the glob used to be ignored).
    first, second = sorted((few_uploads / "dt=2026-11-20").iterdir())
    manifest.write_text(f"uri\n{second}\n")
    assert main(score.run, base + ["--input", str(first), "--manifest", str(manifest), "--force"], prog="score") == 0
    assert sorted(r["uri"] for r in _rows(_partition(out, "undated", "tiny"))) == [str(first), str(second)]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_manifest_that_cannot_be_read_is_a_one_line_error_and_a_fifo_never_hangs(kind, tiny_model, tmp_path,
                                                                                   capsys):
    """score read --manifest with a plain open: a FIFO hung the job waiting
    for a writer, a missing file or a folder was a traceback."""
    manifest = unreadable_file(kind, tmp_path / "m.csv")
    out = tmp_path / "o"
    argv = ["--manifest", str(manifest), "--model_uri", str(tiny_model), "--output", str(out)]
    assert returns_without_a_writer(lambda: main(score.run, argv, prog="score"), manifest) == 2
    _one_line_error(capsys, UNREADABLE[kind].format(flag="--manifest", path=manifest))
    assert not out.exists()


@pytest.mark.e2e
def test_failed_rows_carry_reason_codes_and_predictions_read_as_one_hive_dataset(tiny_model, few_uploads, tmp_path):
    import pyarrow.dataset as ds
    night = few_uploads / "dt=2026-11-20"
    good = next(night.iterdir()).read_bytes()
    (night / "truncated.jpg").write_bytes(good[:2000])
    (night / "empty.jpg").write_bytes(b"")
    (night / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>not found</body></html>")
    out = tmp_path / "o"
    score.run(["--input", str(few_uploads), "--model_uri", str(tiny_model), "--output", str(out),
               "--date", "2026-11-20", "--quality_gate", "off"])
    table = ds.dataset(str(out / "predictions"), format="parquet", partitioning="hive").to_table()
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in table.to_pylist()}
    assert len(rows) == 5 and {r["dt"] for r in rows.values()} == {"2026-11-20"}
    assert {r["model"] for r in rows.values()} == {"tiny"}
    expected = {"truncated.jpg": ["unreadable"], "empty.jpg": ["empty"], "page.jpg": ["unsupported_format"]}
    assert {n: r["reasons"] for n, r in rows.items() if r["status"] == "failed"} == expected
    dead_dir = out / "dead_letters" / "dt=2026-11-20" / "model=tiny"
    dead = [json.loads(l) for f in dead_dir.glob("dead_letters-*.jsonl") for l in f.read_text().splitlines()]
    assert {d["uri"].rsplit("/", 1)[1]: d["reasons"] for d in dead} == expected
    assert all("\n" not in d["error"] and len(d["error"]) <= 500 for d in dead)
    assert sorted(os.listdir(out)) == ["dead_letters", "predictions"]  # no empty _staging/ left


@pytest.mark.e2e
def test_inference_failures_are_inference_error_rows_with_the_error_line(tiny_model):
    """A batch the model raises on: each image a failed row with a reason
    code and the error's line, not its ~4 KB traceback."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.util import assert_that
    from transforms.scoring.inference import KerasBundleHandler

    def check(rows):
        assert sorted(r["uri"] for r in rows) == ["u1", "u2"]
        for r in rows:
            assert r["status"] == "failed" and r["reasons"] == ["inference_error"], r
            assert r["image_id"] == r["uri"] and r["sha256"] == "0" * 64  # the join keys survive a failed batch
            assert r["error"].startswith("inference failed: ValueError:") and "incompatible" in r["error"]
            assert "\n" not in r["error"] and "Traceback" not in r["error"] and len(r["error"]) < 500

    with beam.Pipeline() as p:  # 16 px arrays into a 32 px model
        _ok, bad = (p
                    | beam.Create([(("2026-11-20", u, u, "0" * 64), np.zeros((16, 16, 3), np.uint8)) for u in ("u1", "u2")])
                    | RunInference(KeyedModelHandler(KerasBundleHandler(str(tiny_model), min_batch_size=2,
                                                                        max_batch_size=2))).with_exception_handling())
        rows = bad.failed_inferences | beam.FlatMap(failed_batch_rows, "tiny", None)
        assert_that(rows, check)


@pytest.fixture
def lying_model(tiny_model, tmp_path):
    """The tiny bundle with a model_info.json that says 48 px; the model takes 32."""
    bundle = tmp_path / "lying"
    shutil.copytree(tiny_model, bundle)
    info = json.loads((bundle / "model_info.json").read_text())
    (bundle / "model_info.json").write_text(json.dumps({**info, "image_size": 48}))
    return bundle


@pytest.mark.e2e
def test_a_model_info_that_contradicts_the_model_is_refused_before_work(lying_model, few_uploads, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["--input", str(few_uploads), "--model_uri", str(lying_model), "--output", str(out), "--date", "2026-11-20"]
    assert main(score.run, args, prog="score") == 2
    _one_line_error(capsys, "image_size 48", "32x32")
    assert not out.exists()


@pytest.mark.e2e
def test_on_workers_a_contradicting_model_fails_the_job_not_its_rows(lying_model, few_uploads, tmp_path):
    """Where the launcher's probe did not run (a Dataflow worker), the model is
    probed at worker setup: the job fails and nothing is marked complete."""
    out = tmp_path / "o"
    options = score.ScoreOptions(["--input", str(few_uploads), "--model_uri", str(lying_model), "--output", str(out),
                                  "--date", "2026-11-20", "--quality_gate", "off"])
    dates, policy = score.validate(options)
    info = json.loads((lying_model / "model_info.json").read_text())
    with pytest.raises(Exception, match="image_size 48 but the model takes 32x32"):
        score.build_pipeline(options, dates, policy, info).run().wait_until_finish()
    assert not list(out.rglob("_SUCCESS")) and not list(out.rglob("*.parquet"))


@pytest.mark.e2e
def test_on_gcs_an_empty_night_is_its_folder_placeholder_and_no_prefix_is_missing(tiny_model, gcs_emulator, capsys):
    """GCS has no folders: a night with no objects under dt=D/ is missing; an
    empty night is the dt=D/ placeholder object (console, uploaders)."""
    bucket = gcs_emulator.create_bucket("nights")
    bucket.blob("up/dt=2026-11-23/").upload_from_string(b"")
    base = ["--input", "gs://nights/up", "--model_uri", str(tiny_model), "--output", "gs://nights/out"]
    assert main(score.run, base + ["--date", "2026-11-23"], prog="score") == 2
    _one_line_error(capsys, "no images in dt=2026-11-23", "--allow_empty")
    assert main(score.run, base + ["--date", "2026-11-24", "--allow_empty"], prog="score") == 2
    _one_line_error(capsys, "no folder under --input gs://nights/up for dt=2026-11-24")
    assert score.list_partition("2026-11-23", "gs://nights/up", None) == ([], score.EMPTY)
    assert not [b.name for b in bucket.list_blobs(prefix="out/")]


@pytest.mark.e2e
def test_a_dated_input_whose_name_holds_glob_characters_lists_only_its_own_nights(gcs_emulator, tmp_path):
    """--input up[1] was listed as the glob up[1]/dt=D/**, which matches
    up1/dt=D/: another folder's uploads were scored in its place, and its own
    night read as empty (--allow_empty then marked it complete, with 0 images)."""
    night = "dt=2026-11-21"
    for name, files in {"up[1]": ["a.jpg", "sub/b.jpg"], "up1": ["other.jpg"], "a*b?": ["c.jpg"],
                        "aXbY": ["d.jpg"], "up[2]": [], "up2": ["e.jpg"]}.items():
        (tmp_path / name / night).mkdir(parents=True)
        for f in files:
            (tmp_path / name / night / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / night / f).write_bytes(b"x")
    listed = {name: score.list_partition("2026-11-21", str(tmp_path / name), None)
              for name in ("up[1]", "a*b?", "up[2]")}
    assert listed == {"up[1]": ([f"{tmp_path}/up[1]/{night}/a.jpg", f"{tmp_path}/up[1]/{night}/sub/b.jpg"],
                                score.FOUND),
                      "a*b?": ([f"{tmp_path}/a*b?/{night}/c.jpg"], score.FOUND), "up[2]": ([], score.EMPTY)}
    bucket = gcs_emulator.create_bucket("globs")
    for name in ("up[1]/dt=2026-11-21/a.jpg", "up1/dt=2026-11-21/other.jpg"):
        bucket.blob(name).upload_from_string(b"x")
    assert score.list_partition("2026-11-21", "gs://globs/up[1]", None) == (
        ["gs://globs/up[1]/dt=2026-11-21/a.jpg"], score.FOUND)


# ------------------------------------------------ issue 15: predictions for real clients

@pytest.mark.e2e
def test_predictions_read_in_duckdb_and_pyarrow_typed_labelled_and_joined_to_curate(
        tiny_model, uploads, curated, tmp_path):
    """What a BigQuery/pandas/duckdb user needs: a DATE partition column that
    is neither reserved nor the hive key, a UTC timestamp, each probability
    with its label, and sha256/image_id joining curate's features."""
    import hashlib

    import duckdb
    import pyarrow.dataset as ds
    from schemas import predictions as P
    out = tmp_path / "o"
    score.run(["--input", str(uploads), "--model_uri", str(tiny_model), "--output", str(out), "--date", DATES[1]])
    night = sorted((uploads / f"dt={DATES[1]}").iterdir())
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,image_id\n{night[0]},case-7-img-1\n")
    score.run(["--manifest", str(manifest), "--allowed_roots", str(uploads), "--model_uri", str(tiny_model),
               "--output", str(out)])

    # pyarrow / pandas: typed columns beside the hive keys dt and model
    table = ds.dataset(str(out / "predictions"), format="parquet", partitioning="hive").to_table()
    assert table.schema.field("partition_date").type == pa.date32()
    assert table.schema.field("scored_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("probabilities").type == pa.list_(P.LABEL_PROBABILITY)
    assert "partition" not in table.schema.names
    frame = table.to_pandas()
    assert str(frame["scored_at"].dtype) == "datetime64[us, UTC]"
    by_dt = {d: g for d, g in frame.groupby("dt")}
    assert set(by_dt) == {DATES[1], "undated"} and len(by_dt[DATES[1]]) == len(night)
    assert by_dt[DATES[1]]["partition_date"].map(str).eq(DATES[1]).all()
    assert by_dt["undated"]["partition_date"].isna().all() and list(by_dt["undated"]["image_id"]) == ["case-7-img-1"]
    for row in frame[frame["status"] == "scored"].itertuples():
        assert [p["label"] for p in row.probabilities] == ["a", "b"]
    for path in night:  # sha256 of the bytes scored, whatever became of them (the truncated upload too)
        rows = frame[frame["uri"] == str(path)]
        assert set(rows["sha256"]) == {hashlib.sha256(path.read_bytes()).hexdigest()}
    dead = [json.loads(l) for f in (out / "dead_letters").rglob("*.jsonl") for l in f.read_text().splitlines()]
    assert dead and all(list(d) == sorted(P.DEAD_LETTER_FIELDS) for d in dead)
    assert {d["partition_date"] for d in dead} == {DATES[1]} and all(d["sha256"] for d in dead)

    # duckdb over the same hive tree, and a join to curate's features on sha256
    con = duckdb.connect()
    preds = f"read_parquet('{out}/predictions/*/*/*.parquet', hive_partitioning = true)"
    types = dict(con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {preds})").fetchall())
    assert types["partition_date"] == "DATE" and types["scored_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["probabilities"].replace('"', "") == "STRUCT(label VARCHAR, probability FLOAT)[]"
    got = con.sql(f"""
        SELECT p.uri, p.image_id, f.image_id AS curate_id, f.status AS verdict,
               list_filter(p.probabilities, lambda x: x.label = 'b')[1].probability AS p_b,
               p.top_labels, p.top_probabilities
        FROM {preds} p JOIN read_parquet('{curated}/features/*.parquet') f USING (sha256)
        WHERE p.dt = '{DATES[1]}' AND p.status = 'scored' ORDER BY p.uri""").fetchall()
    assert got, "no scored prediction joined curate's features"
    for uri, image_id, curate_id, verdict, p_b, top_labels, top_probs in got:
        assert image_id == curate_id and verdict in ("accepted", "rejected")
        assert abs(p_b - dict(zip(top_labels, top_probs))["b"]) < 1e-6


@pytest.mark.e2e
def test_a_model_version_that_is_not_one_path_component_is_refused(tiny_model, few_uploads, tmp_path, capsys):
    """A version names the model= partition a run replaces: '../../../victim'
    in a model_info.json put the partition (its _SUCCESS, its rows, and the
    deletion of whatever it held before) outside --output. It is refused at
    launch, and a bundle cannot be written or loaded with such a version."""
    from schemas.model_bundle import INFO_FILE, load_bundle
    bundle = tmp_path / "model"
    shutil.copytree(tiny_model, bundle)
    info = json.loads((bundle / INFO_FILE).read_text())
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("precious")
    for version in ("../../../../victim", "a/b", ".hidden", "", 7):
        (bundle / INFO_FILE).write_text(json.dumps(dict(info, version=version)))
        out = tmp_path / "out"
        assert main(score.run, ["--input", f"{few_uploads}/dt=2026-11-20/*", "--model_uri", str(bundle),
                                "--output", str(out)], prog="score") == 2
        _one_line_error(capsys, f"model info version {version!r} must be 1-128 letters, digits and _.+=@-")
        assert not out.exists()
        with pytest.raises(ValueError, match="must be 1-128 letters"):
            load_bundle(str(bundle))
    assert [p.name for p in (tmp_path / "victim").iterdir()] == ["keep.txt"]
    assert main(train_baseline.run, ["--tfrecords", "t", "--output", str(tmp_path / "m"), "--version", "../x"],
                prog="train_baseline") == 2
    assert capsys.readouterr().err.startswith("train_baseline: error: --version '../x' must be 1-128 letters")
