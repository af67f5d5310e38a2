"""Pipeline options shared by several jobs.

Beam registers every PipelineOptions subclass in one global parser, so a flag
may be defined only once across all jobs; flags that several jobs take live
here, and each job's own class adds the rest.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class SharedOptions(PipelineOptions):
    """Input and output locations common to the jobs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="Glob of image files, local or gs:// (for score with --date: the root holding dt=YYYY-MM-DD/ folders).")
        parser.add_argument("--manifest", help="CSV (header with uri[,image_id][,case_id]) or JSONL listing image URIs.")
        parser.add_argument("--policy", help="Quality policy JSON (default: the packaged schemas/quality_policy.json).")
        parser.add_argument("--output", help="Output directory, local or gs://.")
        parser.add_argument("--scin_cases", help="SCIN scin_cases.csv; image_{1,2,3}_path are resolved against --image_root.")
        parser.add_argument("--image_root", help="Root that relative image paths are resolved against (local dir or gs:// prefix).")
