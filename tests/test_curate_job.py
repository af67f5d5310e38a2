"""The curate job end to end on DirectRunner: accuracy, accounting, determinism,
gs:// through the emulator, every malformed upload kind, one-line errors."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from helpers import crafted_jpeg, crafted_png, heic, isobmff, pil_bytes, skin_photo, with_repeated_scan

from beam_jobs import curate
from beam_jobs.cli import main
from schemas.features import DEAD_LETTER_FIELDS
from beam_jobs.evaluate_curate import evaluate, format_report, load_features

ESSENTIAL = ["uri", "status", "reasons", "width", "height", "cluster_id"]


def run_curate(*args):
    curate.run(list(args))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.e2e
def test_every_image_has_one_row_with_the_essential_columns(labelled, curated):
    truth = list(csv.DictReader(open(labelled / "ground_truth.csv")))
    rows = load_features(str(curated))
    assert len(rows) == len(truth)
    table = pq.read_table(next((curated / "features").glob("*.parquet")), use_threads=False)
    assert set(ESSENTIAL) <= set(table.column_names)
    for row in rows.values():
        assert row["status"] in ("accepted", "rejected")
        assert (row["status"] == "accepted") == (row["reasons"] == [])
        assert row["cluster_id"]
        if row["format"] is not None and row["width"]:
            assert row["width"] > 0 and row["height"] > 0


@pytest.mark.e2e
def test_accuracy_and_fairness_against_ground_truth(labelled, curated):
    truth = list(csv.DictReader(open(labelled / "ground_truth.csv")))
    result = evaluate(load_features(str(curated)), truth, str(labelled))
    print(format_report(result))
    assert not result["not_in_output"]
    expected = {"empty", "unreadable", "unsupported_format", "too_dark", "too_bright", "blurry",
                "low_information", "no_skin", "exact_duplicate", "near_duplicate"}
    assert expected <= result["per_reason"].keys()
    for reason, m in result["per_reason"].items():
        assert m["precision"] >= 0.95 and m["recall"] >= 0.95, (reason, m)
    assert len(result["defect_free_rejection_by_monk"]) == 10
    assert result["fairness_spread_pp"] <= 2.0


@pytest.mark.e2e
def test_outputs_account_for_every_input(curated):
    summary = json.loads((curated / "summary.json").read_text())
    rows = load_features(str(curated))
    assert summary["matched"] == len(rows) == summary["accepted"] + summary["rejected"]
    assert summary["accounting_ok"] is True
    dead = [json.loads(l) for f in (curated / "dead_letters").glob("*.jsonl") for l in f.read_text().splitlines()]
    assert len(dead) == summary["rejected"]
    for d in dead:  # reasons and error text only: never image content
        assert d["reasons"] and set(d) == set(DEAD_LETTER_FIELDS)
        assert len(json.dumps(d)) < 2000
    assert sum(summary["reasons"].values()) >= summary["rejected"]
    monk = summary["fairness"]["monk_estimate"]
    assert set(monk) <= {str(i) for i in range(1, 11)} and len(monk) >= 8
    assert set(summary["fairness"]["ita_category"]) <= {"very_light", "light", "intermediate", "tan", "brown", "dark"}
    assert json.loads((curated / "_SUCCESS").read_text())["matched"] == summary["matched"]
    html = (curated / "report.html").read_text()
    assert html.count("<svg") >= 8 and "data:image/jpeg;base64," in html and "Monk" in html


@pytest.mark.e2e
def test_duplicates_point_at_a_kept_member_of_their_cluster(curated):
    rows = load_features(str(curated))
    dups = [r for r in rows.values() if r["duplicate_of"]]
    assert dups
    for r in dups:
        keeper = rows[r["duplicate_of"]]
        assert keeper["cluster_id"] == r["cluster_id"] and not keeper["duplicate_of"]


@pytest.mark.e2e
def test_rerun_into_the_same_output_gives_identical_bytes(labelled, curated, tmp_path):
    before = _files(curated)
    run_curate("--scin_cases", str(labelled / "dataset" / "scin_cases.csv"),
               "--image_root", str(labelled), "--output", str(curated))
    assert _files(curated) == before


@pytest.mark.e2e
def test_gcs_input_and_output_through_the_emulator(gcs_sample, gcs_emulator, sample_dir, tmp_path):
    gcs_emulator.create_bucket("curate-out")
    run_curate("--input", f"{gcs_sample}/dataset/images/*", "--output", "gs://curate-out/run1")  # .jpg and .heic
    bucket = gcs_emulator.client().bucket("curate-out")
    summary = json.loads(bucket.blob("run1/summary.json").download_as_text())
    n_images = len(list((sample_dir / "dataset" / "images").iterdir()))
    assert summary["matched"] == n_images == summary["accepted"] + summary["rejected"]
    names = {b.name for b in bucket.list_blobs(prefix="run1/")}
    assert {"run1/_SUCCESS", "run1/report.html", "run1/features/features-00000-of-00001.parquet"} <= names
    assert not [n for n in names if ".tmp-" in n]


@pytest.mark.e2e
def test_gcs_object_names_with_any_characters_are_listed_and_read(gcs_emulator, sample_dir, tmp_path):
    """GCS names may hold spaces, #, ?, brackets, %, *, non-ASCII letters and
    even a newline; each such upload is read and judged like any other (a
    newline once made the read's gs:// parser refuse the object)."""
    photo = sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[0].read_bytes()
    names = ["plain.jpg", "sp ace.jpg", "hash#1.jpg", "q?x.jpg", "br[1].jpg", "pct%20.jpg", "star*.jpg",
             "\u00fcn\u00ef.jpg", "new\nline.jpg"]
    gcs_emulator.create_bucket("odd-names")
    bucket = gcs_emulator.client().bucket("odd-names")
    for name in names:
        bucket.blob(f"up/{name}").upload_from_string(photo)
    out = tmp_path / "out"
    run_curate("--input", "gs://odd-names/up/*", "--output", str(out))
    rows = {r["uri"]: r for r in load_features(str(out)).values()}
    assert sorted(rows) == sorted(f"gs://odd-names/up/{n}" for n in names)
    assert all(r["error"] is None and r["sha256"] for r in rows.values()), [
        (u, r["error"]) for u, r in rows.items() if r["error"]]


def _phone_formats(p) -> dict[str, tuple[bytes, str]]:
    """HEIC and AVIF, good and bad, as phones (or attackers) send them (issue 13)."""
    import pillow_heif
    from transforms.image.colour import display_p3_profile
    good_heic, avif = heic(p, quality=90), pil_bytes(p, "AVIF", quality=90)
    at = good_heic.index(b"ispe") + 8
    bomb = good_heic[:at] + (60_000).to_bytes(4, "big") * 2 + good_heic[at + 8:]
    multi = pillow_heif.from_pillow(Image.new("RGB", (640, 640), "blue"))  # not the primary
    multi.add_from_pillow(p)
    buf = io.BytesIO()
    multi.save(buf, format="HEIF", quality=90, primary_index=1)
    return {
        "photo.heic.good": (good_heic, "decoded:heic"),
        "p3.heic": (heic(p, quality=90, icc_profile=display_p3_profile()), "decoded:heic"),
        "multi.heic": (buf.getvalue(), "decoded:heic"),
        "truncated.heic": (good_heic[: len(good_heic) // 2], "unreadable"),
        "bomb.heic": (bomb, "too_large"),
        "photo.avif": (avif, "decoded:avif"),
        "truncated.avif": (avif[: len(avif) // 2], "unreadable"),
        "p3.jpg": (pil_bytes(p, "JPEG", quality=90, icc_profile=display_p3_profile()), "decoded:jpeg"),
    }


def malformed_corpus() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, expectation): a reason code, or 'decoded:<format>'."""
    p = skin_photo()
    good_jpeg = pil_bytes(p, "JPEG", quality=90)
    frames = [skin_photo(), skin_photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    arr16 = (np.asarray(p.convert("L"), np.uint16) * 257)
    return {
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "unreadable"),
        "zero.jpg": (b"", "empty"),
        "page.jpg": (b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "unsupported_format"),
        "png_named.jpg": (pil_bytes(p, "PNG"), "decoded:png"),
        "cmyk.jpg": (pil_bytes(p.convert("CMYK"), "JPEG"), "decoded:jpeg"),
        "sixteen.png": (pil_bytes(Image.fromarray(arr16), "PNG"), "decoded:png"),
        "palette.png": (pil_bytes(p.convert("P"), "PNG"), "decoded:png"),
        "rgba.png": (pil_bytes(p.convert("RGBA"), "PNG"), "decoded:png"),
        "gray.jpg": (pil_bytes(p.convert("L"), "JPEG"), "decoded:jpeg"),
        "progressive.jpg": (pil_bytes(p, "JPEG", progressive=True), "decoded:jpeg"),
        "photo.webp": (pil_bytes(p, "WEBP"), "decoded:webp"),
        "anim.gif": (gif.getvalue(), "decoded:gif"),
        "photo.heic": (isobmff(b"heic", [b"mif1", b"heic"]), "unreadable"),
        **_phone_formats(p),
        "bomb.png": (crafted_png(100_000, 100_000), "too_large"),
        "bomb.jpg": (crafted_jpeg(60_000, 60_000), "too_large"),
        "scans.jpg": (with_repeated_scan(pil_bytes(p, "JPEG", progressive=True), 600), "too_large"),
    }


@pytest.mark.e2e
def test_every_malformed_upload_is_decoded_or_rejected_with_a_reason(tmp_path):
    corpus = malformed_corpus()
    src = tmp_path / "uploads"
    src.mkdir()
    for name, (data, _) in corpus.items():
        (src / name).write_bytes(data)
    out = tmp_path / "out"
    run_curate("--input", str(src / "*"), "--output", str(out))
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in load_features(str(out)).values()}
    assert rows.keys() == corpus.keys()
    for name, (_, expect) in corpus.items():
        row = rows[name]
        if expect.startswith("decoded:"):
            assert row["format"] == expect.split(":")[1], (name, row["format"], row["error"])
            assert (row["width"], row["height"]) == (400, 300), name
            assert row["brightness_mean"] is not None and row["error"] is None, name
        else:
            assert row["reasons"] == [expect], (name, row["reasons"], row["error"])
            assert row["error"], name
    assert rows["gray.jpg"]["grayscale"] is True and rows["photo.webp"]["grayscale"] is False
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matched"] == len(corpus) == summary["accepted"] + summary["rejected"]


@pytest.mark.e2e
def test_manifest_with_missing_and_repeated_uris(tmp_path, sample_dir, monkeypatch):
    images = sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[:3]
    manifest = tmp_path / "m.csv"
    # The same files again, written as relative, ./ and // paths: one image each, not another row.
    monkeypatch.chdir(sample_dir / "dataset")
    again = [f"images/{images[1].name}", f"./images/{images[2].name}", f"{images[0].parent}//{images[0].name}"]
    lines = (["uri,case_id"] + [f"{p},c1" for p in images] + [f"{images[0]},c1", f"{tmp_path}/nope.jpg,c2"]
             + [f"{p},c1" for p in again])
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    # the images live outside the manifest's folder (its default root): widen it
    run_curate("--manifest", str(manifest), "--allowed_roots", f"{tmp_path},{sample_dir}", "--output", str(out))
    rows = load_features(str(out))
    assert len(rows) == 4  # three images once each, plus the missing one
    assert rows[f"{tmp_path}/nope.jpg"]["reasons"] == ["missing"]
    assert {r["case_id"] for r in rows.values()} == {"c1", "c2"}


@pytest.mark.parametrize("args, message", [
    ([], "give at least one of --input, --manifest, --scin_cases"),
    (["--input", "/nonexistent/dir/*.jpg", "--output", "/tmp/x"], "matched no files"),
    (["--scin_cases", "x.csv", "--output", "/tmp/x"], "--scin_cases needs --image_root"),
    (["--input", "/tmp/*", "--output", "/tmp/x", "--dup_radius", "-1"], "--dup_radius must be within [0, 20], got -1"),
    (["--input", "/tmp/*", "--output", "/tmp/x", "--policy", "/nonexistent.json"], "cannot read policy file"),
    (["--input", "gs://b/in/*", "--output", "gs://b/out", "--runner=DataflowRunner", "--dry_run=True",
      "--no_auth", "--project=p", "--region=us-central1", "--temp_location=gs://tmp-bucket/tmp"],
     "invalid pipeline options: Invalid Project ID (p)"),
])
def test_bad_arguments_give_one_line_errors(args, message, capsys):
    assert main(curate.run, args, prog="curate") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error:") and message in err and "\n" not in err


@pytest.mark.e2e
def test_cli_entry_point_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "beam_jobs.curate", "--input", "/nonexistent/*.jpg",
                           "--output", "/tmp/x"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "curate: error: --input /nonexistent/*.jpg matched no files"


@pytest.mark.e2e
def test_a_local_run_spills_what_waits_to_the_temp_folder_and_removes_it(tmp_path, monkeypatch):
    """On DirectRunner curate's duplicate stage and report thumbnails wait
    under the temp folder (so the runner does not hold them in memory), the
    report still shows the thumbnails, and nothing is left there; a Dataflow
    run would leave them to the runner's shuffle."""
    import tempfile

    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_jobs.cli import local_spill_root

    src = tmp_path / "uploads"
    src.mkdir()
    photo = skin_photo()
    photo.save(src / "a.jpg", quality=92)
    photo.save(src / "a_copy.png")
    (src / "a_again.jpg").write_bytes((src / "a.jpg").read_bytes())
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    result = curate.run(["--input", str(src / "*"), "--output", str(tmp_path / "out")])
    spilled = [c.committed for c in result.metrics().query(MetricsFilter().with_name("spilled_bytes"))["counters"]]
    assert sum(spilled) > 0
    assert [p.name for p in temp.iterdir() if p.name.startswith("skin-pipeline-")] == []
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in load_features(str(tmp_path / "out")).values()}
    # The lossless copy is the keeper; both JPEGs point at it.
    assert {n: r["duplicate_of"] and r["duplicate_of"].rsplit("/", 1)[1] for n, r in rows.items()} == {
        "a.jpg": "a_copy.png", "a_again.jpg": "a_copy.png", "a_copy.png": None}
    assert (tmp_path / "out" / "report.html").read_text().count('src="data:image/jpeg;base64,') >= 3
    assert local_spill_root(PipelineOptions(["--runner", "DataflowRunner"])) is None
    assert local_spill_root(PipelineOptions(["--runner", "FlinkRunner"])) is None
    assert local_spill_root(PipelineOptions([])) == str(temp)
