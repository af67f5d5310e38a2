"""curate's composites, each alone in a TestPipeline on a few files:
ReadImageRefs, AnalyzeImages and the SummarizeRows combine. (ClusterDuplicates is tested this way in
test_near_dups.py; read refusals of links and special files in
test_read_refusals.py.)"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from helpers import pil_bytes, skin_photo

from schemas.features import empty_row
from schemas.policy import load_policy
from transforms.io.allowed_roots import AllowedRoots
from transforms.image.analyze import analyze_image
from transforms.curate.analyze_images import THUMBNAILS, AnalyzeImages
from transforms.io.inputs import ImageRef, ReadImageRefs
from transforms.curate.summary import SummarizeRows, Summary

POLICY = load_policy()


def _counter(result, name):
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in found)


def test_every_listed_image_once_and_the_most_telling_listing_wins(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (images / name).write_bytes(b"x" * 10)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri,image_id,case_id\n{images}/b.jpg,B-id,\n{images}/d.jpg,,c4\n")
    cases = tmp_path / "cases.csv"
    cases.write_text("case_id,image_1_path,image_2_path,image_3_path\ncase1,a.jpg,,\n")
    p = TestPipeline()
    refs = p | ReadImageRefs(input_glob=f"{images}/*.jpg", manifest=str(manifest),
                             scin_cases=str(cases), image_root=str(images))
    assert_that(refs, equal_to([
        ImageRef(f"{images}/a.jpg", "a", "case1"),          # the case id outranks the glob's listing
        ImageRef(f"{images}/b.jpg", "B-id", None),           # an explicit id outranks the file stem
        ImageRef(f"{images}/c.jpg", "c", None, 10),          # the glob's listing keeps the size it saw
        ImageRef(f"{images}/d.jpg", "d", "c4")]))            # listed only: read (and found missing) later
    result = p.run()
    result.wait_until_finish()
    assert _counter(result, "duplicate_listings") == 2


@pytest.mark.parametrize("spilled", [False, True])
def test_analyze_gives_one_row_per_image_whatever_happens_and_thumbnails_of_decoded_ones(spilled, tmp_path):
    """Spilled (as curate runs locally), each thumbnail goes out as a
    reference to a file already written, which reads back as the JPEG."""
    from transforms.io import spill
    inside, outside = tmp_path / "in", tmp_path / "elsewhere"
    inside.mkdir(), outside.mkdir()
    photo = pil_bytes(skin_photo(), "JPEG", quality=90)
    files = {"good.jpg": photo, "truncated.jpg": photo[:600], "huge.jpg": photo + b"\0" * 4096}
    for name, data in files.items():
        (inside / name).write_bytes(data)
    (outside / "secret.jpg").write_bytes(photo)
    policy = dataclasses.replace(POLICY, max_bytes=len(photo) + 100)
    refs = [ImageRef(str(inside / n), n.split(".")[0], "case7") for n in (*files, "gone.jpg")]
    refs.append(ImageRef(str(outside / "secret.jpg"), "secret", None))
    good_uri = str(inside / "good.jpg")
    want_row, want_thumb = analyze_image(good_uri, photo, policy, image_id="good", case_id="case7", thumbnail_px=48)
    with TestPipeline() as p:
        out = p | beam.Create(refs) | AnalyzeImages(policy, thumbnail_px=48, allowed=AllowedRoots([str(inside)]),
                                                    spill=str(tmp_path / "spill") if spilled else None)
        assert_that(out.rows | beam.Filter(lambda r: r["uri"] == good_uri), equal_to([want_row]), label="Good")
        assert_that(out.rows | beam.Map(lambda r: (r["uri"].rsplit("/", 1)[1], r["status"], r["reasons"][:1],
                                                   r["image_id"], r["case_id"])),
                    equal_to([("good.jpg", want_row["status"], want_row["reasons"][:1], "good", "case7"),
                              ("truncated.jpg", "rejected", ["unreadable"], "truncated", "case7"),
                              ("huge.jpg", "rejected", ["too_large"], "huge", "case7"),
                              ("gone.jpg", "rejected", ["missing"], "gone", "case7"),
                              ("secret.jpg", "rejected", ["outside_allowed_root"], "secret", None)]),
                    label="Rows")
        sent = out[THUMBNAILS] | beam.Map(lambda kv: (kv[0], isinstance(kv[1], bytes)))
        assert_that(sent, equal_to([(good_uri, not spilled)]), label="Sent")
        assert_that(out[THUMBNAILS] | beam.Map(lambda kv: (kv[0], spill.load(kv[1]))),
                    equal_to([(good_uri, want_thumb)]), label="Thumbnails")
    assert want_row["width"] == 400 and want_row["height"] == 300 and "unreadable" not in want_row["reasons"]
    thumb = cv2.imdecode(np.frombuffer(want_thumb, np.uint8), cv2.IMREAD_COLOR)
    assert min(thumb.shape[:2]) == 48


def test_summarize_rows_as_a_global_combine_counts_every_row_once():
    rows = [empty_row(uri=f"u{i}", status="rejected" if i % 3 == 0 else "accepted",
                      reasons=["blurry"] if i % 3 == 0 else [], format="png" if i == 4 else "jpeg",
                      monk_estimate=i % 10 + 1, brightness_mean=0.1 * i) for i in range(10)]
    sequential = Summary()
    for r in rows:
        sequential.add(r)

    def check(summaries):
        [got] = summaries
        if (dict(got.status), dict(got.reasons), dict(got.formats)) != (
                {"accepted": 6, "rejected": 4}, {"blurry": 4}, {"jpeg": 9, "png": 1}):
            raise BeamAssertException(f"{got.status} {got.reasons} {got.formats}")
        if got.to_dict(10, "v") != sequential.to_dict(10, "v"):
            raise BeamAssertException("the combined summary differs from one built row by row")

    with TestPipeline() as p:
        assert_that(p | beam.Create(rows) | beam.CombineGlobally(SummarizeRows()), check)
