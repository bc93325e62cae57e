"""How many bytes a staged tree holds, in all and by its largest directories (build report)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_bytes(folder: Path) -> int:
    """Bytes in the regular files under ``folder`` (symbolic links not followed or counted)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def largest_directories(folder: Path, *, depth: int = 3, most: int = 25) -> dict[str, int]:
    """The ``most`` largest directories down to ``depth`` levels below ``folder``, with the bytes
    of the regular files beneath each, largest first (``usr``, ``usr/lib``, ``usr/lib/modules``:
    a parent and its children both appear, so the report shows where a big folder's bytes go)."""
    totals: dict[str, int] = {}
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        relative = Path(current).relative_to(folder).parts
        size = 0
        for name in files:
            info = os.lstat(os.path.join(current, name))
            if not os.path.islink(os.path.join(current, name)):
                size += info.st_size
        for level in range(1, min(len(relative), depth) + 1):
            key = "/".join(relative[:level])
            totals[key] = totals.get(key, 0) + size
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:most])
