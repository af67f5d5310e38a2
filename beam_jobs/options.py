"""Pipeline options shared by several jobs.

Beam registers every PipelineOptions subclass in one global parser, so a flag
may be defined only once across all jobs; flags that several jobs take live
here, and each job's own class adds the rest.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import functools
import re
import sys
from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.cli import UsageError, check_output_name
from transforms.io.allowed_roots import AllowedRoots, default_roots, parse_roots
from transforms.io.compat import add_action, beam_argument_parser_class, parser_actions

_BeamArgumentParser = beam_argument_parser_class()


class _OneLineParser(_BeamArgumentParser):
    """argparse prints the whole usage and exits; the jobs report one line."""

    def error(self, message):
        if message.startswith("ambiguous option: "):
            return  # as Beam's parser: not an error with allow_abbrev=False
        raise UsageError(message)


# --help lists a job's options under these headings (in this order); an
# option not named here goes under "policy / model". Beam's own flags are
# accepted but only RUNNER_FLAGS are listed.
HELP_GROUPS = {
    "inputs": ("input", "manifest", "scin_cases", "image_root", "allowed_roots", "curated", "reference",
               "scin_labels", "labels_csv", "date", "start_date", "end_date", "tfrecords", "split"),
    "outputs": ("output", "rows_per_shard", "examples_per_reason", "target_shard_mb", "compression", "tfds"),
    "policy / model": (),
    "run control / locks": ("run_id", "lock_ttl_hours", "break_lock", "force", "allow_empty",
                            "min_batch_size", "max_batch_size", "prepare_threads", "share_model"),
}
RUNNER_FLAGS = ("runner", "project", "region", "temp_location", "staging_location",
                "direct_num_workers", "direct_running_mode")
# Beam's own help for these lists every runner or says little; shorter and
# what the jobs do with them (beam_jobs.cli.use_cores).
RUNNER_HELP = {
    "runner": "DirectRunner (default: on this machine) or DataflowRunner; any Beam runner name.",
    "direct_num_workers": "Local workers (curate: one per core by default).",
    "direct_running_mode": "How local workers run.",
    "region": "Dataflow region.",
}


def print_help(options_cls) -> None:
    """The job's usage: its own and shared options grouped, a few runner flags."""
    import argparse
    module = sys.modules[options_cls.__module__]
    spec = getattr(module, "__spec__", None)  # run as `python -m`: the module is __main__
    name = spec.name if spec is not None else options_cls.__module__
    doc = (module.__doc__ or "").strip().splitlines()
    help_parser = argparse.ArgumentParser(
        prog=f"python -m {name}", usage="%(prog)s [options]", description=doc[0] if doc else None,
        epilog="Other Beam pipeline options (e.g. --max_num_workers, --setup_file, "
               "--service_account_email) are accepted and passed to Beam.")
    groups = {h: help_parser.add_argument_group(h) for h in (*HELP_GROUPS, "runner (Beam)")}
    heading = {dest: h for h, dests in HELP_GROUPS.items() for dest in dests}
    own = _BeamArgumentParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in reversed(options_cls.__mro__):
        if isinstance(cls, type) and issubclass(cls, PipelineOptions) and "_add_argparse_args" in vars(cls):
            cls._add_argparse_args(own)
    ignored = set(options_cls.ignored_shared()) if issubclass(options_cls, SharedOptions) else set()
    for action in parser_actions(own):
        if action.dest not in ignored:
            add_action(groups[heading.get(action.dest, "policy / model")], action)
    beam = _BeamArgumentParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in _all_subclasses(PipelineOptions):
        if not issubclass(cls, SharedOptions) and "_add_argparse_args" in vars(cls):
            cls._add_argparse_args(beam)
    runner = {a.dest: a for a in parser_actions(beam) if a.dest in RUNNER_FLAGS}
    for dest in RUNNER_FLAGS:
        if dest in runner:
            action = copy.copy(runner[dest])
            action.help = RUNNER_HELP.get(dest, action.help)
            add_action(groups["runner (Beam)"], action)
    help_parser.print_help()


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def check_flags(options_cls, flags) -> None:
    """UsageError for a flag neither Beam nor the job defines, or a bad value.

    Beam only warns about unknown flags and runs with defaults, so a
    misspelled `--dup_raduis 3` would silently do nothing. Known flags are
    Beam's registered options plus the job's own classes; other jobs' options
    (registered in the same global parser once imported) do not count.
    """
    if "-h" in flags or "--help" in flags:
        print_help(options_cls)
        raise SystemExit(0)
    parser = _OneLineParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    own = [c for c in reversed(options_cls.__mro__) if isinstance(c, type) and issubclass(c, PipelineOptions)]
    beam = [c for c in _all_subclasses(PipelineOptions) if not issubclass(c, SharedOptions)]
    for cls in beam + own:  # own last: its types and choices win
        if "_add_argparse_args" in vars(cls):
            cls._add_argparse_args(parser)
    given, unknown = parser.parse_known_args(flags)
    for dest in options_cls.ignored_shared() if issubclass(options_cls, SharedOptions) else ():
        if getattr(given, dest, None) is not None:
            raise UsageError(f"--{dest} is not an option of this job (it would be ignored)")
    for arg in unknown:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if not name.startswith("-"):
            raise UsageError(f"unexpected argument {arg!r} (options are --name value or --name=value)")
        known = [s for a in parser_actions(parser) for s in a.option_strings]
        # `--analysis-size` is meant as `--analysis_size`: compare with dashes as underscores.
        close = difflib.get_close_matches("--" + name.lstrip("-").replace("-", "_"), known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"unknown option {name}{hint}")


