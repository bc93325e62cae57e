"""Part ids: the name a line gives each part (barcode, serial, PLC counter), carried in events.

Given by the sender (``?part_id=`` on an upload, ``part_id`` in a capture command), taken from
the file name in the watched folder, or made up from the frame reference when nobody names it.
"""

from __future__ import annotations

import re
from pathlib import Path

from edge.errors import InputError

PART_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:#/+-]{0,127}$"
_PART_ID = re.compile(PART_ID_PATTERN)
MAX_PART_ID_CHARS = 128


def validate_part_id(part_id: str, where: str) -> str:
    if not _PART_ID.fullmatch(part_id):
        raise InputError(
            f"invalid part id {part_id[:40]!r}",
            where=where,
            hint="1-128 characters: letters, digits and _ . : # / + -, starting with a letter "
            "or digit",
        )
    return part_id


def part_id_from_path(path: Path) -> str:
    """The file name without its extension: ``P-000123.png`` is part ``P-000123``."""
    return path.stem[:MAX_PART_ID_CHARS] or path.name[:MAX_PART_ID_CHARS]
