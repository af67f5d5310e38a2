"""make_tfrecords' composites, each alone in a TestPipeline on a few rows:
ReadCuratedRows, ReadLabelRecords, JoinLabels, AssignSplits, PreprocessImages.
(PreprocessImages' read refusals are tested in test_read_refusals.py.)"""
from __future__ import annotations

import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from helpers import pil_bytes, skin_photo

from schemas import examples as E
from schemas import lighting
from transforms.io.allowed_roots import AllowedRoots
from transforms.dataset.examples import PreprocessImages, example_key
from transforms.dataset.join_labels import CURATE_FIELDS, DEAD, LINKS, JoinLabels, ReadCuratedRows, ReadLabelRecords
from transforms.dataset.labels import plain_record
from transforms.image.preprocess import preprocess_to_jpeg
from transforms.dataset.assign_splits import UNLABELED, AssignSplits
from transforms.dataset.splits import component_split, split_of

FRACTIONS = {"train": 0.5, "validation": 0.25, "test": 0.25}


def _curated_row(uri, status="accepted", reasons=(), cluster_id=None, **over):
    row = {"uri": uri, "status": status, "reasons": list(reasons), "cluster_id": cluster_id or uri,
           "sha256": "0" * 64, **{k: 1.0 for k in E.NUMERIC},
           "lum_p99": 200.0, "overexposed_fraction": 0.0, "underexposed_fraction": 0.0}
    row.update(over)
    return row


# -- ReadCuratedRows ------------------------------------------------------------------------

def _write_features(root, rows):
    (root / "features").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "features" / "features-00000-of-00001.parquet")


def test_curated_rows_come_keyed_by_uri_from_a_finished_output(tmp_path):
    rows = [_curated_row("/d/a.jpg"), _curated_row("/d/b.jpg", "rejected", ["too_dark"])]
    _write_features(tmp_path, [dict(r, width=640) for r in rows])  # columns beyond curate's are not read
    (tmp_path / "_SUCCESS").write_text("")
    with TestPipeline() as p:
        got = p | ReadCuratedRows(str(tmp_path))
        assert_that(got, equal_to([(r["uri"], {k: r[k] for k in CURATE_FIELDS}) for r in rows]))


def test_curated_rows_refuse_an_unfinished_output(tmp_path):
    _write_features(tmp_path, [_curated_row("/d/a.jpg")])  # no _SUCCESS: curate still running, or killed
    with pytest.raises(Exception, match="has no _SUCCESS: curate has not finished there"):
        with TestPipeline() as p:
            p | ReadCuratedRows(str(tmp_path))


def test_over_nights_only_the_finished_ones_are_read_and_a_rewritten_one_is_told(tmp_path):
    """The nights finished when the rows are listed are what is read, each by
    its own glob (one glob over dt=* also listed a night curate started after
    the check, half-written); a night rewritten since is named at the end."""
    import os
    from transforms.dataset.join_labels import finished_outputs
    from transforms.errors import JobFailed
    from transforms.io.run_lock import check_unchanged

    def check_curated_unchanged(finished):
        check_unchanged(finished, "--curated", "curate", "make_tfrecords", "what was read may mix two curate runs")
    for night, uri in (("dt=2026-11-20", "/d/a.jpg"), ("dt=2026-11-21", "/d/b.jpg")):
        _write_features(tmp_path / night, [_curated_row(uri)])
        (tmp_path / night / "_SUCCESS").write_text("{}")
    finished = finished_outputs(str(tmp_path / "dt=*"))
    assert sorted(finished) == [str(tmp_path / "dt=2026-11-20"), str(tmp_path / "dt=2026-11-21")]
    with TestPipeline() as p:
        read = ReadCuratedRows(str(tmp_path / "dt=*"))
        got = p | read
        assert_that(got | beam.Map(lambda kv: kv[0]), equal_to(["/d/a.jpg", "/d/b.jpg"]), label="Rows")
        assert_that(read.finished, equal_to([finished]), label="Finished")
    check_curated_unchanged(finished)  # nothing happened since
    marker = tmp_path / "dt=2026-11-21" / "_SUCCESS"
    marker.unlink()  # a rerun of that night starts ...
    with pytest.raises(JobFailed, match=r"dt=2026-11-21 was rewritten while this run read it"):
        check_curated_unchanged(finished)
    marker.write_text("{}")  # ... and ends, the same bytes a second later
    later = os.stat(marker).st_mtime + 1
    os.utime(marker, (later, later))
    with pytest.raises(JobFailed, match=r"dt=2026-11-21 was rewritten") as e:
        check_curated_unchanged(finished)
    assert "2026-11-20" not in str(e.value)


