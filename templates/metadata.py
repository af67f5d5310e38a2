"""Generate each job's Flex Template metadata.json from its option definitions.

    python -m templates.metadata            write templates/{curate,make_tfrecords,score,evaluate}/metadata.json
    python -m templates.metadata --check    exit 1 if a committed file differs from a fresh one
    (--dir DIR: read/write DIR/JOB/metadata.json instead of templates/)

Every parameter's name, help text, default and type come from the job's
PipelineOptions classes (templates.launch.option_actions), so the templates
cannot drift from the jobs: which shared flags a job takes (`reads`) and which
options it needs (`spec`: required, one-of groups, conditional needs) are its
options class's, the same ones its validation checks. What the option
definitions cannot say is written here: the value rules (regexes) for strings
and the console's widget for each path.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import re
import sys

from beam_jobs.cli import seed_arg
from templates.launch import JOB_FLAG, JOBS, option_actions, options_class
from transforms.io.compat import is_flag

HERE = pathlib.Path(__file__).resolve().parent

# Value rules. Every regex is anchored with ^...$ and is meant as a whole-value
# match: the console's JavaScript (RegExp.test, no m flag) and RE2 give `$`
# that meaning, and in Python the tests and tools apply them with
# re.fullmatch (`matches` below). Python's re.search/re.match would let `$`
# match before a trailing newline; `\A...\Z` would fix that in Python but is
# not JavaScript (`\A` is a literal "A" there), so the anchors stay ^...$.
# A bucket name (3-222 characters of a-z0-9._-, starting and ending with a
# letter or digit), then an optional object path or glob on one line.
GCS_PATH = r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\n\r]*)?$"
POSITIVE_INT = r"^[1-9][0-9]*$"
NON_NEGATIVE_INT = r"^(0|[1-9][0-9]*)$"
PERCENT = r"^([1-9][0-9]?|100)$"
POSITIVE_NUMBER = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]*\.[0-9]*[1-9][0-9]*)$"
NON_NEGATIVE_NUMBER = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)$"
UNIT_FRACTION = r"^(0?\.[0-9]*[1-9][0-9]*|1(\.0+)?)$"  # in (0, 1]
AT_LEAST_1000 = r"^[1-9][0-9]{3,}$"  # evaluate's bootstrap resamples
# 0 .. 2**32 - 1 (beam_jobs.cli.seed_arg), digit by digit
SEED = (r"^(0|[1-9][0-9]{0,8}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}"
        r"|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5])$")
BOOLEAN = r"^(true|false)$"
_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
# Dates may also be relative to the launch, for schedulers that cannot
# template dates (Cloud Scheduler); see cloud_scheduler_score.json. The job
# itself refuses days a month lacks (2026-02-30).
DATE_OR_RELATIVE = rf"^({_DATE}|yesterday|today)$"
_FRACTION = r"(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)"  # a decimal in [0, 1]
FRACTIONS = rf"^{_FRACTION},{_FRACTION},{_FRACTION}$"  # the job checks the sum is 1
FRACTION = rf"^{_FRACTION}$"
RUN_ID = r"^[A-Za-z0-9_.:+=@-]{1,200}$"  # what beam_jobs.options.lock_options accepts (Airflow run ids fit)

# On Dataflow every location is a gs:// path (the launcher and the workers
# share no local disk). The console's picker for each: what the job does with it.
READ_FILE, READ_FOLDER, WRITE_FOLDER = "GCS_READ_FILE", "GCS_READ_FOLDER", "GCS_WRITE_FOLDER"
PATH_TYPES = {"input": READ_FILE, "manifest": READ_FILE, "policy": READ_FILE, "output": WRITE_FOLDER,
              "scin_cases": READ_FILE, "image_root": READ_FOLDER, "curated": READ_FOLDER,
              "scin_labels": READ_FILE, "labels_csv": READ_FILE, "model_uri": READ_FOLDER,
              "tfrecords": READ_FOLDER, "compare_model_uri": READ_FOLDER,
              "reference": WRITE_FOLDER}  # curate reads the index and appends to it
# Where one job uses a shared path differently: score's --input is the root
# holding dt=YYYY-MM-DD/ folders, not curate's glob of files.
JOB_PATH_TYPES = {("score", "input"): READ_FOLDER}
PATH_OPTIONS = set(PATH_TYPES)
_GCS_PREFIX = r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^,\n\r]*)?"
GCS_PREFIXES = rf"^{_GCS_PREFIX}(,{_GCS_PREFIX})*$"  # --allowed_roots: comma-separated
STRING_RULES = {"allowed_roots": GCS_PREFIXES, "date": DATE_OR_RELATIVE, "start_date": DATE_OR_RELATIVE, "end_date": DATE_OR_RELATIVE,
                "split_fractions": FRACTIONS, "run_id": RUN_ID,
                "split": r"^(train|validation|test|unlabeled)$"}  # make_tfrecords' split names
# Numbers are positive unless listed here (what each job's validation accepts).
NUMBER_RULES = {"dup_radius": NON_NEGATIVE_INT, "examples_per_reason": NON_NEGATIVE_INT,
                "jpeg_quality": PERCENT, "crop_fraction": UNIT_FRACTION,
                "min_label_weight": FRACTION, "seed": SEED,
                "bootstrap_resamples": AT_LEAST_1000, "parity_tolerance": NON_NEGATIVE_INT}
# The CLI takes local paths too; a template (Dataflow) takes only gs://, and
# its help says so.
LOCAL_PHRASES = ((r"\blocal or gs://", "gs://"), (r"\blocal dir or gs:// prefix", "gs:// prefix"))


NUMBER_TYPES = (int, float, seed_arg)


def matches(regex: str, value: str) -> bool:
    """A template regex applied as the console applies it: to the whole value."""
    return re.fullmatch(regex, value) is not None


def template_help(dest: str, text: str) -> str:
    """The CLI help of an option as a template says it: paths are gs:// only."""
    if dest not in PATH_OPTIONS:
        return text
    for phrase, replacement in LOCAL_PHRASES:
        text = re.sub(phrase, replacement, text)
    if re.search(r"\blocal\b", text):
        raise ValueError(f"--{dest}: help offers a local path, which a template cannot take; "
                         f"add its phrase to LOCAL_PHRASES in templates/metadata.py: {text!r}")
    if "gs://" not in text:
        text += " A gs:// path."
    return text


