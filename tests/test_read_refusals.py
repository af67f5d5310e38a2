"""What the one read function (transforms/io/read.py) refuses, and that every job
reading images goes through it: symlinks leading out of the allowed roots,
special files (a FIFO would hang the read, /dev/zero never ends), swaps
between the check and the open, and a local manifest's rows outside its own
folder. Each refusal is a dead letter with a reason code, and no byte of the
refused file is read."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import curate, score
from beam_jobs.evaluate_curate import load_features
from beam_jobs.train_baseline import build_model
from transforms.io.allowed_roots import AllowedRoots, default_roots
from transforms.io.read import Refused, open_local, read_bytes

SECRET = b"root:x:0:0:secret-line\n"


@contextlib.contextmanager
def hang_guard(fifo, seconds: int):
    """Fail, instead of hanging the suite, if a read blocks on the FIFO: after
    `seconds` a watchdog opens it for writing and closes it, which ends any
    blocked open or read (they then see an empty file), and the test fails."""
    hung = []

    def unblock():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO when nobody is reading
            hung.append(True)
        except OSError:
            pass
    timer = threading.Timer(seconds, unblock)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    assert not hung, f"a read blocked on the FIFO {fifo} for {seconds} s"


@pytest.fixture
def tree(tmp_path, sample_dir):
    """in/ (the root): two photos, symlinks to a secret file, /etc/passwd and
    /dev/zero, a FIFO; outside/: the secret and a photo."""
    photos = sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[:3]
    inside, outside = tmp_path / "in", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    for p in photos[:2]:
        shutil.copy(p, inside / p.name)
    shutil.copy(photos[2], outside / "photo.jpg")
    (outside / "secret.jpg").write_bytes(SECRET)
    (inside / "secret_link.jpg").symlink_to(outside / "secret.jpg")
    (inside / "passwd.jpg").symlink_to("/etc/passwd")
    (inside / "zero.jpg").symlink_to("/dev/zero")
    (inside / "dir_link").symlink_to(outside)
    os.mkfifo(inside / "fifo.jpg")
    return {"in": inside, "out": outside, "good": [str(inside / p.name) for p in photos[:2]]}


REFUSED = {"secret_link.jpg": "outside_allowed_root", "passwd.jpg": "outside_allowed_root",
           "zero.jpg": "outside_allowed_root", "fifo.jpg": "not_a_regular_file",
           "dir_link/photo.jpg": "outside_allowed_root"}


def _by_name(rows, root):
    return {os.path.relpath(u, root): r for u, r in rows.items()}


# -- the read function itself ----------------------------------------------------

def test_read_refuses_links_out_of_the_root_and_special_files_without_reading(tree):
    allowed = AllowedRoots([str(tree["in"])])
    with hang_guard(tree["in"] / "fifo.jpg", 10):
        for name, reason in REFUSED.items():
            with pytest.raises(Refused) as e:
                read_bytes(str(tree["in"] / name), allowed=allowed)
            assert e.value.reason == reason, (name, str(e.value))
        # with /dev allowed too, /dev/zero is still not read: it is no regular file
        with pytest.raises(Refused, match="character device") as e:
            read_bytes(str(tree["in"] / "zero.jpg"), allowed=AllowedRoots([str(tree["in"]), "/dev"]))
        assert e.value.reason == "not_a_regular_file"
        # no roots known at all: special files are still refused
        with pytest.raises(Refused):
            read_bytes(str(tree["in"] / "fifo.jpg"), allowed=AllowedRoots([]))
    data, _ = read_bytes(tree["good"][0], allowed=allowed)
    assert data[:3] == b"\xff\xd8\xff"


def test_a_root_that_is_itself_a_symlink_still_holds_its_files(tree, tmp_path):
    link_root = tmp_path / "link_root"
    link_root.symlink_to(tree["in"])
    name = os.path.basename(tree["good"][0])
    for allowed in (AllowedRoots([str(link_root)]), AllowedRoots([str(tree["in"])])):
        for uri in (str(link_root / name), tree["good"][0]):
            assert read_bytes(uri, allowed=allowed)[0][:3] == b"\xff\xd8\xff"
        with pytest.raises(Refused):
            read_bytes(str(link_root / "secret_link.jpg"), allowed=allowed)


def test_a_swap_between_the_check_and_the_open_cannot_escape(tree):
    """The path is resolved and checked, then a component is replaced by a
    symlink leading out; the open (component by component, O_NOFOLLOW) fails."""
    allowed = AllowedRoots([str(tree["in"])])
    sub = tree["in"] / "sub"
    sub.mkdir()
    shutil.copy(tree["good"][0], sub / "a.jpg")
    shutil.copy(tree["good"][0], tree["in"] / "b.jpg")
    resolved_dir, resolved_file = os.path.realpath(sub / "a.jpg"), os.path.realpath(tree["in"] / "b.jpg")
    assert allowed.refusal(str(sub / "a.jpg")) is None and allowed.refusal(str(tree["in"] / "b.jpg")) is None
    # the swaps: a directory becomes a link to outside/, a file a link to the secret
    shutil.rmtree(sub)
    sub.symlink_to(tree["out"])
    (tree["out"] / "a.jpg").write_bytes(SECRET)
    os.remove(tree["in"] / "b.jpg")
    (tree["in"] / "b.jpg").symlink_to(tree["out"] / "secret.jpg")
    for uri, resolved in ((sub / "a.jpg", resolved_dir), (tree["in"] / "b.jpg", resolved_file)):
        with pytest.raises(Refused) as e:
            os.close(open_local(str(uri), allowed, real=resolved))
        assert e.value.reason == "outside_allowed_root" and "symlink" in str(e.value), str(e.value)


def test_a_local_manifest_implies_its_own_folder_as_the_root():
    assert default_roots(manifest="/data/lists/m.csv") == ["/data/lists/"]
    assert default_roots(manifest="/data/lists/*.csv") == ["/data/lists/"]


# -- every job that reads images --------------------------------------------------

@pytest.mark.e2e
def test_curate_refuses_links_out_special_files_and_other_folders(tree, tmp_path):
    out = tmp_path / "o"
    with hang_guard(tree["in"] / "fifo.jpg", 30):
        curate.run(["--input", str(tree["in"] / "*.jpg"), "--output", str(out)])
    rows = _by_name(load_features(str(out)), tree["in"])
    expect = {k: v for k, v in REFUSED.items() if "/" not in k}
    assert {n: rows[n]["reasons"] for n in expect} == {n: [r] for n, r in expect.items()}
    assert all(rows[n]["sha256"] is None and rows[n]["file_size"] is None for n in expect)  # nothing read
    assert all(rows[os.path.basename(g)]["error"] is None for g in tree["good"])
    dead = "".join(f.read_text() for f in (out / "dead_letters").glob("*.jsonl"))
    assert "secret-line" not in dead and "root:x" not in dead
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matched"] == len(rows) == summary["accepted"] + summary["rejected"]

    # A local manifest: rows outside its folder are refused unless --allowed_roots widens it.
    manifest = tree["in"] / "m.csv"
    elsewhere = str(tree["out"] / "photo.jpg")
    manifest.write_text("uri\n" + "\n".join(tree["good"] + [elsewhere]) + "\n")
    curate.run(["--manifest", str(manifest), "--output", str(tmp_path / "m1")])
    rows = load_features(str(tmp_path / "m1"))
    assert rows[elsewhere]["reasons"] == ["outside_allowed_root"]
    assert all(rows[g]["error"] is None for g in tree["good"])
    curate.run(["--manifest", str(manifest), "--allowed_roots", f"{tree['in']},{tree['out']}",
                "--output", str(tmp_path / "m2")])
    assert load_features(str(tmp_path / "m2"))[elsewhere]["error"] is None


@pytest.fixture
def broken_links(tmp_path, sample_dir):
    """up/ (the root): a photo, and beside it and one folder down the links
    Beam's listing skips without a word: dangling (to a name in the root, to
    one outside it) and a loop."""
    up = tmp_path / "up"
    (up / "sub").mkdir(parents=True)
    shutil.copy(sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[0], up / "photo.jpg")
    (up / "gone.jpg").symlink_to(up / "deleted.jpg")
    (up / "sub" / "elsewhere.jpg").symlink_to(tmp_path / "nowhere" / "x.jpg")
    (up / "loop.jpg").symlink_to(up / "loop.jpg")
    # links to folders, one out of the root and one in it: the walk does not follow them
    (tmp_path / "batch").mkdir()
    shutil.copy(up / "photo.jpg", tmp_path / "batch" / "b.jpg")
    (up / "sub" / "batch_link").symlink_to(tmp_path / "batch")
    (up / "sub_link").symlink_to(up / "sub")
    return up


BROKEN = {"gone.jpg": "missing", "sub/elsewhere.jpg": "outside_allowed_root", "loop.jpg": "not_a_regular_file",
          "sub/batch_link": "outside_allowed_root", "sub_link": "not_a_regular_file"}


def test_broken_links_in_an_upload_folder_are_dead_letters_not_silent_drops(broken_links, tmp_path, monkeypatch):
    """Beam's local match skips a name whose size it cannot read, and does not
    walk into a symlinked folder, so a glob alone would lose these uploads
    from the count; every one is listed and judged, and a loop is refused at
    once (no retries: it never resolves)."""
    from transforms.io.partitions import match_files
    from transforms.io import read
    up = broken_links
    listed = {os.path.relpath(u, up) for u in match_files(str(up) + "/**")}
    assert listed == {"photo.jpg", *BROKEN}
    assert {os.path.relpath(u, up) for u in match_files(str(up) + "/*")} == {"photo.jpg", "gone.jpg", "loop.jpg"}
    assert len(match_files(str(up) + "/**", limit=2)) == 2
    allowed = AllowedRoots([str(up)])
    with monkeypatch.context() as m:
        m.setattr(read.time, "sleep", lambda s: pytest.fail("retried a read that cannot succeed"))
        with pytest.raises(read.Missing):
            read_bytes(str(up / "gone.jpg"), allowed=allowed)
        with pytest.raises(Refused, match="symlink loop") as e:
            read_bytes(str(up / "loop.jpg"), allowed=allowed)
    assert e.value.reason == "not_a_regular_file"

    out = tmp_path / "o"
    curate.run(["--input", str(up) + "/**", "--output", str(out)])
    rows = _by_name(load_features(str(out)), up)
    assert {n: r["reasons"] for n, r in rows.items() if n != "photo.jpg"} == {n: [r] for n, r in BROKEN.items()}
    assert rows["photo.jpg"]["error"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matched"] == 6 == summary["accepted"] + summary["rejected"]


def test_only_escapes_of_bytes_that_are_not_utf8_are_read_as_an_unlisted_name(tmp_path):
    """listed_name() escapes bytes that are not UTF-8 and nothing else, so a
    missing name that merely contains \\x41 is missing, not 'not UTF-8'
    because a file 'A' happens to sit beside it."""
    from transforms.io.read import Missing, listed_name
    (tmp_path / "xA.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / os.fsdecode(b"x\xe9.jpg")).write_bytes(b"\xff\xd8")
    allowed = AllowedRoots([str(tmp_path)])
    with pytest.raises(Missing):
        read_bytes(str(tmp_path / "x\\x41.jpg"), allowed=allowed)
    with pytest.raises(Refused, match="not valid UTF-8"):
        read_bytes(listed_name(str(tmp_path / os.fsdecode(b"x\xe9.jpg"))), allowed=allowed)
    assert listed_name(str(tmp_path / "xA.jpg")) == str(tmp_path / "xA.jpg")


@pytest.mark.e2e
def test_an_upload_whose_name_is_not_utf8_is_a_dead_letter_not_a_failed_job(sample_dir, tmp_path):
    """A local file name may hold bytes that are not UTF-8; Beam's coder and
    every output refuse such a string, so one upload named so failed the
    whole job. It is refused by name instead, and the other uploads (odd but
    valid names among them) are judged as usual, by curate and by score."""
    from schemas.model_bundle import write_bundle
    up = tmp_path / "up"
    up.mkdir()
    photo = sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[0].read_bytes()
    names = [os.fsdecode(b"caf\xe9.jpg"), "new\nline #1 [a].jpg", "ok.jpg"]
    for name in names:
        (up / name).write_bytes(photo)
    shown = "caf\\xe9.jpg"
    curate.run(["--input", str(up) + "/*", "--output", str(tmp_path / "c")])
    rows = _by_name(load_features(str(tmp_path / "c")), up)
    assert sorted(rows) == sorted([shown, *names[1:]])
    assert rows[shown]["reasons"] == ["unreadable"] and "not valid UTF-8" in rows[shown]["error"]
    assert all(rows[n]["error"] is None for n in names[1:])

    write_bundle(str(tmp_path / "m"), build_model(32, 2),
                 {"label_vocabulary": ["a", "b"], "version": "v1", "image_size": 32})
    score.run(["--input", str(up) + "/*", "--model_uri", str(tmp_path / "m"), "--output", str(tmp_path / "s"),
               "--quality_gate", "off"])
    part = tmp_path / "s" / "predictions" / "dt=undated" / "model=v1"
    scored = {os.path.basename(r["uri"]): r for f in part.glob("*.parquet")
              for r in pq.read_table(f, use_threads=False).to_pylist()}
    assert scored[shown]["status"] == "failed" and scored[shown]["reasons"] == ["unreadable"]
    assert all(scored[n]["status"] == "scored" for n in names[1:])


@pytest.mark.e2e
def test_score_refuses_links_out_and_special_files(tree, tmp_path):
    from schemas.model_bundle import write_bundle
    write_bundle(str(tmp_path / "m"), build_model(32, 2),
                 {"label_vocabulary": ["a", "b"], "version": "v1", "image_size": 32})
    names = [n for n in REFUSED if "/" not in n]
    manifest = tree["in"] / "m.csv"  # its folder is the default root
    manifest.write_text("uri\n" + "\n".join(tree["good"] + [str(tree["in"] / n) for n in names]) + "\n")
    out = tmp_path / "o"
    with hang_guard(tree["in"] / "fifo.jpg", 30):
        score.run(["--manifest", str(manifest), "--model_uri", str(tmp_path / "m"), "--output", str(out),
                   "--quality_gate", "off"])
    part = out / "predictions" / "dt=undated" / "model=v1"
    rows = {os.path.basename(r["uri"]): r for f in part.glob("*.parquet")
            for r in pq.read_table(f, use_threads=False).to_pylist()}
    for name in names:
        assert rows[name]["status"] == "failed" and rows[name]["reasons"] == [REFUSED[name]], rows[name]
    assert all(rows[os.path.basename(g)]["status"] == "scored" for g in tree["good"])


def test_make_tfrecords_reads_through_the_same_refusals(tree):
    """PreprocessImages (make_tfrecords' image read) in a real pipeline: a
    symlink out of the root and a FIFO become dead letters with their reasons."""
    from transforms.dataset.examples import PreprocessImages
    from transforms.dataset.join_labels import DEAD
    records = [{"uri": str(tree["in"] / n), "case_id": None} for n in ("secret_link.jpg", "fifo.jpg")]
    with hang_guard(tree["in"] / "fifo.jpg", 30), TestPipeline() as p:
        out = (p | beam.Create(records)
               | PreprocessImages(32, 0.875, 90, 10 ** 8, AllowedRoots([str(tree["in"])]), 1 << 20))
        assert_that(out[DEAD] | beam.Map(lambda d: (os.path.basename(d["uri"]), d["reason"])),
                    equal_to([("fifo.jpg", "not_a_regular_file"), ("secret_link.jpg", "outside_allowed_root")]))


@pytest.mark.parametrize("job", ["score", "curate"])
@pytest.mark.parametrize("folder", ["uploads", "up[1]"])
@pytest.mark.parametrize("slash", ["", "/"])
def test_a_dated_runs_default_root_is_its_input_folder_not_the_one_above(job, folder, slash, tmp_path):
    """score took a dated --input written without its '/' for a glob and
    allowed the folder above it: a symlink in a night then read a private
    sibling folder (seen: scored). A name holding '[' cut the root there."""
    from beam_jobs import curate, score
    from beam_jobs.options import allowed_roots
    uploads, private = tmp_path / folder, tmp_path / "private"
    night = uploads / "dt=2026-11-21"
    night.mkdir(parents=True)
    private.mkdir()
    (private / "record.jpg").write_bytes(SECRET)
    (night / "ok.jpg").write_bytes(SECRET)
    (night / "evil.jpg").symlink_to(private / "record.jpg")
    options = {"score": score.ScoreOptions, "curate": curate.CurateOptions}[job]
    o = options(["--input", f"{uploads}{slash}", "--output", str(tmp_path / "o"), "--date", "2026-11-21"])
    allowed = allowed_roots(o)
    assert allowed.refusal(str(night / "ok.jpg")) is None
    assert "not under an allowed root" in allowed.refusal(str(night / "evil.jpg"))
    assert allowed.refusal(str(private / "record.jpg")) is not None