class SharedOptions(PipelineOptions):
    """Input and output locations common to the jobs.

    Constructing a job's options checks its flags (check_flags): an unknown
    flag or a bad value is a one-line UsageError, not a warning.
    """

    # The SharedOptions flags this job reads: the one list both the flag check
    # (any other shared flag is an error, not a silent no-op) and its Flex
    # Template's parameters (templates/metadata.py) come from.
    reads: tuple = ()

    @classmethod
    def ignored_shared(cls) -> tuple:
        """SharedOptions flags the job never reads."""
        return tuple(d for d in shared_flags() if d not in cls.reads)

    def __init__(self, flags=None, **kwargs):
        check_flags(type(self), sys.argv[1:] if flags is None else list(flags))
        super().__init__(flags, **kwargs)

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="Glob of image files, local or gs:// (with --date or --start_date: the root holding dt=YYYY-MM-DD/ folders).")
        parser.add_argument("--manifest", help="CSV (header with uri[,image_id][,case_id]) or JSONL listing image URIs.")
        parser.add_argument("--policy", help="Quality policy JSON (default: the packaged schemas/quality_policy.json).")
        parser.add_argument("--output", help="Output directory, local or gs://.")
        parser.add_argument("--scin_cases", help="SCIN scin_cases.csv; image_{1,2,3}_path are resolved against --image_root.")
        parser.add_argument("--allowed_roots", help="Comma-separated URI prefixes (gs://bucket/prefix or local dirs) images may be read from; other URIs, '..' paths and other schemes become dead letters with reason outside_allowed_root. Local paths are judged after resolving symlinks, and only regular files are read (not_a_regular_file otherwise). Default: the roots the job was given (--image_root, the --input glob's directory, a gs:// --manifest's bucket, a local --manifest's folder).")
        parser.add_argument("--image_root", help="Root that relative image paths are resolved against (local dir or gs:// prefix).")


@functools.cache
def shared_flags() -> tuple:
    """The flags SharedOptions defines, in order, read from its own definition."""
    parser = argparse.ArgumentParser(add_help=False)
    SharedOptions._add_argparse_args(parser)
    return tuple(a.dest for a in parser_actions(parser))


@dataclass(frozen=True)
class JobSpec:
    """Which of a job's options are needed, once: the job's validation checks
    it (check_spec) and its Flex Template says it (templates/metadata.py).
    Template metadata has only "optional or not", so one-of groups and
    conditional needs become optional parameters whose help text says the rule."""
    required: tuple          # rejected when missing, whatever else is given
    one_of: tuple = ()       # groups: at least one member is needed
    needs: dict = field(default_factory=dict)  # option -> options it is rejected without
    notes: dict = field(default_factory=dict)  # extra help text per option (rules the job checks itself)
    # The error line of a rule, where the generic one says too little:
    # "one_of" (the first group), "required", or "OPTION->NEEDED".
    messages: dict = field(default_factory=dict)


def _given(o, dest: str) -> bool:
    # By identity: a value of 0 (e.g. --jpeg_quality 0) is given, though 0 == False.
    value = getattr(o, dest, None)
    return not (value is None or value is False or value == "")


