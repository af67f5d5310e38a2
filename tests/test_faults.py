"""Reliability: the jobs survive a flaky GCS, retries are bounded and counted,
killed runs leave nothing that looks complete, reruns give the same outputs.

Faults come from tests/fault_proxy.py, a real HTTP proxy between the storage
client and the GCS emulator (STORAGE_EMULATOR_HOST points at the proxy during
the runs under test); nothing in the jobs is mocked.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter

from beam_jobs import curate, score
from fault_proxy import KINDS, FaultProxy

IN_BUCKET, OUT_BUCKET, MODEL_BUCKET = "faults-in", "faults-out", "faults-models"
DATES = ("2026-10-01", "2026-10-02")
FAULT_FRACTION = 0.10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy(gcs_emulator):
    """The fault proxy in front of the session's emulator, faults off."""
    with FaultProxy(gcs_emulator.host, fraction=0.0, seed=7) as p:
        yield p


@pytest.fixture(scope="module")
def gcs_inputs(gcs_emulator, sample_dir, tmp_path_factory):
    """The 40-case sample in gs://faults-in/sample/, and score's dt= partitions
    (10 images each, one truncated upload) in gs://faults-in/uploads/."""
    gcs_emulator.upload_tree(sample_dir, IN_BUCKET, "sample")
    images = sorted((sample_dir / "dataset" / "images").iterdir())
    uploads = tmp_path_factory.mktemp("fault_uploads")
    for i, date in enumerate(DATES):
        folder = uploads / f"dt={date}"
        folder.mkdir()
        for img in images[i * 10:(i + 1) * 10]:
            shutil.copy(img, folder / img.name)
    (uploads / f"dt={DATES[1]}" / "zz_truncated.jpg").write_bytes(images[0].read_bytes()[:1500])
    gcs_emulator.upload_tree(uploads, IN_BUCKET, "uploads")
    gcs_emulator.create_bucket(OUT_BUCKET)
    return f"gs://{IN_BUCKET}", uploads


@pytest.fixture(scope="module")
def gcs_model(gcs_emulator, tmp_path_factory):
    """A small, fixed-weight Keras bundle (32 px, 3 classes) at gs://faults-models/m1."""
    import keras
    from schemas.model_bundle import write_bundle
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    local = tmp_path_factory.mktemp("fault_model")
    write_bundle(str(local), model, {"label_vocabulary": ["a", "b", "c"], "version": "faults-m1",
                                     "image_size": 32})
    gcs_emulator.upload_tree(local, MODEL_BUCKET, "m1")
    return f"gs://{MODEL_BUCKET}/m1", local


# -- helpers -------------------------------------------------------------------

def _blobs(gcs_emulator, prefix):
    """{name under prefix: bytes} of everything in the output bucket under prefix/."""
    bucket = gcs_emulator.client().bucket(OUT_BUCKET)
    return {b.name[len(prefix) + 1:]: b.download_as_bytes() for b in bucket.list_blobs(prefix=prefix + "/")}


def _counter(result, name, namespace=None):
    f = MetricsFilter().with_name(name)
    if namespace:
        f = f.with_namespace(namespace)
    return sum(c.committed or 0 for c in result.metrics().query(f)["counters"])


def _retryable(kind):
    return kind in ("429", "503", "reset")


def _run_with_faults(proxy, job, argv, fraction):
    """Run job.run(argv) with every storage request going through the proxy."""
    proxy.reset_counts()
    proxy.configure(fraction=fraction, kinds=KINDS)
    start = time.monotonic()
    try:
        with proxy.as_storage_host():
            result = job.run(argv)
    finally:
        proxy.configure(fraction=0.0)
    counts = proxy.counts()
    counts["seconds"] = round(time.monotonic() - start, 1)
    print(f"\n{job.__name__} at {fraction:.0%} faults: {counts}")
    return result, counts


def _rows(data: bytes, drop=()):
    return [{k: v for k, v in r.items() if k not in drop}
            for r in pq.read_table(io.BytesIO(data), use_threads=False).to_pylist()]


# -- the proxy itself --------------------------------------------------------------

