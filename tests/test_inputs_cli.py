"""Issue 12: inputs that used to be ignored or silently dropped.

Misspelled flags and bad values, unusable outputs and broken manifests are
one-line errors before any work; a folder given as --input is read; the
manifest's ids survive a URI also matched by --input; make_tfrecords refuses
an empty dataset, matches relative and absolute paths and dead-letters an
image listed with two labels; evaluate_curate refuses to score nothing.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from beam_jobs import (curate, demo, evaluate, evaluate_curate, make_tfrecords, score, train_baseline,
                       train_relevance)
from beam_jobs.cli import UsageError, main
from beam_jobs.evaluate_curate import load_features
from schemas.examples import dataset_info, read_split
from schemas.reasons import EXAMPLE_REASONS
from transforms.dataset.splits import split_of

from helpers import UNREADABLE, returns_without_a_writer, unreadable_file


def _one_line_error(capsys, prog, message):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error:") and message in err and "\n" not in err, err
    return err


# -- flags: the shared CLI layer ---------------------------------------------------

IN = ["--input", "/nonexistent/*.jpg", "--output", "/tmp/never"]
SCORE = ["--input", "/nonexistent/*.jpg", "--model_uri", "/nonexistent/m", "--output", "/tmp/never"]
TFR = ["--curated", "/nonexistent/c", "--labels_csv", "x.csv", "--output", "/tmp/never"]
SCIN = ["--curated", "/nonexistent/c", "--scin_cases", "c.csv", "--scin_labels", "l.csv",
        "--image_root", "/nonexistent", "--output", "/tmp/never"]


@pytest.mark.parametrize("job, args, message", [
    (curate, IN + ["--dup_raduis", "3"], "unknown option --dup_raduis (did you mean --dup_radius?)"),
    (curate, IN + ["--analysis-size", "128"], "unknown option --analysis-size (did you mean --analysis_size?)"),
    (curate, IN + ["--dup_radius", "three"], "argument --dup_radius: invalid int value: 'three'"),
    (curate, IN + ["--model_uri", "m"], "unknown option --model_uri"),  # another job's flag
    (curate, IN + ["stray"], "unexpected argument 'stray'"),
    (curate, IN + ["--direct_num_workers", "two"], "argument --direct_num_workers: invalid int value"),
    (make_tfrecords, TFR + ["--rare_classes", "keep"], "argument --rare_classes: invalid choice: 'keep'"),
    (make_tfrecords, TFR + ["--image-size=64"], "unknown option --image-size (did you mean --image_size?)"),
    (make_tfrecords, TFR + ["--policy", "p.json"], "--policy is not an option of this job"),
    # nan passed `<= 0` checks: a traceback at pipeline build (nan or inf MB), a weight no label meets
    (make_tfrecords, TFR + ["--target_shard_mb", "nan"], "--target_shard_mb must be positive and finite"),
    (make_tfrecords, TFR + ["--target_shard_mb", "inf"], "--target_shard_mb must be positive and finite"),
    (make_tfrecords, SCIN + ["--min_label_weight", "nan"], "--min_label_weight must be within [0, 1], got nan"),
    (make_tfrecords, SCIN + ["--min_label_weight", "1.5"], "--min_label_weight must be within [0, 1], got 1.5"),
    # a labels CSV has no label weights: the flag was accepted and did nothing
    (make_tfrecords, TFR + ["--min_label_weight", "0.5"], "--min_label_weight only applies with --scin_cases"),
    (score, SCORE + ["--topk", "2"], "unknown option --topk (did you mean --top_k?)"),
    (score, SCORE + ["--quality_gate", "maybe"], "argument --quality_gate: invalid choice: 'maybe'"),
    # --max_batch_size 0 was reported as the --min_batch_size it defaults; a batch is held in memory
    (score, SCORE + ["--max_batch_size", "0"], "--max_batch_size must be positive, got 0"),
    (score, SCORE + ["--max_batch_size", "100000"], "--max_batch_size must be at most 1024"),
    (score, SCORE + ["--min_batch_size", "65"], "--min_batch_size must be within [1, --max_batch_size 64], got 65"),
    (score, SCORE + ["--prepare_threads", "100000"], "--prepare_threads must be at most 64, got 100000"),
    # a shard is encoded from its rows in memory; the report inlines every thumbnail
    (score, SCORE + ["--rows_per_shard", "1000000000"], "--rows_per_shard must be within [1, 1000000]"),
    (curate, IN + ["--rows_per_shard", "0"], "--rows_per_shard must be within [1, 1000000]"),
    (curate, IN + ["--rows_per_shard", "1000000000"], "--rows_per_shard must be within [1, 1000000]"),
    (curate, IN + ["--examples_per_reason", "1000000"], "--examples_per_reason must be at most 100, got 1000000"),
    (evaluate, ["--tfrecords", "t", "--model_uri", "m", "--output", "o", "--max_batch_size", "0"],
     "--max_batch_size must be positive, got 0"),
    (evaluate_curate, ["--curated", "c", "--ground_truth", "g", "--image_root", "r", "--jsn", "x"],
     "unrecognized arguments: --jsn x"),
    (evaluate_curate, ["--curated", "c"], "the following arguments are required"),
    # numpy's generators take 0 .. 2**32 - 1; other seeds were tracebacks (evaluate's after the work)
    (train_relevance, ["--labels", "l.csv", "--output", "m.json", "--seed", "-1"],
     "argument --seed: must be a whole number from 0 to 4294967295, got '-1'"),
    (train_baseline, ["--tfrecords", "t", "--output", "m", "--seed", "4294967296"],
     "argument --seed: must be a whole number from 0 to 4294967295, got '4294967296'"),
    (evaluate, ["--tfrecords", "t", "--model_uri", "m", "--output", "o", "--seed", "1.5"],
     "argument --seed: must be a whole number"),
    (demo, ["--out", "/nonexistent/demo", "--seed", "-7"], "argument --seed: must be a whole number"),
    (demo, ["--out", "/nonexistent/demo", "--cases", "3"], "--cases must be at least 10, got 3"),
])
def test_unknown_flags_and_bad_values_are_one_line_errors(job, args, message, capsys):
    run = job.run
    assert main(run, args, prog="job") == 2
    _one_line_error(capsys, "job", message)


@pytest.mark.e2e
def test_the_demo_replaces_only_what_an_earlier_demo_wrote(tmp_path, capsys):
    """demo deleted its --out whole before writing: `--out .` in a checkout,
    or a home folder named by mistake, was gone. Now a folder holding
    anything the demo does not write is refused, and only the demo's own
    outputs are replaced."""
    mine = tmp_path / "work"
    (mine / "curate").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert main(demo.run, ["--out", str(mine)], prog="demo") == 2
    _one_line_error(capsys, "demo", f"--out {mine} holds 'notes.txt', which demo did not write")
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "curate").is_dir()
    (tmp_path / "file").write_text("x")
    assert main(demo.run, ["--out", str(tmp_path / "file")], prog="demo") == 2
    _one_line_error(capsys, "demo", "is a file, not a folder")

    earlier = tmp_path / "earlier"
    for name in demo.OUTPUTS:
        (earlier / name / "sub").mkdir(parents=True)
        (earlier / name / "sub" / "x").write_text("old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "y").write_text("not the demo's")
    os.symlink(outside, earlier / "model" / "link")
    demo.clear_out(str(earlier))
    assert os.listdir(earlier) == [] and (outside / "y").read_text() == "not the demo's"
    demo.clear_out(str(tmp_path / "new"))   # nothing there yet: nothing to do
    assert not (tmp_path / "new").exists()


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        curate.run(["--help"])
    assert exit_.value.code == 0 and "--dup_radius" in capsys.readouterr().out


@pytest.mark.e2e
def test_beam_options_pass_through_and_a_folder_input_keeps_manifest_ids(sample_dir, tmp_path):
    """--input naming a folder reads every file under it (it used to match the
    folder itself: one `unreadable` row); a URI also listed in --manifest keeps
    the manifest's image_id and case_id (the glob's listing used to win).
    Beam's own flags still pass the unknown-flag check."""
    folder = tmp_path / "uploads"
    (folder / "sub").mkdir(parents=True)
    images = sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[:3]
    for i, p in enumerate(images):
        shutil.copy(p, (folder / "sub" if i == 2 else folder) / p.name)
    listed = str(folder / images[0].name)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,image_id,case_id\n{listed},img-0,case-7\n")
    out = tmp_path / "out"
    curate.run(["--input", str(folder), "--manifest", str(manifest), "--output", str(out),
                "--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory",
                "--experiments=issue12", "--temp_location", str(tmp_path / "tmp"), "--project=p",
                "--region=us-central1"])
    rows = load_features(str(out))
    assert set(rows) == {listed, str(folder / images[1].name), str(folder / "sub" / images[2].name)}
    assert all(r["reasons"] != ["unreadable"] for r in rows.values())
    assert (rows[listed]["image_id"], rows[listed]["case_id"]) == ("img-0", "case-7")


