"""Scoring and evaluation pieces in real pipelines: RunInference over
KerasBundleHandler with a tiny Keras bundle built here, and the evaluation
combine (SliceMetricsFn) as CombinePerKey. (A failing batch's rows are tested
in test_score.py.)"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from helpers import tiny_bundle

from transforms.evaluation import combine as EC
from transforms.evaluation import metrics as EM
from transforms.scoring.inference import KerasBundleHandler


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "m"
    model = tiny_bundle(out, vocabulary=("a", "b", "c"), image_size=32)
    return out, model


def _close_to(expected: dict, atol=1e-6):
    def check(actual):
        got = dict(actual)
        if sorted(got) != sorted(expected):
            raise BeamAssertException(f"keys {sorted(got)} != {sorted(expected)}")
        for k, want in expected.items():
            if not np.allclose(got[k], want, atol=atol):
                raise BeamAssertException(f"{k}: {got[k]} != {want}")
    return check


def test_run_inference_gives_the_bundles_probabilities_per_key_across_batches(bundle):
    path, model = bundle
    rng = np.random.default_rng(5)
    # Different brightness per image, so a mixed-up key would show.
    images = {f"u{i}": np.clip(rng.normal(50 * i, 20, (32, 32, 3)), 0, 255).astype(np.uint8) for i in range(5)}
    want = dict(zip(images, np.asarray(model.predict_on_batch(np.stack(list(images.values()))))))
    vectors = np.stack(list(want.values()))
    assert min(np.abs(a - b).max() for i, a in enumerate(vectors) for b in vectors[i + 1:]) > 1e-4
    with TestPipeline() as p:
        got = (p | beam.Create(list(images.items()))
               | RunInference(KeyedModelHandler(KerasBundleHandler(str(path), min_batch_size=2, max_batch_size=2,
                                                                   image_size=32))))
        assert_that(got | beam.Map(lambda kv: (kv[1].shape, kv[1].dtype.name)),
                    equal_to([((3,), "float32")] * 5), label="Shapes")
        assert_that(got, _close_to(want), label="Probabilities")


def test_a_bundle_that_cannot_take_the_declared_size_fails_at_load_in_one_line(bundle):
    path, _ = bundle
    with pytest.raises(Exception, match="model_info.json says image_size 48 but the model takes 32x32 images"):
        with TestPipeline() as p:
            (p | beam.Create([("u", np.zeros((48, 48, 3), np.uint8))])
             | RunInference(KeyedModelHandler(KerasBundleHandler(str(path), image_size=48))))


def test_slice_metrics_combine_per_key_equals_the_in_memory_reference():
    """CombinePerKey over two slices on the runner (the fn pickled, the
    accumulator encoded) gives each slice the reference figures of its own
    examples, bootstrap included. (DirectRunner hands each key one
    accumulator: merging parts is tested in test_evaluation_metrics.py.)"""
    rng = np.random.default_rng(21)
    vocab = ["c0", "c1", "c2"]
    n = 80
    probs = np.round(rng.dirichlet(np.ones(3), n), 3)
    y = rng.integers(0, 3, n)
    slices = ["tone:dark" if i % 3 == 0 else "tone:light" for i in range(n)]
    elements = [(s, (f"k{i}", int(y[i]), "scin" if i % 2 else None, {"model": probs[i]}))
                for i, s in enumerate(slices)]
    fn = EC.SliceMetricsFn(["model"], vocab, EM.DEFAULT_BINS, 200, 3)
    expected = {s: EC.combine_locally(fn, [e for k, e in elements if k == s]) for s in set(slices)}

    def check(actual):
        got = dict(actual)
        if sorted(got) != ["tone:dark", "tone:light"]:
            raise BeamAssertException(sorted(got))
        for s, out in got.items():
            ref, mask = expected[s], np.array(slices) == s
            reference = EM.point_metrics(probs[mask], y[mask], vocab)
            sources = {"scin": sum(1 for i, k in enumerate(slices) if k == s and i % 2)}
            if out["n"] != int(mask.sum()) or out["sources"] != sources:
                raise BeamAssertException(f"{s}: n/sources {out['n']} {out['sources']}")
            if out["overall"]["model"]["confusion_matrix"] != reference["confusion_matrix"]:
                raise BeamAssertException(f"{s}: confusion matrix")
            if out["overall"]["model"]["headline"]["accuracy"] != reference["headline"]["accuracy"]:
                raise BeamAssertException(f"{s}: accuracy")
            for k in EM.HEADLINE:
                if not np.array_equal(out["boot"]["model"][k], ref["boot"]["model"][k], equal_nan=True):
                    raise BeamAssertException(f"{s}: bootstrap {k}")

    with TestPipeline() as p:
        got = (p | beam.Create(elements)
               | beam.CombinePerKey(EC.SliceMetricsFn(["model"], vocab, EM.DEFAULT_BINS, 200, 3)))
        assert_that(got, check)




def test_score_images_gives_one_row_per_ref_scored_skipped_or_failed(bundle, tmp_path):
    """ScoreImages alone: decodable images are scored with the bundle's top
    labels, junk bytes and a missing file fail with curate's reason codes, and
    with the gate on a black frame is skipped with its reason: one row each."""
    import datetime as dt

    from helpers import skin_photo
    from PIL import Image

    from schemas.model_bundle import image_settings
    from schemas.policy import load_policy
    from transforms.io.allowed_roots import AllowedRoots
    from transforms.scoring.score_images import ScoreImages

    path, _ = bundle
    skin_photo().save(tmp_path / "photo.jpg", quality=92)
    Image.new("RGB", (400, 300)).save(tmp_path / "black.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    refs = [("2026-11-21", str(tmp_path / n), n.split(".")[0]) for n in ("photo.jpg", "black.jpg", "junk.jpg", "gone.jpg")]
    settings = image_settings({"label_vocabulary": ["a", "b", "c"], "version": "tiny", "image_size": 32})

    def score(refs, gate):
        return ScoreImages(str(path), ["a", "b", "c"], "tiny", dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc),
                           policy=load_policy(), settings=settings, gate=gate, allowed=AllowedRoots([str(tmp_path)]),
                           top_k=2, min_batch_size=2, max_batch_size=2, share_model=False, prepare_threads=2)

    def summary(r):
        return r["image_id"], r["status"], tuple(r["reasons"] or ()), str(r["partition_date"]), len(r["top_labels"])

    with TestPipeline() as p:
        rows = p | "Refs" >> beam.Create(refs) | "Ungated" >> score(refs, gate=False)
        assert_that(rows | "Summary" >> beam.Map(summary),
                    equal_to([("photo", "scored", (), "2026-11-21", 2), ("black", "scored", (), "2026-11-21", 2),
                              ("junk", "failed", ("unsupported_format",), "2026-11-21", 0),
                              ("gone", "failed", ("missing",), "2026-11-21", 0)]))
        gated = p | "Black" >> beam.Create(refs[1:2]) | "Gated" >> score(refs[1:2], gate=True)
        assert_that(gated | "GatedSummary" >> beam.Map(summary),
                    equal_to([("black", "skipped_quality", ("too_dark",), "2026-11-21", 0)]), label="Gate")
