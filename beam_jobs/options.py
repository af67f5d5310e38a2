"""Pipeline options shared by several jobs.

Beam registers every PipelineOptions subclass in one global parser, so a flag
may be defined only once across all jobs; flags that several jobs take live
here, and each job's own class adds the rest.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.cli import UsageError
from transforms.allowed_roots import AllowedRoots, default_roots, parse_roots


class SharedOptions(PipelineOptions):
    """Input and output locations common to the jobs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="Glob of image files, local or gs:// (for score with --date: the root holding dt=YYYY-MM-DD/ folders).")
        parser.add_argument("--manifest", help="CSV (header with uri[,image_id][,case_id]) or JSONL listing image URIs.")
        parser.add_argument("--policy", help="Quality policy JSON (default: the packaged schemas/quality_policy.json).")
        parser.add_argument("--output", help="Output directory, local or gs://.")
        parser.add_argument("--scin_cases", help="SCIN scin_cases.csv; image_{1,2,3}_path are resolved against --image_root.")
        parser.add_argument("--allowed_roots", help="Comma-separated URI prefixes (gs://bucket/prefix or local dirs) images may be read from; other URIs, '..' paths and other schemes become dead letters with reason outside_allowed_root. Local paths are judged after resolving symlinks, and only regular files are read (not_a_regular_file otherwise). Default: the roots the job was given (--image_root, the --input glob's directory, a gs:// --manifest's bucket, a local --manifest's folder).")
        parser.add_argument("--image_root", help="Root that relative image paths are resolved against (local dir or gs:// prefix).")


def allowed_roots(options: SharedOptions) -> AllowedRoots:
    """The AllowedRoots of a job's options: --allowed_roots, else its own inputs' roots."""
    try:
        roots = parse_roots(options.allowed_roots)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return AllowedRoots(roots or default_roots(input_glob=options.input, manifest=options.manifest,
                                               image_root=options.image_root))
