"""Beam's gs:// filesystem against a real GCS emulator: match, read, write."""
from __future__ import annotations

import hashlib
import os
import socket

import apache_beam as beam
import pytest
from apache_beam.io import fileio
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from gcs_emulator import GcsEmulator

pytestmark = pytest.mark.e2e  # each test runs the emulator process


def _local_digests(sample_dir):
    images = sample_dir / "dataset" / "images"
    return sorted(
        (f"gs://skin-uploads/dataset/images/{p.name}", hashlib.sha256(p.read_bytes()).hexdigest())
        for p in images.iterdir())


def test_beam_matches_and_reads_gcs_objects(gcs_sample, sample_dir):
    expected = _local_digests(sample_dir)
    assert len(expected) > 40
    with TestPipeline() as p:
        got = (p
               | fileio.MatchFiles(f"{gcs_sample}/dataset/images/*")  # JPEG and HEIC uploads
               | fileio.ReadMatches()
               | beam.Map(lambda f: (f.metadata.path, hashlib.sha256(f.read()).hexdigest())))
        assert_that(got, equal_to(expected))


def test_beam_writes_to_gcs(gcs_emulator):
    bucket = gcs_emulator.create_bucket("beam-out")
    lines = [f"row-{i}" for i in range(100)]
    with TestPipeline() as p:
        _ = (p | beam.Create(lines)
               | beam.io.WriteToText("gs://beam-out/run1/part", num_shards=3))
    blobs = sorted(b.name for b in bucket.list_blobs(prefix="run1/"))
    assert blobs == [f"run1/part-0000{i}-of-00003" for i in range(3)]
    written = [line for name in blobs
               for line in bucket.blob(name).download_as_text().splitlines()]
    assert sorted(written) == sorted(lines)


def test_emulator_stops_and_leaves_no_process():
    emulator = GcsEmulator().start()
    pid, port = emulator.process.pid, emulator.port
    emulator.stop()
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, f"emulator pid {pid} still running"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "port still accepting connections"
