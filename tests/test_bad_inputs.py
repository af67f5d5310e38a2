"""Bad inputs beyond malformed images: refused locations, objects that change
under the job, broken manifests and label files, a model of the wrong shape.
Each gives a reasoned dead letter or a one-line error, and matched ==
accepted + rejected holds throughout."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from beam_jobs import curate, make_tfrecords, score
from beam_jobs.cli import main
from beam_jobs.evaluate_curate import load_features
from beam_jobs.train_baseline import build_model
from fault_proxy import FaultProxy
from transforms.io.allowed_roots import AllowedRoots, default_roots, glob_root, parse_roots

BUCKET, OTHER, OUT = "roots-in", "roots-elsewhere", "roots-out"


# -- the rules, as pure functions ---------------------------------------------

@pytest.mark.parametrize("uri, roots, refused", [
    ("gs://b/images/a.jpg", ["gs://b/"], None),
    ("gs://b/images/a.jpg", ["gs://b/images"], None),
    ("gs://b2/images/a.jpg", ["gs://b/"], "not under an allowed root"),
    ("gs://bb/a.jpg", ["gs://b"], "not under an allowed root"),   # a prefix of the bucket name is not a root
    ("gs://b/images/../secret/a.jpg", ["gs://b/"], "'..' segment"),
    ("gs://b/images/..", [], "'..' segment"),
    ("https://example.com/a.jpg", [], "scheme https://"),
    ("s3://b/a.jpg", ["gs://b/"], "scheme s3://"),
    ("file:///etc/passwd", [], "scheme file://"),
    ("/data/images/a.jpg", ["/data/images"], None),
    ("/data/imagesX/a.jpg", ["/data/images"], "not under an allowed root"),
    ("/data/images/../../etc/passwd", ["/data/images"], "'..' segment"),
    ("/anywhere/a.jpg", [], None),                                 # no roots known: local paths pass
])
def test_allowed_roots_rules(uri, roots, refused):
    got = AllowedRoots(roots).refusal(uri)
    assert (got is None) if refused is None else (refused in got), got


def test_default_roots_are_the_jobs_own_inputs():
    assert glob_root("gs://b/uploads/dt=*/x.jpg") == "gs://b/uploads/"
    assert glob_root("gs://b/uploads/**") == "gs://b/uploads/"
    assert default_roots(input_glob="gs://b/up/**", manifest="gs://m/lists/x.csv", image_root="gs://r/data") \
        == ["gs://r/data", "gs://b/up/", "gs://m/"]
    assert default_roots(manifest="/local/m.csv") == ["/local/"]  # its own folder, as a bucket for gs://
    with pytest.raises(ValueError, match="only gs:// and local"):
        parse_roots("gs://ok/,http://no/")


# -- curate over gs:// -----------------------------------------------------------

@pytest.fixture(scope="module")
def buckets(gcs_emulator, sample_dir):
    images = sorted((sample_dir / "dataset" / "images").iterdir())[:6]
    client = gcs_emulator.client()
    for name in (BUCKET, OTHER, OUT):
        gcs_emulator.create_bucket(name)
    for img in images:
        client.bucket(BUCKET).blob(f"images/{img.name}").upload_from_filename(str(img))
    # A real object in another bucket: refusing it must not depend on it being absent.
    client.bucket(OTHER).blob("private/x.jpg").upload_from_filename(str(images[0]))
    return images


@pytest.mark.e2e
def test_manifest_rows_outside_the_allowed_roots_are_refused_without_a_read(buckets, gcs_emulator, tmp_path):
    good = [f"gs://{BUCKET}/images/{p.name}" for p in buckets[:3]]
    refused = [f"gs://{OTHER}/private/x.jpg",                    # another bucket
               f"gs://{BUCKET}/images/../images/{buckets[0].name}",  # '..'
               "https://example.com/a.jpg", "s3://bucket/a.jpg"]     # other schemes
    odd = [f"gs://{BUCKET}/images/no-such.jpg", f"gs://{BUCKET}/"]  # unreadable URIs
    lines = ["uri"] + good + refused + odd
    client = gcs_emulator.client()
    client.bucket(BUCKET).blob("lists/m.csv").upload_from_string("\n".join(lines) + "\n")
    with FaultProxy(gcs_emulator.host) as proxy, proxy.as_storage_host():
        curate.run(["--manifest", f"gs://{BUCKET}/lists/m.csv", "--output", f"gs://{OUT}/run"])
        assert not [path for _m, path, _k in proxy.log if OTHER in path]  # never even asked for
        local = tmp_path / "out"  # (downloaded while the proxy runs: the emulator's links name it)
        for blob in client.bucket(OUT).list_blobs(prefix="run/"):
            (local / blob.name).parent.mkdir(parents=True, exist_ok=True)
            (local / blob.name).write_bytes(blob.download_as_bytes())
    rows = load_features(str(local / "run"))
    assert set(rows) == set(lines[1:])
    assert all(rows[u]["status"] == "accepted" or rows[u]["reasons"] for u in rows)
    for uri in refused:
        assert rows[uri]["reasons"] == ["outside_allowed_root"] and rows[uri]["error"], uri
    assert rows[odd[0]]["reasons"] == ["missing"]
    assert rows[odd[1]]["reasons"][0] in ("missing", "unreadable")
    dead = {json.loads(l)["uri"] for f in (local / "run" / "dead_letters").glob("*.jsonl")
            for l in f.read_text().splitlines()}
    assert set(refused + odd) <= dead
    summary = json.loads((local / "run" / "summary.json").read_text())
    assert summary["matched"] == len(lines) - 1 == summary["accepted"] + summary["rejected"]
    assert summary["reasons"]["outside_allowed_root"] == len(refused)


@pytest.mark.e2e
def test_objects_changed_or_deleted_between_listing_and_reading(buckets, gcs_emulator, tmp_path):
    """The glob lists three objects; as each one's read arrives, it is replaced
    (truncated, deleted, swapped for another photo). Rows describe the bytes
    actually read, with a reason when those are unusable."""
    client = gcs_emulator.client()
    prefix = "changing"
    names = ["a_truncated.jpg", "b_deleted.jpg", "c_swapped.jpg"]
    for name, src in zip(names, buckets):
        client.bucket(BUCKET).blob(f"{prefix}/{name}").upload_from_filename(str(src))
    swapped_in = buckets[4].read_bytes()
    done = set()

    def change_on_first_read(method, path):
        for name in names:
            if method == "GET" and f"{prefix}%2F{name}" in path and "alt=media" in path and name not in done:
                done.add(name)
                blob = client.bucket(BUCKET).blob(f"{prefix}/{name}")
                if name == names[0]:
                    blob.upload_from_string(buckets[0].read_bytes()[:1000])
                elif name == names[1]:
                    blob.delete()
                else:
                    blob.upload_from_string(swapped_in)

    with FaultProxy(gcs_emulator.host, before_forward=change_on_first_read) as proxy, proxy.as_storage_host():
        curate.run(["--input", f"gs://{BUCKET}/{prefix}/*.jpg", "--output", str(tmp_path / "out")])
    assert done == set(names)  # every object really changed under the job
    rows = {os.path.basename(u): r for u, r in load_features(str(tmp_path / "out")).items()}
    assert rows["a_truncated.jpg"]["reasons"] == ["unreadable"]
    assert rows["b_deleted.jpg"]["reasons"] == ["missing"]
    assert rows["c_swapped.jpg"]["sha256"] == hashlib.sha256(swapped_in).hexdigest()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["matched"] == 3 == summary["accepted"] + summary["rejected"]


# -- manifests, labels, models: one-line errors or dead letters ------------------------

def test_an_empty_manifest_is_a_one_line_error(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"")
    assert main(curate.run, ["--manifest", str(manifest), "--output", str(tmp_path / "o")], prog="curate") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error:") and "is empty" in err and "\n" not in err


@pytest.mark.e2e
def test_malformed_label_values_become_dead_letters(labelled, curated, tmp_path):
    """SCIN labels whose list/dict cells do not parse cost those cases a dead
    letter each; every other labelled image is still written."""
    ds = labelled / "dataset"
    with open(ds / "scin_labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    broken_cases = [row["case_id"] for row in rows[:3]]
    for row in rows[:3]:
        row["weighted_skin_condition_label"] = "{'Eczema': 0.5, "  # cut off mid-dict
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "records"
    make_tfrecords.run(["--curated", str(curated), "--scin_cases", str(ds / "scin_cases.csv"),
                        "--scin_labels", str(labels), "--image_root", str(labelled), "--output", str(out),
                        "--image_size", "32", "--min_class_count", "1"])
    dead = [json.loads(l) for f in (out / "dead_letters").glob("*.jsonl") for l in f.read_text().splitlines()]
    bad = [d for d in dead if d.get("case_id") in broken_cases]
    assert bad and all("malformed" in (d.get("error") or "") for d in bad), bad[:2]
    info = json.loads((out / "dataset_info.json").read_text())
    assert sum(s["examples"] for s in info["splits"].values()) > 0


@pytest.mark.e2e
def test_a_model_with_the_wrong_number_of_classes_is_a_one_line_error(tmp_path, capsys):
    from schemas.model_bundle import INFO_FILE, write_bundle
    model = build_model(32, 3)
    bundle = tmp_path / "m"
    write_bundle(str(bundle), model, {"label_vocabulary": ["a", "b", "c"], "version": "v", "image_size": 32})
    info = json.loads((bundle / INFO_FILE).read_text())
    info["label_vocabulary"] = ["a", "b", "c", "d"]  # the vocabulary of another model
    (bundle / INFO_FILE).write_text(json.dumps(info))
    (tmp_path / "in").mkdir()
    args = ["--input", str(tmp_path / "in" / "*.jpg"), "--model_uri", str(bundle), "--output", str(tmp_path / "o")]
    assert main(score.run, args, prog="score") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("score: error:") and "4 classes but the model outputs 3" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_score_refuses_manifest_rows_outside_allowed_roots(sample_dir, tmp_path):
    from schemas.model_bundle import write_bundle
    model = build_model(32, 2)
    write_bundle(str(tmp_path / "m"), model, {"label_vocabulary": ["a", "b"], "version": "v1", "image_size": 32})
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    images = sorted((sample_dir / "dataset" / "images").iterdir())[:3]
    for p in images[:2]:
        shutil.copy(p, allowed / p.name)
    inside = [str(allowed / p.name) for p in images[:2]]
    outside = [str(images[2]), f"{allowed}/../{images[2].name}", "https://example.com/x.jpg"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri\n" + "\n".join(inside + outside) + "\n")
    out = tmp_path / "o"
    score.run(["--manifest", str(manifest), "--model_uri", str(tmp_path / "m"), "--output", str(out),
               "--allowed_roots", str(allowed), "--quality_gate", "off"])
    part = out / "predictions" / "dt=undated" / "model=v1"
    rows = {r["uri"]: r for f in part.glob("*.parquet") for r in pq.read_table(f, use_threads=False).to_pylist()}
    assert set(rows) == set(inside + outside)
    assert all(rows[u]["status"] == "scored" for u in inside)
    for uri in outside:
        assert rows[uri]["status"] == "failed" and rows[uri]["reasons"] == ["outside_allowed_root"], rows[uri]
    dead_dir = out / "dead_letters" / "dt=undated" / "model=v1"
    dead = [json.loads(l) for f in dead_dir.glob("dead_letters*.jsonl") for l in f.read_text().splitlines()]
    assert {d["uri"] for d in dead} == set(outside) and all(d["reasons"] == ["outside_allowed_root"] for d in dead)


def _tampered(base, tmp_path, name, edit):
    """A copy of the bundle `base` with one edit: a model_info.json change, or
    a file replaced by a FIFO or a folder."""
    folder = tmp_path / name
    shutil.copytree(base, folder)
    info = folder / "model_info.json"
    if edit in ("fifo_info", "fifo_model", "dir_info"):
        target = info if edit != "fifo_model" else folder / "model.keras"
        target.unlink()
        os.mkfifo(target) if edit != "dir_info" else target.mkdir()
        return folder, target
    doc = json.loads(info.read_text())
    edit(doc)
    info.write_text(json.dumps(doc))
    return folder, None


def _sources(**kw):
    return lambda d: d.setdefault("trained_on", {}).setdefault("sources", {}).update(kw)


@pytest.mark.parametrize("edit, words", [
    ("fifo_info", "cannot read model info"), ("fifo_model", "cannot read model file"),
    ("dir_info", "cannot read model info"),
    (lambda d: d.update(image_size=[128]), "image settings cannot be read"),
    (lambda d: d.update(trained_on="x"), "trained_on is not a JSON object"),
    (lambda d: d.update(model_sha256=5), "model_sha256 5 is not a sha256"),
    (_sources(crop_fraction=0), "crop_fraction 0.0 is not within [0.1, 1]"),
    (_sources(crop_fraction=float("nan")), "crop_fraction nan"),
    (_sources(crop="weird"), "crop 'weird' is not one of center, skin"),
    (_sources(jpeg_quality=500), "jpeg_quality 500 is not within [1, 100]"),
], ids=["fifo_info", "fifo_model", "dir_info", "image_size_list", "trained_on_str", "sha_int", "crop_fraction_0",
        "crop_fraction_nan", "crop_weird", "quality_500"])
def test_a_tampered_model_bundle_is_a_one_line_error_never_a_hang_or_failed_rows(edit, words, tmp_path):
    """Probed: a FIFO for model_info.json or model.keras hung score; a list
    image_size, a string trained_on or an int model_sha256 were tracebacks; a
    crop_fraction of 0 or nan failed every image of a night that was then
    marked complete; crop 'weird' was scored as center."""
    from helpers import returns_without_a_writer, tiny_bundle
    from schemas.model_bundle import load_bundle
    base = tmp_path / "base"
    tiny_bundle(base)
    folder, fifo = _tampered(base, tmp_path, "m", edit)

    def load():
        try:
            load_bundle(str(folder))
        except ValueError as e:
            return str(e)
        return None
    message = returns_without_a_writer(load, fifo, 30) if fifo and fifo.is_fifo() else load()
    assert message and words in message and "\n" not in message, message
