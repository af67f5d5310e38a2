"""Privacy: no EXIF/GPS in anything written for training or scoring; dead
letters and logs carry no image bytes and no per-person metadata.

One small chain over a copy of the 40-case sample set (whose JPEGs carry EXIF
with orientation, camera, capture time and GPS), plus a few extra bad inputs
made from EXIF-carrying uploads (truncated, garbled scan). curate,
make_tfrecords and score run as subprocesses (`python -m beam_jobs.<job>`),
so their stdout/stderr are the logs checked; train_baseline runs in-process.
Every JPEG the jobs wrote is walked marker by marker (tests/jpeg_markers.py)
and read with Pillow; every output file's bytes (gzip and zip members and
Parquet values too) are scanned for the EXIF signature and the inputs' GPS,
capture time and camera model.
"""
from __future__ import annotations

import base64
import csv
import glob
import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

from jpeg_markers import EXIF_SIGNATURE, XMP_SIGNATURE, metadata_problems, pillow_exif, segments

REPO = Path(__file__).resolve().parents[1]
DATE = "2026-11-20"
IMAGE_SIZE = 64
GPS_IFD = 0x8825
PERSON_COLUMNS = ("age_group", "sex_at_birth", "fitzpatrick_skin_type", "combined_race",
                  "race_ethnicity_two_or_more_after_mitigation")
PERSON_NAME_FRAGMENTS = ("age_group", "sex", "fitzpatrick", "race", "ethnic")
JOB_TIMEOUT_S = 300
MAX_VALUE_CHARS = 2000
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF")
# Image bytes smuggled through text: JSON-escaped, latin-1-decoded, repr()'d or base64.
IMAGE_MAGIC_TEXT = ("\\u00ff\\u00d8", "\u00ff\u00d8\u00ff", "\\xff\\xd8", "\\x89PNG", "/9j/", "iVBORw0KGgo")
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{100,}={0,2}")
DATA_URI = re.compile(r"data:image/([a-z]+);base64,([A-Za-z0-9+/=]+)")


# ---------------------------------------------------------------- inputs

def _exif_facts(path: Path) -> dict | None:
    """The EXIF an input carries: raw GPS rationals (as stored), time, camera model."""
    from PIL import Image
    with Image.open(path) as im:
        exif = im.getexif()
        if not exif:
            return None
        gps = exif.get_ifd(GPS_IFD)
    rationals = []
    for tag in (2, 4):  # GPSLatitude, GPSLongitude: 3 rationals each
        if tag in gps:
            rationals.append(struct.pack("<6I", *(int(x) for r in gps[tag]
                                                  for x in (r.numerator, r.denominator))))
    return {"gps": gps, "gps_raw": rationals, "datetime": exif.get(0x0132), "model": exif.get(0x0110)}


