"""The nightly DAG in real Airflow 3: `make airflow-venv` builds .venv-airflow
(Airflow and the Google and Apache Beam providers, pinned in
templates/airflow-requirements.txt, apart from the project's .venv), and
templates/check_airflow_dag.py loads the DAG with DagBag and renders a
scheduled night. The first run installs (about a minute); later runs reuse the
venv (AIRFLOW_VENV=DIR puts it elsewhere). Skipped only when pip or uv cannot
reach the package index."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DAG = ROOT / "templates" / "airflow_nightly_dag.py"
CHECK = ROOT / "templates" / "check_airflow_dag.py"
# What pip and uv print when the index cannot be reached (no network, DNS,
# proxy): the only reason this test may skip instead of fail.
NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|Connection refused|ConnectTimeout|ReadTimeout|Could not fetch URL|ProxyError"
    r"|error sending request|tcp connect error|dns error|operation timed out")


@pytest.fixture(scope="module")
def airflow_python() -> pathlib.Path:
    venv = os.environ.get("AIRFLOW_VENV", ".venv-airflow")
    built = subprocess.run(["make", "--no-print-directory", "airflow-venv", f"AIRFLOW_VENV={venv}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        out = built.stdout + built.stderr
        cause = NETWORK_ERRORS.search(out)
        if cause:
            pytest.skip(f"Airflow venv not installable: pip or uv could not reach the package index ({cause.group(0)})")
        useful = [line for line in out.splitlines() if not line.startswith("WARNING: Location")]
        pytest.fail("make airflow-venv failed:\n" + "\n".join(useful[-30:]))
    return ROOT / venv / "bin" / "python"


def _check(python, *args):
    return subprocess.run([str(python), str(CHECK), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.e2e
def test_airflow3_renders_the_night_that_just_ended(airflow_python):
    done = _check(airflow_python)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "airflow-check: passed"
    assert any("covers 2026-11-21 02:00 to 2026-11-22 02:00" in line for line in lines), lines
    for job in ("curate", "score"):
        line = next(line for line in lines if line.startswith(f"ok: {job}:"))
        assert "ds=2026-11-21 " in line and "LaunchFlexTemplateRequest" in line, line
    curate = next(line for line in lines if line.startswith("ok: curate:"))
    for part in ("date=2026-11-21", "input=gs://skin-bucket/uploads ", "output=gs://skin-bucket/curated ",
                 "reference=gs://skin-bucket/curated/_reference"):
        assert part in curate + " ", (part, curate)


@pytest.mark.e2e
def test_the_check_refuses_a_bare_cron_schedule(airflow_python, tmp_path):
    # The DAG as it was: Airflow 3 makes "0 2 * * *" a trigger timetable, so
    # the 02:00 run would curate its own, two-hour-old day.
    source = DAG.read_text()
    explicit = 'schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC")'
    assert explicit in source
    bare = tmp_path / "airflow_nightly_dag.py"
    bare.write_text(source.replace(explicit, 'schedule="0 2 * * *"'))
    done = _check(airflow_python, str(bare))
    assert done.returncode != 0
    assert "the DAG's timetable is CronTriggerTimetable, not CronDataIntervalTimetable" in done.stderr, done.stderr