def check_spec(o, spec: JobSpec) -> None:
    """UsageError, one line, for the first rule of `spec` that `o` breaks:
    one-of groups, then conditional needs, then required options."""
    for i, group in enumerate(spec.one_of):
        if not any(_given(o, d) for d in group):
            raise UsageError(spec.messages.get("one_of" if i == 0 else f"one_of{i}",
                                               "give at least one of " + ", ".join(f"--{d}" for d in group)))
    for option, needed in spec.needs.items():
        if _given(o, option):
            for n in needed:
                if not _given(o, n):
                    raise UsageError(spec.messages.get(f"{option}->{n}", f"--{option} needs --{n}"))
    missing = [d for d in spec.required if not _given(o, d)]
    if missing:
        names = [f"--{d}" for d in missing]
        generic = (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]) + \
            (" is required" if len(names) == 1 else " are required")
        raise UsageError(spec.messages.get("required", generic))


class LockOptions(PipelineOptions):
    """One run at a time per output (transforms/io/run_lock.py); every job takes these."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--run_id", help="Name of this run in its output lock (default: a fresh id). A retry of a failed run given the same --run_id (e.g. Airflow's run id) takes over the lock the failed attempt left.")
        parser.add_argument("--lock_ttl_hours", type=float, default=24.0, help="A lock on the output older than this many hours is stale: its run is taken to be dead and the lock is taken over.")
        parser.add_argument("--break_lock", action="store_true", default=False, help="Take over the output's lock whoever holds it (only when that run is known to be dead).")


class DateOptions(PipelineOptions):
    """Date partitions (transforms/io/partitions.py), for the nightly jobs (score, curate):
    one night or a backfill range of dt=YYYY-MM-DD/ folders under --input,
    each published once; a complete partition is skipped unless --force."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--date", help="One night: dt=YYYY-MM-DD under --input (or today, yesterday; UTC).")
        parser.add_argument("--start_date", help="Backfill: first date, inclusive (as --date).")
        parser.add_argument("--end_date", help="Backfill: last date, inclusive (as --date).")
        parser.add_argument("--force", action="store_true", default=False, help="Redo complete partitions (score: of this model).")
        parser.add_argument("--allow_empty", action="store_true", default=False, help="Mark a date whose dt= folder holds no images complete (score: accept a manifest listing none); without it the job fails naming it. A date with no dt= folder (on GCS, no dt=D/ placeholder object) is never complete.")


def lock_options(options: LockOptions) -> dict:
    """The lock settings of a job's options, checked; UsageError if bad (also
    for an --output the lock could not be listed in: check_output_name)."""
    check_output_name(getattr(options, "output", None))
    if not 0 < options.lock_ttl_hours < float("inf"):   # nan too: a lock that never went stale
        raise UsageError(f"--lock_ttl_hours must be a positive number of hours, got {options.lock_ttl_hours}")
    if options.run_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:+=@-]{1,200}", options.run_id):
        raise UsageError(f"--run_id {options.run_id!r}: use letters, digits and _.:+=@- only")
    return {"ttl_hours": options.lock_ttl_hours, "break_lock": bool(options.break_lock)}


def load_model_info(model_uri: str, flag: str | None = None) -> dict:
    """The bundle's model_info.json, validated, with the model probed on one
    zero batch of its image_settings() size; UsageError (naming --flag when
    given) if unusable. score and evaluate both load their models through this."""
    from schemas.model_bundle import image_settings, load_bundle
    from transforms.scoring.inference import probe_model
    try:
        model, info = load_bundle(model_uri)
        probe_model(model, image_settings(info)["image_size"], len(info["label_vocabulary"]))
    except ValueError as e:
        raise UsageError(f"--{flag} {e}" if flag else str(e)) from None
    return info


def allowed_roots(options: SharedOptions) -> AllowedRoots:
    """The AllowedRoots of a job's options: --allowed_roots, else its own inputs' roots.

    A dated run's --input is the folder holding the dt= folders: the root is
    that folder, not the folder above it (which a symlink in a night could
    then reach)."""
    try:
        roots = parse_roots(options.allowed_roots)
    except ValueError as e:
        raise UsageError(str(e)) from None
    dated = getattr(options, "date", None) or getattr(options, "start_date", None)
    return AllowedRoots(roots or default_roots(input_glob=None if dated else options.input,
                                               input_root=options.input if dated else None,
                                               manifest=options.manifest, image_root=options.image_root))