# -- ReadLabelRecords -----------------------------------------------------------------------

def test_plain_labels_csv_gives_records_and_bad_rows_as_dead_letters(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("image_uri,label,group_id\nimg/a.jpg,eczema,p1\nimg/b.jpg,,\n,acne,\n")
    with TestPipeline() as p:
        out = p | ReadLabelRecords("/root", labels_csv=str(csv_path))
        assert_that(out.records | beam.Map(lambda kv: (kv[0], kv[1]["label"], kv[1]["group_id"])),
                    equal_to([("/root/img/a.jpg", "eczema", "group:p1"),
                              ("/root/img/b.jpg", None, "image:/root/img/b.jpg")]), label="Records")
        assert_that(out[DEAD] | beam.Map(lambda d: (d["reason"], d["error"])),
                    equal_to([("bad_metadata", "image_uri is empty")]), label="Dead")


def test_scin_cases_and_labels_join_on_case_id(tmp_path):
    cases = tmp_path / "cases.csv"
    cases.write_text("case_id,image_1_path,image_2_path,image_3_path,image_1_shot_type\n"
                     "c1,i/1a.png,i/1b.png,,CLOSE_UP\n"
                     "c2,i/2a.png,,,SIDEWAYS\n"        # a shot type SCIN does not have
                     "c3,i/3a.png,,,\n")               # no labels row: unlabeled
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,dermatologist_skin_condition_on_label_name,weighted_skin_condition_label,"
                      "monk_skin_tone_label_us\n"
                      "c1,\"['Acne']\",\"{'Eczema': 0.6, 'Acne': 0.4}\",4\n"
                      "c2,\"['Acne']\",{},\n"
                      "c9,\"['Acne']\",{},\n")         # labels for a case with no images: ignored
    with TestPipeline() as p:
        out = p | ReadLabelRecords("/r", scin_cases=str(cases), scin_labels=str(labels))
        assert_that(out.records | beam.Map(lambda kv: (kv[0], kv[1]["case_id"], kv[1]["label"],
                                                       kv[1]["shot_type"], kv[1]["monk_us"])),
                    equal_to([("/r/i/1a.png", "c1", "Eczema", "CLOSE_UP", 4),
                              ("/r/i/1b.png", "c1", "Eczema", "UNKNOWN", 4),
                              ("/r/i/3a.png", "c3", None, "UNKNOWN", -1)]), label="Records")
        assert_that(out[DEAD] | beam.Map(lambda d: (d["uri"], d["case_id"], d["reason"])),
                    equal_to([("/r/i/2a.png", "c2", "bad_metadata")]), label="Dead")


def test_a_scin_label_with_a_line_break_makes_its_case_a_bad_metadata_dead_letter():
    """As a plain CSV's label: SCIN's condition names reach the same vocabulary file."""
    from transforms.dataset.labels import BadLabelRow, case_label
    assert case_label({"weighted_skin_condition_label": "{'Eczema': 0.6}"}, 0.5) == "Eczema"
    for row in ({"weighted_skin_condition_label": "{'Ecz\\nema': 0.6}"},
                {"weighted_skin_condition_label": "{}", "dermatologist_skin_condition_on_label_name": "['Ac\\rne']"}):
        with pytest.raises(BadLabelRow, match="holds a line break"):
            case_label(row, 0.5)


# -- JoinLabels -----------------------------------------------------------------------------

