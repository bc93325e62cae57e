"""Fetch an update bundle onto the data partition: resumable, size- and sha256-checked.

``fetch_bundle`` takes an ``http(s)://`` URL or a local path (a USB stick, a file copied over
SSH) and leaves ``<updates_dir>/bundle-<sha256 prefix>.raucb`` only when its sha256 is the one
given. The name comes from the hash, not the URL, so a retry with a fresh pre-signed link resumes
the same ``.part`` file. Downloads resume with an HTTP ``Range`` request after a dropped
connection (``If-Range`` guards against a file that changed on the server meanwhile); a retry
that brought no new byte counts against ``RetryPolicy.attempts``, one that did resets the count,
so a slow but moving link finishes and a dead one gives up. Before a byte is written the file
system must have the bundle's remaining size plus a margin free. Only the standard library
(``urllib``) is used.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge.files import sha256_file
from edge.update.errors import (
    BundleVerificationError,
    DownloadError,
    InsufficientSpaceError,
    UpdateSourceError,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, bytes in all or ``None`` when the server does not say)."""
FreeBytes = Callable[[Path], int]

CHUNK_BYTES = 1 << 20
DEFAULT_MARGIN_BYTES = 64 * 2**20
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a link that drops: backoff doubles up to ``max_delay_s``."""

    attempts: int = 6
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    timeout_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1)))


@dataclass(frozen=True)
class FetchedBundle:
    """A bundle on the data partition whose sha256 was checked."""

    path: Path
    size_bytes: int
    sha256: str


def free_bytes_of(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (``statvfs``)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def normalise_sha256(text: str) -> str:
    digest = text.strip().lower()
    if not SHA256_PATTERN.match(digest):
        raise UpdateSourceError(
            f"--sha256 must be 64 hexadecimal digits, got {text!r}",
            hint="copy the value from the bundle's SHA256SUMS (sha256sum BUNDLE prints it)",
        )
    return digest


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme.lower() in ("http", "https")


def bundle_path(updates_dir: Path, sha256: str) -> Path:
    """Where a bundle with this hash is kept (RAUC wants the ``.raucb`` suffix)."""
    return updates_dir / f"bundle-{sha256[:16]}.raucb"


def fetch_bundle(
    source: str,
    sha256: str,
    updates_dir: Path,
    *,
    expected_size: int | None = None,
    progress: ProgressCallback | None = None,
    retry: RetryPolicy | None = None,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
    free_bytes: FreeBytes = free_bytes_of,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchedBundle:
    """Download or copy ``source`` into ``updates_dir``; return it once its sha256 matches."""
    expected = normalise_sha256(sha256)
    local = None if is_url(source) else _local_path(source)
    updates_dir.mkdir(parents=True, exist_ok=True)
    target = bundle_path(updates_dir, expected)
    if target.exists():
        if sha256_file(target) == expected:
            logger.info("bundle %s is already here: %s", expected[:16], target)
            return FetchedBundle(target, target.stat().st_size, expected)
        target.unlink()
    transfer = _Transfer(
        source=source,
        part=target.with_name(target.name + ".part"),
        expected_size=expected_size,
        progress=progress or (lambda _done, _total: None),
        space=_SpaceCheck(updates_dir, margin_bytes, free_bytes),
    )
    if local is None:
        _download(transfer, retry or RetryPolicy(), sleep)
    else:
        _copy_local(transfer, local)
    return _finish(transfer, target, expected)


@dataclass(frozen=True)
class _SpaceCheck:
    folder: Path
    margin_bytes: int
    free_bytes: FreeBytes

    def ensure(self, remaining_bytes: int | None) -> None:
        """Refuse before writing when the bundle's remaining bytes + margin do not fit."""
        needed = (remaining_bytes or 0) + self.margin_bytes
        free = self.free_bytes(self.folder)
        if free >= needed:
            return
        size = "unknown size" if remaining_bytes is None else _mib(remaining_bytes)
        raise InsufficientSpaceError(
            f"not enough free space for the update bundle: {_mib(needed)} needed "
            f"({size} still to fetch + {_mib(self.margin_bytes)} margin), {_mib(free)} free",
            where=str(self.folder),
            hint=(
                f"free at least {_mib(needed - free)} on the data partition (old files in "
                f"{self.folder}, `moltbot outbox stats` for the outbox's share), then run the "
                "command again; a partial download is kept and resumed"
            ),
        )


