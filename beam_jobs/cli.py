"""What every job's entry point shares: one-line errors for bad arguments."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from beam_jobs.stderr_filter import filtered_stderr
from transforms.errors import JobFailed, Refused, UsageError  # noqa: F401  (the jobs import them from here)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage block and exits on a bad argument; the jobs
    raise UsageError, which main() reports as one line (exit code 2)."""

    def error(self, message):
        raise UsageError(message)


MAX_SEED = 2**32 - 1


def seed_arg(text: str) -> int:
    """argparse type of every --seed: numpy's and Keras' generators take
    0 .. 2**32 - 1, and failed on anything else with a traceback (evaluate's
    deep inside its pipeline, after the work)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED}, got {text!r}")
    return value


def _job_failed_line(error: BaseException) -> str | None:
    """JobFailed's message, also when a multi-process runner re-raised it as a
    RuntimeError carrying the worker's traceback text."""
    if isinstance(error, JobFailed):
        return _WHILE_RUNNING.sub("", str(error))
    lines = [l for l in str(error).splitlines() if "JobFailed: " in l]
    return _WHILE_RUNNING.sub("", lines[-1].split("JobFailed: ", 1)[1].strip()) if lines else None


# Beam appends the step's name to an exception raised in a DoFn; the line says enough.
_WHILE_RUNNING = re.compile(r" \[while running '[^']*'\]$")


def _not_job_failed(record) -> bool:
    """False for Beam's log of a failing DoFn whose error main() reports in one
    line: a JobFailed, or a Refused (another run holds the lock)."""
    if record.exc_info and (isinstance(record.exc_info[1], Refused)
                            or _job_failed_line(record.exc_info[1]) is not None):
        return False
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is the handler's to report, not the filter's
        return True
    # A worker process's log arrives as one message quoting its traceback.
    return not _reported_here(message)


# Warnings Beam and TensorFlow log on every healthy run, which say nothing a
# person can act on: (logger, regular expression matched at the message's start).
# Only these are dropped; any other warning or error, from Beam, TensorFlow or a
# job, still shows.
BENIGN_WARNINGS = (
    # Every PipelineOptions view re-parses argv and complains about the other
    # views' flags; check_flags has already refused flags no view defines.
    ("apache_beam.options.pipeline_options", "Discarding invalid overrides"),
    ("apache_beam.options.pipeline_options", "Discarding unparseable args"),
    ("apache_beam.options.pipeline_options", "Unparseable argument"),
    # RunInference's memory metric, once per model load.
    ("root", "Resource module is not available for current platform"),
    # Multi-process DirectRunner: each worker process logs these two at start-up
    # (Beam relays them through the job service, once per worker).
    ("apache_beam.runners.portability.local_job_service",
     r'Worker: severity: WARN .*?message: "(No semi_persistent_directory found|Discarding unparseable args'
     r'|Discarding invalid overrides|Unparseable argument)'),
    # Each model load (one per RunInference, per worker thread on DirectRunner)
    # traces Keras's predict step once or twice; TensorFlow counts the traces of
    # every copy of that step together and calls five of them "retracing".
    # (Keras 3 names it TensorFlowTrainer's; tf_keras, which tf.Transform turns
    # on for the process and its children, Model's.)
    ("tensorflow", r"\d+ out of the last \d+ calls to <function (TensorFlowTrainer|Model)\.make_predict_function\."
                   r"<locals>\.\w+ at 0x[0-9a-f]+> triggered tf\.function retracing"),
)


def _not_benign(record) -> bool:
    if record.levelno > logging.WARNING:
        return True
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is the handler's to report
        return True
    return not any(record.name == name and re.match(pattern, message) for name, pattern in BENIGN_WARNINGS)


def quiet_logging() -> None:
    """Log warnings and errors, without Beam's benign start-up warnings.

    Installed by main() and the demo (the entry points), never on import."""
    logging.basicConfig()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for logger in {root, *(logging.getLogger(name) for name, _ in BENIGN_WARNINGS)}:
        if _not_benign not in logger.filters:
            logger.addFilter(_not_benign)
    for handler in root.handlers:
        if _not_benign not in handler.filters:
            handler.addFilter(_not_benign)


