"""A real GCS emulator (gcp-storage-emulator) in a child process on loopback.

Tests, benchmarks and the demo use it to exercise Beam's gs:// filesystem
end to end: listing, reading and writing go over HTTP to this server.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsEmulator:
    """Start/stop the emulator; upload local trees into buckets."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "GcsEmulator":
        exe = shutil.which("gcp-storage-emulator", path=os.path.dirname(sys.executable))
        cmd = [exe] if exe else [sys.executable, "-m", "gcp_storage_emulator"]
        self.process = subprocess.Popen(
            cmd + ["start", "--host", "127.0.0.1", "--port", str(self.port),
                   "--in-memory", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"GCS emulator exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.host}/storage/v1/b?project=test", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"GCS emulator did not answer on {self.host} in {timeout}s")

    def stop(self) -> None:
        if self.process is None:
            return
        # The server runs in its own session: signal the whole group so no
        # helper process it may have started outlives it.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def __enter__(self) -> "GcsEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self):
        from google.cloud import storage
        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        return storage.Client.create_anonymous_client()

    def create_bucket(self, name: str):
        client = self.client()
        bucket = client.bucket(name)
        if not bucket.exists():
            client.create_bucket(bucket)
        return bucket

    def upload_tree(self, local_root: str | os.PathLike, bucket: str, prefix: str = "") -> int:
        """Upload every file under local_root to gs://bucket/prefix/...; returns count."""
        b = self.create_bucket(bucket)
        root = pathlib.Path(local_root)
        n = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = "/".join(filter(None, [prefix.strip("/"), path.relative_to(root).as_posix()]))
            b.blob(name).upload_from_filename(str(path))
            n += 1
        return n
