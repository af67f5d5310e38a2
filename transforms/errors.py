"""The errors every job reports as one line (beam_jobs/cli.py prints them).

Defined here, below the jobs, so that transforms raising them at run time
(run_lock's LockHeld, a refused read) depend on nothing above them.
"""
from __future__ import annotations


class UsageError(ValueError):
    """Bad options or inputs, reported as one line before any work starts."""


class Refused(UsageError):
    """A run refused at run time (e.g. another run holds its output's lock).

    Raised inside the pipeline; Beam re-raises it with its type, so the entry
    point reports it as one line like a bad argument.
    """


class JobFailed(RuntimeError):
    """The job ran but refuses to publish (e.g. nothing to train on): one line,
    exit code 1, and no completion marker. Raised inside the pipeline."""
