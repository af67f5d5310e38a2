"""curate by date partition and across nights (issue 18.1, 18.2): real Beam
pipelines over a few small synthetic nights (beam_jobs/sample_data/nights.py),
the reference index on real Parquet files, make_tfrecords over the nights."""
from __future__ import annotations

import csv
import json
import pickle
import shutil
import threading
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import curate
from beam_jobs.cli import UsageError
from beam_jobs.sample_data.nights import generate_nights
from transforms.curate import reference as R
from transforms.io import run_lock

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("nights")
    summary = generate_nights(root, nights=len(DATES), cases=4, seed=7, start=DATES[0], size=(280, 210))
    assert summary["dates"] == DATES and summary["reuploads"] == 4
    return root


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _rows(out):
    return {r["uri"].split("/uploads/", 1)[1]: r for f in sorted(out.glob("dt=*/features/*.parquet"))
            for r in pq.read_table(f).to_pylist()}


def _index(ref):
    return [{k: v for k, v in e.items() if k != "part"} for e in R.read_entries(str(ref))]


@pytest.fixture(scope="module")
def backfill(nights, tmp_path_factory):
    out = tmp_path_factory.mktemp("backfill")
    curate.run(["--input", str(nights / "uploads"), "--output", str(out), "--start_date", DATES[0],
                "--end_date", DATES[-1], "--reference", str(out / "_reference")])
    return out


@pytest.mark.e2e
def test_reuploads_of_earlier_nights_are_rejected_naming_the_earlier_image(nights, backfill):
    rows = _rows(backfill)
    truth = [r for r in csv.DictReader(open(nights / "ground_truth.csv")) if "reupload-" in r["image_path"]]
    assert len(truth) == 4
    caught = set()
    for t in truth:
        row = rows[t["image_path"].split("uploads/", 1)[1]]
        original = rows[t["duplicate_of"].split("uploads/", 1)[1]]
        if original["status"] != "accepted":  # curate refused the original (e.g. no_skin): not in the index
            assert row["duplicate_of_date"] is None and t["expected_reasons"] not in row["reasons"]
            continue
        # (a re-encoded copy may also fail a quality check the original passed)
        assert row["status"] == "rejected" and t["expected_reasons"] in row["reasons"], (t, row["reasons"])
        assert row["duplicate_of"] == original["uri"]
        assert row["duplicate_of_date"] == t["duplicate_of"].split("dt=", 1)[1][:10]
        caught.add(t["expected_reasons"])
    assert caught == {"exact_duplicate", "near_duplicate"}
    # one partition per night, each the undated layout
    for d in DATES:
        assert {p.name for p in (backfill / f"dt={d}").iterdir()} >= {
            "features", "dead_letters", "summary.json", "report.html", "_SUCCESS"}
    # the index holds exactly the accepted images, each with its night
    accepted = sorted((d, r["uri"]) for r in rows.values() if r["status"] == "accepted"
                      for d in [r["uri"].split("dt=", 1)[1][:10]])
    assert [(e["date"], e["uri"]) for e in _index(backfill / "_reference")] == accepted


@pytest.mark.e2e
def test_nightly_runs_and_a_backfill_give_the_same_bytes_and_reruns_skip_or_redo(nights, backfill, tmp_path, capsys):
    out = tmp_path / "nightly"
    for d in DATES:  # one launch per night, as the scheduler does
        curate.run(["--input", str(nights / "uploads"), "--output", str(out), "--date", d,
                    "--reference", str(out / "_reference")])
    parts = lambda root: {k: v for k, v in _files(root).items() if not k.startswith("_reference")}  # noqa: E731
    assert parts(out) == parts(backfill)
    assert _index(out / "_reference") == _index(backfill / "_reference")

    before = _files(out)
    curate.run(["--input", str(nights / "uploads"), "--output", str(out), "--start_date", DATES[0],
                "--end_date", DATES[-1], "--reference", str(out / "_reference")])
    assert "skipping 3 partition(s) already complete" in capsys.readouterr().err
    assert _files(out) == before

    # A forced rerun of a middle night does not meet its own entries: same bytes, same index.
    curate.run(["--input", str(nights / "uploads"), "--output", str(out), "--date", DATES[1], "--force",
                "--reference", str(out / "_reference")])
    assert parts(out) == parts(backfill)
    assert _index(out / "_reference") == _index(backfill / "_reference")
    assert len(list((out / "_reference" / "parts" / f"dt={DATES[1]}").glob("*.parquet"))) == 2  # append-only


