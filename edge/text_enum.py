"""``TextEnum``: an enum whose members are strings and print as their value, on Python 3.10 too.

``enum.StrEnum`` came with Python 3.11; a Jetson's venv runs on JetPack 6's system Python 3.10
(its TensorRT bindings exist only for that one). There ``TextEnum`` is a ``str, Enum`` with
StrEnum's behaviour: ``str(member)``, ``f"{member}"`` and ``auto()`` give the value.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum as TextEnum
else:
    from enum import Enum
    from typing import Any

    class TextEnum(str, Enum):
        """``enum.StrEnum`` of Python 3.11, for 3.10."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, format_spec: str) -> str:
            return format(str(self.value), format_spec)

        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
            return name.lower()


__all__ = ["TextEnum"]