# TensorFlow's C++ start-up lines. They are written straight to file
# descriptor 2 before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL
# does not reach them (and the CUDA probe is an ERROR on any CPU-only host).
TF_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cudart_stub.cc",
    "failed call to cuInit",
    "Could not find cuda drivers",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices with stderr captured, then
    re-print every captured line that is not known start-up noise.

    For the entry points of jobs that use TensorFlow; a no-op once loaded."""
    if "tensorflow" in sys.modules:
        return
    import tempfile
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # the CUDA probe happens here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if not any(noise in line for noise in TF_STARTUP_NOISE):
                    print(line, file=sys.stderr)


def main(run, argv=None, prog="job") -> int:
    """Call run(argv); turn UsageError into `prog: error: ...` and exit code 2,
    JobFailed into the same one line and exit code 1."""
    quiet_logging()
    # Beam logs a failing DoFn's traceback (and a worker's, in multi-process
    # runs) before re-raising; for JobFailed the one line below says it all.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_job_failed)
    logging.getLogger("apache_beam.runners.common").addFilter(_not_job_failed)
    try:
        # Worker processes print those tracebacks to stderr themselves; the
        # one line below is printed after the filter is gone, so never held.
        with filtered_stderr(_reported_here):
            run(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        refusal = _refusal_in(str(e))
        if refusal is not None:
            print(f"{prog}: error: {refusal}", file=sys.stderr)
            return 2
        line = _job_failed_line(e)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 1
    return 0


def _reported_here(traceback_text: str) -> bool:
    """Whether a worker's traceback is of an error main() reports in one line."""
    return any(f"{name}: " in traceback_text for name in ("JobFailed", *_refusal_names()))


def _refusal_names() -> set:
    """The class names of Refused and its subclasses (LockHeld, ...)."""
    names, todo = set(), [Refused]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def _refusal_in(text: str):
    """The message of a Refused raised on a worker process: multi-process
    runners hand it back as a RuntimeError holding the worker's traceback."""
    names = _refusal_names()
    found = None
    for line in text.splitlines():
        head, sep, message = line.strip().partition(": ")
        if sep and head.rsplit(".", 1)[-1] in names:
            found = message
    return found