@pytest.mark.e2e
def test_an_input_folder_on_gcs_without_a_slash_is_a_one_line_error(gcs_sample, tmp_path, capsys):
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    args = ["--input", f"{gcs_sample}/dataset/images", "--output", "/tmp/never"]
    assert main(curate.run, args, prog="curate") == 2
    _one_line_error(capsys, "curate", f"is a folder: end it with / or give a glob ({gcs_sample}/dataset/images/**)")
    # score said only "matches no files" of the same prefix
    write_bundle(str(tmp_path / "m"), build_model(32, 2), {"label_vocabulary": ["a", "b"], "version": "v1",
                                                             "image_size": 32})
    assert main(score.run, args + ["--model_uri", str(tmp_path / "m")], prog="score") == 2
    _one_line_error(capsys, "score", f"is a folder: end it with / or give a glob ({gcs_sample}/dataset/images/**)")


# -- bad manifests and outputs: one line, before any work ---------------------------

@pytest.mark.parametrize("content, message", [
    (b"uri,image_id,case_id\n", "has a header but no rows"),
    (b"\xef\xbb\xbfuri,case_id\r\n", "has a header but no rows"),
    (b"path_to_image,case\n/a.jpg,1\n", "its header has no uri/image_uri/path/gcs_path column (path_to_image, case)"),
    (b"name\n", "its header has no uri/image_uri/path/gcs_path column (name)"),
    (b'{"uri": "/a.jpg"}\n{"uri": "/b.jpg",\n', "line 2 is not JSON"),
    (b'{"uri": "/a.jpg"}\n["/b.jpg"]\n', "line 2 is not a JSON object"),
    (b'{"uri": "/a.jpg"}\n{"uri": ""}\n', "line 2 has no uri/image_uri/path/gcs_path value"),
    (b"uri,case_id\n/a.jpg,1\n,2\n", "line 3 has no uri/image_uri/path/gcs_path value"),
    ("uri\n/a.jpg\n".encode("utf-16"), "is not UTF-8 text"),
    (b"uri\n/caf\xe9.jpg\n", "is not UTF-8 text"),
])
def test_a_bad_manifest_is_a_one_line_error_before_launch(content, message, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    out = tmp_path / "out"
    assert main(curate.run, ["--manifest", str(manifest), "--output", str(out)], prog="curate") == 2
    _one_line_error(capsys, "curate", message)
    assert not out.exists()


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
@pytest.mark.parametrize("job, flag, args", [
    (curate, "--manifest", ["--output", "{out}"]),
    (curate, "policy file", ["--input", "/nonexistent/*.jpg", "--output", "{out}"]),
    (train_relevance, "--labels", ["--output", "{out}"]),
    (evaluate_curate, "--ground_truth", ["--curated", "{out}", "--image_root", "/tmp"]),
])
def test_a_named_file_that_cannot_be_read_is_one_line_error_and_a_fifo_never_hangs(
        job, flag, args, kind, tmp_path, capsys):
    """Every file an operator names (a manifest, labels, the policy) is read
    as images are: a FIFO used to hang the job waiting for a writer, a folder
    or a missing file was a traceback, a UTF-16 CSV a UnicodeDecodeError."""
    path = unreadable_file(kind, tmp_path / "named.csv")
    out = tmp_path / "out"
    option = "--policy" if flag == "policy file" else flag
    argv = [a.format(out=out) for a in args] + [option, str(path)]
    prog = job.__name__.rsplit(".", 1)[-1]
    assert returns_without_a_writer(lambda: main(job.run, argv, prog=prog), path) == 2
    # curate's --manifest is a glob: a name that matches nothing says so
    expected = f"--manifest {path} matched no files" if (kind, flag) == ("missing", "--manifest") else UNREADABLE[kind]
    _one_line_error(capsys, prog, expected.format(flag=flag, path=path))
    assert not out.exists()


def test_compare_metrics_refuses_a_fifo_in_one_line_instead_of_waiting(tmp_path, capsys):
    from beam_jobs import compare_metrics
    fifo = unreadable_file("fifo", tmp_path / "metrics.json")
    (tmp_path / "_SUCCESS").write_text("{}")  # a finished report's marker: the FIFO itself is what is refused
    argv = [str(fifo), str(fifo)]
    assert returns_without_a_writer(lambda: main(compare_metrics.run, argv, prog="compare_metrics"), fifo) == 2
    _one_line_error(capsys, "compare_metrics", UNREADABLE["fifo"].format(flag="metrics", path=fifo))


@pytest.mark.e2e
def test_a_header_only_scin_cases_file_is_a_one_line_error(labelled, tmp_path, capsys):
    cases = tmp_path / "cases.csv"
    cases.write_text((labelled / "dataset" / "scin_cases.csv").read_text().splitlines()[0] + "\n")
    args = ["--scin_cases", str(cases), "--image_root", str(labelled), "--output", str(tmp_path / "o")]
    assert main(curate.run, args, prog="curate") == 2
    _one_line_error(capsys, "curate", "lists no images")


@pytest.mark.e2e
def test_an_unusable_output_fails_before_any_work(sample_dir, curated, tmp_path, capsys):
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    images = str(sample_dir / "dataset" / "images" / "*.jpg")
    assert main(curate.run, ["--input", images, "--output", str(a_file)], prog="curate") == 2
    _one_line_error(capsys, "curate", f"--output {a_file} is a file, not a directory")
    assert main(curate.run, ["--input", images, "--output", str(a_file / "run")], prog="curate") == 2
    _one_line_error(capsys, "curate", f"--output {a_file / 'run'}: {a_file} is a file, not a directory")
    labels = tmp_path / "labels.csv"
    accepted = next(u for u, r in load_features(str(curated)).items() if r["status"] == "accepted")
    labels.write_text(f"image_uri,label\n{accepted},A\n")
    args = ["--curated", str(curated), "--labels_csv", str(labels), "--output", str(a_file)]
    assert main(make_tfrecords.run, args, prog="make_tfrecords") == 2
    _one_line_error(capsys, "make_tfrecords", "is a file, not a directory")
    write_bundle(str(tmp_path / "m"), build_model(32, 2), {"label_vocabulary": ["a", "b"], "version": "v1",
                                                             "image_size": 32})
    args = ["--input", images, "--model_uri", str(tmp_path / "m"), "--output", str(a_file)]
    assert main(score.run, args, prog="score") == 2
    _one_line_error(capsys, "score", "is a file, not a directory")
    assert a_file.read_text() == "not a folder"


@pytest.mark.e2e
def test_an_output_named_like_a_glob_is_refused_before_it_can_touch_another_output(sample_dir, curated, tmp_path,
                                                                                   capsys):
    """Beam lists and deletes a job's own files by glob: curate into out[1]
    deleted out1's features as its stale shards (and then failed on its own
    lock). Such a name is refused, local or gs://, before any work."""
    neighbour = tmp_path / "out1"
    shutil.copytree(curated, neighbour)
    before = sorted(str(p.relative_to(neighbour)) for p in neighbour.rglob("*"))
    images = str(sample_dir / "dataset" / "images" / "*.jpg")
    for name in (str(tmp_path / "out[1]"), str(tmp_path / "out?"), "gs://bucket/night*/curated"):
        assert main(curate.run, ["--input", images, "--output", name], prog="curate") == 2
        _one_line_error(capsys, "curate", f"--output {name} holds the wildcard character")
    night = ["--input", str(sample_dir / "dataset"), "--date", "2026-11-20", "--output", str(tmp_path / "o"),
             "--reference", str(tmp_path / "ref[1]")]
    assert main(curate.run, night, prog="curate") == 2
    _one_line_error(capsys, "curate", f"--reference {tmp_path / 'ref[1]'} holds the wildcard character [")
    args = ["--curated", str(curated), "--labels_csv", str(tmp_path / "l.csv"), "--output", str(tmp_path / "t[1]")]
    assert main(make_tfrecords.run, args, prog="make_tfrecords") == 2
    _one_line_error(capsys, "make_tfrecords", "holds the wildcard character [")
    assert sorted(str(p.relative_to(neighbour)) for p in neighbour.rglob("*")) == before
    assert not list(tmp_path.glob("*[[]*")) and not (tmp_path / "out?").exists()


@pytest.mark.e2e
def test_an_output_where_the_input_lists_is_refused_and_one_beside_it_is_not(sample_dir, tmp_path, capsys):
    """An --output inside the --input folder made each run read the one
    before it as uploads: a second curate of 12 photos matched 18 (its
    features, report, summary and markers as unsupported_format rows, and a
    file renamed mid-listing as missing)."""
    uploads = tmp_path / "uploads"
    night = uploads / "dt=2026-11-01"
    night.mkdir(parents=True)
    for photo in sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[:3]:
        shutil.copy(photo, uploads / photo.name)
        shutil.copy(photo, night / photo.name)
    before = sorted(str(p) for p in uploads.rglob("*"))
    link = tmp_path / "link"
    link.symlink_to(uploads)
    for job, args, pattern in [
        (curate, ["--input", str(uploads), "--output", str(uploads / "curated")], f"{uploads}/**"),
        # the same place reached through a symlink, on either side (the output's went unseen)
        (curate, ["--input", str(uploads), "--output", str(link / "curated")], f"{uploads}/**"),
        (curate, ["--input", str(link), "--output", str(uploads / "curated")], f"{link}/**"),
        (curate, ["--input", str(uploads), "--date", "2026-11-01", "--output", str(uploads)], f"{uploads}/dt=*/**"),
        # tonight's files in a later night's folder are read that night; so is an index written there
        (curate, ["--input", str(uploads), "--date", "2026-11-01", "--output", str(uploads / "dt=2026-11-02" / "c")],
         f"{uploads}/dt=*/**"),
        (curate, ["--input", str(uploads), "--date", "2026-11-01", "--output", str(tmp_path / "c"),
                  "--reference", str(uploads / "dt=2026-11-02" / "index")], f"{uploads}/dt=*/**"),
        (score, ["--input", f"{uploads}/**", "--output", str(uploads / "scores"), "--model_uri", str(tmp_path / "m")],
         f"{uploads}/**"),
    ]:
        name = job.__name__.rsplit(".", 1)[-1]
        assert main(job.run, args, prog=name) == 2
        flag = "--reference" if "--reference" in args else "--output"
        _one_line_error(capsys, name, f"{flag} {args[args.index(flag) + 1]} is where --input {pattern} reads")
    assert sorted(str(p) for p in uploads.rglob("*")) == before  # refused before writing anything
    # Beside the uploads, or under them where the glob does not reach (* stays in one folder): allowed,
    # and a rerun reads the same photos, not the run before it.
    assert main(curate.run, ["--input", str(uploads), "--output", str(tmp_path / "curated")], prog="curate") == 0
    assert json.loads((tmp_path / "curated" / "summary.json").read_text())["matched"] == 6
    for _ in range(2):
        args = ["--input", f"{uploads}/*.jpg", "--output", str(uploads / "curated"), "--force"]
        assert main(curate.run, args, prog="curate") == 0
        assert json.loads((uploads / "curated" / "summary.json").read_text())["matched"] == 3


@pytest.mark.e2e
def test_no_job_writes_into_another_jobs_output(labelled, curated, tfrecords64, tmp_path, capsys):
    """Each job takes its output folder as its own (its marker removed
    first, dead-letter shards it did not write dropped): make_tfrecords given
    --output the same as --curated deleted curate's _SUCCESS and then failed,
    unable to read a curate output it had just unmarked."""
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    cur, tfr = tmp_path / "curated", tmp_path / "tfrecords"
    shutil.copytree(curated, cur)
    shutil.copytree(tfrecords64, tfr)
    before = {p: p.read_bytes() for folder in (cur, tfr) for p in folder.rglob("*") if p.is_file()}
    labels = ["--scin_cases", str(labelled / "dataset" / "scin_cases.csv"), "--scin_labels",
              str(labelled / "dataset" / "scin_labels.csv"), "--image_root", str(labelled), "--image_size", "32"]
    assert main(make_tfrecords.run, ["--curated", str(cur), "--output", f"{cur}/"] + labels, prog="make_tfrecords") == 2
    _one_line_error(capsys, "make_tfrecords", f"--output {cur}/ is --curated: make_tfrecords would replace")
    assert main(make_tfrecords.run, ["--curated", str(curated), "--output", str(cur)] + labels,
                prog="make_tfrecords") == 2
    _one_line_error(capsys, "make_tfrecords", f"--output {cur} holds a curate output ({cur}/summary.json)")
    scin = ["--scin_cases", str(labelled / "dataset" / "scin_cases.csv"), "--image_root", str(labelled)]
    assert main(curate.run, scin + ["--output", str(tfr)], prog="curate") == 2
    _one_line_error(capsys, "curate", f"--output {tfr} holds a make_tfrecords output ({tfr}/dataset_info.json)")
    write_bundle(str(tmp_path / "m"), build_model(32, 2), {"label_vocabulary": ["a", "b"], "version": "v1",
                                                             "image_size": 32})
    images = str(labelled / "dataset" / "images" / "*.jpg")
    assert main(score.run, ["--input", images, "--model_uri", str(tmp_path / "m"), "--output", str(cur)],
                prog="score") == 2
    _one_line_error(capsys, "score", f"--output {cur} holds a curate output")
    # evaluate into the TFRecords' folder replaced their _SUCCESS with its own
    info = dataset_info(str(tfr))
    size = int(info["sources"]["image_size"])
    model = tmp_path / "m64"
    write_bundle(str(model), build_model(size, len(info["label_vocabulary"])),
                 {"label_vocabulary": info["label_vocabulary"], "version": "v64", "image_size": size})
    before.update({p: p.read_bytes() for p in model.rglob("*") if p.is_file()})
    for out, other in ((tfr, "make_tfrecords"), (model, "train_baseline")):
        assert main(evaluate.run, ["--tfrecords", str(tfr), "--model_uri", str(model), "--output", str(out)],
                    prog="evaluate") == 2
        _one_line_error(capsys, "evaluate", f"--output {out} holds a {other} output")
    assert main(train_baseline.run, ["--tfrecords", str(tfr), "--output", str(cur)], prog="train_baseline") == 2
    _one_line_error(capsys, "train_baseline", f"--output {cur} holds a curate output")
    files = {p: p.read_bytes() for folder in (cur, tfr, model) for p in folder.rglob("*") if p.is_file()}
    assert files == before


# -- make_tfrecords: empty datasets, path forms, conflicting labels -------------------

def _tfr(curated, out, labels, *extra):
    return ["--curated", str(curated), "--labels_csv", str(labels), "--output", str(out),
            "--image_size", "32", "--min_class_count", "1", *extra]


@pytest.mark.e2e
def test_make_tfrecords_refuses_labels_that_meet_no_curated_image(labelled, curated, tmp_path, capsys):
    ds = labelled / "dataset"
    wrong_root = ["--curated", str(curated), "--scin_cases", str(ds / "scin_cases.csv"),
                  "--scin_labels", str(ds / "scin_labels.csv"), "--image_root", str(tmp_path),
                  "--output", str(tmp_path / "o")]
    assert main(make_tfrecords.run, wrong_root, prog="make_tfrecords") == 2
    err = _one_line_error(capsys, "make_tfrecords", "images the labels name is among curate's")
    named, has = re.search(r"the labels name (\S+), curate has (\S+) ", err).groups()
    assert named.startswith(str(tmp_path)) and has.startswith(str(labelled)) and "check --image_root" in err
    assert os.path.basename(named) == os.path.basename(has)  # one file, as each side names it
    header_only = tmp_path / "labels.csv"
    header_only.write_text("image_uri,label,group_id\n")
    assert main(make_tfrecords.run, _tfr(curated, tmp_path / "o", header_only), prog="make_tfrecords") == 2
    _one_line_error(capsys, "make_tfrecords", f"--labels_csv {header_only} has a header but no rows")
    rejected = sorted(u for u, r in load_features(str(curated)).items() if r["status"] == "rejected")[:3]
    only_rejected = tmp_path / "rejected.csv"
    only_rejected.write_text("image_uri,label\n" + "".join(f"{u},A\n" for u in rejected))
    assert main(make_tfrecords.run, _tfr(curated, tmp_path / "o", only_rejected), prog="make_tfrecords") == 2
    _one_line_error(capsys, "make_tfrecords", "curate rejected all 3 labelled images it has")
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_an_empty_train_split_fails_at_finalize_without_a_marker(curated, tmp_path, capsys):
    """One labelled image whose group hashes to validation: the pipeline runs
    (nothing up front can know the split) and refuses at finalize, in one line,
    removing an older run's marker."""
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    group = next(f"g{i}" for i in range(100) if split_of(f"group:g{i}", fractions) == "validation")
    accepted = sorted(u for u, r in load_features(str(curated)).items() if r["status"] == "accepted")[0]
    labels = tmp_path / "labels.csv"
    labels.write_text(f"image_uri,label,group_id\n{accepted},A,{group}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_SUCCESS").write_text("{}")  # an earlier run's
    assert main(make_tfrecords.run, _tfr(curated, out, labels), prog="make_tfrecords") == 1
    _one_line_error(capsys, "make_tfrecords", "the train split is empty (validation 1")
    assert not (out / "_SUCCESS").exists() and not (out / "dataset_info.json").exists()


@pytest.mark.e2e
def test_relative_label_paths_meet_absolute_curate_uris_and_conflicts_are_dead_letters(
        curated, tmp_path, monkeypatch):
    """Labels name curate's absolute URIs by paths relative to the working
    directory: they join. An image listed twice with different labels is a
    `conflicting_labels` dead letter (the first row used to win); listed twice
    with one label, it is one example."""
    accepted = sorted(u for u, r in load_features(str(curated)).items() if r["status"] == "accepted")[:10]
    monkeypatch.chdir(os.path.dirname(os.path.dirname(accepted[0])))
    rel = [os.path.relpath(u) for u in accepted]
    assert not any(r.startswith("/") for r in rel)
    lines = [f"./{r},{'A' if i % 2 else 'B'},g{i}" for i, r in enumerate(rel)]
    lines += [f"{accepted[0]},C,g0", f"{accepted[1]},A,g1"]  # 0: B then C (conflict); 1: A twice
    labels = tmp_path / "labels.csv"
    labels.write_text("image_uri,label,group_id\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out"
    make_tfrecords.run(_tfr(curated, out, labels, "--split_fractions", "0.6,0.2,0.2"))
    info = dataset_info(str(out))
    assert sum(s["examples"] for s in info["splits"].values()) == len(accepted) - 1
    dead = [json.loads(l) for f in (out / "dead_letters").glob("*.jsonl") for l in f.read_text().splitlines()]
    mine = [d for d in dead if d["uri"] in accepted]  # the others: accepted but unlabelled here
    assert [(d["uri"], d["reason"]) for d in mine] == [(accepted[0], "conflicting_labels")]
    assert "different labels: B, C" in mine[0]["error"]
    assert set(info["dead_letters"]) <= set(EXAMPLE_REASONS)
    assert (out / "_SUCCESS").exists()


@pytest.mark.e2e
def test_a_label_with_a_line_break_is_a_dead_letter_not_an_example_without_a_label_id(curated, tmp_path):
    """tf.Transform's vocabulary file holds one label per line and silently
    leaves out a label with a line break (a malformed CSV): its examples were
    written, and counted in dataset_info, with label_id -1."""
    accepted = sorted(u for u, r in load_features(str(curated)).items() if r["status"] == "accepted")[:9]
    labels = tmp_path / "labels.csv"
    labels.write_text("image_uri,label\n" + "".join(f"{u},{'A' if i % 2 else 'B'}\n" for i, u in enumerate(accepted[:6]))
                      + "".join(f'{u},"x\ny"\n' for u in accepted[6:]))
    out = tmp_path / "out"
    make_tfrecords.run(_tfr(curated, out, labels))
    info = dataset_info(str(out))
    assert sorted(info["label_vocabulary"]) == ["A", "B"]
    assert {c for s in info["splits"].values() for c in s["by_class"]} == {"A", "B"}
    ids = [int(label_id) for split in ("train", "validation", "test")
           for _features, label_id in read_split(str(out), split)]
    assert len(ids) == 6 and min(ids) >= 0
    dead = [json.loads(l) for f in (out / "dead_letters").glob("*.jsonl") for l in f.read_text().splitlines()]
    broken = [d for d in dead if d["uri"] in accepted[6:]]  # once each: not also `no_label_row`
    assert sorted(d["uri"] for d in broken) == accepted[6:]
    assert all(d["reason"] == "bad_metadata" and "holds a line break" in d["error"] for d in broken)


# -- evaluate_curate ---------------------------------------------------------------------

@pytest.mark.e2e
def test_evaluate_curate_refuses_to_score_nothing(labelled, curated, tmp_path, capsys):
    args = ["--curated", str(curated), "--ground_truth", str(labelled / "ground_truth.csv")]
    assert evaluate_curate.main(args + ["--image_root", str(tmp_path)]) == 2  # the module's entry point
    _one_line_error(capsys, "evaluate_curate", "ground-truth images is in")
    relative_root = os.path.relpath(str(labelled))  # relative root, absolute curate URIs: still meet
    result = evaluate_curate.run(args + ["--image_root", relative_root])
    assert not result["not_in_output"]


def test_evaluate_curate_never_writes_its_json_over_another_file(tmp_path, capsys):
    truth = tmp_path / "ground_truth.csv"
    truth.write_text("image_path,defect\n")
    for target, message in ((truth, "exists and holds no evaluate_curate metrics"),
                            (tmp_path, "a directory, not a regular file")):
        args = ["--curated", "c", "--ground_truth", str(truth), "--image_root", "r", "--json", str(target)]
        assert main(evaluate_curate.run, args, prog="evaluate_curate") == 2
        _one_line_error(capsys, "evaluate_curate", message)
    assert truth.read_text() == "image_path,defect\n"
    # A large file is refused by its size: it was read whole into memory first.
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 ** 31)  # sparse: 2 GiB that take no disk
    args = ["--curated", "c", "--ground_truth", str(truth), "--image_root", "r", "--json", str(big)]
    assert main(evaluate_curate.run, args, prog="evaluate_curate") == 2
    _one_line_error(capsys, "evaluate_curate", f"--json {big} exists and holds 2147 MB, more than any evaluate_curate")
    assert big.stat().st_size == 2 ** 31


def test_evaluate_curate_reports_no_spread_from_fewer_than_two_tones():
    """One tone's rejection rate has no spread: the report says n/a, not 0.0 points."""
    from beam_jobs.evaluate_curate import evaluate, format_report
    rows = {"/root/a.jpg": {"status": "accepted", "reasons": []}}
    truth = [{"image_path": "a.jpg", "expected_reasons": "", "expected_status": "accepted", "monk_tone": "3"},
             {"image_path": "b.jpg", "expected_reasons": "", "expected_status": "accepted", "monk_tone": "9"}]
    result = evaluate(rows, truth, "/root")
    report = format_report(result)
    assert result["fairness_spread_pp"] is None and "0.0 percentage points" not in report
    assert "spread across tones: n/a" in report and "not in the curate output: 1" in report


def test_a_job_spec_checks_one_of_then_needs_then_required_in_one_line():
    """beam_jobs.options.check_spec: the rule set each job validates with and
    its Flex Template publishes; generic lines unless the spec words one."""
    import types

    from beam_jobs.options import JobSpec, check_spec
    spec = JobSpec(required=("model_uri", "output"), one_of=(("input", "manifest"),),
                   needs={"date": ("input",), "from_images": ("allowed_roots",)},
                   messages={"date->input": "--date needs --input, the root of dt= folders"})

    def line(**given):
        o = types.SimpleNamespace(**{d: None for d in ("model_uri", "output", "input", "manifest", "date",
                                                       "from_images", "allowed_roots")} | given)
        try:
            check_spec(o, spec)
        except UsageError as e:
            return str(e)
        return None

    assert line() == "give at least one of --input, --manifest"
    assert line(manifest="m.csv", date="2026-11-21") == "--date needs --input, the root of dt= folders"
    assert line(manifest="m.csv", from_images=True) == "--from_images needs --allowed_roots"
    assert line(manifest="m.csv", from_images=False) == "--model_uri and --output are required"
    assert line(input="gs://b/u", output="gs://b/o") == "--model_uri is required"
    assert line(input="gs://b/u", output="gs://b/o", model_uri="gs://b/m") is None
    # A value of 0 is given (0 == False, but --jpeg_quality 0 is not "no --jpeg_quality").
    assert line(manifest="m.csv", date=0) == "--date needs --input, the root of dt= folders"