@pytest.mark.parametrize("keep_unlabeled", [False, True])
def test_join_keeps_accepted_labelled_images_and_names_why_others_go(keep_unlabeled):
    thresholds = lighting.load_thresholds()
    ok = _curated_row("/abs/data/ok.jpg", cluster_id="cl7", brightness_mean=0.25,
                      lum_p99=20.0, underexposed_fraction=0.9)
    curated = [(r["uri"], r) for r in [
        ok, _curated_row("/abs/rej.jpg", "rejected", ["too_dark", "blurry"]),
        _curated_row("/abs/nolabel.jpg"), _curated_row("/abs/conf.jpg"), _curated_row("/abs/unl.jpg"),
        _curated_row("/abs/gap.jpg", sharpness=None)]]
    rec = lambda uri, label, group="": plain_record({"image_uri": uri, "label": label, "group_id": group}, "")
    labels = [(r["uri"], r) for r in [
        rec("data/ok.jpg", "eczema", "p1"),  # relative: resolved against cwd, meets curate's absolute uri
        rec("/abs/rej.jpg", "acne"), rec("/abs/noimg.jpg", "acne"),
        rec("/abs/conf.jpg", "acne"), rec("/abs/conf.jpg", "eczema"),
        rec("/abs/unl.jpg", ""), rec("/abs/gap.jpg", "acne")]]
    expected_dead = [("/abs/rej.jpg", "rejected_by_curate", "too_dark,blurry"),
                     ("/abs/nolabel.jpg", "no_label_row", "accepted by curate but absent from the labels/cases files"),
                     ("/abs/noimg.jpg", "no_image", "labels name this image but curate's output has no row for it"),
                     ("/abs/conf.jpg", "conflicting_labels", "listed 2 times with different labels: acne, eczema"),
                     ("/abs/gap.jpg", "bad_metadata", "curate features missing: sharpness")]
    expected = [("/abs/data/ok.jpg", "eczema", "group:p1", "cl7", 0.25, lighting.lighting_id(ok, thresholds))]
    if keep_unlabeled:
        expected.append(("/abs/unl.jpg", None, "image:/abs/unl.jpg", "/abs/unl.jpg", 1.0,
                         lighting.lighting_id(_curated_row("x"), thresholds)))
    else:
        expected_dead.append(("/abs/unl.jpg", "unlabeled", "case has no condition label"))
    with TestPipeline() as p:
        out = ((p | "Curated" >> beam.Create(curated), p | "Labels" >> beam.Create(labels))
               | JoinLabels(keep_unlabeled, cwd="/abs"))
        assert_that(out.records | beam.Map(lambda r: (r["uri"], r["label"], r["group_id"], r["cluster_id"],
                                                      r["brightness_mean"], r["lighting_id"])),
                    equal_to(expected), label="Records")
        assert_that(out[DEAD] | beam.Map(lambda d: (d["uri"], d["reason"], d["error"])),
                    equal_to(expected_dead), label="Dead")
    assert lighting.lighting_id(ok, thresholds) != lighting.lighting_id(_curated_row("x"), thresholds)


# -- AssignSplits ---------------------------------------------------------------------------

def test_groups_sharing_a_duplicate_cluster_share_one_split():
    names = [f"case:{i}" for i in range(40)]
    # Two groups the hash alone would put in different splits, tied by a duplicate cluster.
    a, b = next((x, y) for x in names for y in names if split_of(x, FRACTIONS) != split_of(y, FRACTIONS))
    alone = next(n for n in names if n not in (a, b))
    together = component_split([a, b], FRACTIONS)
    records = [{"uri": "u1", "group_id": a, "cluster_id": "dup", "label": "x"},
               {"uri": "u2", "group_id": b, "cluster_id": "dup", "label": "y"},
               {"uri": "u3", "group_id": a, "cluster_id": "u3", "label": "x"},
               {"uri": "u4", "group_id": alone, "cluster_id": "u4", "label": "x"},
               {"uri": "u5", "group_id": alone, "cluster_id": "u5", "label": None}]
    with TestPipeline() as p:
        out = p | beam.Create(records) | AssignSplits(FRACTIONS)
        assert_that(out | beam.Map(lambda r: (r["uri"], r["split"])),
                    equal_to([("u1", together), ("u2", together), ("u3", together),
                              ("u4", split_of(alone, FRACTIONS)), ("u5", UNLABELED)]))


