"""Fetching an update bundle: resume after a dropped connection, sha256 and size checks, disk
space, local copies. The server is a real ``http.server`` on loopback in a thread, one that
honours ``Range`` (or not) and cuts the connection midway when told to."""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge.update.download import RetryPolicy, bundle_path, fetch_bundle
from edge.update.errors import (
    BundleVerificationError,
    DownloadError,
    InsufficientSpaceError,
    UpdateSourceError,
)

PAYLOAD = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MiB: three 1 MiB chunks and a bit
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
PLENTY = 1 << 40


@dataclass
class Behaviour:
    """What the test server does; ``requests`` records each request's Range header."""

    payload: bytes = PAYLOAD
    ranges: bool = True
    drops: int = 0
    drop_after_bytes: int = 1_500_000
    status: int = 200
    requests: list[str | None] = field(default_factory=list)
    if_ranges: list[str | None] = field(default_factory=list)


class BundleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), BundleHandler)
        self.behaviour = Behaviour()

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """A client that refuses the bundle hangs up mid-body: expected, not worth a trace."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/bundle.raucb"


class BundleHandler(BaseHTTPRequestHandler):
    server: BundleServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``Behaviour.requests`` instead."""

    def do_GET(self) -> None:
        behaviour = self.server.behaviour
        asked = self.headers.get("Range")
        behaviour.requests.append(asked)
        behaviour.if_ranges.append(self.headers.get("If-Range"))
        if behaviour.status != 200:
            self.send_error(behaviour.status)
            return
        body = behaviour.payload
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and behaviour.ranges else 0
        if start >= len(body) and asked and behaviour.ranges:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", '"bundle-v2"')
        self.end_headers()
        if behaviour.drops > 0:
            behaviour.drops -= 1
            self.wfile.write(body[start : start + behaviour.drop_after_bytes])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server() -> Iterator[BundleServer]:
    httpd = BundleServer()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def updates_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "updates"


def test_a_download_cut_midway_resumes_with_range_requests_and_is_verified(
    server: BundleServer, updates_dir: Path
) -> None:
    server.behaviour.drops = 2
    delays: list[float] = []
    seen: list[tuple[int, int | None]] = []
    fetched = fetch_bundle(
        server.url,
        PAYLOAD_SHA256,
        updates_dir,
        progress=lambda done, total: seen.append((done, total)),
        free_bytes=lambda _: PLENTY,
        sleep=delays.append,
    )
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.path == bundle_path(updates_dir, PAYLOAD_SHA256)
    assert server.behaviour.requests == [None, "bytes=1500000-", "bytes=3000000-"]
    assert server.behaviour.if_ranges == [None, '"bundle-v2"', '"bundle-v2"']
    assert delays == [1.0, 1.0], "progress before each cut resets the backoff"
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [p.name for p in updates_dir.iterdir()] == [fetched.path.name]


def test_a_partial_file_from_an_earlier_run_is_resumed_not_fetched_again(
    server: BundleServer, updates_dir: Path
) -> None:
    updates_dir.mkdir(parents=True)
    part = bundle_path(updates_dir, PAYLOAD_SHA256).with_suffix(".raucb.part")
    part.write_bytes(PAYLOAD[:2_000_000])
    fetched = fetch_bundle(server.url, PAYLOAD_SHA256, updates_dir, free_bytes=lambda _: PLENTY)
    assert fetched.path.read_bytes() == PAYLOAD
    assert server.behaviour.requests == ["bytes=2000000-"]
    assert not part.exists()


def test_a_complete_partial_file_is_finished_after_the_server_answers_416(
    server: BundleServer, updates_dir: Path
) -> None:
    updates_dir.mkdir(parents=True)
    part = bundle_path(updates_dir, PAYLOAD_SHA256).with_suffix(".raucb.part")
    part.write_bytes(PAYLOAD)
    fetched = fetch_bundle(server.url, PAYLOAD_SHA256, updates_dir, free_bytes=lambda _: PLENTY)
    assert fetched.path.read_bytes() == PAYLOAD
    assert server.behaviour.requests == [f"bytes={len(PAYLOAD)}-"]


def test_a_server_without_range_support_is_read_again_from_the_first_byte(
    server: BundleServer, updates_dir: Path
) -> None:
    server.behaviour.ranges = False
    server.behaviour.drops = 1
    delays: list[float] = []
    fetched = fetch_bundle(
        server.url, PAYLOAD_SHA256, updates_dir, free_bytes=lambda _: PLENTY, sleep=delays.append
    )
    assert fetched.path.read_bytes() == PAYLOAD
    assert server.behaviour.requests == [None, "bytes=1500000-"]
    assert delays == [1.0]


def test_a_wrong_sha256_is_refused_and_the_partial_file_deleted(
    server: BundleServer, updates_dir: Path
) -> None:
    wrong = hashlib.sha256(b"another bundle").hexdigest()
    with pytest.raises(BundleVerificationError) as caught:
        fetch_bundle(server.url, wrong, updates_dir, free_bytes=lambda _: PLENTY)
    assert PAYLOAD_SHA256 in str(caught.value)
    assert wrong in str(caught.value)
    assert caught.value.exit_code == 1
    assert list(updates_dir.iterdir()) == []


def test_a_bundle_of_another_size_than_announced_is_refused_before_download(
    server: BundleServer, updates_dir: Path
) -> None:
    with pytest.raises(BundleVerificationError, match="offers"):
        fetch_bundle(
            server.url,
            PAYLOAD_SHA256,
            updates_dir,
            expected_size=len(PAYLOAD) + 1,
            free_bytes=lambda _: PLENTY,
        )
    assert list(updates_dir.iterdir()) == []


