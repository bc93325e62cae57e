"""Regenerate the config reference between the README's markers (``make docs``)."""

from __future__ import annotations

import re
from pathlib import Path

from edge.config.view import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- config-reference:start -->\n).*?(\n<!-- config-reference:end -->)", re.S)


def main() -> None:
    text = README.read_text()
    updated, count = BLOCK.subn(lambda m: m.group(1) + reference_markdown() + m.group(2), text)
    if count != 1:
        raise SystemExit("README.md lost its config-reference markers")
    README.write_text(updated)


if __name__ == "__main__":
    main()
