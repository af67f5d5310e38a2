"""Memory per worker process on the worst inputs, through the real jobs.

Small files that decode to huge arrays (a 16-bit RGBA PNG of 10000x9999 is
10 MB on disk, 800 MB decoded), the largest image of each format that
max_decode_bytes still lets through, and a 2 GB upload run through curate
and score, each job in a fresh process on DirectRunner; the process's peak
RSS (VmHWM, start-up included) must stay under the bound the README states.
Inputs are written by benchmarks.memory_per_image in a child process,
without holding their pixels, so this process's memory is left alone.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from beam_jobs.evaluate_curate import load_features

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The README's bounds (section "Workers, throughput and cost"), from start-up
# (curate 0.26 GB, score with TensorFlow 0.76 GB) + one max_decode_bytes (0.4 GB)
# + the file bytes or another prefetch thread's decoded output, with some slack.
# Measured 0.66 and 1.15 GB; before the limits 2.75 and 4.04 GB (score 1.5 GB
# when only the concurrent decodes were unbounded).
CURATE_BOUND_MB = 800
SCORE_BOUND_MB = 1400
REFUSED = ["png16_rgba_10000x9999.png", "webp_rgba_16383x6000.webp"]
AT_LIMIT = ["png8_rgba_7070x7070.png", "tiff16_rgb_5770x5770.tiff", "webp_rgba_16383x3050.webp",
            "gif_7070x7070.gif"]
HUGE = "huge_2gb.jpg"

_CHILD = """
import json, sys
job = __import__("beam_jobs." + sys.argv[1], fromlist=["run"])
job.run(sys.argv[2:])
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak_mb": peak / 1024}))
"""


def _peak_mb(job: str, args: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, job, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


@pytest.fixture(scope="module")
def worst(tmp_path_factory):
    d = tmp_path_factory.mktemp("worst")
    subprocess.run([sys.executable, "-m", "benchmarks.memory_per_image", "--out", str(d), "--make_only",
                    "--names", *REFUSED, *AT_LIMIT], cwd=ROOT, check=True, timeout=120)
    with open(d / HUGE, "wb") as f:  # sparse: 2 GB that cost no disk; a JPEG start so it looks like one
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(2 << 30)
    return d


@pytest.mark.e2e
def test_curate_and_score_stay_under_the_stated_memory_bound_on_the_worst_inputs(worst, tmp_path):
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle

    curate_peak = _peak_mb("curate", ["--input", str(worst / "*"), "--output", str(tmp_path / "c")])
    write_bundle(str(tmp_path / "m"), build_model(32, 2),
                 {"label_vocabulary": ["a", "b"], "version": "v1", "image_size": 32})
    score_peak = _peak_mb("score", ["--input", str(worst / "*"), "--model_uri", str(tmp_path / "m"),
                                    "--output", str(tmp_path / "s"), "--quality_gate", "off"])
    print(f"peak RSS per process: curate {curate_peak:.0f} MB (bound {CURATE_BOUND_MB}), "
          f"score {score_peak:.0f} MB (bound {SCORE_BOUND_MB})")
    assert curate_peak < CURATE_BOUND_MB and score_peak < SCORE_BOUND_MB, (curate_peak, score_peak)

    rows = {pathlib.Path(u).name: r for u, r in load_features(str(tmp_path / "c")).items()}
    assert rows[HUGE]["reasons"] == ["too_large"] and "max_bytes" in rows[HUGE]["error"]
    for name in REFUSED:
        assert rows[name]["reasons"] == ["too_large"] and "max_decode_bytes" in rows[name]["error"], rows[name]
    for name in AT_LIMIT:  # decoded and judged, not refused
        assert rows[name]["brightness_mean"] is not None, (name, rows[name]["error"])
    part = tmp_path / "s" / "predictions" / "dt=undated" / "model=v1"
    scored = {pathlib.Path(r["uri"]).name: r for f in part.glob("*.parquet")
              for r in pq.read_table(f, use_threads=False).to_pylist()}
    assert {n for n, r in scored.items() if r["status"] == "scored"} == set(AT_LIMIT)
    assert {n for n, r in scored.items() if r["status"] == "failed"} == set(REFUSED + [HUGE])


def test_a_decode_over_max_decode_bytes_is_refused_from_the_header(tmp_path):
    from benchmarks.memory_per_image import write_png
    from schemas.policy import load_policy
    from transforms.image.analyze import analyze_image
    from transforms.image.decode import ImageRejected
    from transforms.scoring.prepare import prepare
    policy = load_policy()
    path = tmp_path / "bomb.png"
    write_png(str(path), 10000, 9999, 4, 16)  # ~10 MB on disk, 800 MB of pixels
    data = path.read_bytes()
    start = time.perf_counter()
    row, _ = analyze_image(str(path), data, policy)
    assert row["reasons"] == ["too_large"] and "max_decode_bytes" in row["error"], row["error"]
    with pytest.raises(ImageRejected, match="max_decode_bytes"):
        prepare(data, policy, image_size=224, crop_fraction=0.875, jpeg_quality=90, gate=True)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded


@pytest.mark.e2e
def test_reads_stop_at_max_bytes_locally_and_over_gcs(tmp_path, gcs_emulator):
    from transforms.io.allowed_roots import AllowedRoots
    from transforms.io.read import Refused, read_bytes
    allowed = AllowedRoots([])
    huge = tmp_path / HUGE
    with open(huge, "wb") as f:
        f.truncate(2 << 30)
    start = time.perf_counter()
    with pytest.raises(Refused, match="over max_bytes") as e:
        read_bytes(str(huge), allowed=allowed, max_bytes=1 << 20)
    assert e.value.reason == "too_large" and time.perf_counter() - start < 1.0  # from its size, unread
    (tmp_path / "ok.bin").write_bytes(b"x" * 1000)
    assert read_bytes(str(tmp_path / "ok.bin"), allowed=allowed, max_bytes=1000)[0] == b"x" * 1000

    gcs_emulator.create_bucket("limits")
    bucket = gcs_emulator.client().bucket("limits")
    bucket.blob("big.bin").upload_from_string(b"y" * 300_000)
    bucket.blob("exact.bin").upload_from_string(b"z" * 1000)
    bucket.blob("empty.bin").upload_from_string(b"")
    with pytest.raises(Refused, match="over max_bytes") as e:
        read_bytes("gs://limits/big.bin", allowed=allowed, max_bytes=1000)
    assert e.value.reason == "too_large"
    assert read_bytes("gs://limits/exact.bin", allowed=allowed, max_bytes=1000)[0] == b"z" * 1000
    assert read_bytes("gs://limits/empty.bin", allowed=allowed, max_bytes=1000)[0] == b""


@pytest.mark.e2e
def test_curate_refuses_a_listed_oversize_gcs_object_without_requesting_it(gcs_emulator, sample_dir, tmp_path):
    """The glob's listing gives each object's size: one over max_bytes is
    too_large without a single request for its bytes."""
    from fault_proxy import FaultProxy
    from beam_jobs import curate
    policy = json.loads((ROOT / "schemas" / "quality_policy.json").read_text())
    policy["max_bytes"]["value"] = 200_000
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    photo = sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[0]
    gcs_emulator.create_bucket("listed")
    bucket = gcs_emulator.client().bucket("listed")
    bucket.blob("up/ok.jpg").upload_from_filename(str(photo))
    bucket.blob("up/big.jpg").upload_from_string(photo.read_bytes() + b"\0" * 300_000)
    with FaultProxy(gcs_emulator.host) as proxy, proxy.as_storage_host():
        curate.run(["--input", "gs://listed/up/*.jpg", "--policy", str(tmp_path / "policy.json"),
                    "--output", str(tmp_path / "o")])
        asked = [path for method, path, _ in proxy.log if method == "GET" and "big.jpg" in path and "alt=media" in path]
    rows = {pathlib.Path(u).name: r for u, r in load_features(str(tmp_path / "o")).items()}
    assert rows["big.jpg"]["reasons"] == ["too_large"] and "listed at" in rows["big.jpg"]["error"]
    assert rows["ok.jpg"]["error"] is None
    assert not asked, asked


# The duplicate stage on DirectRunner adds ~19 MB at 200k images and ~15 MB
# at 1M with its records spilled (benchmarks/duplicate_stage.py); the
# runner's in-memory shuffle added ~370 MB here and ~2 GB at 1M.
DUPLICATE_STAGE_BOUND_MB = 100


@pytest.mark.e2e
def test_duplicate_stage_memory_does_not_grow_with_the_images(tmp_path):
    """200,000 synthetic curate rows through ClusterDuplicates as curate runs
    it locally (spilled to the temp folder), each run in a fresh process:
    the stage's peak RSS over that of a pipeline that only makes the rows
    stays under DUPLICATE_STAGE_BOUND_MB, and its spill folder is gone."""
    import numpy as np

    from benchmarks.near_dups_scale import make_hash_sets

    hashes = tmp_path / "hashes.npy"
    np.save(hashes, make_hash_sets(200_000, 4, 0.01, np.random.default_rng(0))[0])
    spill_root = tmp_path / "tmp"
    spill_root.mkdir()
    peak = {}
    for mode in ("rows", "stage"):
        out = tmp_path / f"{mode}.json"
        subprocess.run([sys.executable, "-m", "benchmarks.duplicate_stage", "--child", mode, str(hashes), str(out)],
                       cwd=ROOT, check=True, timeout=300, env={**os.environ, "TMPDIR": str(spill_root)})
        doc = json.loads(out.read_text())
        peak[mode] = doc["peak_rss_mb"]
    stage_mb = peak["stage"] - peak["rows"]
    print(f"duplicate stage at 200,000 images: {stage_mb:.0f} MB over the rows' {peak['rows']:.0f} MB")
    assert doc["curate/rejected_near_duplicate"] >= 1900 and doc["duplicates/spilled_bytes"] > 200_000 * 320
    assert stage_mb < DUPLICATE_STAGE_BOUND_MB, peak
    assert [p.name for p in spill_root.iterdir() if p.name.startswith("skin-pipeline-")] == []
