"""Every use of a library's private API, in one place, each with its test
(tests/test_compat.py) that fails when an upgrade breaks it.

Beam 2.77 and google-cloud-storage 3 offer no public way to do these; when
one appears, replace the shim here and its callers stay as they are.
"""
from __future__ import annotations

import argparse


# ------------------------------------------------------------------ Beam: GCS

def set_beam_credentials_anonymous() -> None:
    """Pre-fill Beam's credential cache with "none": its gs:// client then
    connects anonymously at once (a GCS emulator) instead of looking for
    Google credentials with ~30 s of retries in every process."""
    from apache_beam.internal.gcp import auth
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


def beam_gcs_client(uri: str):
    """The google.cloud.storage Client Beam's gs:// filesystem uses for `uri`
    (its credentials, STORAGE_EMULATOR_HOST honoured)."""
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.get_filesystem(uri)._gcsIO().client


def gcs_should_retry(error: BaseException) -> bool:
    """google-cloud-storage's own transient-error predicate (429, 5xx, resets),
    the one Beam's gcsio retries on."""
    from google.cloud.storage.retry import _should_retry
    return _should_retry(error)


# ------------------------------------------------- Beam: metrics on threads

class _PinnedState:
    """Stands in for Beam's thread-local state tracker on a worker thread: the
    step that submitted the work is the step its counters and logs belong to."""

    def __init__(self, state):
        self._state = state

    def current_state(self):
        return self._state

    def update_metric(self, typed_metric_name, value):
        # What Beam's tracker does (statesampler_slow.StateSampler.update_metric).
        container = self._state.metrics_container
        if container is not None:
            container.get_metric_cell(typed_metric_name).update(value)


def current_step_state():
    """The running step's state (its metrics container), or None outside a step."""
    from apache_beam.runners.worker import statesampler
    tracker = statesampler.get_current_tracker()
    return tracker.current_state() if tracker is not None else None


def run_in_step(state, fn, element):
    """fn(element) on this thread as if inside the step `state` (from
    current_step_state on the step's own thread): Beam counters count."""
    from apache_beam.runners.worker import statesampler
    statesampler.set_current_tracker(_PinnedState(state) if state is not None else None)
    try:
        return fn(element)
    finally:
        statesampler.set_current_tracker(None)


# ------------------------------------------------------- argparse and Beam

def beam_argument_parser_class():
    """Beam's ArgumentParser subclass (its handling of abbreviations and
    unknown flags), for parsers that must read flags as Beam does."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser
    return _BeamArgumentParser


def parser_actions(parser: argparse.ArgumentParser) -> list:
    """The argparse.Actions a parser (or argument group) defines."""
    return list(parser._actions)


def add_action(group, action: argparse.Action) -> None:
    """Show an Action defined on another parser in `group` (help listings)."""
    group._add_action(action)


def is_flag(action: argparse.Action) -> bool:
    """True for a store_true option (a flag that takes no value)."""
    return isinstance(action, argparse._StoreTrueAction)
