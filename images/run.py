"""One way to run external tools (mmdebstrap, sfdisk, mkfs, mtools, bmaptool, qemu).

A failure says which step failed, prints the exact command to copy and rerun, and for a tool
that is not installed, the Debian package that provides it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import MoltbotError

logger = logging.getLogger(__name__)

PACKAGE_OF = {
    "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools",
    "fsck.vfat": "dosfstools",
    "mcopy": "mtools",
    "mtype": "mtools",
    "mdir": "mtools",
    "mmd": "mtools",
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "bmaptool": "bmap-tools",
    "xz": "xz-utils",
    "mmdebstrap": "mmdebstrap",
    "qemu-system-aarch64": "qemu-system-arm",
    "faketime": "faketime",
    "fdtput": "device-tree-compiler",
    "dtc": "device-tree-compiler",
    "zstd": "zstd",
    "depmod": "kmod",
    "mkimage": "u-boot-tools",
    "mksquashfs": "squashfs-tools",
    "rauc": "rauc",
    "fw_printenv": "libubootenv-tool",
}
# Tools that stamp the current time into what they write. With SOURCE_DATE_EPOCH set they run
# under libfaketime at that instant, so two builds of the same inputs give the same bytes
# (mke2fs 1.47.0 and mtools 4.0.32 in Debian 12 ignore SOURCE_DATE_EPOCH themselves).
TIME_STAMPING = frozenset({"mkfs.vfat", "mcopy", "mmd", "mke2fs"})


class ToolError(MoltbotError):
    """An external tool failed or is missing."""


def require(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        package = PACKAGE_OF.get(tool, tool)
        raise ToolError(
            f"{tool} is not installed",
            where=tool,
            hint=f"apt-get install {package} (`make image` installs it)",
        )
    return found


def run(
    command: Sequence[str | Path],
    *,
    step: str,
    input_text: str | None = None,
    cwd: Path | None = None,
    stream: bool = False,
) -> str:
    """Run a tool; on failure raise ToolError with the step, the command and its last output.

    ``stream``: a long step (mmdebstrap) logs its output line by line as it goes.
    """
    argv = [str(part) for part in command]
    tool = argv[0]
    argv[0] = require(tool)
    env = None
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if tool in TIME_STAMPING and epoch.isdigit():
        frozen = datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S")
        argv = [require("faketime"), "-f", frozen, *argv]
        env = os.environ | {"TZ": "UTC"}
    if stream:
        return _run_streaming(argv, step=step, cwd=cwd, env=env)
    result = subprocess.run(  # noqa: S603 - argv list, no shell; the tools are ours to run
        argv, input=input_text, capture_output=True, text=True, cwd=cwd, check=False, env=env
    )
    if result.returncode != 0:
        raise ToolError(
            f"{step} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}",
            where=shlex.join(argv),
            hint="run the command above by hand to see the whole output",
        )
    return result.stdout


def _run_streaming(
    argv: list[str], *, step: str, cwd: Path | None, env: dict[str, str] | None
) -> str:
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(  # noqa: S603 - argv list, no shell
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        cwd=cwd,
        env=env,
    ) as process:
        assert process.stdout is not None  # noqa: S101 - PIPE above
        for line in process.stdout:
            tail.append(line.rstrip())
            logger.debug("%s", line.rstrip())
        returncode = process.wait()
    if returncode != 0:
        raise ToolError(
            f"{step} failed (exit {returncode}): " + "\n".join(tail),
            where=shlex.join(argv),
            hint="the lines above are the end of its output; rerun with --debug for all of it",
        )
    return "\n".join(tail)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A progress line per stage, with its time."""
    logger.info("▶ %s", name)
    started = time.monotonic()
    yield
    logger.info("✔ %s (%.1f s)", name, time.monotonic() - started)
