"""Load templates/airflow_nightly_dag.py in real Airflow and render a scheduled run.

Runs inside the Airflow venv that `make airflow-check` builds
(templates/airflow-requirements.txt), never in the project's venv: Airflow's
pins conflict with Beam's. It checks what the scheduler and a worker do:

1. `DagBag` parses the file without import errors (the Google and Apache Beam
   providers are installed as a Composer environment would have them);
2. the serialized DAG, which is what the scheduler reads, has a
   `CronDataIntervalTimetable("0 2 * * *", UTC)`, and the run it schedules at
   2026-11-22 02:00 UTC has the logical date 2026-11-21 (a bare cron string
   would not: that is checked too, so the reason for the explicit timetable
   stays true on the Airflow version pinned);
3. each task's templates are rendered the way a worker renders them (the Task
   SDK's `RuntimeTaskInstance` with the run's context from the API server,
   Airflow Variables from `AIRFLOW_VAR_*`), and the rendered request parses as
   a `google.cloud.dataflow_v1beta3.LaunchFlexTemplateRequest` whose
   parameters pass the Flex Template metadata's regexes.

Exits 0 and prints one line per check, or fails with an assertion naming what
differs. Usage: `python templates/check_airflow_dag.py [DAG_FILE]` (default:
the DAG beside this file; the make target sets up the venv).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import re
import sys
import tempfile
import uuid

HERE = pathlib.Path(__file__).resolve().parent
DAG_FILE = HERE / "airflow_nightly_dag.py"
DAG_ID = "skin_images_nightly"
UTC = dt.timezone.utc
# The night under test: the run that starts at 02:00 UTC on 2026-11-22.
RUN_AFTER = dt.datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
DAY = "2026-11-21"  # the day that has just ended, which that run processes
VARIABLES = {"skin_project": "my-project", "skin_region": "us-central1",
             "skin_bucket": "skin-bucket", "skin_model_uri": "gs://skin-bucket/models/m1"}


def _isolate(home: str) -> None:
    """A throwaway AIRFLOW_HOME (never the caller's config or DAGs folder), no
    example DAGs, the Variables from the environment as a worker reads them.
    Set before the first `import airflow`, which reads them."""
    os.environ.pop("AIRFLOW_CONFIG", None)
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(HERE)
    for key, value in VARIABLES.items():
        os.environ[f"AIRFLOW_VAR_{key.upper()}"] = value


def load_dag(path: pathlib.Path):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    assert set(bag.dags) == {DAG_ID}, set(bag.dags)
    return bag.dags[DAG_ID]


def scheduler_view(dag):
    """The DAG as the scheduler sees it: serialized, then deserialized."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def run_due_at(scheduler_dag, when: dt.datetime):
    """The DagRunInfo the scheduler creates for the run due at `when`: its next
    run after the night before's (as if it were `when` now)."""
    nights = list(scheduler_dag.iter_dagrun_infos_between(when - dt.timedelta(days=3), when))
    before = [i for i in nights if i.run_after < when][-1]
    info = scheduler_dag.next_dagrun_info(last_automated_run_info=before, restricted=False)
    assert info.run_after == when, info
    return info


def check_timetable(scheduler_dag) -> None:
    from airflow.sdk import DAG
    from airflow.timetables.interval import CronDataIntervalTimetable

    timetable = scheduler_dag.timetable
    assert type(timetable) is CronDataIntervalTimetable, \
        f"the DAG's timetable is {type(timetable).__name__}, not CronDataIntervalTimetable"
    assert timetable.serialize() == {"expression": "0 2 * * *", "timezone": "UTC"}, timetable.serialize()
    # Why the DAG names its timetable: on this Airflow a bare cron string is a
    # trigger timetable, whose run at 02:00 has that same day as its ds.
    bare = scheduler_view(DAG("bare", schedule="0 2 * * *", start_date=scheduler_dag.start_date))
    info = run_due_at(bare, RUN_AFTER)
    assert info.logical_date.date().isoformat() == "2026-11-22", info


def render(dag, info) -> dict[str, dict]:
    """Render each task's templated fields as a worker does for this run."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk.api.datamodels._generated import DagRun as RunFromServer
    from airflow.sdk.api.datamodels._generated import TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    run_id = DagRun.generate_run_id(run_type=DagRunType.SCHEDULED, logical_date=info.logical_date,
                                    run_after=info.run_after)
    run = RunFromServer(
        dag_id=dag.dag_id, run_id=run_id, logical_date=info.logical_date,
        data_interval_start=info.data_interval.start, data_interval_end=info.data_interval.end,
        run_after=info.run_after, start_date=info.run_after, end_date=None,
        run_type=DagRunType.SCHEDULED, state=DagRunState.RUNNING, conf={},
        consumed_asset_events=[], partition_key=None)
    rendered = {}
    for task in dag.tasks:
        ti = RuntimeTaskInstance.model_construct(
            id=uuid.uuid4(), task_id=task.task_id, dag_id=dag.dag_id, run_id=run_id, try_number=1,
            dag_version_id=uuid.uuid4(), map_index=-1, task=task, max_tries=task.retries,
            start_date=info.run_after,
            _ti_context_from_server=TIRunContext(dag_run=run, max_tries=task.retries))
        context = ti.get_template_context()
        ti.render_templates(context)
        rendered[task.task_id] = {"context": context,
                                  **{f: getattr(task, f) for f in task.template_fields}}
    return rendered


def metadata_regexes(job: str) -> dict[str, list[str]]:
    meta = json.loads((HERE / job / "metadata.json").read_text())
    return {p["name"]: p.get("regexes", []) for p in meta["parameters"]}


def check_request(job: str, fields: dict) -> dict[str, str]:
    """The rendered `body` is the flexTemplates.launch request body: the
    LaunchFlexTemplateRequest without its path parameters (project, location)."""
    from google.cloud.dataflow_v1beta3 import LaunchFlexTemplateRequest

    body = fields["body"]
    assert set(body) == {"launchParameter"}, set(body)
    request = LaunchFlexTemplateRequest.from_json(
        json.dumps({"projectId": fields["project_id"], "location": fields["location"], **body}))
    assert request.project_id == VARIABLES["skin_project"] and request.location == VARIABLES["skin_region"]
    launch = request.launch_parameter
    assert launch.container_spec_gcs_path == f"gs://skin-bucket/templates/{job}.json", launch
    assert launch.job_name == f"{job}-{DAY.replace('-', '')}", launch.job_name
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", launch.job_name)  # Dataflow's job name rule
    parameters = dict(launch.parameters)
    regexes = metadata_regexes(job)
    for name, value in parameters.items():
        assert name in regexes, f"{job}: {name} is not a parameter of the template"
        for regex in regexes[name]:
            assert re.search(regex, value), f"{job}: {name}={value!r} fails the metadata regex {regex}"
    return parameters


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        sys.exit("usage: check_airflow_dag.py [DAG_FILE]")
    path = pathlib.Path(argv[0]) if argv else DAG_FILE
    if not path.is_file():
        sys.exit(f"check_airflow_dag: no such DAG file: {path}")
    with tempfile.TemporaryDirectory(prefix="airflow-check-") as home:
        _isolate(home)
        return check(path)


def check(path: pathlib.Path) -> int:
    dag = load_dag(path)
    print(f"ok: DagBag loaded {DAG_ID} from {path.name} with no import errors")
    scheduler_dag = scheduler_view(dag)
    check_timetable(scheduler_dag)
    info = run_due_at(scheduler_dag, RUN_AFTER)
    assert info.logical_date == dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC), info
    assert (info.data_interval.start, info.data_interval.end) == (info.logical_date, RUN_AFTER), info
    print(f"ok: timetable {scheduler_dag.timetable.summary} UTC (data interval); the run at {RUN_AFTER:%Y-%m-%d %H:%M} "
          f"covers {info.data_interval.start:%Y-%m-%d %H:%M} to {info.data_interval.end:%Y-%m-%d %H:%M}")

    rendered = render(dag, info)
    assert set(rendered) == {"curate", "score"}
    assert dag.get_task("score").upstream_task_ids == {"curate"}
    run_id = "scheduled__2026-11-22T02:00:00+00:00"
    for job, fields in rendered.items():
        context = fields["context"]
        assert context["ds"] == DAY, context["ds"]
        assert context["run_id"] == run_id, context["run_id"]
        parameters = check_request(job, fields)
        assert parameters["job"] == job and parameters["run_id"] == run_id, parameters
        print(f"ok: {job}: ds={context['ds']} run_id={run_id} body parses as LaunchFlexTemplateRequest; "
              + " ".join(f"{k}={v}" for k, v in parameters.items() if k not in ("job", "run_id")))
    curate = rendered["curate"]["body"]["launchParameter"]["parameters"]
    assert curate["date"] == DAY and curate["input"] == "gs://skin-bucket/uploads", curate
    assert curate["output"] == "gs://skin-bucket/curated", curate
    assert curate["reference"] == "gs://skin-bucket/curated/_reference", curate
    score = rendered["score"]["body"]["launchParameter"]["parameters"]
    assert score["date"] == DAY and score["input"] == "gs://skin-bucket/uploads", score
    assert score["model_uri"] == VARIABLES["skin_model_uri"] and score["output"] == "gs://skin-bucket/scores"
    print("airflow-check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