def param_type(job: str, action) -> str:
    """The console's input widget for one option, from its argparse definition."""
    if is_flag(action):
        return "BOOLEAN"
    if action.choices:
        return "ENUM"
    if action.type in NUMBER_TYPES:
        return "NUMBER"
    if action.dest in PATH_TYPES:
        return JOB_PATH_TYPES.get((job, action.dest), PATH_TYPES[action.dest])
    return "TEXT"


def default_value(action) -> str | None:
    """The option's default as the metadata wants it (a string), or None."""
    if is_flag(action):
        return "false"
    return None if action.default is None else str(action.default)


LABEL_WORDS = {"uri": "URI", "jpeg": "JPEG", "mb": "MB", "scin": "SCIN", "csv": "CSV", "k": "k", "tfds": "TFDS"}


def spec_of(job: str):
    """The job's JobSpec (beam_jobs/options.py): its validation checks the same one."""
    return options_class(job).spec


def label(dest: str) -> str:
    words = [LABEL_WORDS.get(w, w) for w in dest.split("_")]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def regex_for(action) -> str:
    """The value rule of one option, from its argparse definition or the tables above."""
    if is_flag(action):
        return BOOLEAN
    if action.choices:
        return "^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"
    if action.type in NUMBER_TYPES:
        return NUMBER_RULES.get(action.dest, POSITIVE_NUMBER if action.type is float else POSITIVE_INT)
    if action.dest in PATH_OPTIONS:
        return GCS_PATH
    if action.dest in STRING_RULES:
        return STRING_RULES[action.dest]
    raise ValueError(f"--{action.dest} has no value rule: add it to PATH_OPTIONS or "
                     f"STRING_RULES in templates/metadata.py")


def help_text(action, spec) -> str:
    text = template_help(action.dest, (action.help or "").strip())
    if is_flag(action):
        text += " true or false (default false)."
    elif action.default is not None:
        text += f" Default: {action.default}."
    for group in spec.one_of:
        if action.dest in group:
            text += " Give at least one of " + ", ".join(f"--{g}" for g in group) + "."
    if action.dest in spec.needs:
        text += " Needs " + ", ".join(f"--{n}" for n in spec.needs[action.dest]) + "."
    if action.dest in spec.notes:
        text += " " + spec.notes[action.dest]
    return text


def parameters(job: str) -> list[dict]:
    """The job's template parameters: the dispatch parameter, then every option."""
    from beam_jobs.options import SharedOptions
    spec = spec_of(job)
    params = [{"name": JOB_FLAG[2:], "label": "Job",
               "helpText": f"Must be {job}: the image serves {len(JOBS)} jobs and this picks one "
                           f"(templates/launch.py).",
               "isOptional": False, "regexes": [f"^{job}$"], "paramType": "TEXT", "defaultValue": job}]
    actions = option_actions(options_class(job))
    reads = options_class(job).reads
    unknown = set(reads) - {d for d, (_, cls) in actions.items() if cls is SharedOptions}
    if unknown:
        raise ValueError(f"{job}: {sorted(unknown)} are not SharedOptions flags")
    for dest, (action, cls) in actions.items():
        if cls is SharedOptions and dest not in reads:
            continue
        param = {"name": dest, "label": label(dest), "helpText": help_text(action, spec),
                 "isOptional": dest not in spec.required, "regexes": [regex_for(action)],
                 "paramType": param_type(job, action)}
        if param["paramType"] == "ENUM":
            param["enumOptions"] = [{"value": str(c), "label": str(c), "description": f"--{dest}={c}"}
                                    for c in action.choices]
        if default_value(action) is not None:
            param["defaultValue"] = default_value(action)
        params.append(param)
    return params


def metadata(job: str) -> dict:
    doc = (importlib.import_module(JOBS[job][0]).__doc__ or job).strip().splitlines()[0]
    return {"name": f"Skin images: {job}",
            "description": doc + " Generated by python -m templates.metadata; do not edit.",
            "parameters": parameters(job)}


def path_of(job: str, root: pathlib.Path = HERE) -> pathlib.Path:
    return root / job / "metadata.json"


def render(job: str) -> str:
    return json.dumps(metadata(job), indent=2) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> int:
    parser = _Parser(prog="python -m templates.metadata", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a committed metadata.json is out of date")
    parser.add_argument("--dir", type=pathlib.Path, default=HERE,
                        help="folder holding JOB/metadata.json (default: templates/)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a directory")
    stale = []
    for job in JOBS:
        path, text = path_of(job, args.dir), render(job)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(os.path.relpath(path))
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(os.path.relpath(path))
    if stale:
        print(f"{parser.prog}: error: out of date: {', '.join(stale)} "
              f"(run python -m templates.metadata)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
