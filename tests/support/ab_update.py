"""Helpers for the A/B update tests: root file systems derived from a built image's slot, and a
file server the guest reaches at the host's address."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def derive_root(source: Path, target: Path, files: dict[str, bytes], workdir: Path) -> Path:
    """A copy of the ext4 image ``source`` with ``files`` (absolute path → content) replaced,
    written with debugfs (no mount, no root needed); the copy stays sparse."""
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
    for index, (path, content) in enumerate(sorted(files.items())):
        local = workdir / f"derived-{index}"
        local.write_bytes(content)
        script = f"rm {path}\nwrite {local} {path}\nsif {path} mode 0100644\n"
        subprocess.run(
            ["debugfs", "-w", "-f", "-", str(target)],
            input=script,
            text=True,
            check=True,
            capture_output=True,
        )
        written = subprocess.run(
            ["debugfs", "-R", f"cat {path}", str(target)], capture_output=True, check=True
        ).stdout
        assert written == content, f"debugfs did not write {path}"
    subprocess.run(["e2fsck", "-fn", str(target)], check=True, capture_output=True)
    return target


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def serve_folder(folder: Path) -> Iterator[int]:
    """``folder`` over HTTP on loopback (the guest's 10.0.2.2); yields the port. Range requests
    are not needed here: the download tests cover resuming."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