def _write_bad_inputs(root: Path, cases_csv: Path) -> dict[str, str]:
    """Replace three images of accepted-looking cases with bad but EXIF-carrying bytes."""
    rows = list(csv.DictReader(open(cases_csv)))
    paths = [r[f"image_{k}_path"] for r in rows for k in (1, 2, 3) if r[f"image_{k}_path"]]
    # JPEGs only: the garbling below walks JPEG segments (the set also holds HEIC).
    good = [p for p in paths if p.endswith(".jpg") and (root / p).stat().st_size > 5000
            and _exif_facts(root / p)]
    assert len(good) >= 3
    original = (root / good[0]).read_bytes()
    truncated = original[: len(original) // 2]                       # no EOI: unreadable
    sos = next(s for s in segments(original) if s.marker == 0xDA)
    body = bytearray(original)
    for i in range(sos.offset + 40, len(body) - 2, 97):               # garbled scan, EOI kept
        body[i] ^= 0x5A
    (root / good[1]).write_bytes(truncated)
    (root / good[2]).write_bytes(bytes(body))
    return {"truncated": str(root / good[1]), "garbled": str(root / good[2])}


@pytest.fixture(scope="module")
def inputs(sample_dir, tmp_path_factory):
    """A private copy of the sample set with extra bad uploads and a scoring partition."""
    root = tmp_path_factory.mktemp("privacy_inputs")
    shutil.copytree(sample_dir / "dataset", root / "dataset")
    cases = root / "dataset" / "scin_cases.csv"
    bad = _write_bad_inputs(root, cases)
    images = sorted((root / "dataset" / "images").iterdir())
    facts = {str(p): f for p in images if p.suffix == ".jpg" and p.stat().st_size
             and (f := _exif_facts_safe(p))}
    partition = root / "uploads" / f"dt={DATE}"
    partition.mkdir(parents=True)
    for p in images:
        shutil.copy(p, partition / p.name)
    rows = list(csv.DictReader(open(cases)))
    person = {col: {r[col] for r in rows if r.get(col)} for col in PERSON_COLUMNS}
    race_cols = [c for c in rows[0] if c.startswith("race_ethnicity_")]
    return {"root": root, "cases": cases, "labels": root / "dataset" / "scin_labels.csv",
            "images": images, "facts": facts, "bad": bad, "uploads": root / "uploads",
            "person_values": person, "race_columns": race_cols}


def _exif_facts_safe(path: Path):
    try:
        return _exif_facts(path)
    except Exception:  # corrupt/non-image sample files
        return None


def _run_job(module: str, args: list[str]) -> str:
    """Run a job as `python -m beam_jobs.<module>`; its stdout+stderr (the logs)."""
    proc = subprocess.run([sys.executable, "-m", f"beam_jobs.{module}", *args], cwd=REPO,
                          capture_output=True, timeout=JOB_TIMEOUT_S,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{module} failed ({proc.returncode}):\n{logs.decode(errors='replace')[-4000:]}"
    return logs


@pytest.fixture(scope="module")
def chain(inputs, tmp_path_factory):
    """curate -> make_tfrecords -> train_baseline -> score, with each job's logs."""
    out = tmp_path_factory.mktemp("privacy_outputs")
    dirs = {k: out / k for k in ("curate", "tfrecords", "model", "scores")}
    root = str(inputs["root"])
    logs = {"curate": _run_job("curate", [
        "--scin_cases", str(inputs["cases"]), "--image_root", root, "--output", str(dirs["curate"])])}
    logs["make_tfrecords"] = _run_job("make_tfrecords", [
        "--curated", str(dirs["curate"]), "--scin_cases", str(inputs["cases"]),
        "--scin_labels", str(inputs["labels"]), "--image_root", root, "--output", str(dirs["tfrecords"]),
        "--image_size", str(IMAGE_SIZE), "--min_class_count", "1"])
    from beam_jobs import train_baseline
    train_baseline.run(["--tfrecords", str(dirs["tfrecords"]), "--output", str(dirs["model"]), "--epochs", "1"])
    return {"dirs": dirs, "logs": logs}


@pytest.fixture(scope="module")
def scored(inputs, chain):
    """score over the uploads partition (all sample files, bad ones included)."""
    dirs = chain["dirs"]
    chain["logs"]["score"] = _run_job("score", [
        "--input", str(inputs["uploads"]), "--model_uri", str(dirs["model"]),
        "--output", str(dirs["scores"]), "--date", DATE, "--max_batch_size", "16"])
    return dirs["scores"]


# ---------------------------------------------------------------- helpers

def _files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*") if p.is_file())


def _views(path: Path) -> list[tuple[str, bytes]]:
    """The file's bytes, plus decompressed/decoded views where the raw bytes hide content."""
    raw = path.read_bytes()
    views = [("raw", raw)]
    if path.name.endswith(".gz"):
        views.append(("gunzip", gzip.decompress(raw)))
    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            views += [(f"zip:{n}", z.read(n)) for n in z.namelist()]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        rows = pq.read_table(path, use_threads=False).to_pylist()
        views.append(("parquet-values", json.dumps(rows, default=str, ensure_ascii=False).encode()))
    return views


def _tfrecord_images(tfrecords_dir: Path) -> list[tuple[str, bytes]]:
    """(uri, image bytes) of every tf.train.Example in every TFRecord shard written."""
    import tensorflow as tf
    shards = sorted(glob.glob(str(tfrecords_dir / "**" / "*.tfrecord*"), recursive=True))
    assert shards, f"no TFRecord shards under {tfrecords_dir}"
    out = []
    for shard in shards:
        compression = "GZIP" if shard.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset([shard], compression_type=compression):
            ex = tf.train.Example.FromString(record.numpy())
            feats = ex.features.feature
            images = list(feats["image"].bytes_list.value)
            assert len(images) == 1, f"{shard}: image feature has {len(images)} values"
            out.append((feats["uri"].bytes_list.value[0].decode(), images[0]))
    return out


def _report_images(report: Path) -> list[tuple[str, bytes]]:
    return [(fmt, base64.b64decode(b64)) for fmt, b64 in DATA_URI.findall(report.read_text())]


def _assert_jpeg_clean(what: str, jpeg: bytes) -> None:
    assert jpeg[:3] == b"\xff\xd8\xff", f"{what}: not a JPEG ({jpeg[:4].hex()})"
    problems = metadata_problems(jpeg)
    assert not problems, f"{what}: {problems}"
    assert pillow_exif(jpeg) == {}, f"{what}: Pillow reads EXIF/XMP {pillow_exif(jpeg)}"


def _person_pattern(inputs) -> re.Pattern:
    values = sorted({v for vals in inputs["person_values"].values() for v in vals if v not in ("YES", "")},
                    key=len, reverse=True)
    return re.compile("(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, values)) + ")(?![A-Za-z0-9_])")


def _exif_needles(inputs) -> list[tuple[str, bytes]]:
    needles = [("EXIF signature", EXIF_SIGNATURE), ("XMP signature", XMP_SIGNATURE)]
    for uri, f in inputs["facts"].items():
        needles += [(f"GPS rationals of {os.path.basename(uri)}", raw) for raw in f["gps_raw"]]
        if f["datetime"]:
            needles.append((f"capture time of {os.path.basename(uri)}", f["datetime"].encode()))
    models = {f["model"] for f in inputs["facts"].values() if f["model"]}
    needles += [(f"camera model {m!r}", m.encode()) for m in models]
    return needles


def _dead_letter_rows(folder: Path, pattern: str = "dead_letters*.jsonl") -> list[tuple[str, dict]]:
    return [(line, json.loads(line)) for p in sorted(folder.rglob(pattern))
            for line in p.read_text().splitlines() if line.strip()]


def _assert_no_image_bytes(what: str, blob: bytes, base64_runs: bool = True) -> None:
    for magic in IMAGE_MAGIC:
        assert magic not in blob, f"{what}: contains image magic {magic!r}"
    text = blob.decode("utf-8", errors="replace")
    for magic in IMAGE_MAGIC_TEXT:
        assert magic not in text, f"{what}: contains escaped/base64 image bytes {magic!r}"
    run = BASE64_RUN.search(blob) if base64_runs else None
    assert run is None, f"{what}: base64-like run of {len(run.group())} chars: {run.group()[:60]!r}..."


# ---------------------------------------------------------------- preconditions

@pytest.mark.e2e
def test_inputs_carry_exif_with_gps(inputs):
    """Without EXIF+GPS in the inputs, the absence checks below would prove nothing."""
    facts = inputs["facts"]
    assert len(facts) >= 40, f"only {len(facts)} EXIF-carrying JPEG inputs"
    for uri, f in facts.items():
        data = Path(uri).read_bytes()
        assert {1, 2, 3, 4} <= set(f["gps"]), f"{uri}: GPS IFD {dict(f['gps'])}"
        assert any("EXIF APP1" in p for p in metadata_problems(data)), uri
        for raw in f["gps_raw"]:
            assert raw in data, f"{uri}: GPS needle not found in its own bytes"
    garbled = Path(inputs["bad"]["garbled"]).read_bytes()
    assert EXIF_SIGNATURE in garbled and EXIF_SIGNATURE in Path(inputs["bad"]["truncated"]).read_bytes()
    # The person columns exist and vary, so the value scans below are meaningful.
    assert all(len(v) >= 2 for c, v in inputs["person_values"].items()
               if c != "race_ethnicity_two_or_more_after_mitigation"), inputs["person_values"]


@pytest.mark.e2e
def test_the_scanners_catch_exif_gps_and_image_bytes(inputs):
    """The checks used below do fire on the real inputs (so they can fail)."""
    uri, f = next(iter(inputs["facts"].items()))
    data = Path(uri).read_bytes()
    with pytest.raises(AssertionError, match="EXIF APP1"):
        _assert_jpeg_clean(uri, data)
    assert [n for n, needle in _exif_needles(inputs) if needle in data]
    with pytest.raises(AssertionError):
        _assert_no_image_bytes("dead letter", json.dumps({"error": data[:40].decode("latin-1")}).encode())
    with pytest.raises(AssertionError):
        _assert_no_image_bytes("log", base64.b64encode(data[1000:1300]))
    with pytest.raises(AssertionError):
        _assert_no_image_bytes("log", repr(data[:10]).encode())
    value = next(iter(inputs["person_values"]["sex_at_birth"]))
    assert _person_pattern(inputs).search(f"row: {value},")
    assert not _person_pattern(inputs).search("FEMALEX MALEFACTOR")


# ---------------------------------------------------------------- no EXIF in outputs

@pytest.mark.e2e
def test_every_tfrecord_image_is_a_jpeg_without_exif(chain):
    from schemas.examples import dataset_info
    records = chain["dirs"]["tfrecords"]
    images = _tfrecord_images(records)
    info = dataset_info(str(records))
    assert len(images) == sum(s["examples"] for s in info["splits"].values()) > 0
    for uri, jpeg in images:
        _assert_jpeg_clean(f"TFRecord image of {uri}", jpeg)
    print(f"\nprivacy: {len(images)} TFRecord JPEGs checked")


@pytest.mark.e2e
def test_every_report_thumbnail_is_a_jpeg_without_exif(chain):
    thumbs = _report_images(chain["dirs"]["curate"] / "report.html")
    assert len(thumbs) >= 5
    for i, (fmt, jpeg) in enumerate(thumbs):
        assert fmt == "jpeg"
        _assert_jpeg_clean(f"report thumbnail #{i}", jpeg)
    print(f"\nprivacy: {len(thumbs)} report.html thumbnails checked")


@pytest.mark.e2e
def test_no_output_file_carries_exif_or_the_inputs_gps_time_or_camera(inputs, chain, scored):
    needles = _exif_needles(inputs)
    files = _files(*chain["dirs"].values())
    assert any(p.suffix == ".parquet" for p in files) and any(p.name.endswith(".tfrecord.gz") for p in files)
    assert any(p.name == "model.keras" for p in files) and any("predictions" in p.name for p in files)
    scanned = 0
    for path in files:
        for view, blob in _views(path):
            scanned += 1
            found = [name for name, needle in needles if needle in blob]
            assert not found, f"{path} ({view}): {found[:5]}"
    print(f"\nprivacy: {len(files)} output files ({scanned} views) scanned for {len(needles)} EXIF/GPS needles")


@pytest.mark.e2e
def test_score_writes_no_images(scored):
    files = _files(scored)
    assert files
    for path in files:
        for view, blob in _views(path):
            # A Parquet footer holds the Arrow schema base64-encoded (ARROW:schema):
            # long base64 runs are checked on the decoded values instead.
            raw_parquet = path.suffix == ".parquet" and view == "raw"
            _assert_no_image_bytes(f"{path} ({view})", blob, base64_runs=not raw_parquet)


# ---------------------------------------------------------------- dead letters

def _check_dead_letters(rows, expected_keys: set[str] | None, allowed_keys: set[str], inputs, where: str):
    pattern = _person_pattern(inputs)
    assert rows, f"no dead letters in {where} (the bad inputs should produce some)"
    for line, row in rows:
        if expected_keys is not None:
            assert set(row) == expected_keys, f"{where}: keys {sorted(row)}"
        assert set(row) <= allowed_keys, f"{where}: unexpected keys {sorted(set(row) - allowed_keys)}"
        for key, value in row.items():
            assert len(json.dumps(value)) <= MAX_VALUE_CHARS, f"{where}: {key} is {len(json.dumps(value))} chars"
        _assert_no_image_bytes(f"{where} row {row.get('uri')}", line.encode())
        hit = pattern.search(line)
        assert hit is None, f"{where}: per-person value {hit.group()!r} in {line[:300]}"


@pytest.mark.e2e
def test_curate_dead_letters_are_schema_rows_without_image_bytes_or_person_data(inputs, chain):
    from schemas.features import DEAD_LETTER_FIELDS
    rows = _dead_letter_rows(chain["dirs"]["curate"] / "dead_letters")
    _check_dead_letters(rows, set(DEAD_LETTER_FIELDS), set(DEAD_LETTER_FIELDS), inputs, "curate dead letters")
    by_uri = {r["uri"]: r for _, r in rows}
    for name, uri in inputs["bad"].items():
        assert uri in by_uri, f"the {name} input is not in curate's dead letters"
    assert by_uri[inputs["bad"]["truncated"]]["reasons"] == ["unreadable"]
    assert {"unreadable", "empty", "unsupported_format"} <= {x for _, r in rows for x in r["reasons"]}


@pytest.mark.e2e
def test_make_tfrecords_dead_letters_without_image_bytes_or_person_data(inputs, chain):
    from schemas.examples import dead_letter
    keys = set(dead_letter(None, None, None))
    rows = _dead_letter_rows(chain["dirs"]["tfrecords"] / "dead_letters")
    _check_dead_letters(rows, keys, keys, inputs, "make_tfrecords dead letters")


@pytest.mark.e2e
def test_score_dead_letters_without_image_bytes_or_person_data(inputs, scored):
    from schemas import predictions as P
    rows = _dead_letter_rows(scored)
    _check_dead_letters(rows, None, set(P.SCHEMA.names), inputs, "score dead letters")
    assert {inputs["bad"]["truncated"].replace(str(inputs["root"] / "dataset" / "images"),
                                               str(inputs["uploads"] / f"dt={DATE}"))} <= {r["uri"] for _, r in rows}


# ---------------------------------------------------------------- per-person metadata

def _json_keys(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{prefix}{k}"
            yield from _json_keys(v, f"{prefix}{k}.")
    elif isinstance(value, list):
        for v in value:
            yield from _json_keys(v, prefix)


def _assert_no_person_columns(where: str, names) -> None:
    for name in names:
        leaf = name.rsplit(".", 1)[-1].lower()
        assert not any(frag in leaf for frag in PERSON_NAME_FRAGMENTS), f"{where}: column/key {name!r}"


@pytest.mark.e2e
def test_no_per_person_columns_or_values_in_features_predictions_summary_or_report(inputs, chain, scored):
    import pyarrow.parquet as pq
    pattern = _person_pattern(inputs)
    curate = chain["dirs"]["curate"]
    tables = [(p, pq.read_table(p, use_threads=False)) for p in
              sorted(curate.rglob("*.parquet")) + sorted(scored.rglob("*.parquet"))]
    assert any("features" in str(p) for p, _ in tables) and any("predictions" in str(p) for p, _ in tables)
    for path, table in tables:
        _assert_no_person_columns(str(path), table.column_names)
        assert not set(table.column_names) & (set(PERSON_COLUMNS) | set(inputs["race_columns"]))
        text = json.dumps(table.to_pylist(), default=str)
        hit = pattern.search(text)
        assert hit is None, f"{path}: per-person value {hit.group()!r}"
    summary_text = (curate / "summary.json").read_text()
    _assert_no_person_columns("summary.json", _json_keys(json.loads(summary_text)))
    assert pattern.search(summary_text) is None, pattern.search(summary_text)
    for marker in scored.rglob("_SUCCESS"):
        assert pattern.search(marker.read_text()) is None
    report_text = DATA_URI.sub("data:image/jpeg;base64,...", (curate / "report.html").read_text())
    hit = pattern.search(report_text)
    assert hit is None, f"report.html: per-person value {hit.group()!r}"


# ---------------------------------------------------------------- logs

@pytest.mark.e2e
@pytest.mark.parametrize("job", ["curate", "make_tfrecords", "score"])
def test_job_logs_carry_no_image_bytes_exif_or_person_data(inputs, chain, scored, job):
    logs = chain["logs"][job]
    assert logs, f"{job} wrote no logs at all"
    if job == "curate":  # the bad inputs were really in this run
        assert b"done" in logs or b"curate" in logs
    _assert_no_image_bytes(f"{job} logs", logs)
    text = logs.decode("utf-8", errors="replace")
    hit = _person_pattern(inputs).search(text)
    assert hit is None, f"{job} logs: per-person value {hit.group()!r}: ...{text[max(0, hit.start() - 200):hit.end() + 100]}"
    found = [name for name, needle in _exif_needles(inputs) if needle in logs]
    assert not found, f"{job} logs: {found[:5]}"


# ---------------------------------------------------------------- robustness found by the fuzz

@pytest.mark.e2e
def test_score_survives_a_one_pixel_wide_upload(chain, tmp_path):
    import numpy as np
    from beam_jobs import score
    folder = tmp_path / "uploads" / f"dt={DATE}"
    folder.mkdir(parents=True)
    ok, png = cv2.imencode(".png", np.full((1, 300, 3), 128, np.uint8))
    (folder / "thin.png").write_bytes(png.tobytes())
    score.run(["--input", str(tmp_path / "uploads"), "--model_uri", str(chain["dirs"]["model"]),
               "--output", str(tmp_path / "scores"), "--date", DATE])
    import pyarrow.parquet as pq

    from schemas import predictions as P
    rows = [r for p in (tmp_path / "scores").rglob("predictions-*.parquet")
            for r in pq.read_table(p, use_threads=False).to_pylist()]
    assert [r["status"] for r in rows] in (["failed"], ["skipped_quality"]) and rows[0]["status"] in P.STATUSES
