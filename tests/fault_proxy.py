"""A fault-injecting reverse proxy on loopback, in front of the GCS emulator.

Point STORAGE_EMULATOR_HOST at `proxy.host` and every google-cloud-storage
request (so every Beam gs:// operation) goes through it. For a configurable
fraction of requests, chosen by a seeded RNG, it injects one of the faults a
real GCS front end produces and that GCS clients are expected to survive:

    "429"    Too Many Requests, with a GCS-style JSON error body
    "503"    Service Unavailable, same
    "reset"  the connection is reset (RST, no response)
    "delay"  a 0.2-1 s stall, then the request is forwarded normally

Every fault is injected BEFORE the request reaches the emulator, so a
non-idempotent request (an upload, a copy, a delete) is never half-applied:
after a fault the server state is exactly as if the request never arrived,
which is what a retry assumes. The request body is read in full first, so
the client never sees a broken pipe mid-upload, only a missing response.

Everything else is forwarded as is: any method, JSON API, uploads
(multipart, resumable; content-length or chunked bodies, re-sent with a
Content-Length), downloads with Range, batch requests. The Host header is
preserved, so the URLs the emulator puts in responses (resumable-session
Location, mediaLink, selfLink) already name the proxy; any that still name
the emulator's own host:port are rewritten to the proxy's.

Stdlib only: http.server (threaded) + http.client.
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter

KINDS = ("429", "503", "reset", "delay")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "trailers", "transfer-encoding", "upgrade", "content-length"}
_STATUS = {"429": (429, "Too Many Requests", "rateLimitExceeded",
                   "The rate of change requests to the object is too high (injected)."),
           "503": (503, "Service Unavailable", "backendError",
                   "We encountered an internal error. Please try again. (injected)")}


class FaultProxy:
    """Reverse proxy to `upstream` (http://host:port) injecting faults.

    fraction: share of eligible requests that get a fault (0..1).
    kinds: which faults to pick from, uniformly (see KINDS).
    seed: the RNG seed; decisions are a pure function of the seed and the
        order in which requests arrive.
    eligible: optional predicate (method, path) -> bool; other requests are
        always forwarded untouched (e.g. only media downloads).
    before_forward: optional callback (method, path) run just before a request
        is forwarded, e.g. to change an object between a listing and its read.
    """

    def __init__(self, upstream: str, fraction: float = 0.0, kinds=KINDS, seed: int = 0,
                 delay=(0.2, 1.0), eligible=None, before_forward=None):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port or 80
        self.fraction, self.kinds, self.delay, self.eligible = fraction, tuple(kinds), delay, eligible
        self.before_forward = before_forward
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = 0
        self.injected: Counter = Counter()
        self.methods: Counter = Counter()
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, fault kind or None)
        self.bodies: list[bytes] = []  # the first 2 KB of each request's body, in log order
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- configuration and counts (thread-safe) ---------------------------------
    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, fraction: float | None = None, kinds=None, eligible=...) -> None:
        with self._lock:
            if fraction is not None:
                self.fraction = fraction
            if kinds is not None:
                self.kinds = tuple(kinds)
            if eligible is not ...:
                self.eligible = eligible

    def counts(self) -> dict:
        """{'requests': n, 'faults': n, '429': n, '503': n, 'reset': n, 'delay': n}."""
        with self._lock:
            out = {"requests": self.requests, "faults": sum(self.injected.values())}
            out.update({k: self.injected.get(k, 0) for k in KINDS})
            return out

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.injected.clear()
            self.methods.clear()
            self.log.clear()
            self.bodies.clear()

    def _decide(self, method: str, path: str, body: bytes = b""):
        """(kind or None, delay seconds) for the next request, under the lock."""
        with self._lock:
            self.requests += 1
            self.methods[method] += 1
            kind, pause = None, 0.0
            if (self.eligible is None or self.eligible(method, path)) and self.kinds \
                    and self._rng.random() < self.fraction:
                kind = self._rng.choice(self.kinds)
                pause = self._rng.uniform(*self.delay) if kind == "delay" else 0.0
                self.injected[kind] += 1
            self.log.append((method, path, kind))
            self.bodies.append(body[:2048])
            return kind, pause

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextlib.contextmanager
    def as_storage_host(self):
        """STORAGE_EMULATOR_HOST -> this proxy within the block, then restored."""
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        try:
            yield self
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # clients dropping connections is normal


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with the client, like GCS
    owner: FaultProxy

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        body = self._read_body()
        kind, pause = self.owner._decide(self.command, self.path, body)
        if kind in _STATUS:
            self._send_error_json(*_STATUS[kind])
            return
        if kind == "reset":
            self._reset()
            return
        if kind == "delay":
            time.sleep(pause)
        if self.owner.before_forward is not None:
            self.owner.before_forward(self.command, self.path)
        self._forward(body)

    def _send_error_json(self, code, reason, gcs_reason, message):
        payload = json.dumps({"error": {"code": code, "message": message,
                                        "errors": [{"message": message, "domain": "global",
                                                    "reason": gcs_reason}]}}).encode()
        self.send_response_only(code, reason)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self):
        # SO_LINGER 0 makes closing the descriptor send RST instead of FIN: the
        # client sees "connection reset by peer" and no response at all. The
        # descriptor is detached and closed here so nothing else (a flush, the
        # server's graceful shutdown) can write to it first.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(self.connection.detach())

    def _forward(self, body: bytes):
        o = self.owner
        conn = http.client.HTTPConnection(o.upstream_host, o.upstream_port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)  # Host included: URLs come back naming the proxy
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            headers = resp.getheaders()
            status, reason = resp.status, resp.reason
        except OSError as e:  # upstream down: a gateway error, as a real front end would give
            self._send_error_json(502, "Bad Gateway", "backendError", f"upstream: {e}")
            return
        finally:
            conn.close()
        emulator = f"{o.upstream_host}:{o.upstream_port}"
        mine = f"127.0.0.1:{o.port}"
        ctype = dict((k.lower(), v) for k, v in headers).get("content-type", "")
        if emulator.encode() in data and "json" in ctype:
            data = data.replace(emulator.encode(), mine.encode())
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value.replace(emulator, mine))
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if not no_body:
            self.send_header("Content-Length", str(len(data)))
        if (self.headers.get("Connection") or "").lower() == "close":
            self.close_connection = True
        self.end_headers()
        if not no_body:
            self.wfile.write(data)
