"""Airflow DAG for the nightly chain: curate the day's uploads, then score them.

Copy this file into the Composer/Airflow DAGs folder. The Airflow environment
needs apache-airflow-providers-google (the Dataflow operators) AND
apache-airflow-providers-apache-beam (which the Google provider's Dataflow
module imports); templates/airflow-requirements.txt pins a verified set
(Airflow 3.3). Airflow is not a dependency of this project: `make
airflow-check` loads this file in a venv of its own (see
templates/check_airflow_dag.py). Set the Airflow Variables `skin_project`,
`skin_region`, `skin_bucket` and `skin_model_uri`; the templates come from
templates/build.sh.

Dates: the DAG runs daily at 02:00 UTC, and `{{ ds }}` is the start of the
run's data interval, i.e. the day that has just ended: the run at 2026-11-22
02:00 curates and scores dt=2026-11-21. The timetable is explicit because a
bare `schedule="0 2 * * *"` means a CronTriggerTimetable on Airflow 3, whose
logical date is the trigger time itself (that run would get ds=2026-11-22, a
day only two hours old), while Airflow 2 made it a data-interval timetable.
Backfills and reruns of a past day get that day's date. curate writes the
night into curated/dt=DS/ and checks its uploads against the images accepted
on earlier nights (`reference`, beam_jobs/curate.py); a night already
complete is skipped (a cleared task reruns nothing), and with
max_active_runs=1 a backfill runs the nights in date order, so each night is
matched against the nights before it, as the nightly runs were.
The score task starts only after the curate job has finished
(`wait_until_finished`), so a failed or cancelled curate stops the night's
scoring. The tasks block a worker slot while their job runs rather than
defer: the Google provider's deferrable trigger (22.8) does not end on a
cancelled job, and deferring needs a triggerer in the environment.
Both pass `run_id={{ run_id }}` (the same in every try of a DAG run): a retry
takes over the output lock its failed try left, while a hand-started run or
another DAG run into the same output is refused until the first is done.
"""
from __future__ import annotations

import datetime

try:  # Airflow 3: the Task SDK is the DAG author's API
    from airflow.sdk import DAG, CronDataIntervalTimetable
except ImportError:  # Airflow 2.2+
    from airflow import DAG
    from airflow.timetables.interval import CronDataIntervalTimetable
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

# Jinja, rendered by Airflow at run time (`body`, `project_id` and `location`
# are templated fields of the operator).
PROJECT = "{{ var.value.skin_project }}"
REGION = "{{ var.value.skin_region }}"

with DAG(
    dag_id="skin_images_nightly",
    description="curate the day's uploads, then score them (Dataflow Flex Templates)",
    # The run at 02:00 covers the 24 h before it, and ds is that day.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=10)},
    tags=["dataflow", "skin-images"],
) as dag:
    curate = DataflowStartFlexTemplateOperator(
        task_id="curate",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "curate-{{ ds_nodash }}",
                "containerSpecGcsPath": "gs://{{ var.value.skin_bucket }}/templates/curate.json",
                "parameters": {
                    "job": "curate",
                    "input": "gs://{{ var.value.skin_bucket }}/uploads",
                    "date": "{{ ds }}",
                    "output": "gs://{{ var.value.skin_bucket }}/curated",
                    "reference": "gs://{{ var.value.skin_bucket }}/curated/_reference",
                    "run_id": "{{ run_id }}",
                },
            },
        },
    )

    score = DataflowStartFlexTemplateOperator(
        task_id="score",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "score-{{ ds_nodash }}",
                "containerSpecGcsPath": "gs://{{ var.value.skin_bucket }}/templates/score.json",
                "parameters": {
                    "job": "score",
                    "input": "gs://{{ var.value.skin_bucket }}/uploads",
                    "date": "{{ ds }}",
                    "model_uri": "{{ var.value.skin_model_uri }}",
                    "output": "gs://{{ var.value.skin_bucket }}/scores",
                    "run_id": "{{ run_id }}",
                },
            },
        },
    )

    curate >> score
