"""Each shim of transforms/io/compat.py (the project's uses of library
internals) against the installed Beam, google-cloud-storage and argparse: an
upgrade that moves one fails here, naming the shim."""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from transforms.io import compat


def test_beam_credentials_become_anonymous_without_a_lookup(monkeypatch):
    from apache_beam.internal.gcp import auth
    from apache_beam.options.pipeline_options import PipelineOptions

    def no_lookup(_options):
        raise AssertionError("Beam looked for credentials: the anonymous cache was not used")

    monkeypatch.setattr(auth._Credentials, "_get_service_credentials", staticmethod(no_lookup))
    compat.set_beam_credentials_anonymous()
    assert auth.get_service_credentials(PipelineOptions([])) is None


@pytest.mark.e2e  # starts the GCS emulator
def test_beam_gcs_client_is_the_storage_client_beam_uses(gcs_emulator):
    from google.cloud import storage
    client = compat.beam_gcs_client("gs://compat-shim/x.jpg")
    assert isinstance(client, storage.Client)
    client.create_bucket("compat-shim")  # it reaches the emulator Beam is pointed at
    client.bucket("compat-shim").blob("x.jpg").upload_from_string(b"x")
    assert [b.name for b in client.list_blobs("compat-shim")] == ["x.jpg"]


def test_gcs_should_retry_is_the_storage_library_predicate():
    from google.api_core import exceptions
    assert compat.gcs_should_retry(exceptions.TooManyRequests("slow down"))
    assert compat.gcs_should_retry(exceptions.ServiceUnavailable("busy"))
    assert compat.gcs_should_retry(ConnectionError("reset by peer"))
    assert not compat.gcs_should_retry(exceptions.NotFound("gone"))
    assert not compat.gcs_should_retry(ValueError("a bug"))


class _CountOnAThread(beam.DoFn):
    def process(self, n):
        state = compat.current_step_state()
        assert state is not None, "no step state inside a running DoFn"
        with ThreadPoolExecutor(1) as pool:
            pool.submit(compat.run_in_step, state, Metrics.counter("compat", "on_thread").inc, n).result()
        yield n


def test_counters_incremented_on_another_thread_count_for_the_step():
    p = beam.Pipeline()
    _ = p | beam.Create([1, 2, 3]) | beam.ParDo(_CountOnAThread())
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("on_thread"))["counters"]
    assert sum(c.committed for c in counters) == 6
    assert compat.current_step_state() is None  # outside any step


def test_argparse_shims_read_and_move_actions():
    parser_class = compat.beam_argument_parser_class()
    assert issubclass(parser_class, argparse.ArgumentParser)
    parser = parser_class(allow_abbrev=False, add_help=False)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--size", type=int, help="Side in pixels.")
    actions = {a.dest: a for a in compat.parser_actions(parser)}
    assert set(actions) == {"force", "size"}
    assert compat.is_flag(actions["force"]) and not compat.is_flag(actions["size"])
    listing = argparse.ArgumentParser(prog="job")
    compat.add_action(listing.add_argument_group("sizes"), actions["size"])
    assert "sizes:\n  --size SIZE  Side in pixels." in listing.format_help()
