"""Helpers for the A/B update tests: root file systems derived from a built image's slot, and a
file server the guest reaches at the host's address."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from images.debugfs import cat as debugfs_cat
from images.disk import SECTOR, read_table


def extract_partition(image: Path, index: int, target: Path) -> Path:
    """Partition ``index`` (0-based) of the disk image as a file of its own, kept sparse."""
    entry = read_table(image)["partitions"][index]  # type: ignore[index]
    subprocess.run(
        [
            "dd",
            f"if={image}",
            f"of={target}",
            "bs=4M",
            f"skip={int(entry['start']) * SECTOR}",
            f"count={int(entry['size']) * SECTOR}",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ],
        check=True,
    )
    return target


def derive_root(
    source: Path,
    target: Path,
    files: dict[str, bytes],
    workdir: Path,
    remove: Iterable[str] = (),
) -> Path:
    """A copy of the ext4 image ``source`` with ``files`` (absolute path → content) replaced
    and the files in ``remove`` deleted, written with debugfs (no mount, no root needed); the
    copy stays sparse."""
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
    for index, (path, content) in enumerate(sorted(files.items())):
        local = workdir / f"derived-{index}"
        local.write_bytes(content)
        script = f"rm {path}\nwrite {local} {path}\nsif {path} mode 0100644\n"
        _debugfs_write(target, script)
        assert debugfs_cat(target, path) == content, f"debugfs did not write {path}"
    for path in remove:
        _debugfs_write(target, f"rm {path}\n")
        listing = subprocess.run(
            ["debugfs", "-R", f"stat {path}", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "File not found" in listing.stderr, f"debugfs did not remove {path}"
    subprocess.run(["e2fsck", "-fn", str(target)], check=True, capture_output=True)
    return target


def _debugfs_write(file_system: Path, script: str) -> None:
    subprocess.run(
        ["debugfs", "-w", "-f", "-", str(file_system)],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


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