class _Transfer:
    """One bundle being written to its ``.part`` file, hashed as the bytes arrive."""

    def __init__(
        self,
        *,
        source: str,
        part: Path,
        expected_size: int | None,
        progress: ProgressCallback,
        space: _SpaceCheck,
    ) -> None:
        self.source = source
        self.part = part
        self.expected_size = expected_size
        self.progress = progress
        self.space = space
        self.total: int | None = expected_size
        self.validator: str | None = None
        self.digest = hashlib.sha256()
        self.done = 0

    def resume_from_part(self) -> None:
        """Hash what an earlier try left in the ``.part`` file and continue after it."""
        if not self.part.exists():
            return
        with self.part.open("rb") as stream:
            for block in iter(lambda: stream.read(CHUNK_BYTES), b""):
                self.digest.update(block)
                self.done += len(block)
        if self.done:
            logger.info("resuming %s after %d bytes", self.source, self.done)

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.digest = hashlib.sha256()
        self.done = 0

    def learn_total(self, total: int | None) -> None:
        """The server's size for the whole bundle; checked against the size announced."""
        if total is None:
            return
        if self.expected_size is not None and total != self.expected_size:
            self.restart()
            raise BundleVerificationError(
                f"the server offers {total} bytes, the bundle announced has {self.expected_size}",
                where=self.source,
                hint="the URL points at another file than the one announced: check both",
            )
        self.total = total

    def write_from(self, stream: BinaryIO) -> None:
        with self.part.open("ab") as out:
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                self.digest.update(chunk)
                self.done += len(chunk)
                self.progress(self.done, self.total)
            out.flush()
            os.fsync(out.fileno())


