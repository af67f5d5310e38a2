"""What every job's entry point shares: one-line errors for bad arguments."""
from __future__ import annotations

import logging
import os
import sys


class UsageError(ValueError):
    """Bad options or inputs, reported as one line before any work starts."""


class JobFailed(RuntimeError):
    """The job ran but refuses to publish (e.g. nothing to train on): one line,
    exit code 1, and no completion marker. Raised inside the pipeline."""


def _job_failed_line(error: BaseException) -> str | None:
    """JobFailed's message, also when a multi-process runner re-raised it as a
    RuntimeError carrying the worker's traceback text."""
    if isinstance(error, JobFailed):
        return str(error)
    lines = [l for l in str(error).splitlines() if "JobFailed: " in l]
    return lines[-1].split("JobFailed: ", 1)[1].strip() if lines else None


def _not_job_failed(record) -> bool:
    if record.exc_info and _job_failed_line(record.exc_info[1]) is not None:
        return False
    try:
        return "JobFailed: " not in record.getMessage()
    except Exception:  # a malformed record is the handler's to report, not the filter's
        return True


def main(run, argv=None, prog="job") -> int:
    """Call run(argv); turn UsageError into `prog: error: ...` and exit code 2,
    JobFailed into the same one line and exit code 1."""
    logging.basicConfig()
    logging.getLogger().setLevel(logging.WARNING)
    # Beam logs a failing DoFn's traceback (and a worker's, in multi-process
    # runs) before re-raising; for JobFailed the one line below says it all.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_job_failed)
    logging.getLogger("apache_beam.runners.common").addFilter(_not_job_failed)
    try:
        run(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        line = _job_failed_line(e)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 1
    return 0


def runs_on_dataflow(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions
    return "dataflow" in str(options.view_as(StandardOptions).runner or "").lower()


def execute(pipeline, options, done_message: str):
    """Run a built pipeline. Local runs wait and print done_message; Dataflow
    launches return once the job is submitted (a Flex Template launcher must
    not block for the job's lifetime)."""
    result = pipeline.run()
    if not runs_on_dataflow(options):
        result.wait_until_finish()
        print(done_message, file=sys.stderr)
    return result


def check_output(output) -> None:
    """UsageError unless a local --output is, or can be made, a writable folder.

    Otherwise the job would read and analyse everything and only fail at its
    first write. gs:// outputs are not probed (a Dataflow launch lists nothing).
    """
    if not output or "://" in output:
        return
    path = os.path.abspath(output)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--output {output} is a file, not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--output {output}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: {existing} is not writable")


def new_pipeline(options):
    """beam.Pipeline(options), with Beam's own option validation as a UsageError.

    Also checks a local --output (check_output), so every job fails on an
    unusable output before any work."""
    import apache_beam as beam
    check_output(getattr(options, "output", None))
    try:
        return beam.Pipeline(options=options)
    except ValueError as e:
        if "validations errors" not in str(e):
            raise
        detail = " ".join(str(e).split(":", 1)[1].split())
        raise UsageError(f"invalid pipeline options: {detail}") from None