def test_too_little_free_space_refuses_to_start_and_says_what_is_needed(
    server: BundleServer, updates_dir: Path
) -> None:
    free = 10 * 2**20
    with pytest.raises(InsufficientSpaceError) as caught:
        fetch_bundle(
            server.url,
            PAYLOAD_SHA256,
            updates_dir,
            margin_bytes=64 * 2**20,
            free_bytes=lambda _: free,
        )
    message = str(caught.value)
    assert "67.0 MiB needed" in message  # 3 MiB bundle + 64 MiB margin
    assert "10.0 MiB free" in message
    assert str(updates_dir) in message
    assert "hint: free at least 57.0 MiB" in message
    assert list(updates_dir.iterdir()) == []


def test_a_local_bundle_is_copied_verified_and_reported(tmp_path: Path, updates_dir: Path) -> None:
    source = tmp_path / "usb" / "moltbot-2.0.0.raucb"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    seen: list[tuple[int, int | None]] = []
    fetched = fetch_bundle(
        str(source),
        PAYLOAD_SHA256.upper(),
        updates_dir,
        progress=lambda done, total: seen.append((done, total)),
        free_bytes=lambda _: PLENTY,
    )
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.sha256 == PAYLOAD_SHA256
    assert seen[0] == (0, len(PAYLOAD))
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert source.exists()


def test_a_local_copy_with_the_wrong_hash_leaves_nothing_behind(
    tmp_path: Path, updates_dir: Path
) -> None:
    source = tmp_path / "b.raucb"
    source.write_bytes(PAYLOAD[:-1] + b"!")
    with pytest.raises(BundleVerificationError):
        fetch_bundle(str(source), PAYLOAD_SHA256, updates_dir, free_bytes=lambda _: PLENTY)
    assert list(updates_dir.iterdir()) == []


def test_a_verified_bundle_already_here_is_used_without_a_request(
    server: BundleServer, updates_dir: Path
) -> None:
    updates_dir.mkdir(parents=True)
    bundle_path(updates_dir, PAYLOAD_SHA256).write_bytes(PAYLOAD)
    fetched = fetch_bundle(server.url, PAYLOAD_SHA256, updates_dir, free_bytes=lambda _: 0)
    assert fetched.size_bytes == len(PAYLOAD)
    assert server.behaviour.requests == []


def test_a_dead_link_is_given_up_after_the_bounded_number_of_tries(
    server: BundleServer, updates_dir: Path
) -> None:
    url = server.url
    server.shutdown()
    server.server_close()
    delays: list[float] = []
    with pytest.raises(DownloadError, match="3 times in a row"):
        fetch_bundle(
            url,
            PAYLOAD_SHA256,
            updates_dir,
            retry=RetryPolicy(attempts=3, timeout_s=2),
            free_bytes=lambda _: PLENTY,
            sleep=delays.append,
        )
    assert delays == [1.0, 2.0]


def test_a_missing_file_on_the_server_is_not_retried(
    server: BundleServer, updates_dir: Path
) -> None:
    server.behaviour.status = 404
    delays: list[float] = []
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_bundle(
            server.url,
            PAYLOAD_SHA256,
            updates_dir,
            free_bytes=lambda _: PLENTY,
            sleep=delays.append,
        )
    assert delays == []
    assert server.behaviour.requests == [None]


def test_a_server_error_is_retried_with_growing_backoff(
    server: BundleServer, updates_dir: Path
) -> None:
    server.behaviour.status = 503
    delays: list[float] = []
    with pytest.raises(DownloadError, match="HTTP 503"):
        fetch_bundle(
            server.url,
            PAYLOAD_SHA256,
            updates_dir,
            retry=RetryPolicy(attempts=4, first_delay_s=0.5, max_delay_s=1.5),
            free_bytes=lambda _: PLENTY,
            sleep=delays.append,
        )
    assert delays == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("value", ["abc", "g" * 64, PAYLOAD_SHA256[:-1]])
def test_a_malformed_sha256_is_bad_input(value: str, updates_dir: Path) -> None:
    with pytest.raises(UpdateSourceError) as caught:
        fetch_bundle("/nowhere.raucb", value, updates_dir)
    assert caught.value.exit_code == 2
    assert not updates_dir.exists()


def test_a_missing_local_bundle_is_bad_input(tmp_path: Path, updates_dir: Path) -> None:
    with pytest.raises(UpdateSourceError, match="bundle not found") as caught:
        fetch_bundle(str(tmp_path / "nope.raucb"), PAYLOAD_SHA256, updates_dir)
    assert caught.value.exit_code == 2
    assert not updates_dir.exists()


def test_another_url_scheme_is_refused(updates_dir: Path) -> None:
    with pytest.raises(UpdateSourceError, match="ftp"):
        fetch_bundle("ftp://example.org/b.raucb", PAYLOAD_SHA256, updates_dir)


def test_a_file_url_is_a_local_copy(tmp_path: Path, updates_dir: Path) -> None:
    source = tmp_path / "b.raucb"
    source.write_bytes(PAYLOAD)
    fetched = fetch_bundle(
        source.as_uri(), PAYLOAD_SHA256, updates_dir, free_bytes=lambda _: PLENTY
    )
    assert fetched.path.read_bytes() == PAYLOAD
