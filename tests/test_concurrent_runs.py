"""Two runs of one job into one place at once (an Airflow retry and a
hand-started backfill overlapping): one complete, consistent result or a
clear one-line error, never a mix of both runs or a lost output.

The overlap is made certain, not left to timing: run A is started as a real
`python -m beam_jobs.JOB` process and frozen (SIGSTOP) as soon as it holds
its output's lock, run B is started against the same output, and A is
resumed once B has ended. B is given different inputs, so any file of B's
left in the output shows.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from beam_jobs import score
from fault_proxy import FaultProxy
from helpers import tiny_bundle
from transforms.io.run_lock import new_lock_info as run_lock_info

pytestmark = pytest.mark.e2e  # every test races whole jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "concurrent-runs"
LOCK_LINE = "is locked by run "


def _files(root: str) -> dict:
    """{path relative to root: bytes} of every file under root (local or gs://)."""
    found = FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list
    out = {}
    for m in found:
        try:
            with FileSystems.open(m.path) as f:
                out[m.path[len(root.rstrip("/")) + 1:]] = f.read()
        except Exception:  # a temporary file renamed away meanwhile
            if FileSystems.exists(m.path):
                raise
    return out


def _writing(root: str) -> bool:
    """True once a run holds root's lock or has written anything else there
    (a lock candidate still being written is not yet a lock)."""
    try:
        found = FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list
    except Exception:
        return False
    return any(not (("/_LOCK/" in m.path or "/_locks/" in m.path) and "/.tmp-" in m.path) for m in found)


def _locks(root: str, lock_dir: str) -> list:
    return [n for n in _files(root) if n.startswith(lock_dir + "/")]


def _start(job: str, argv: list, storage_host: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, **({"STORAGE_EMULATOR_HOST": storage_host} if storage_host else {}))
    return subprocess.Popen([sys.executable, "-m", f"beam_jobs.{job}", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _overlap(job: str, argv_a: list, argv_b: list, a_is_writing, timeout=240, a_storage_host=None):
    """Start A, freeze it once a_is_writing(), run B to its end, resume A.
    Returns ((rc, stderr) of A, (rc, stderr) of B)."""
    a = _start(job, argv_a, a_storage_host)
    try:
        deadline = time.monotonic() + timeout
        while a.poll() is None and not a_is_writing():
            assert time.monotonic() < deadline, f"{job} A never started writing"
            time.sleep(0.02)
        assert a.poll() is None, f"{job} A ended before B started: {a.communicate()[1][-2000:]}"
        os.killpg(a.pid, signal.SIGSTOP)
        try:
            b = _start(job, argv_b)
            _, err_b = b.communicate(timeout=timeout)
        finally:
            os.killpg(a.pid, signal.SIGCONT)
        _, err_a = a.communicate(timeout=timeout)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    return (a.returncode, err_a), (b.returncode, err_b)


def _one_completes_the_other_refused(job, a, b, where):
    (rc_a, err_a), (rc_b, err_b) = a, b
    assert rc_a == 0, err_a[-3000:]
    assert rc_b == 2, f"B was not refused (exit {rc_b}): {err_b[-3000:]}"
    # one line: Beam's log of the failing step and its traceback came first
    [line] = err_b.strip().splitlines() or [""]
    assert line.startswith(f"{job}: error: {where} {LOCK_LINE}"), err_b[-3000:]
    assert "--break_lock" in line


def _rows(data: bytes) -> list:
    return pq.read_table(io.BytesIO(data)).to_pylist()


# ------------------------------------------------------------------ curate

def _curate_inputs(sample_dir, tmp_path):
    """Two disjoint handfuls of uploads (8 and 5 images)."""
    images = sorted((sample_dir / "dataset" / "images").iterdir())
    sets = {}
    for name, chosen in (("a", images[:8]), ("b", images[8:13])):
        folder = tmp_path / f"uploads_{name}"
        folder.mkdir()
        for img in chosen:
            shutil.copy(img, folder / img.name)
        sets[name] = folder
    return sets


def _check_curate_output(out: str, expected_uris: set):
    files = _files(out)
    assert "_SUCCESS" in files and not [n for n in files if n.startswith("_LOCK/")]
    rows = [r for n, d in sorted(files.items()) if n.startswith("features/") and n.endswith(".parquet")
            for r in _rows(d)]
    assert {r["uri"] for r in rows} == expected_uris and len(rows) == len(expected_uris)
    names = [n for n in files if n.startswith("features/")]
    total = {n.rsplit("-of-", 1)[1] for n in names}
    assert len(total) == 1 and len(names) == int(total.pop().split(".")[0]), names  # one run's shard set
    summary, marker = json.loads(files["summary.json"]), json.loads(files["_SUCCESS"])
    assert summary["matched"] == len(rows) == marker["matched"]
    assert marker["accepted"] == summary["accepted"] == sum(r["status"] == "accepted" for r in rows)
    dead = [json.loads(line) for n, d in files.items() if n.startswith("dead_letters/")
            for line in d.decode().splitlines()]
    assert {d["uri"] for d in dead} == {r["uri"] for r in rows if r["status"] == "rejected"}


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_two_curate_runs_into_one_output_one_completes_the_other_is_refused(where, sample_dir, tmp_path,
                                                                           request):
    sets = _curate_inputs(sample_dir, tmp_path)
    proxy = contextlib.nullcontext()
    if where == "local":
        out, src = str(tmp_path / "curated"), {k: str(v) for k, v in sets.items()}
    else:
        emulator = request.getfixturevalue("gcs_emulator")
        prefix = uuid.uuid4().hex
        for k, v in sets.items():
            emulator.upload_tree(v, BUCKET, f"{prefix}/uploads_{k}")
        out, src = f"gs://{BUCKET}/{prefix}/curated", {k: f"gs://{BUCKET}/{prefix}/uploads_{k}" for k in sets}
        # The emulator serves one connection at a time: A frozen mid-request
        # would stall B. A talks through the (threaded, buffering) proxy instead.
        proxy = FaultProxy(emulator.host, fraction=0.0)
    argv = {k: ["--input", f"{src[k]}/*", "--output", out, "--rows_per_shard", "3"] for k in sets}
    with proxy as p:  # open until A's objects are read back (their media links name it)
        a, b = _overlap("curate", argv["a"], argv["b"], lambda: _writing(out), a_storage_host=p and p.host)
        print(f"\nB said: {b[1].strip().splitlines()[-1]}")
        _one_completes_the_other_refused("curate", a, b, out)
        _check_curate_output(out, {f"{src['a']}/{f.name}" for f in sets["a"].iterdir()})

    if where != "local":
        return
    # B, rerun once A is done, replaces A's result completely: B's rows only, A's
    # extra shards deleted as stale (no lock stands in the way of a later run).
    from beam_jobs import curate
    curate.run(argv["b"])
    _check_curate_output(out, {f"{src['b']}/{p.name}" for p in sets["b"].iterdir()})


# ------------------------------------------------------------------ score

DATE = "2026-11-21"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small fixed-weight Keras bundle (32 px, 3 classes): scoring stays cheap."""
    local = tmp_path_factory.mktemp("concurrent_model")
    tiny_bundle(local, vocabulary=("a", "b", "c"), version="cc-m1", image_size=32, seed=3)
    return local


def test_two_forced_score_runs_on_one_partition_leave_it_complete_and_refuse_one(sample_dir, tiny_model, tmp_path):
    images = sorted((sample_dir / "dataset" / "images").iterdir())
    roots = {}
    for name, chosen in (("a", images[:6]), ("b", images[6:10])):
        folder = tmp_path / f"uploads_{name}" / f"dt={DATE}"
        folder.mkdir(parents=True)
        for img in chosen:
            shutil.copy(img, folder / img.name)
        roots[name] = folder.parent
    out = tmp_path / "scores"
    argv = {k: ["--input", str(v), "--model_uri", str(tiny_model), "--output", str(out), "--date", DATE,
                "--force", "--max_batch_size", "4", "--quality_gate", "off"] for k, v in roots.items()}
    score.run([x for x in argv["b"] if x != "--force"])  # a finished partition (B's images) to lose
    final = out / "predictions" / f"dt={DATE}" / "model=cc-m1"
    assert (final / "_SUCCESS").exists()

    a, b = _overlap("score", argv["a"], argv["b"],
                  # A holds the lock, or (without one) A has begun replacing the partition
                  lambda: not (final / "_SUCCESS").exists() or _writing(str(out / "predictions" / "_locks")))
    print(f"\nB said: {b[1].strip().splitlines()[-1]}")
    _one_completes_the_other_refused("score", a, b, str(final))
    files = _files(str(final))
    rows = [r for n, d in sorted(files.items()) if n.endswith(".parquet") for r in _rows(d)]
    assert {r["uri"] for r in rows} == {str(roots["a"] / f"dt={DATE}" / p.name) for p in images[:6]}
    marker = json.loads(files["_SUCCESS"])
    assert marker["images"] == len(rows) == 6 and marker.get("scored") == 6
    assert not _files(str(out / "predictions" / "_locks"))


# ------------------------------------------------------------------ make_tfrecords

def test_two_make_tfrecords_runs_into_one_output_one_completes_the_other_is_refused(sample_dir, tmp_path):
    from beam_jobs import curate, make_tfrecords
    from beam_jobs.cli import main
    from schemas.examples import dataset_info, read_split
    uploads = _curate_inputs(sample_dir, tmp_path)["a"]
    curated = tmp_path / "curated"
    curate.run(["--input", f"{uploads}/*", "--output", str(curated)])
    accepted = sorted(r["uri"] for p in (curated / "features").glob("*.parquet") for r in _rows(p.read_bytes())
                      if r["status"] == "accepted")
    assert len(accepted) >= 4
    labels = {}
    for name, classes in (("a", "xy"), ("b", "pq")):
        labels[name] = tmp_path / f"labels_{name}.csv"
        labels[name].write_text("image_uri,label,group_id\n" + "".join(
            f"{u},{classes[i % 2]},g{i}\n" for i, u in enumerate(accepted)))
    out = tmp_path / "tfrecords"
    out.mkdir()
    # Files an earlier run with other shard counts left: not part of any result now.
    (out / "train-00000-of-00009.tfrecord.gz").write_bytes(b"old")
    (out / "dead_letters").mkdir()
    (out / "dead_letters" / "dead_letters-00000-of-00004.jsonl").write_text("{}\n")
    argv = {k: ["--curated", str(curated), "--labels_csv", str(v), "--output", str(out), "--image_size", "32",
                "--split_fractions", "0.5,0.25,0.25", "--min_class_count", "1"] for k, v in labels.items()}

    a = _start("make_tfrecords", argv["a"])
    try:
        deadline = time.monotonic() + 240
        # A holds the lock or (without one) has begun writing its outputs
        while a.poll() is None and not (list((out / "_LOCK").glob("*.json")) or (out / "transform_fn").exists()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(a.pid, signal.SIGSTOP)
        try:  # B in this process (TensorFlow is loaded already); the same entry point as the CLI
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc_b = main(make_tfrecords.run, argv["b"], prog="make_tfrecords")
        finally:
            os.killpg(a.pid, signal.SIGCONT)
        _, err_a = a.communicate(timeout=240)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    print(f"\nB said: {err.getvalue().strip().splitlines()[-1]}")
    _one_completes_the_other_refused("make_tfrecords", (a.returncode, err_a), (rc_b, err.getvalue()), str(out))

    info, marker = dataset_info(str(out)), json.loads((out / "_SUCCESS").read_text())
    assert not list((out / "_LOCK").glob("*.json")) and not (out / "train-00000-of-00009.tfrecord.gz").exists()
    listed = {s["file"] for v in info["splits"].values() for s in v["shards"]}
    assert listed == {p.name for p in out.glob("*.tfrecord*")}  # one run's shards, all of them
    got = {}
    for split in ("train", "validation", "test"):
        n = 0
        for features, label_id in read_split(str(out), split):
            got[features["uri"].numpy().decode()] = info["label_vocabulary"][int(label_id)]
            n += 1
        assert n == info["splits"][split]["examples"] == marker[split]
    assert set(got) == set(accepted) and set(got.values()) <= {"x", "y"}  # A's labels, none of B's
    assert [p.name for p in (out / "dead_letters").iterdir()] == ["dead_letters-00000-of-00001.jsonl"]


def test_a_refusal_on_multi_process_workers_is_one_line_too(sample_dir, tmp_path):
    """With worker processes the refusal comes back as a RuntimeError holding
    the worker's traceback; the entry point still reports it as one line, and
    it is the whole output: Beam's worker process printed its ~70-line
    traceback to the stderr it inherits (sdk_worker._execute), past any
    logging filter, until that stderr went through beam_jobs/stderr_filter.py."""
    from transforms.io.sharded_write import write_atomically
    out = tmp_path / "out"
    holder = dict(run_lock_info("curate", "the-nightly-run"), pid=os.getpid())  # alive: this process
    write_atomically(str(out / "_LOCK" / f"{holder['attempt']}.json"), json.dumps(holder).encode())
    images = sorted((sample_dir / "dataset" / "images").iterdir())[:2]
    proc = subprocess.run([sys.executable, "-m", "beam_jobs.curate", "--input", str(images[0]),
                           "--output", str(out), "--direct_running_mode=multi_processing",
                           "--direct_num_workers=2"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = [line for line in proc.stderr.splitlines() if line.strip()] or [proc.stderr]
    assert line.startswith(f"curate: error: {out} {LOCK_LINE}the-nightly-run (curate on "), proc.stderr[-3000:]
    assert "ERROR:" not in proc.stderr   # the runner's relay of that traceback is dropped
    assert sorted(p.name for p in out.iterdir()) == ["_LOCK"]  # nothing written


# ------------------------------------------- a job and the job it reads from

def test_make_tfrecords_never_completes_from_a_curate_output_rerun_while_it_read_it(
        sample_dir, gcs_emulator, tmp_path):
    """make_tfrecords checked curate's marker once, when it listed the
    features: a curate rerun into --curated during the run (a backfill
    overlapping the training export) went unseen, so records made from rows
    that rerun was deleting and rewriting were marked complete. The overlap is
    made certain: the images are read through a proxy that holds the first
    image download (the features have been listed and read by then) until
    curate has run again."""
    import threading
    import urllib.parse
    from beam_jobs import curate
    prefix = f"gs://{BUCKET}/{uuid.uuid4().hex}/uploads"
    gcs_emulator.create_bucket(BUCKET)
    for img in sorted((sample_dir / "dataset" / "images").iterdir())[:8]:
        with FileSystems.create(f"{prefix}/{img.name}") as f:
            f.write(img.read_bytes())
    curated = tmp_path / "curated"
    curate_args = ["--input", f"{prefix}/*", "--output", str(curated)]
    curate.run(curate_args)
    accepted = sorted(r["uri"] for p in (curated / "features").glob("*.parquet") for r in _rows(p.read_bytes())
                      if r["status"] == "accepted")
    assert len(accepted) >= 4
    labels = tmp_path / "labels.csv"
    labels.write_text("image_uri,label,group_id\n" + "".join(f"{u},{'xy'[i % 2]},g{i}\n" for i, u in enumerate(accepted)))
    out = tmp_path / "tfrecords"
    argv = ["--curated", str(curated), "--labels_csv", str(labels), "--output", str(out), "--image_size", "32",
            "--split_fractions", "0.5,0.25,0.25", "--min_class_count", "1"]

    reading, go_on = threading.Event(), threading.Event()
    def hold_image_reads(method, path):
        if method == "GET" and "alt=media" in path and "/uploads/" in urllib.parse.unquote(path):
            reading.set()
            go_on.wait(240)

    with FaultProxy(gcs_emulator.host, before_forward=hold_image_reads) as proxy:
        a = _start("make_tfrecords", argv, storage_host=proxy.host)
        try:
            deadline = time.monotonic() + 240
            while not reading.wait(0.1):
                assert a.poll() is None, a.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "make_tfrecords never read an image"
            curate.run(curate_args)  # in this process, straight to the emulator
            go_on.set()
            _, err = a.communicate(timeout=240)
        finally:
            go_on.set()
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
    last = err.strip().splitlines()[-1]
    assert a.returncode == 1, err[-3000:]
    assert last.startswith(f"make_tfrecords: error: --curated {curated} was rewritten while this run read it"), last
    assert "rerun make_tfrecords once curate is done" in last
    assert not (out / "_SUCCESS").exists() and not list((out / "_LOCK").glob("*.json"))
    assert (curated / "_SUCCESS").exists()  # the rerun finished: rerunning make_tfrecords now is safe