@pytest.mark.e2e
def test_make_tfrecords_over_the_nights_puts_no_reupload_in_any_split(nights, backfill, tmp_path):
    from beam_jobs import make_tfrecords
    from schemas.examples import read_split
    out = tmp_path / "tfrecords"
    make_tfrecords.run(["--curated", str(backfill / "dt=*"), "--scin_cases", str(nights / "scin_cases.csv"),
                        "--scin_labels", str(nights / "scin_labels.csv"), "--image_root", str(nights),
                        "--output", str(out), "--image_size", "32", "--min_class_count", "1",
                        "--split_fractions", "0.5,0.25,0.25"])
    uris = [f["uri"].numpy().decode() for s in ("train", "validation", "test") for f, _ in read_split(str(out), s)]
    accepted = [r["uri"] for r in _rows(backfill).values() if r["status"] == "accepted"]
    assert uris and not [u for u in uris if "reupload-" in u]
    assert set(uris) <= set(accepted) and any("dt=2026-11-03" in u for u in uris)


@pytest.mark.e2e
def test_empty_and_missing_nights_behave_as_in_score(nights, tmp_path):
    up = tmp_path / "uploads"
    shutil.copytree(nights / "uploads" / f"dt={DATES[0]}", up / f"dt={DATES[0]}")
    (up / "dt=2026-11-02").mkdir()  # a night with no uploads
    out = tmp_path / "out"
    args = ["--input", str(up), "--output", str(out), "--start_date", DATES[0], "--end_date", "2026-11-03"]
    with pytest.raises(UsageError, match=r"no folder under --input .* for dt=2026-11-03; no images in dt=2026-11-02"):
        curate.run(args)
    assert not out.exists()  # refused before any work
    with pytest.raises(UsageError, match="no folder under --input .* for dt=2026-11-03;"):
        curate.run(args + ["--allow_empty"])  # a missing night is never complete
    curate.run(["--input", str(up), "--output", str(out), "--date", "2026-11-02", "--allow_empty"])
    empty = out / "dt=2026-11-02"
    assert json.loads((empty / "summary.json").read_text())["matched"] == 0
    assert (empty / "_SUCCESS").exists() and (empty / "report.html").exists()


@pytest.mark.parametrize("extra, message", [
    (["--manifest", "m.csv"], "cannot be split into date partitions"),
    (["--date", "2026-11-31"], "day is out of range"),
    (["--start_date", "2026-11-02"], "--start_date and --end_date go together"),
    (["--start_date", "2026-11-02", "--end_date", "2026-11-01"], "is before --start_date"),
    (["--date", "2026-11-01", "--start_date", "2026-11-01", "--end_date", "2026-11-02"], "not both"),
])
def test_bad_dates_fail_in_one_line(tmp_path, extra, message):
    args = ["--output", str(tmp_path / "o")] + (["--input", str(tmp_path)] if "--manifest" not in extra
                                                 else ["--input", str(tmp_path), "--date", "2026-11-01"])
    with pytest.raises(UsageError, match=message):
        curate.run(args + extra)


