"""Local runs use the machine's cores by default (issue 18.5): DirectRunner
in multi-processing mode, one worker per core, unless the user passes runner
options, and without the workers' start-up warnings."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from beam_jobs.cli import LOCAL_WORKERS_ENV, UsageError, local_cores, use_cores
from beam_jobs.curate import CurateOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Through the real entry point, with the default settings: first a pipeline
# built by new_pipeline records which processes ran its elements, then curate.
_RUN = """
import os, sys
import apache_beam as beam
from beam_jobs import curate
from beam_jobs.cli import main, new_pipeline

def run(argv):
    pids = argv.pop(0)
    p = new_pipeline(curate.CurateOptions(["--output", pids]), cores=True)
    _ = (p | beam.Create(range(100)) | beam.Reshuffle() | beam.Map(lambda _: os.getpid()) | beam.Distinct()
         | beam.Map(lambda pid: open(os.path.join(pids, str(pid)), "w").close()))
    p.run().wait_until_finish()
    open(os.path.join(pids, "launcher-" + str(os.getpid())), "w").close()
    curate.run(argv)

sys.exit(main(run, prog="curate"))
"""


@pytest.mark.e2e
def test_by_default_a_local_run_uses_a_worker_process_per_core_and_stays_quiet(sample_dir, tmp_path):
    cores = local_cores()
    if cores < 2:
        pytest.skip("one core: nothing to spread over")
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((sample_dir / "dataset" / "images").glob("*.jpg"))[:3]:
        shutil.copy(p, images / p.name)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {k: v for k, v in os.environ.items() if k != LOCAL_WORKERS_ENV}  # conftest pins 1 for the suite
    proc = subprocess.run([sys.executable, "-c", _RUN, str(pids), "--input", str(images),
                           "--output", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    names = os.listdir(pids)
    launcher = [int(n.split("-")[1]) for n in names if n.startswith("launcher-")]
    workers = {int(n) for n in names if n.isdigit()}
    assert len(launcher) == 1 and len(workers) >= 2 and launcher[0] not in workers, names  # worker processes
    assert (tmp_path / "out" / "_SUCCESS").exists()
    # The done line is the whole output: no per-worker start-up warnings.
    assert [l for l in proc.stderr.splitlines() if l.strip()] == [
        f"curate: done. features: {tmp_path / 'out' / 'features'}  report: {tmp_path / 'out' / 'report.html'}"], \
        proc.stderr


@pytest.mark.parametrize("flags", [["--direct_num_workers=1"], ["--direct_running_mode", "in_memory"],
                                   ["--runner=DirectRunner"]])
def test_runner_options_the_user_passes_stand(flags, monkeypatch):
    monkeypatch.delenv(LOCAL_WORKERS_ENV, raising=False)
    o = CurateOptions(["--output", "x", *flags])
    assert use_cores(o) == 0
    opts = o.get_all_options()
    assert (opts["direct_running_mode"], opts["direct_num_workers"]) == ("in_memory", 1)


def test_no_runner_options_means_one_worker_per_core(monkeypatch):
    monkeypatch.delenv(LOCAL_WORKERS_ENV, raising=False)
    o = CurateOptions(["--output", "x"])
    assert use_cores(o) == local_cores()
    opts = o.get_all_options()
    assert opts["direct_num_workers"] == local_cores()
    assert opts["direct_running_mode"] == ("multi_processing" if local_cores() > 1 else "in_memory")
    monkeypatch.setenv(LOCAL_WORKERS_ENV, "3")
    assert use_cores(CurateOptions(["--output", "x"])) == 3
    monkeypatch.setenv(LOCAL_WORKERS_ENV, "0")
    with pytest.raises(UsageError, match="must be a positive integer"):
        use_cores(CurateOptions(["--output", "x"]))
