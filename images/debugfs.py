"""Reading an ext4 file system without mounting it (e2fsprogs' debugfs, no root needed).

``source`` is a partition file, or an image with ``?offset=<bytes>`` (debugfs opens the file
system at that offset). debugfs exits 0 even when a path is missing; the readers below say so.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from images.run import ToolError, require, run


def names_in(source: str | Path, folder: str) -> list[str]:
    """The names in ``folder`` (``.`` and ``..`` too), from ``ls -p``'s
    ``/inode/mode/uid/gid/name/size/`` lines."""
    listing = run(["debugfs", "-R", f"ls -p {folder}", str(source)], step=f"list {folder}")
    return [line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6]


def dump(source: str | Path, path: str, local: Path) -> Path:
    """Copy the file ``path`` out to ``local``."""
    run(["debugfs", "-R", f"dump {path} {local}", str(source)], step=f"extract {path}")
    if not local.is_file():
        raise ToolError(
            f"{path} is not in the file system",
            where=str(source),
            hint="check the path (debugfs reads the file system as it is on disk)",
        )
    return local


def cat(source: str | Path, path: str) -> bytes:
    """The bytes of the file ``path`` (empty for a missing file, as debugfs gives them)."""
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        [require("debugfs"), "-R", f"cat {path}", str(source)], capture_output=True, check=True
    )
    return result.stdout


def link_target(source: str | Path, path: str) -> str:
    """Where the symbolic link ``path`` points (a short, "fast" link, as ``ln -s`` makes)."""
    stat = run(["debugfs", "-R", f"stat {path}", str(source)], step=f"stat {path}")
    found = re.search(r'Fast link dest: "([^"]+)"', stat)
    if found is None:
        raise ToolError(
            f"{path} is not a short symbolic link", where=str(source), hint="check the path"
        )
    return found.group(1)
