"""The quality policy and the relevance model are operator-supplied data: a
value outside what it can mean (a percentage for a fraction, NaN, a string, a
misspelt reason, a network of the wrong shape) is a one-line error naming the
key at launch, never a night silently rejected, silently unjudged, or hung."""
from __future__ import annotations

import copy
import json

import pytest

from beam_jobs import curate, score
from beam_jobs.cli import main
from schemas.policy import DEFAULT_POLICY_PATH, QualityPolicy, load_policy
from transforms.image.relevance import DEFAULT_MODEL_PATH, RelevanceModel

POLICY = json.loads(DEFAULT_POLICY_PATH.read_text())
MODEL = json.loads(DEFAULT_MODEL_PATH.read_text())


def _set(doc: dict, key: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *path, last = key.split(".")
    at = doc
    for part in path:
        at = at[part]
    if value is _DELETE:
        del at[last]
    else:
        at[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize("key, value, message", [
    # Each of these loaded before, and curate ran with it.
    ("analysis_short_side.value", 0, "analysis_short_side.value must be within [28, 4096], got 0"),
    ("blurry.max_sharpness", float("nan"), "blurry.max_sharpness must be within [0, 0.5], got nan"),
    ("blurry.max_sharpness", 16.5, "blurry.max_sharpness must be within [0, 0.5], got 16.5"),
    ("too_dark.max_lum_p99", 10, "too_dark.max_lum_p99 must be within [0, 1], got 10"),
    ("too_dark.max_lum_p99", "0.1", 'too_dark.max_lum_p99 must be a number, got "0.1"'),
    ("too_small.min_short_side", True, "too_small.min_short_side must be a number, got true"),
    ("too_small.min_short_side", 199.5, "too_small.min_short_side must be a whole number, got 199.5"),
    ("max_pixels.value", -1, "max_pixels.value must be within [1, "),
    ("duplicates.radius", 99, "duplicates.radius must be within [0, 20], got 99"),
    ("duplicates.exact_only_for", ["too_drak"], "duplicates.exact_only_for names too_drak, not a quality reason"),
    ("suppressed_by.blurry", ["too_dark", "to_bright"], "suppressed_by.blurry names to_bright, not a quality reason"),
    ("suppressed_by.blury", ["too_dark"], "suppressed_by names blury, not a quality reason"),
    ("low_information.max_entropy_bits", -3, "low_information.max_entropy_bits must be within [0, 8], got -3"),
    ("no_skin.model", "", 'no_skin.model must be a file name or path, got ""'),
    ("version", 3, "version must be a non-empty string, got 3"),
    ("enhance.ev_steps", [], "enhance.ev_steps must be one or more numbers within (0, 16], got []"),
    ("enhance.unsharp_sigma", 0, "enhance.unsharp_sigma must be within [0.1, 50], got 0"),
    ("drift.window_nights", 0, "drift.window_nights must be within [1, 366], got 0"),
    ("drift.rate_z", float("nan"), "drift.rate_z must be within [0, 100], got nan"),
    ("blurry.max_sharpness", _DELETE, "missing key 'blurry.max_sharpness'"),
])
def test_a_policy_value_outside_its_meaning_is_refused_naming_its_key(key, value, message, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_set(POLICY, key, value)))  # json writes NaN as NaN, which it reads back
    with pytest.raises(ValueError) as e:
        load_policy(str(path), with_model=False)
    assert str(e.value).startswith("invalid quality policy: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_the_packaged_policy_sits_inside_every_range_and_at_its_edges_loads():
    p = load_policy()
    for field, (key, lo, hi) in QualityPolicy.RANGES.items():
        assert lo <= getattr(p, field) <= hi, key
    edge = _set(_set(POLICY, "blurry.max_sharpness", 0.5), "duplicates.radius", 20)
    assert QualityPolicy.from_dict(edge, with_model=False).dup_radius == 20


@pytest.mark.parametrize("flag, value, message", [
    ("--analysis_size", "10", "--analysis_size must be within [28, 4096], got 10"),
    ("--dup_radius", "64", "--dup_radius must be within [0, 20], got 64"),
    ("--max_pixels", "0", "--max_pixels must be within [1, "),
])
def test_curate_overrides_are_held_to_the_policy_ranges(flag, value, message, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"x")
    args = ["--input", f"{tmp_path}/*.jpg", "--output", str(tmp_path / "out"), flag, value]
    assert main(curate.run, args, prog="curate") == 2
    err = capsys.readouterr().err
    assert err.startswith("curate: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_curate_refuses_a_policy_that_would_reject_the_whole_night_before_any_work(sample_dir, tmp_path, capsys):
    # analysis size 0 made every photo a 1x1 frame: the whole night low_information, exit 0.
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_set(POLICY, "analysis_short_side.value", 0)))
    out = tmp_path / "out"
    args = ["--input", f"{sample_dir}/dataset/images/*", "--output", str(out), "--policy", str(path)]
    assert main(curate.run, args, prog="curate") == 2
    err = capsys.readouterr().err
    assert err == "curate: error: invalid quality policy: analysis_short_side.value must be within [28, 4096], got 0\n"
    assert not out.exists()


def _with_net(kind: str, i: int, key: str, value) -> dict:
    doc = copy.deepcopy(MODEL)
    doc[kind]["networks"][i][key] = value
    return doc


@pytest.mark.parametrize("doc, message", [
    # Each loaded before: the first failed on every photo; the next two gave every photo a NaN skin
    # probability, which no threshold passes, so every photo no_skin; so did the threshold of 5.
    (_with_net("colour", 0, "w1", MODEL["colour"]["networks"][0]["w1"][:-1]),
     "colour network 1: w1 has shape (32, 16), needs (33, 16)"),
    (_with_net("grayscale", 1, "b2", float("nan")), "grayscale network 2 holds a NaN or infinite weight"),
    (_with_net("colour", 2, "std", [0.0] * 33), "colour network 3 holds a NaN or infinite weight, or a std that is not positive"),
    (_set(MODEL, "colour.threshold", 5), "colour.threshold must be a probability within [0, 1], got 5"),
    (_set(MODEL, "grayscale.networks", []), "grayscale.networks must be a non-empty list of networks"),
    (_with_net("colour", 0, "b1", "x"), "colour network 1 holds a value that is not a number"),
])
def test_a_relevance_model_that_cannot_score_is_refused_at_load(doc, message, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError) as e:
        RelevanceModel.load(str(path))
    assert str(e.value).startswith(f"invalid relevance model {path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("job", [curate, score])
def test_a_policy_naming_a_broken_model_is_a_one_line_error_in_every_job_that_judges(job, tmp_path, capsys):
    model = tmp_path / "model.json"
    model.write_text(json.dumps(_with_net("colour", 0, "w1", MODEL["colour"]["networks"][0]["w1"][:-1])))
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(_set(POLICY, "no_skin.model", str(model))))
    (tmp_path / "a.jpg").write_bytes(b"x")
    args = ["--input", f"{tmp_path}/*.jpg", "--output", str(tmp_path / "out"), "--policy", str(policy)]
    if job is score:
        args += ["--model_uri", str(tmp_path / "no_model")]
    name = job.__name__.rsplit(".", 1)[-1]
    assert main(job.run, args, prog=name) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{name}: error: invalid relevance model {model}: colour network 1: w1 has shape")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