def test_reference_needs_dates(tmp_path):
    with pytest.raises(UsageError, match="--reference needs --date"):
        curate.run(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--reference", str(tmp_path / "r")])


@pytest.mark.parametrize("extra, message", [
    (["--allow_empty"], "^--allow_empty needs --date or --start_date/--end_date"),
    (["--fail_on_drift"], "^--drift_window and --fail_on_drift compare a night"),
    (["--drift_window", "3"], "^--drift_window and --fail_on_drift compare a night"),
])
def test_night_flags_on_an_undated_run_are_refused_not_ignored(tmp_path, extra, message):
    """On an undated run these were accepted and did nothing: an empty --input
    still failed under --allow_empty, and no drift was ever checked, so
    --fail_on_drift could not fail. An --output that is a dt= night keeps drift."""
    (tmp_path / "in").mkdir()
    args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    with pytest.raises(UsageError, match=message):
        curate.run(args + extra)
    assert not (tmp_path / "o").exists()
    if "--allow_empty" not in extra:
        night = curate.CurateOptions(["--input", str(tmp_path / "in"), "--output",
                                      str(tmp_path / "o" / "dt=2026-11-02")] + extra)
        curate.resolve(night)  # no error: this output has nights beside it to compare with


def test_a_reference_that_is_a_file_fails_before_any_work(tmp_path):
    """Each night appends to --reference: a file there used to be found only
    after the whole night was analysed, a traceback at the final write."""
    (tmp_path / "dt=2026-11-01").mkdir()
    index = tmp_path / "index.parquet"
    index.write_bytes(b"not a folder")
    args = ["--input", str(tmp_path), "--date", "2026-11-01", "--output", str(tmp_path / "o")]
    with pytest.raises(UsageError, match=f"^--reference {index} is a file, not a directory$"):
        curate.run(args + ["--reference", str(index)])
    with pytest.raises(UsageError, match=f"^--reference {index}/r: {index} is a file, not a directory$"):
        curate.run(args + ["--reference", f"{index}/r"])
    assert not (tmp_path / "o").exists()


def _entry(date, uri, phash="0123456789abcdef"):
    return {"date": date, "uri": uri, "sha256": uri * 2, "phash": phash, "phash_centre": [phash]}


def test_index_newest_part_per_night_wins_and_reads_only_earlier_nights(tmp_path):
    ref = str(tmp_path / "ref")
    R.write_part(ref, "2026-11-01", [_entry("2026-11-01", "a")])
    R.write_part(ref, "2026-11-02", [_entry("2026-11-02", "b")])
    R.write_part(ref, "2026-11-02", [_entry("2026-11-02", "c")])  # a forced rerun of night 2
    assert [e["uri"] for e in R.read_entries(ref)] == ["a", "c"]
    assert [e["uri"] for e in R.read_entries(ref, before="2026-11-02")] == ["a"]
    assert R.read_entries(ref, before="2026-11-01") == []


def test_index_matches_exact_and_near_and_names_the_earliest(tmp_path):
    index = R.ReferenceIndex([_entry("2026-11-02", "late", "00000000000000ff"),
                              _entry("2026-11-01", "early", "00000000000000f0"),
                              _entry("2026-11-01", "far", "ffffffff00000000")], radius=4)
    row = {"uri": "new", "sha256": "x", "phash": "00000000000000f3", "phash_centre": [], "reasons": []}
    assert index.match(row) == ("near_duplicate", "early", "2026-11-01")  # 2 bits from early, 6 from late
    assert index.match(dict(row, phash="0f0f0f0f0f0f0f0f")) is None
    assert index.match(dict(row, sha256="farfar")) == ("exact_duplicate", "far", "2026-11-01")
    assert index.match(dict(row, reasons=["too_dark"]), exact_only_for=("too_dark",)) is None


def test_a_turned_or_cropped_and_turned_reupload_is_found_in_the_index(sample_dir, tmp_path):
    """A photo rotated or cropped and rotated before its re-upload on a later
    night: the index keeps the entry's canonical-orientation hashes, which
    the copy's own meet. A part written before they were kept (no
    phash_turned column) still loads and matches as before."""
    import cv2
    import pyarrow as pa

    from schemas.policy import load_policy
    from transforms.image.analyze import analyze_image
    from transforms.image.phash import centre_crop

    policy = load_policy()
    rows = list(csv.DictReader(open(sample_dir / "ground_truth.csv")))
    data = [(sample_dir / r["image_path"]).read_bytes() for r in rows if r["defect"] == "none"][:3]
    originals = [analyze_image(f"gs://b/{i}.jpg", d, policy)[0] for i, d in enumerate(data)]
    ref = str(tmp_path / "ref")
    R.write_part(ref, "2026-11-01", [R.entry_of(r, "2026-11-01", policy.exact_only_for) for r in originals])
    index = R.load_index(ref, "2026-11-02", policy.dup_radius)
    # The same entries without their turned hashes, as the index kept them before.
    unturned = R.ReferenceIndex([dict(R.entry_of(r, "2026-11-01"), phash_turned=[]) for r in originals],
                                policy.dup_radius)
    missed = 0
    for i, d in enumerate(data):
        img = cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR)
        for copy in (cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
                     np.ascontiguousarray(centre_crop(cv2.flip(img, 1), 0.9))):
            row, _ = analyze_image("gs://b/new.jpg", cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
                                   .tobytes(), policy)
            assert index.match(row, policy.exact_only_for) == ("near_duplicate", f"gs://b/{i}.jpg", "2026-11-01")
            missed += unturned.match(row, policy.exact_only_for) is None
    assert missed >= 4   # of 6: only a copy whose original happens to be canonical is found without them
    # A part of the schema before phash_turned: read with the column null.
    old = pa.schema([f for f in R.REFERENCE_SCHEMA if f.name != "phash_turned"])
    entry = dict(R.entry_of(originals[0], "2026-10-01"), part="p0")
    del entry["phash_turned"]
    (tmp_path / "ref" / R.PARTS / "dt=2026-10-01").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([entry], schema=old), tmp_path / "ref" / R.PARTS / "dt=2026-10-01" / "p0.parquet")
    index = R.load_index(ref, "2026-11-02", policy.dup_radius)
    assert index.match(dict(originals[0], uri="gs://b/again.jpg", sha256="x"), policy.exact_only_for) == (
        "near_duplicate", "gs://b/0.jpg", "2026-10-01")


