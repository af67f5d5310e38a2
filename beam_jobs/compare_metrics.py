"""compare_metrics: headline differences of two evaluate reports on the same fingerprinted set.

Run: python -m beam_jobs.compare_metrics NEW_OUT[/metrics.json] OLD_OUT[/metrics.json]

Prints NEW - OLD for each headline figure of the reports' `model`. Reports of
different example sets (fingerprints) are refused in one line. Point values
only: intervals of a difference need both models on the examples, which is
one evaluate run with --compare_model_uri.
"""
from __future__ import annotations

import sys

from beam_jobs.cli import OneLineParser, UsageError, main


def run(argv=None) -> list[str]:
    """Print and return the comparison lines; UsageError if the reports cannot be compared."""
    from schemas import metrics as M
    from transforms.evaluation.report import compare_reports
    p = OneLineParser(prog="python -m beam_jobs.compare_metrics", description=__doc__.splitlines()[0])
    p.add_argument("new", help="metrics.json (or the evaluate output folder) of the new model")
    p.add_argument("old", help="metrics.json (or folder) of the model it is compared with")
    o = p.parse_args(argv)
    try:
        lines = compare_reports(M.load(o.new), M.load(o.old))
    except ValueError as e:  # NotComparable too
        raise UsageError(str(e)) from None
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    sys.exit(main(run, prog="compare_metrics"))
