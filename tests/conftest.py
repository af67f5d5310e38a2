"""Shared fixtures: a real GCS emulator on loopback and generated sample data."""
from __future__ import annotations

import os

# One BLAS thread per test process, set before numpy loads OpenBLAS: the two
# xdist workers share two cores, and OpenBLAS's spinning threads in one worker
# slowed the other's small matrix products (train_relevance's networks) ~2x.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from gcs_emulator import GcsEmulator  # noqa: E402
from transforms.io.gcs_env import EMULATOR_ENV, use_anonymous_credentials_with_emulator  # noqa: E402

SAMPLE_BUCKET = "skin-uploads"

# Local runs default to one worker process per core (beam_jobs.cli.use_cores);
# the suite's pipelines are tiny, where each worker's start-up (a few seconds)
# would dominate, so they run in-process unless a test says otherwise
# (tests/test_local_cores.py runs the default). Subprocesses inherit this.
os.environ.setdefault("BEAM_JOBS_LOCAL_WORKERS", "1")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small generated SCIN-format sample set with ground truth (seed fixed)."""
    from beam_jobs.sample_data import generate
    out = tmp_path_factory.mktemp("sample")
    generate(out, cases=40, seed=11)
    return out


@pytest.fixture(scope="session")
def gcs_emulator():
    """The emulator process for the whole session; STORAGE_EMULATOR_HOST points at it."""
    previous = os.environ.get(EMULATOR_ENV)
    with GcsEmulator() as emulator:
        os.environ[EMULATOR_ENV] = emulator.host
        use_anonymous_credentials_with_emulator()
        yield emulator
    if previous is None:
        os.environ.pop(EMULATOR_ENV, None)
    else:
        os.environ[EMULATOR_ENV] = previous


@pytest.fixture(scope="session")
def gcs_sample(gcs_emulator, sample_dir):
    """The sample set uploaded to gs://skin-uploads/ (dataset/... and ground_truth.csv)."""
    gcs_emulator.upload_tree(sample_dir, SAMPLE_BUCKET)
    return f"gs://{SAMPLE_BUCKET}"


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    """A held-out labelled set (the policy was calibrated on another seed)."""
    from beam_jobs.sample_data import generate
    root = tmp_path_factory.mktemp("labelled")
    generate(root, cases=300, seed=2026)
    return root


@pytest.fixture(scope="session")
def curated(labelled, tmp_path_factory):
    """curate's output over the labelled set."""
    from beam_jobs import curate
    out = tmp_path_factory.mktemp("curated")
    curate.run(["--scin_cases", str(labelled / "dataset" / "scin_cases.csv"),
                "--image_root", str(labelled), "--output", str(out)])
    return out


@pytest.fixture(scope="session")
def tfrecords64(labelled, curated, tmp_path_factory):
    """make_tfrecords over the curated labelled set, 64 px, every class kept
    (read only: shared by the score, train_baseline and evaluate tests)."""
    from beam_jobs import make_tfrecords
    ds = labelled / "dataset"
    out = tmp_path_factory.mktemp("tfrecords64")
    make_tfrecords.run(["--curated", str(curated), "--scin_cases", str(ds / "scin_cases.csv"),
                        "--scin_labels", str(ds / "scin_labels.csv"), "--image_root", str(labelled),
                        "--output", str(out), "--image_size", "64", "--min_class_count", "1"])
    return out