def _random_index(tmp_path, rng, nights=6, per_night=300):
    """An index written as runs write it: a part per night, a forced rerun of
    one night (its newer part wins), and a compaction that left a part it had
    read undeleted (its rows then lie in two files). Shared sha256 values and
    pHashes a few bits apart recur across nights, so one lookup meets several
    matching entries; some entries carry no reliable pHash."""
    ref = str(tmp_path / "ref")
    shas = [f"{int(v):064x}" for v in rng.integers(0, 2 ** 62, 40)]
    bases = rng.integers(0, 2 ** 62, 40, dtype=np.int64)

    def near(base):
        h = int(base)
        for b in rng.choice(64, rng.integers(0, 4), replace=False):
            h ^= 1 << int(b)
        return f"{h:016x}"

    def entries(date, n):
        out = []
        for i in range(n):
            reliable = rng.random() > 0.1
            out.append({"date": date, "uri": f"gs://b/{date}/{rng.integers(1000):03d}-{i}.jpg",
                        "sha256": shas[rng.integers(len(shas))] if rng.random() < 0.3 else f"{i:064x}{date}",
                        "phash": near(bases[rng.integers(len(bases))]) if reliable else None,
                        "phash_centre": [near(bases[rng.integers(len(bases))]) for _ in range(3)] if reliable else [],
                        "phash_turned": [near(bases[rng.integers(len(bases))])] if reliable and i % 2 else []})
        return out
    dates = [f"2026-10-{d + 1:02d}" for d in range(nights)]
    for d in dates:
        R.write_part(ref, d, entries(d, per_night))
    R.write_part(ref, dates[2], entries(dates[2], per_night // 2))   # a forced rerun of night 3
    R.compact(ref, run_lock.new_lock_info("curate", "c"), at=1)
    R.write_part(ref, dates[-1], entries(dates[-1], per_night))      # a later rerun of the last night
    kept_part = sorted((tmp_path / "ref" / R.PARTS).rglob("*.parquet"))[0]
    shutil.copy(sorted((tmp_path / "ref" / R.COMPACTED).glob("*.parquet"))[0], kept_part.parent / "zz-compacted-copy.parquet")
    return ref, dates, shas, bases, near


@pytest.mark.parametrize("radius", [1, 4, 6])
def test_index_lookups_equal_a_brute_force_search_over_the_entries(tmp_path, radius):
    """Every lookup names what comparing the row with every entry of the
    nights before names: the bytes' earliest entry, else the earliest of the
    entries with a hash within the radius (earliest night, then smallest
    URI), only the newest part of each night counting and each row once."""
    rng = np.random.default_rng(5)
    ref, dates, shas, bases, near = _random_index(tmp_path, rng)
    for before in (dates[1], dates[3], "2099-01-01"):
        entries = R.read_entries(ref, before=before)
        # Each night's newest part only (the reruns' sizes), each row once though the compacted copy repeats them.
        assert Counter(e["date"] for e in entries) == {d: 150 if d == dates[2] else 300 for d in dates if d < before}
        index = R.load_index(ref, before, radius)
        assert len(index) == len(entries)
        for q in range(300):
            row = {"uri": "new", "reasons": [],
                   "sha256": shas[rng.integers(len(shas))] if q % 3 == 0 else f"{q:064x}new",
                   "phash": near(bases[rng.integers(len(bases))]) if q % 2 else f"{int(rng.integers(2 ** 62)):016x}",
                   "phash_centre": [near(bases[rng.integers(len(bases))])] if q % 5 == 0 else [],
                   "phash_turned": [near(bases[rng.integers(len(bases))])] if q % 7 == 0 else []}
            expected = None
            same = [e for e in entries if e["sha256"] == row["sha256"]]
            if same:
                e = min(same, key=lambda e: (e["date"], e["uri"]))
                expected = ("exact_duplicate", e["uri"], e["date"])
            else:
                mine = [int(h, 16) for h in [row["phash"], *row["phash_centre"], *row["phash_turned"]]]
                close = [e for e in entries if e["phash"] and any(
                    (a ^ int(h, 16)).bit_count() <= radius for a in mine
                    for h in [e["phash"], *e["phash_centre"], *(e["phash_turned"] or [])])]
                if close:
                    e = min(close, key=lambda e: (e["date"], e["uri"]))
                    expected = ("near_duplicate", e["uri"], e["date"])
            assert index.match(row) == expected, row
            assert pickle.loads(pickle.dumps(index)).match(row) == expected   # as the workers receive it


def test_the_index_is_flat_arrays_not_a_python_object_per_entry(tmp_path):
    """Every worker holds the whole index, which grows every night: what the
    side input ships must stay ~440 bytes an entry (URI, night, sha256, eight
    pHashes filed by band; ~300 with four). Rows as Python objects shipped ~450
    with four."""
    rng = np.random.default_rng(0)
    ref, n = str(tmp_path / "ref"), 20_000
    for d in range(4):
        date = f"2026-10-{d + 1:02d}"
        R.write_part(ref, date, [{"date": date, "uri": f"gs://skin-uploads-prod/uploads/dt={date}/user-{i:09d}/{i:07d}.jpg",
                                  "sha256": f"{int(rng.integers(2 ** 62)):064x}",
                                  "phash": f"{int(rng.integers(2 ** 62)):016x}",
                                  "phash_centre": [f"{int(rng.integers(2 ** 62)):016x}" for _ in range(3)],
                                  "phash_turned": [f"{int(rng.integers(2 ** 62)):016x}" for _ in range(4)]}
                                 for i in range(n // 4)])
    index = R.load_index(ref, "2099-01-01", 4)
    assert len(index) == n
    assert len(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)) / n < 500


def test_concurrent_appends_and_compactions_lose_no_entry(tmp_path):
    ref = str(tmp_path / "ref")
    errors = []

    def night(i):
        try:
            me = run_lock.new_lock_info("curate", f"run{i}")
            d = f"2026-10-{i + 1:02d}"
            R.write_part(ref, d, [_entry(d, f"u{i}-{k}") for k in range(3)], me)
            R.compact(ref, me, at=2)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=night, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list((tmp_path / "ref" / R.COMPACTED).glob("*.parquet"))  # compactions ran among the appends
    assert sorted(e["uri"] for e in R.read_entries(ref)) == sorted(f"u{i}-{k}" for i in range(12) for k in range(3))
    R.compact(ref, run_lock.new_lock_info("curate", "last"), at=1)
    assert len(R._files(ref)) == 1
    assert len(R.read_entries(ref)) == 36


def test_sample_data_cli_writes_nights(tmp_path, capsys):
    from beam_jobs.sample_data.__main__ import main
    assert main(["--out", str(tmp_path), "--cases", "2", "--nights", "2", "--start_date", "2026-02-28",
                 "--size", "200x150"]) == 0
    assert "over 2 nights" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["dt=2026-02-28", "dt=2026-03-01"]
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x"), "--cases", "2", "--nights", "0"])
    assert e.value.code == 2 and "nights must be >= 1" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_failed_local_run_leaves_no_spill_folder_and_releases_its_lock(nights, tmp_path, monkeypatch):
    """A night whose reference index cannot be read fails while it runs:
    the run's spill folder under the temp folder (made when the run starts)
    is removed all the same, the pipeline's own clean-up steps having never
    run, and the output's lock is released."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    ref = tmp_path / "ref"
    (ref / "parts" / f"dt={DATES[0]}").mkdir(parents=True)
    (ref / "parts" / f"dt={DATES[0]}" / "0-x.parquet").write_bytes(b"PAR1 not a parquet file")
    out = tmp_path / "out"
    with pytest.raises(Exception, match="RejectEarlierNights"):
        curate.run(["--input", str(nights / "uploads"), "--output", str(out), "--date", DATES[1],
                    "--reference", str(ref)])
    assert [p.name for p in temp.iterdir() if p.name.startswith("skin-pipeline-")] == []
    assert not (out / f"dt={DATES[1]}" / run_lock.MARKER).exists()
    assert not list((out / f"dt={DATES[1]}" / run_lock.LOCK).glob("*.json"))
