# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make demo   run the jobs end to end on generated sample data
#   make test   run the test suite
# Both create .venv and install the pinned working set on first use; later runs
# skip the install unless setup.py or constraints.txt changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo_output

.PHONY: demo test test-fast bench lock clean templates airflow-venv airflow-check

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	@touch $@

demo: $(STAMP)
	$(PY) -m beam_jobs.demo --out $(DEMO)

# Two worker processes (pytest-xdist), whole test files to each so module
# fixtures are built once; CI has 2 cores. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The fast tier: everything but the tests marked e2e (whole-job runs, the GCS
# emulator, training, Chromium, Airflow); under a minute, for the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e"

# Real-photo figures come from ../shared/real_photos when it is there (never
# copied into the project): degraded, then each photo judged by a relevance
# model trained without it, with the packaged model's recipe (its 134
# generated seed-5 photos in every fold's training; README "Relevance"); the
# fold models are trained once for both benchmarks. dim_frames then runs on
# the packaged model too (in-sample).
REAL_PHOTOS ?= ../shared/real_photos
BENCH_CACHE ?= /tmp/bench_cache
GEN5 := $(BENCH_CACHE)/relevance_gen5

bench: $(STAMP)
	$(PY) -m benchmarks.run_all
	@if [ -d "$(REAL_PHOTOS)" ]; then \
	  rm -rf "$(GEN5)" && $(PY) -m beam_jobs.sample_data --out "$(GEN5)" --cases 400 --seed 5 && \
	  $(PY) -m benchmarks.real_photos --degrade "$(REAL_PHOTOS)" --cross_validate 10 \
	    --extra_training "$(GEN5)/ground_truth.csv" --fold_cache "$(BENCH_CACHE)/folds" && \
	  $(PY) -m benchmarks.dim_frames --labels "$(REAL_PHOTOS)/labels.csv" --images "$(REAL_PHOTOS)/images" \
	    --cross_validate 10 --extra_training "$(GEN5)/ground_truth.csv" --fold_cache "$(BENCH_CACHE)/folds" && \
	  $(PY) -m benchmarks.dim_frames --labels "$(REAL_PHOTOS)/labels.csv" --images "$(REAL_PHOTOS)/images" && \
	  $(PY) -m benchmarks.turned_copies --images "$(REAL_PHOTOS)/images"; \
	else echo "bench: $(REAL_PHOTOS) not found; real-photo figures skipped"; fi

# Re-pin the whole working set after changing setup.py's requirements.
lock: $(STAMP)
	{ echo "# Exact working set, verified on Python 3.11 (see DESIGN.md 'Stack')."; \
	  echo "# Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(DEMO) .pytest_cache

# Regenerate the Flex Template metadata (templates/*/metadata.json) from the
# jobs' options; templates/build.sh builds and publishes the templates.
templates: $(STAMP)
	$(PY) -m templates.metadata

# Load templates/airflow_nightly_dag.py in real Airflow 3 (with the Google and
# Apache Beam providers) and render a scheduled night's launch requests. Airflow
# gets a venv of its own: its pins conflict with the pipeline's, so it must not
# touch .venv. Built once, reused until the pins change; uv installs the 277
# wheels in about half pip's time (~1 min here against ~2 min; bytecode is
# compiled once so each check starts in seconds). tests/test_airflow_dag.py
# runs it as part of `make test`.
AIRFLOW_VENV  ?= .venv-airflow
UV_VERSION    := 0.13.8
AIRFLOW_PY    := $(AIRFLOW_VENV)/bin/python
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): templates/airflow-requirements.txt
	@test -x $(AIRFLOW_PY) || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(AIRFLOW_PY) -m uv pip install --quiet --python $(AIRFLOW_PY) --only-binary=:all: --compile-bytecode \
	  --requirement templates/airflow-requirements.txt
	@touch $@

airflow-venv: $(AIRFLOW_STAMP)

airflow-check: $(AIRFLOW_STAMP)
	$(AIRFLOW_PY) templates/check_airflow_dag.py
