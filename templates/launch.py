"""Flex Template entry point: one image, four jobs.

The Dataflow launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE in
templates/Dockerfile) as `python launch.py --job=curate --output=gs://... ...`,
one `--name=value` per template parameter. It picks the job, adapts the
parameters to the job's own command line and calls that job's `run(argv)`,
which builds the pipeline and returns once Dataflow has the job.

Why one dispatching entry rather than one file per job: the launcher finds
its script through an environment variable baked into the image, and
`gcloud dataflow flex-template build --image` cannot set environment
variables per template. One file per job would therefore need one image per
job; with a `job` parameter the four templates share one image, which is
also the workers' SDK container. Each template's metadata pins `job` to its
own name with a regex, so the curate template cannot be launched as score.

Two adaptations of the Flex Template conventions:
- Booleans arrive as `--force=true`; the jobs' flags are argparse
  store_true flags, which reject a value. `true` becomes the bare flag,
  `false` drops it.
- Workers must run this same image (it has the project and its pinned
  dependencies installed, so nothing is staged at launch). The image knows
  its own name from the build (SDK_CONTAINER_IMAGE, see build.sh), and it is
  passed as `--sdk_container_image` unless the launch sets one.

This file must run as a plain script inside the image, so it imports only the
installed packages (beam_jobs), never `templates.*`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from beam_jobs.cli import UsageError
from beam_jobs.cli import main as cli_main

# job name -> (module with run(argv), its PipelineOptions subclass)
JOBS = {
    "curate": ("beam_jobs.curate", "CurateOptions"),
    "make_tfrecords": ("beam_jobs.make_tfrecords", "MakeTFRecordsOptions"),
    "score": ("beam_jobs.score", "ScoreOptions"),
    "evaluate": ("beam_jobs.evaluate", "EvaluateOptions"),
}
JOB_FLAG = "--job"
IMAGE_ENV = "SDK_CONTAINER_IMAGE"


def job_module(job: str):
    if job not in JOBS:
        raise UsageError(f"{JOB_FLAG} {job!r} is not one of {', '.join(JOBS)}")
    return importlib.import_module(JOBS[job][0])


def options_class(job: str):
    return getattr(job_module(job), JOBS[job][1])


def option_actions(options_cls) -> dict:
    """{dest: (argparse.Action, defining class)} for the job's own options and
    the SharedOptions it inherits, read from each class's _add_argparse_args
    on a fresh parser (Beam's global parser mixes every job's options)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.io.compat import parser_actions
    found = {}
    for cls in reversed(options_cls.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, PipelineOptions)) or cls is PipelineOptions:
            continue
        if "_add_argparse_args" not in vars(cls):
            continue
        parser = argparse.ArgumentParser(add_help=False)
        cls._add_argparse_args(parser)
        for action in parser_actions(parser):
            found[action.dest] = (action, cls)
    return found


def boolean_flags(options_cls) -> set:
    from transforms.io.compat import is_flag
    return {dest for dest, (action, _) in option_actions(options_cls).items()
            if is_flag(action)}


def split_job(argv: list[str]) -> tuple[str, list[str]]:
    """(job, remaining argv) from `--job=NAME` or `--job NAME`."""
    rest, job = [], None
    args = iter(argv)
    for arg in args:
        if arg == JOB_FLAG:
            job = next(args, None)
        elif arg.startswith(JOB_FLAG + "="):
            job = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if not job:
        raise UsageError(f"{JOB_FLAG} is required: one of {', '.join(JOBS)}")
    job_module(job)  # validates the name
    return job, rest


def flex_booleans_to_flags(argv: list[str], flags: set) -> list[str]:
    """`--force=true` -> `--force`; `--force=false` -> nothing; others unchanged."""
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and name.startswith("--") and name[2:] in flags:
            if value.strip().lower() == "true":
                out.append(name)
            elif value.strip().lower() != "false":
                raise UsageError(f"{name} takes true or false, got {value!r}")
        else:
            out.append(arg)
    return out


def _has_flag(argv: list[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def _on_dataflow(argv: list[str]) -> bool:
    runner = [a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
              for i, a in enumerate(argv) if a == "--runner" or a.startswith("--runner=")]
    return any("dataflow" in r.lower() for r in runner)


def with_worker_image(argv: list[str], image: str | None) -> list[str]:
    """Add --sdk_container_image=image unless set; on Dataflow one is required."""
    if _has_flag(argv, "--sdk_container_image"):
        return argv
    if image:
        return argv + [f"--sdk_container_image={image}"]
    if _on_dataflow(argv):
        raise UsageError("no --sdk_container_image and no SDK_CONTAINER_IMAGE in the image: "
                         "workers would lack this project's packages (build with templates/build.sh)")
    return argv


def job_argv(job: str, argv: list[str], image: str | None = None) -> list[str]:
    """The argv the job's run() gets for a Flex Template launch's parameters."""
    argv = flex_booleans_to_flags(argv, boolean_flags(options_class(job)))
    return with_worker_image(argv, image)


def launch(argv: list[str], image: str | None = None):
    """Run the job named by --job with the remaining parameters; returns its result."""
    job, rest = split_job(argv)
    return job_module(job).run(job_argv(job, rest, image))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    image = os.environ.get(IMAGE_ENV) or None
    try:
        job, rest = split_job(argv)
    except UsageError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2
    return cli_main(lambda a: job_module(job).run(job_argv(job, a, image)), rest, prog=job)


if __name__ == "__main__":
    sys.exit(main())