def runs_on_dataflow(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions
    return "dataflow" in str(options.view_as(StandardOptions).runner or "").lower()


def local_spill_root(options) -> str | None:
    """Where a stage may spill what the runner would hold in memory: the
    machine's temp folder (TMPDIR) when every worker runs on this machine
    (DirectRunner, its FnApiRunner, Prism), else None (a distributed
    runner's workers share no disk; its shuffle is its own business)."""
    import tempfile

    from apache_beam.options.pipeline_options import StandardOptions
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner").lower()
    here = any(name in runner for name in ("direct", "fnapirunner", "prism"))
    return tempfile.gettempdir() if here else None


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


def check_output_name(output, flag: str = "--output") -> None:
    """UsageError if an output's name holds a wildcard (* ? [), local or gs://:
    Beam lists and deletes a job's own files by glob, so curate into out[1]
    deleted out1's features as its stale shards."""
    from transforms.io.allowed_roots import is_glob
    if output and is_glob(output):
        wild = " ".join(sorted({c for c in output if c in "*?["}))
        raise UsageError(f"{flag} {output} holds the wildcard character {wild}: jobs list their own files by "
                         f"glob, so it would match other folders; choose a name without * ? [")


def check_output(output, flag: str = "--output") -> None:
    """UsageError unless a local --output (or another folder a job writes
    into, named by `flag`) is, or can be made, a writable folder.

    Otherwise the job would read and analyse everything and only fail at its
    first write. gs:// outputs are not probed (a Dataflow launch lists nothing).
    """
    check_output_name(output, flag)
    if not output or "://" in output:
        return
    path = os.path.abspath(output)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {output} is a file, not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {output}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {output}: {existing} is not writable")


def check_outputs_not_read(output: str | None, written: list[str], input_root: str | None,
                           dates: list[str], flag: str = "--output") -> None:
    """UsageError when the job's listings of --input (`input_root`: the glob,
    or with `dates` the root of the dt=D/ folders, each night listed as
    dt=D/**) would match a file it writes under `output` (`written`: paths
    relative to it, one per kind of file): the next run, a nightly rerun or a
    retry, would take this run's features, report, markers or index parts for
    uploads, and this run would list its own files while it writes and
    renames them. Dated runs are checked against every night's folder, not
    only their own: tonight's files under tomorrow's dt= folder are read
    tomorrow. Patterns match as Beam's listing does (* within one folder, **
    across)."""
    if not output or not input_root:
        return
    from apache_beam.io.filesystem import FileSystem

    from transforms.io.partitions import night_glob
    root = _resolved(output).rstrip("/")
    pattern = night_glob(input_root, "*") if dates else input_root
    wanted = re.compile(FileSystem.translate_pattern(_resolved(pattern)))
    for name in written:
        if wanted.match(f"{root}/{name}"):
            raise UsageError(f"{flag} {output} is where --input {pattern} reads: the next run would read "
                             f"this run's {name} and its other outputs as uploads; write them outside the inputs")


def _resolved(uri: str) -> str:
    """A local path or glob with the symlinks of its literal part (up to the
    first glob character) resolved, so an --output reached through a link
    still matches the --input it lies under; gs:// URIs as given."""
    from transforms.io.allowed_roots import glob_root, is_glob
    from transforms.io.inputs import normalize_uri
    if "://" in uri:
        return uri
    path = normalize_uri(uri) + ("/" if uri.endswith("/") else "")
    literal = glob_root(path) if is_glob(path) else path
    return os.path.realpath(literal).rstrip("/") + ("/" if literal.endswith("/") else "") + path[len(literal):]


def refuse_bare_folder(pattern: str) -> None:
    """UsageError when --input `pattern`, which matched nothing, names a
    folder: a gs:// prefix without its '/' (a local folder is read as one,
    transforms.io.inputs.input_glob; a prefix cannot be told from a file
    without listing under it)."""
    from apache_beam.io.filesystems import FileSystems
    if FileSystems.match([pattern.rstrip("/") + "/**"], limits=[1])[0].metadata_list:
        raise UsageError(f"--input {pattern} is a folder: end it with / or give a glob ({pattern.rstrip('/')}/**)")


# A batch of preprocessed images is held in memory at once (224 px float32:
# ~0.6 MB an image, so 1024 is ~0.6 GB); more threads than this only queue.
MAX_BATCH_SIZE = 1024
MAX_PREPARE_THREADS = 64
# A Parquet shard is encoded from its rows in memory (~1 KB a row).
MAX_ROWS_PER_SHARD = 1_000_000


def check_rows_per_shard(o) -> None:
    if not 1 <= o.rows_per_shard <= MAX_ROWS_PER_SHARD:
        raise UsageError(f"--rows_per_shard must be within [1, {MAX_ROWS_PER_SHARD}] (a shard is encoded in "
                         f"memory), got {o.rows_per_shard}")


def check_batching(o, counts=()) -> None:
    """RunInference's --min/--max_batch_size (the minimum defaults to the
    maximum) and the job's other positive `counts`, each named when wrong."""
    for name in ("max_batch_size", *counts):
        if getattr(o, name) < 1:
            raise UsageError(f"--{name} must be positive, got {getattr(o, name)}")
    if o.max_batch_size > MAX_BATCH_SIZE:
        raise UsageError(f"--max_batch_size must be at most {MAX_BATCH_SIZE} (a batch is held in memory), "
                         f"got {o.max_batch_size}")
    if o.min_batch_size is None:
        o.min_batch_size = o.max_batch_size
    if not 1 <= o.min_batch_size <= o.max_batch_size:
        raise UsageError(f"--min_batch_size must be within [1, --max_batch_size {o.max_batch_size}], "
                         f"got {o.min_batch_size}")


# The file outputs check_replaceable guards are small JSON documents (a relevance
# model ~70 KB); anything larger is some other file.
REPLACEABLE_MAX_BYTES = 64 * 2 ** 20


def check_replaceable(path: str, flag: str, kind: str, is_kind) -> None:
    """UsageError unless the file `path` names is new, or an earlier `kind`
    (is_kind(its bytes)), which the job replaces. A file output is replaced
    whole: train_relevance --output naming its labels CSV or a photo wrote
    the model over it, and naming a folder deleted the folder."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.io.inputs import normalize_uri, read_named_file
    if not FileSystems.exists(normalize_uri(path)):
        return
    try:  # its size first: a large file cannot be one, and was read whole into memory to find that out
        size = FileSystems.match([normalize_uri(path)])[0].metadata_list[0].size_in_bytes
    except Exception:  # a folder, a FIFO, ...: read_named_file names what it is
        size = 0
    if size > REPLACEABLE_MAX_BYTES:
        raise UsageError(f"{flag} {path} exists and holds {size / 1e6:.0f} MB, more than any {kind}: it would be "
                         f"replaced; give a new path or an earlier {kind}'s")
    try:
        data = read_named_file(path, flag)
    except ValueError as e:   # a folder, a FIFO, ...
        raise UsageError(f"{e}; {flag} must name a new file or an earlier {kind}, which is replaced") from None
    if not is_kind(data):
        raise UsageError(f"{flag} {path} exists and holds no {kind}: it would be replaced; give a new path "
                         f"or an earlier {kind}'s")


def is_json_object_with(key: str):
    """is_kind for check_replaceable: a JSON object holding `key`."""
    def check(data: bytes) -> bool:
        import json
        try:
            doc = json.loads(data)
        except ValueError:
            return False
        return isinstance(doc, dict) and key in doc
    return check


def clear_own_outputs(out: str, names, flag: str, who: str) -> None:
    """Remove what an earlier run of `who` wrote in the folder `out` (its
    entries `names`); UsageError if `out` is a file or holds anything else.
    For the tools that replace their output folder's content (demo,
    sample_data): deleting the folder whole took `--out .` with it, and
    writing over it left an earlier run's files mixed with the new ones."""
    import shutil
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{flag} {out} is a file, not a folder")
    other = sorted(set(os.listdir(out)) - set(names)) if os.path.isdir(out) else []
    if other:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        raise UsageError(f"{flag} {out} holds {other[0]!r}{more}, which {who} did not write; it replaces what "
                         f"it wrote there, so give a new or empty folder, or an earlier {who} run's")
    for name in names:
        path = os.path.join(out, name)
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