def test_a_duplicate_curate_rejected_still_ties_its_case_to_its_keepers():
    """AssignSplits linked groups only through the records that reached it,
    and curate keeps one image of a duplicate cluster: case B's copy of case
    A's photo was rejected, so nothing tied A and B, and their other photos
    went to different splits (seen in the demo's own output: 3 such pairs). A
    path two cases both list ties them the same way."""
    names = [f"c{i}" for i in range(60)]
    a, b = next((x, y) for x in names for y in names
                if split_of(f"group:{x}", FRACTIONS) != split_of(f"group:{y}", FRACTIONS))
    c, d = next((x, y) for x in names for y in names if {x, y}.isdisjoint({a, b}) and x != y
                and split_of(f"group:{x}", FRACTIONS) != split_of(f"group:{y}", FRACTIONS))
    curated = [(r["uri"], r) for r in [
        _curated_row("/r/a1.jpg", cluster_id="dup"), _curated_row("/r/a2.jpg"),
        _curated_row("/r/b1.jpg", "rejected", ["exact_duplicate"], cluster_id="dup"), _curated_row("/r/b2.jpg"),
        _curated_row("/r/shared.jpg"), _curated_row("/r/c2.jpg"), _curated_row("/r/d2.jpg")]]
    rec = lambda uri, group: plain_record({"image_uri": uri, "label": "acne", "group_id": group}, "")
    labels = [(r["uri"], r) for r in [
        rec("/r/a1.jpg", a), rec("/r/a2.jpg", a), rec("/r/b1.jpg", b), rec("/r/b2.jpg", b),
        rec("/r/shared.jpg", c), rec("/r/shared.jpg", d), rec("/r/c2.jpg", c), rec("/r/d2.jpg", d)]]
    ab = component_split([f"group:{a}", f"group:{b}"], FRACTIONS)
    cd = component_split([f"group:{c}", f"group:{d}"], FRACTIONS)
    with TestPipeline() as p:
        joined = ((p | "Curated" >> beam.Create(curated), p | "Labels" >> beam.Create(labels))
                  | JoinLabels(False, cwd="/r"))
        out = (joined.records, joined[LINKS]) | AssignSplits(FRACTIONS)
        assert_that(out | beam.Map(lambda r: (r["uri"], r["split"])),
                    equal_to([("/r/a1.jpg", ab), ("/r/a2.jpg", ab), ("/r/b2.jpg", ab),
                              ("/r/shared.jpg", cd), ("/r/c2.jpg", cd), ("/r/d2.jpg", cd)]))


# -- PreprocessImages -----------------------------------------------------------------------

def test_preprocess_gives_the_model_jpeg_and_features_or_a_dead_letter(tmp_path):
    photo = pil_bytes(skin_photo(), "JPEG", quality=90)
    (tmp_path / "good.jpg").write_bytes(photo)
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    (tmp_path / "huge.jpg").write_bytes(photo + b"\0" * 4096)

    def record(name):
        return dict(plain_record({"image_uri": name, "label": "eczema", "group_id": "p1"}, str(tmp_path)),
                    split="train", lighting_id=0, cluster_id=name, **{k: 0.5 for k in E.NUMERIC})

    records = [record(n) for n in ("good.jpg", "junk.jpg", "huge.jpg", "gone.jpg")]
    good_uri = str(tmp_path / "good.jpg")
    want_jpeg, _crop = preprocess_to_jpeg(photo, image_size=32, crop_fraction=0.875, quality=90, max_pixels=10 ** 8)
    with TestPipeline() as p:
        out = (p | beam.Create(records)
               | PreprocessImages(32, 0.875, 90, 10 ** 8, AllowedRoots([str(tmp_path)]), max_bytes=len(photo) + 100))
        assert_that(out.examples | beam.Map(lambda e: (e["uri"], e["key"], e["image"], e["label"], e["split"],
                                                       e["group_id"], e["case_id"], e["sharpness"])),
                    equal_to([(good_uri, example_key(good_uri), want_jpeg, "eczema", "train", "group:p1", "p1", 0.5)]),
                    label="Examples")
        assert_that(out[DEAD] | beam.Map(lambda d: (os.path.basename(d["uri"]), d["reason"], d["case_id"])),
                    equal_to([("junk.jpg", "unreadable", "p1"), ("huge.jpg", "too_large", "p1"),
                              ("gone.jpg", "unreadable", "p1")]), label="Dead")
    assert want_jpeg[:2] == b"\xff\xd8" and len(want_jpeg) < len(photo)
