"""Output a person can read (issue 15.7): --help is the job's own options,
grouped; a run prints its progress and real warnings, not Beam's benign
warnings or TensorFlow's start-up lines."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from beam_jobs import curate, evaluate, make_tfrecords, score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADINGS = ["inputs:", "outputs:", "policy / model:", "run control / locks:", "runner (Beam):"]


def _sections(text: str) -> dict:
    """heading -> the option names listed under it."""
    sections, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current] += re.findall(r"^\s+(--\w+)", line)
    return sections


def _python(*args, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.e2e
def test_help_names_the_module_and_groups_the_jobs_own_options():
    proc = _python("-m", "beam_jobs.curate", "--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "usage: python -m beam_jobs.curate [options]"
    sections = _sections(proc.stdout)
    assert [h for h in sections if h in HEADINGS] == HEADINGS
    assert {"--input", "--manifest", "--scin_cases", "--image_root"} <= set(sections["inputs:"])
    assert {"--output", "--rows_per_shard"} <= set(sections["outputs:"])
    assert {"--policy", "--dup_radius", "--max_pixels"} <= set(sections["policy / model:"])
    assert {"--run_id", "--break_lock"} <= set(sections["run control / locks:"])
    assert {"--runner", "--project", "--region", "--temp_location", "--direct_num_workers"} <= set(
        sections["runner (Beam):"])
    assert "--dataflow_service_options" not in proc.stdout and "--model_uri" not in proc.stdout
    assert "Other Beam pipeline options" in proc.stdout
    assert len(lines) < 100


@pytest.mark.parametrize("job, name, own", [
    (score, "beam_jobs.score", {"--model_uri", "--start_date", "--quality_gate"}),
    (make_tfrecords, "beam_jobs.make_tfrecords", {"--curated", "--scin_labels", "--split_fractions"}),
    (evaluate, "beam_jobs.evaluate", {"--tfrecords", "--split", "--compare_model_uri", "--bootstrap_resamples"}),
])
def test_every_jobs_help_lists_its_options_under_the_headings(job, name, own, capsys):
    with pytest.raises(SystemExit) as exit_:
        job.run(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out.startswith(f"usage: python -m {name} [options]")
    listed = {o for h, opts in _sections(out).items() if h in HEADINGS for o in opts}
    assert own <= listed and "--runner" in listed
    assert "--dup_radius" not in out and "--dataflow_service_options" not in out
    assert len(out.splitlines()) < 130


# A run through the real entry point (cli.main) that, after curate's work,
# logs one real warning from the job and one from Beam: both must still show.
_RUN = """
import logging, sys
from beam_jobs import curate
from beam_jobs.cli import main

def run(argv):
    curate.run(argv)
    logging.getLogger("beam_jobs.curate").warning("a real job warning")
    logging.getLogger("apache_beam.options.pipeline_options").warning("a real Beam warning")

sys.exit(main(run, prog="curate"))
"""


@pytest.mark.e2e
def test_a_run_prints_its_done_line_and_real_warnings_not_beams_benign_ones(sample_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[:3]:
        shutil.copy(p, images / p.name)
    out = tmp_path / "out"
    proc = _python("-c", _RUN, "--input", str(images), "--output", str(out), "--direct_num_workers=1")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "curate: done." in err
    assert "a real job warning" in err and "a real Beam warning" in err
    for noise in ("Discarding invalid overrides", "Discarding unparseable args", "Unparseable argument"):
        assert noise not in err, err
    # Nothing else: the done line and the two warnings are the whole output.
    assert len([l for l in err.splitlines() if l.strip()]) == 3, err


@pytest.mark.e2e
def test_tensorflow_loads_without_its_start_up_lines():
    proc = _python("-c", "from beam_jobs.cli import quiet_tensorflow\n"
                         "quiet_tensorflow()\n"
                         "import tensorflow as tf\n"
                         "print(int(tf.constant(1) + 1))")
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr
    for noise in ("absl::InitializeLog", "oneDNN", "cuda", "cuInit"):
        assert noise not in proc.stderr, proc.stderr


@pytest.mark.e2e
def test_evaluate_curates_help_names_the_module(capsys):
    from beam_jobs import evaluate_curate
    with pytest.raises(SystemExit) as exit_:
        evaluate_curate.run(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m beam_jobs.evaluate_curate")


@pytest.mark.e2e
@pytest.mark.parametrize("legacy_keras", ["0", "1"])
def test_model_loads_trace_quietly_but_other_tensorflow_warnings_show(legacy_keras):
    # Six copies of a model, each predicting two batch sizes as RunInference
    # does: TensorFlow's retracing warning is about the copies, not a fault.
    # Under Keras 3 and under tf_keras (which tf.Transform's import turns on).
    env = {**os.environ, "TF_USE_LEGACY_KERAS": legacy_keras}
    proc = _python("-c", "from beam_jobs.cli import quiet_logging, quiet_tensorflow\n"
                         "quiet_tensorflow(); quiet_logging()\n"
                         "import numpy as np, tensorflow as tf\n"
                         "for _ in range(6):\n"
                         "    i = tf.keras.Input((8, 8, 3))\n"
                         "    m = tf.keras.Model(i, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(i)))\n"
                         "    m.predict_on_batch(np.zeros((1, 8, 8, 3))); m.predict_on_batch(np.zeros((3, 8, 8, 3)))\n"
                         "tf.get_logger().warning('a real TensorFlow warning')\n"
                         "print('ok')", env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "a real TensorFlow warning" in proc.stderr
    assert "retracing" not in proc.stderr, proc.stderr