def _local_path(source: str) -> Path:
    """The file a non-HTTP source names: a path or a ``file:`` URL; other schemes are refused."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme not in ("", "file") and not Path(source).exists():
        raise UpdateSourceError(
            f"cannot fetch a bundle over {scheme}://",
            where=source,
            hint="give an http:// or https:// URL, or the path of a local .raucb file",
        )
    path = Path(urllib.parse.urlsplit(source).path if scheme == "file" else source)
    if not path.is_file():
        raise UpdateSourceError(
            "bundle not found", where=str(path), hint="check the path, or give an https:// URL"
        )
    return path


def _copy_local(transfer: _Transfer, path: Path) -> None:
    transfer.restart()
    transfer.learn_total(path.stat().st_size)
    transfer.space.ensure(transfer.total)
    transfer.progress(0, transfer.total)
    with path.open("rb") as stream:
        transfer.write_from(stream)


class _RetryableError(Exception):
    """A try that may succeed when repeated: connection lost, timeout, 5xx."""


def _download(transfer: _Transfer, retry: RetryPolicy, sleep: Callable[[float], None]) -> None:
    transfer.resume_from_part()
    failures = 0
    while True:
        before = transfer.done
        try:
            _try_download(transfer, retry.timeout_s)
        except _RetryableError as exc:
            failures = 1 if transfer.done > before else failures + 1
            if failures >= retry.attempts:
                raise DownloadError(
                    f"download failed {failures} times in a row: {exc}",
                    where=transfer.source,
                    hint=(
                        "check the network and the server, then run the command again: "
                        f"the {transfer.done} bytes already here are resumed"
                    ),
                ) from exc
            delay = retry.delay_s(failures)
            logger.warning(
                "download of %s interrupted at %d bytes (%s); retrying in %.0f s",
                transfer.source,
                transfer.done,
                exc,
                delay,
            )
            sleep(delay)
        else:
            return


def _try_download(transfer: _Transfer, timeout_s: float) -> None:
    """One request: from the start, or from ``transfer.done`` with a Range request."""
    if transfer.total is not None and transfer.done == transfer.total:
        return
    # S310: fetch_bundle sends only http:// and https:// sources here (is_url)
    request = urllib.request.Request(transfer.source, headers=_range_headers(transfer))  # noqa: S310
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as exc:
        _refused(transfer, exc)
        return
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _RetryableError(_reason(exc)) from exc
    with response:
        _start_body(transfer, response)
        transfer.space.ensure(None if transfer.total is None else transfer.total - transfer.done)
        try:
            transfer.write_from(response)
        except (http.client.HTTPException, OSError) as exc:
            raise _RetryableError(_reason(exc)) from exc
    if transfer.total is not None and transfer.done < transfer.total:
        raise _RetryableError(f"connection closed after {transfer.done} of {transfer.total} bytes")
    if transfer.total is not None and transfer.done > transfer.total:
        transfer.restart()
        raise _RetryableError("the server sent more bytes than it announced; starting over")


def _range_headers(transfer: _Transfer) -> dict[str, str]:
    headers = {"User-Agent": "moltbot-edge-update", "Accept-Encoding": "identity"}
    if transfer.done:
        headers["Range"] = f"bytes={transfer.done}-"
        if transfer.validator:
            headers["If-Range"] = transfer.validator
    return headers


def _start_body(transfer: _Transfer, response: http.client.HTTPResponse) -> None:
    """Fit the response to the ``.part`` file: a 206 continues it, a 200 starts it over."""
    validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    if validator and not validator.startswith("W/"):
        transfer.validator = validator
    if response.status == 206:
        match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != transfer.done:
            transfer.restart()
            raise _RetryableError("the server answered another range than asked; starting over")
        if match.group(3) != "*":
            transfer.learn_total(int(match.group(3)))
        return
    if transfer.done:
        logger.info("%s does not resume (HTTP %d); starting over", transfer.source, response.status)
        transfer.restart()
    length = response.headers.get("Content-Length")
    transfer.learn_total(int(length) if length and length.isdigit() else None)
    transfer.progress(transfer.done, transfer.total)


def _refused(transfer: _Transfer, exc: urllib.error.HTTPError) -> None:
    """A status error: 416 means the ``.part`` file is complete (or wrong), 5xx is retried."""
    exc.close()
    if exc.code == 416:
        match = UNSATISFIED_RANGE.match(exc.headers.get("Content-Range", ""))
        if match is not None and int(match.group(1)) == transfer.done:
            transfer.learn_total(transfer.done)
            return
        transfer.restart()
        raise _RetryableError("the partial file does not fit the server's; starting over")
    if exc.code in RETRY_STATUS:
        raise _RetryableError(f"HTTP {exc.code} {exc.reason}")
    raise DownloadError(
        f"the server refused the bundle: HTTP {exc.code} {exc.reason}",
        where=transfer.source,
        hint="check the URL (a pre-signed link may have expired) and the credentials in it",
    )


def _finish(transfer: _Transfer, target: Path, expected: str) -> FetchedBundle:
    """Rename the ``.part`` file into place if its bytes are the announced ones, else delete it."""
    actual = transfer.digest.hexdigest()
    problem = None
    if transfer.total is not None and transfer.done != transfer.total:
        problem = f"the bundle has {transfer.done} bytes, {transfer.total} were announced"
    elif actual != expected:
        problem = f"the bundle's sha256 is {actual}, expected {expected}"
    if problem is not None:
        transfer.restart()
        raise BundleVerificationError(
            f"{problem}; the downloaded file was deleted",
            where=transfer.source,
            hint=(
                "check --sha256 against the value published with the bundle; if it is right, "
                "the file on the server or the copy is damaged"
            ),
        )
    os.replace(transfer.part, target)
    _fsync_folder(target.parent)
    logger.info("bundle %s verified: %s (%d bytes)", expected[:16], target, transfer.done)
    return FetchedBundle(target, transfer.done, expected)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"
