"""Real servers on loopback for remote-read and remote-write tests: an HTTP server that
honours Range requests and counts the bytes it sends, and moto's S3-compatible server.
Each listens on a 127.0.0.x address only and is stopped by its fixture."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HTTP_IP = "127.0.0.7"
S3_IP = "127.0.0.8"


@dataclass
class HttpServer:
    """A folder served over HTTP; ``sent`` counts the body bytes sent per path.
    ``fail_after``/``failures``: the next ``failures`` range requests that start at
    or beyond byte ``fail_after`` of a file are answered 503 (a transient outage
    after the header has been read); ``failed`` counts them."""

    root: Path
    url: str = ""
    sent: dict[str, int] = field(default_factory=dict)
    fail_after: int = 0
    failures: int = 0
    failed: int = 0

    def bytes_sent(self, name: str) -> int:
        return self.sent.get("/" + name, 0)


class _RangeHandler(SimpleHTTPRequestHandler):
    """GET and HEAD with single byte ranges (``bytes=a-b``, ``a-``, ``-n``), as GDAL's
    /vsicurl/ asks; multi-range requests get the whole file (allowed by RFC 9110)."""

    server_state: HttpServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            state = self.server_state
            if state.failures and start >= state.fail_after:
                state.failures -= 1
                state.failed += 1
                self.send_error(503)
                return
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(end - start + 1)
            key = self.path.split("?", 1)[0]  # counted before sending: a client that
            # has its bytes must see them counted
            self.server_state.sent[key] = self.server_state.sent.get(key, 0) + len(data)
            self.wfile.write(data)


@pytest.fixture
def http_server(tmp_path) -> Iterator[HttpServer]:
    """Serves ``tmp_path / "www"`` at ``state.url`` (``http://127.0.0.7:PORT``)."""
    root = tmp_path / "www"
    root.mkdir()
    state = HttpServer(root)
    handler = type("Handler", (_RangeHandler,), {"server_state": state})
    server = ThreadingHTTPServer((HTTP_IP, 0), partial(handler, directory=str(root)))
    state.url = f"http://{HTTP_IP}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.8:PORT
    env: dict[str, str]  # the standard AWS variables that point a client at it


@pytest.fixture
def s3_server(monkeypatch) -> Iterator[S3Server]:
    """moto's standalone S3 server on loopback, with dummy credentials; the AWS
    variables are set in this process's environment for the test's duration."""
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    with socket.socket() as s:
        s.bind((S3_IP, 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(moto), "-H", S3_IP, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://{S3_IP}:{port}"
    deadline = time.time() + 30
    while True:
        try:
            with socket.create_connection((S3_IP, port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError("moto_server did not start") from None
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    try:
        yield S3Server(endpoint, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