# A file only each job's output holds: how a job knows a folder is another's.
OUTPUT_SIGNATURES = {"curate": "summary.json", "make_tfrecords": "dataset_info.json",
                     "score": "predictions/dt=*/model=*/_SUCCESS", "evaluate": "metrics.json",
                     "train_baseline": "model_info.json"}


def check_not_another_jobs_output(output: str | None, job: str, flag: str = "--output") -> None:
    """UsageError when `output` already holds another job's output: a job
    takes its output folder as its own, removing the marker there first and
    dropping dead-letter shards it did not write, so make_tfrecords run into
    curate's folder unmarked curate's output (and could not then read it),
    and evaluate run into the TFRecords' folder replaced their `_SUCCESS`
    with its own. Local runs only (a Dataflow launch lists nothing)."""
    if not output:
        return
    from apache_beam.io.filesystems import FileSystems
    for other, signature in OUTPUT_SIGNATURES.items():
        if other == job:
            continue
        found = FileSystems.match([FileSystems.join(output, signature)], limits=[1])[0].metadata_list
        if found:
            raise UsageError(f"{flag} {output} holds a {other} output ({found[0].path}); {job} would mix its "
                             f"own files and marker into it: write to another folder")


# The default worker count of local runs given no runner options (the test
# suite sets 1: most of its pipelines are tiny, and each worker process costs
# a few seconds to start).
LOCAL_WORKERS_ENV = "BEAM_JOBS_LOCAL_WORKERS"
# Flags by which a user chooses how a run runs; given any, use_cores leaves it alone.
_RUNNER_CHOICES = ("--runner", "--direct_num_workers", "--direct_running_mode")


def local_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cores(options) -> int:
    """Make a local run use every core: DirectRunner in multi-processing mode
    with one worker per core (or $BEAM_JOBS_LOCAL_WORKERS), unless the user
    passed --runner, --direct_num_workers or --direct_running_mode. Returns
    the worker count chosen (0: the user's runner options stand)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    flags = getattr(options, "_flags", None)
    flags = sys.argv[1:] if flags is None else flags  # as Beam parses them
    if options.view_as(StandardOptions).runner or any(
            f == c or f.startswith(c + "=") for f in flags for c in _RUNNER_CHOICES):
        return 0
    raw = os.environ.get(LOCAL_WORKERS_ENV, "").strip()
    if raw and not (raw.isdigit() and int(raw) >= 1):
        raise UsageError(f"${LOCAL_WORKERS_ENV} must be a positive integer, got {raw!r}")
    workers = int(raw) if raw else local_cores()
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = workers
    # One worker runs in this process: no worker start-up cost.
    direct.direct_running_mode = "multi_processing" if workers > 1 else "in_memory"
    return workers


def new_pipeline(options, cores: bool = False):
    """beam.Pipeline(options), with Beam's own option validation as a UsageError.

    Also checks a local --output (check_output), so every job fails on an
    unusable output before any work. cores=True: a local run without runner
    options uses every core (use_cores); jobs opt in once they are known to
    work in multi-processing mode."""
    import apache_beam as beam
    check_output(getattr(options, "output", None))
    if cores and not runs_on_dataflow(options):
        use_cores(options)
    try:
        return beam.Pipeline(options=options)
    except ValueError as e:
        if "validations errors" not in str(e):
            raise
        detail = " ".join(str(e).split(":", 1)[1].split())
        raise UsageError(f"invalid pipeline options: {detail}") from None
