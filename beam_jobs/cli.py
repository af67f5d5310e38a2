"""What every job's entry point shares: one-line errors for bad arguments."""
from __future__ import annotations

import logging
import sys


class UsageError(ValueError):
    """Bad options or inputs, reported as one line before any work starts."""


class Refused(UsageError):
    """A run refused at run time (e.g. another run holds its output's lock).

    Raised inside the pipeline; Beam re-raises it with its type, so the entry
    point reports it as one line like a bad argument.
    """


def main(run, argv=None, prog="job") -> int:
    """Call run(argv); turn UsageError into `prog: error: ...` and exit code 2."""
    logging.getLogger().setLevel(logging.WARNING)
    try:
        run(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        refusal = _refusal_in(str(e))
        if refusal is None:
            raise
        print(f"{prog}: error: {refusal}", file=sys.stderr)
        return 2
    return 0


def _refusal_in(text: str):
    """The message of a Refused raised on a worker process: multi-process
    runners hand it back as a RuntimeError holding the worker's traceback."""
    names, todo = set(), [Refused]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    found = None
    for line in text.splitlines():
        head, sep, message = line.strip().partition(": ")
        if sep and head.rsplit(".", 1)[-1] in names:
            found = message
    return found


def runs_on_dataflow(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions
    return "dataflow" in str(options.view_as(StandardOptions).runner or "").lower()


def execute(pipeline, options, done_message: str, on_failure=None):
    """Run a built pipeline. Local runs wait and print done_message; Dataflow
    launches return once the job is submitted (a Flex Template launcher must
    not block for the job's lifetime). on_failure() runs when a local run
    fails (it releases the run's locks, so a retry need not wait them out)."""
    local = not runs_on_dataflow(options)
    try:
        result = pipeline.run()  # DirectRunner runs the whole job here
        if local:
            result.wait_until_finish()
    except BaseException:
        if local and on_failure is not None:
            on_failure()
        raise
    if local:
        print(done_message, file=sys.stderr)
    return result


def new_pipeline(options):
    """beam.Pipeline(options), with Beam's own option validation as a UsageError."""
    import apache_beam as beam
    try:
        return beam.Pipeline(options=options)
    except ValueError as e:
        if "validations errors" not in str(e):
            raise
        detail = " ".join(str(e).split(":", 1)[1].split())
        raise UsageError(f"invalid pipeline options: {detail}") from None