@pytest.mark.e2e
def test_proxy_passes_everything_through_untouched_when_no_faults(proxy, gcs_emulator):
    from apache_beam.io.filesystems import FileSystems
    from transforms.io.sharded_write import write_atomically
    gcs_emulator.create_bucket(OUT_BUCKET)
    payload = os.urandom(3 * 1024 * 1024 + 17)  # a few MB: more than one read buffer
    proxy.reset_counts()
    with proxy.as_storage_host():
        write_atomically(f"gs://{OUT_BUCKET}/proxy/a.bin", payload)  # upload, copy, delete (batch)
        with FileSystems.open(f"gs://{OUT_BUCKET}/proxy/a.bin") as f:  # metadata + range reads
            f.seek(1_000_000)
            assert f.read(10) == payload[1_000_000:1_000_010]
            f.seek(0)
            assert f.read() == payload
        assert [m.path for m in FileSystems.match([f"gs://{OUT_BUCKET}/proxy/*"])[0].metadata_list] \
            == [f"gs://{OUT_BUCKET}/proxy/a.bin"]
        FileSystems.delete([f"gs://{OUT_BUCKET}/proxy/a.bin"])
        assert not FileSystems.exists(f"gs://{OUT_BUCKET}/proxy/a.bin")
    counts = proxy.counts()
    assert counts["faults"] == 0 and counts["requests"] >= 6
    paths = [path for _m, path, _k in proxy.log]
    assert any(p.startswith("/upload/storage/v1/") for p in paths)
    assert any(p.startswith("/download/storage/v1/") and "alt=media" in p for p in paths)
    assert any(p.startswith("/batch/storage/v1") for p in paths)
    # A resumable session URL handed out by the emulator names the proxy, not the emulator.
    req = urllib.request.Request(
        f"{proxy.host}/upload/storage/v1/b/{OUT_BUCKET}/o?uploadType=resumable&name=proxy/r.bin",
        data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Location"].startswith(proxy.host)


@pytest.mark.e2e
def test_proxy_injects_about_the_configured_fraction_and_counts_by_kind(gcs_emulator):
    with FaultProxy(gcs_emulator.host, fraction=0.3, seed=1, delay=(0.0, 0.01)) as p:
        statuses = []
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{p.host}/storage/v1/b?project=test", timeout=5) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as e:
                statuses.append(e.code)
                assert json.loads(e.read())["error"]["code"] == e.code
            except (ConnectionError, urllib.error.URLError, http_client_errors()):
                statuses.append("reset")
        counts = p.counts()
    assert counts["requests"] == 300
    assert 60 <= counts["faults"] <= 120  # 30% of 300, give or take
    assert all(counts[k] > 0 for k in KINDS)
    assert statuses.count(429) == counts["429"] and statuses.count(503) == counts["503"]
    assert statuses.count("reset") == counts["reset"]
    assert statuses.count(200) == 300 - counts["429"] - counts["503"] - counts["reset"]


def http_client_errors():
    import http.client
    return http.client.HTTPException


@pytest.mark.e2e
def test_temporary_files_never_match_a_readers_glob(proxy, gcs_emulator):
    """write_atomically's temp object (seen in the upload request) is invisible
    to a reader globbing the final suffix, as curate's consumers do."""
    from apache_beam.io.filesystems import FileSystems
    from transforms.io.sharded_write import write_atomically
    gcs_emulator.create_bucket(OUT_BUCKET)
    proxy.reset_counts()
    with proxy.as_storage_host():
        write_atomically(f"gs://{OUT_BUCKET}/glob/features/features-00000-of-00001.parquet", b"PAR1")
        seen = [m.path for m in FileSystems.match([f"gs://{OUT_BUCKET}/glob/features/*.parquet"])[0].metadata_list]
    uploaded = [json.loads(body)["name"] for (_m, path, _k), body in zip(proxy.log, proxy.bodies)
                if path.startswith("/upload/") and "uploadType=resumable" in path and "upload_id" not in path]
    temps = [n for n in uploaded if ".tmp-" in n]
    assert temps, uploaded
    pattern = re.compile(FileSystems.get_filesystem("gs://x/y").translate_pattern(
        f"gs://{OUT_BUCKET}/glob/features/*.parquet"))
    assert not [t for t in temps if pattern.match(f"gs://{OUT_BUCKET}/{t}")]
    assert seen == [f"gs://{OUT_BUCKET}/glob/features/features-00000-of-00001.parquet"]


# -- the jobs under 10% faults ----------------------------------------------------------

@pytest.mark.e2e
def test_curate_over_gcs_under_faults_equals_a_fault_free_run(proxy, gcs_inputs, gcs_emulator):
    src, _ = gcs_inputs
    args = ["--scin_cases", f"{src}/sample/dataset/scin_cases.csv", "--image_root", f"{src}/sample"]
    _clean, clean_counts = _run_with_faults(proxy, curate, args + ["--output", f"gs://{OUT_BUCKET}/curate-clean"], 0.0)
    result, counts = _run_with_faults(proxy, curate, args + ["--output", f"gs://{OUT_BUCKET}/curate-faulty"],
                                      FAULT_FRACTION)
    assert clean_counts["faults"] == 0
    assert counts["faults"] >= max(3, 0.03 * counts["requests"])  # ~10%, seeded; a loose floor
    clean, faulty = _blobs(gcs_emulator, "curate-clean"), _blobs(gcs_emulator, "curate-faulty")
    assert "_SUCCESS" in faulty and not [n for n in faulty if ".tmp-" in n]
    assert sorted(faulty) == sorted(clean)
    for name in clean:  # every file, byte for byte: features, dead letters, summary, report, marker
        assert faulty[name] == clean[name], name
    summary = json.loads(faulty["summary.json"])
    assert summary["matched"] == summary["accepted"] + summary["rejected"] > 0
    # No image lost to I/O: a read that gave up would be an "unreadable" dead letter saying so.
    assert not [n for n, data in faulty.items() if n.startswith("dead_letters/") and b"read failed" in data]

    # Every image-read fault that needs a retry was retried and counted, once.
    image_faults = sum(1 for _m, path, kind in proxy.log
                       if _retryable(kind) and "alt=media" in path and "%2Fimages%2F" in path)
    retries = _counter(result, "read_retries", "io")
    print(f"curate: io/read_retries={retries}, image-read faults injected={image_faults}")
    assert retries == image_faults
    assert _counter(result, "read_failures", "io") == 0


@pytest.mark.e2e
def test_score_over_gcs_under_faults_equals_a_fault_free_run(proxy, gcs_inputs, gcs_model, gcs_emulator):
    src, uploads = gcs_inputs
    args = ["--input", f"{src}/uploads", "--model_uri", gcs_model[0],
            "--start_date", DATES[0], "--end_date", DATES[1], "--max_batch_size", "8"]
    _run_with_faults(proxy, score, args + ["--output", f"gs://{OUT_BUCKET}/score-clean"], 0.0)
    result, counts = _run_with_faults(proxy, score, args + ["--output", f"gs://{OUT_BUCKET}/score-faulty"],
                                      FAULT_FRACTION)
    assert counts["faults"] >= max(3, 0.03 * counts["requests"])  # ~10%, seeded; a loose floor
    clean, faulty = _blobs(gcs_emulator, "score-clean"), _blobs(gcs_emulator, "score-faulty")
    assert sorted(faulty) == sorted(clean)
    assert not [n for n in faulty if ".tmp-" in n or "_staging" in n]
    for date in DATES:
        prefix = f"predictions/dt={date}/model=faults-m1/"
        marker = json.loads(faulty[prefix + "_SUCCESS"])
        assert marker["images"] == len(os.listdir(uploads / f"dt={date}"))
    for name in clean:
        if name.endswith(".parquet"):
            assert _rows(faulty[name], drop={"scored_at"}) == _rows(clean[name], drop={"scored_at"}), name
        else:  # markers and dead letters carry no timestamp: identical bytes
            assert faulty[name] == clean[name], name
    image_faults = sum(1 for _m, path, kind in proxy.log
                       if _retryable(kind) and "alt=media" in path and "uploads%2Fdt%3D" in path)
    retries = _counter(result, "read_retries", "io")
    print(f"score: io/read_retries={retries}, image-read faults injected={image_faults}")
    assert retries == image_faults
    assert _counter(result, "read_failures", "io") == 0


# -- bounded, counted retries ---------------------------------------------------------

class _ReadOrError(beam.DoFn):
    """Calls read_bytes inside a pipeline (so its counters land in the result's
    metrics) and writes what happened to a JSON file."""

    def __init__(self, deadline, report):
        self.deadline, self.report = deadline, report

    def process(self, uri):
        from transforms.io.allowed_roots import AllowedRoots
        from transforms.io.read import read_bytes
        start = time.monotonic()
        try:
            data, retries = read_bytes(uri, allowed=AllowedRoots([]), deadline=self.deadline)
            got = {"status": "ok", "size": len(data), "retries": retries}
        except Exception as e:
            got = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        got["seconds"] = time.monotonic() - start
        with open(self.report, "w") as f:
            json.dump(got, f)
        yield uri


def _read_in_pipeline(uri, deadline, report):
    p = beam.Pipeline()
    _ = p | beam.Create([uri]) | beam.ParDo(_ReadOrError(deadline, str(report)))
    result = p.run()
    result.wait_until_finish()
    return json.loads(report.read_text()), result


@pytest.mark.e2e
def test_reads_give_up_within_their_deadline_at_100_percent_faults_and_count_retries(proxy, gcs_inputs, tmp_path):
    src, _ = gcs_inputs
    uri = f"{src}/sample/scin_cases_missing_is_not_this.txt"
    from transforms.io.allowed_roots import AllowedRoots
    from transforms.io.read import Missing, read_bytes
    with proxy.as_storage_host():
        with pytest.raises(Missing):  # a missing object is not retried
            read_bytes(uri, allowed=AllowedRoots([]))
    image = f"{src}/uploads/dt={DATES[0]}/" + sorted(os.listdir(gcs_inputs[1] / f"dt={DATES[0]}"))[0]
    proxy.reset_counts()
    proxy.configure(fraction=1.0, kinds=("429", "503", "reset"))
    try:
        with proxy.as_storage_host():
            got, result = _read_in_pipeline(image, 3.0, tmp_path / "read.json")
    finally:
        proxy.configure(fraction=0.0)
    tries = sum(1 for _m, path, _k in proxy.log if "alt=media" in path)
    print(f"\n100% faults: {proxy.counts()}, gave up after {got['seconds']:.1f}s and {tries} tries: "
          f"{got.get('error', '')[:160]}")
    assert got["status"] == "error" and "RetryError" in got["error"] and "exceeded" in got["error"]
    assert got["seconds"] < 3.0 + 2.0  # the deadline, plus at most one request's worth
    assert tries >= 3
    assert _counter(result, "read_retries", "io") == tries - 1  # every try but the last was a retry
    assert _counter(result, "read_failures", "io") == 1

    # The same read with the faults gone: one request, no retries.
    proxy.reset_counts()
    with proxy.as_storage_host():
        got, result = _read_in_pipeline(image, 3.0, tmp_path / "read.json")
    assert got["status"] == "ok" and got["size"] > 0 and got["retries"] == 0
    assert _counter(result, "read_retries", "io") == 0
    # One request for the object (the client may also look the bucket up first).
    assert len([p for _m, p, _k in proxy.log if "alt=media" in p]) == 1, proxy.log


# -- killed midway, then rerun ---------------------------------------------------------------

def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _looks_complete(name: str, data: bytes) -> bool:
    """True if a file under a final name parses as a whole file of its kind."""
    if name.endswith(".parquet"):
        try:
            pq.read_table(io.BytesIO(data))
            return True
        except Exception:
            return False
    if name.endswith(".jsonl"):
        return all(json.loads(line) is not None for line in data.decode().splitlines()) and \
            (not data or data.endswith(b"\n"))
    return True


def _kill_when(job: str, argv: list, ready, env: dict | None = None) -> None:
    """Run `python -m beam_jobs.JOB argv` (with `env` added to the
    environment), SIGKILL its process group as soon as ready() is true, and
    check it really died mid-run."""
    proc = subprocess.Popen([sys.executable, "-m", f"beam_jobs.{job}", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, f"{job} was not killed midway: {proc.returncode}"


@pytest.mark.e2e
def test_curate_killed_midway_leaves_nothing_complete_and_a_rerun_equals_an_uninterrupted_run(
        sample_dir, tmp_path, monkeypatch):
    args = ["--scin_cases", str(sample_dir / "dataset" / "scin_cases.csv"), "--image_root", str(sample_dir)]
    reference = tmp_path / "reference"
    curate.run(args + ["--output", str(reference)])
    assert (reference / "_SUCCESS").exists()

    # A rerun into a complete output is killed once it has started writing:
    # the old marker must be gone, so nothing there reads as complete.
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    def writing_shards():  # a shard (or its temp file) is being written
        touched = [p for p in out.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns]
        return any(p.parent.name in ("features", "dead_letters") for p in touched)

    temp = tmp_path / "temp"
    temp.mkdir()
    _kill_when("curate", args + ["--output", str(out)], writing_shards, env={"TMPDIR": str(temp)})
    killed = [p.name for p in temp.iterdir() if p.name.startswith("skin-pipeline-curate-run-")]
    assert len(killed) == 1, killed  # a killed run cannot clean up after itself
    files = _tree(out)
    print(f"\nafter the kill: {sorted(files)}")
    assert "_SUCCESS" not in files
    for name, data in files.items():
        if "/" in name and ".tmp-" not in name:
            assert _looks_complete(name, data), f"{name} is truncated under its final name"

    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    curate.run(args + ["--output", str(out)])
    assert _tree(out) == _tree(reference)
    # ... the next run on the machine removes its spill folder.
    assert [p.name for p in temp.iterdir() if p.name.startswith("skin-pipeline-")] == []


def _partitions(root):
    """{relative path: bytes} of the published partitions (staging excluded)."""
    pred = root / "predictions"
    return {k: v for k, v in _tree(pred).items() if not k.startswith("_staging/")} if pred.exists() else {}


def _same_but_scored_at(a: dict, b: dict) -> bool:
    if sorted(a) != sorted(b):
        return False
    return all(_rows(a[n], drop={"scored_at"}) == _rows(b[n], drop={"scored_at"}) if n.endswith(".parquet")
               else a[n] == b[n] for n in a)


@pytest.mark.e2e
def test_score_killed_midway_leaves_no_partial_partition_complete_and_a_rerun_equals_an_uninterrupted_run(
        gcs_inputs, gcs_model, tmp_path):
    _src, uploads = gcs_inputs
    args = ["--input", str(uploads), "--model_uri", str(gcs_model[1]),
            "--start_date", DATES[0], "--end_date", DATES[1], "--max_batch_size", "8"]
    reference = tmp_path / "reference"
    score.run(args + ["--output", str(reference)])
    expected = _partitions(reference)
    assert sum(n.endswith("_SUCCESS") for n in expected) == len(DATES)

    out = tmp_path / "out"
    def staging_shards():  # not any file: the first is the lock's candidate, not what this test is about
        staging = out / "_staging"
        return staging.exists() and any(p.is_file() for p in staging.rglob("*"))

    _kill_when("score", args + ["--output", str(out)], staging_shards)
    after_kill = _partitions(out)
    print(f"\nafter the kill: {sorted(_tree(out / 'predictions'))}")
    for date in DATES:  # a partition is either complete (marker) and right, or has no marker
        prefix = f"dt={date}/model=faults-m1/"
        got = {n: v for n, v in after_kill.items() if n.startswith(prefix)}
        if prefix + "_SUCCESS" in got:
            assert _same_but_scored_at(got, {n: v for n, v in expected.items() if n.startswith(prefix)})

    score.run(args + ["--output", str(out)])
    assert _same_but_scored_at(_partitions(out), expected)
    leftover = sorted(_tree(out / "_staging")) if (out / "_staging").exists() else []
    if leftover:  # young leftovers stay (they could be a live run's); stale ones go, see test_score
        print(f"staging left behind by the killed run: {leftover}")
