"""Templates kept as real files (``balena/``), rendered by replacing ``@NAME@`` placeholders.

Nothing is escaped: Dockerfiles and shell scripts keep their ``$``, ``${…}`` and ``{…}`` as
they are. A placeholder the caller leaves unfilled, or a value no placeholder asks for, is an
error naming the template, so a template and the code that renders it cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from edge.errors import MoltbotError

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class TemplateError(MoltbotError):
    """A template is missing, or it and the values given for it do not match."""


def render(template: Path, values: Mapping[str, str]) -> str:
    """``template``'s text with each ``@NAME@`` replaced by ``values["NAME"]``."""
    try:
        text = template.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TemplateError(
            f"template {template.name} is missing",
            where=str(template),
            hint="run the builder from a checkout of the repository (it holds balena/)",
        ) from exc
    return fill(text, values, where=str(template))


def fill(text: str, values: Mapping[str, str], *, where: str) -> str:
    wanted = set(PLACEHOLDER.findall(text))
    unfilled = sorted(wanted - values.keys())
    if unfilled:
        raise TemplateError(
            f"placeholder(s) {_names(unfilled)} have no value",
            where=where,
            hint="give them a value where the template is rendered, or take them out of it",
        )
    unused = sorted(values.keys() - wanted)
    if unused:
        raise TemplateError(
            f"value(s) for {_names(unused)} given, but the template has no such placeholder",
            where=where,
            hint="put the placeholder back into the template, or stop passing the value",
        )
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _names(names: list[str]) -> str:
    return ", ".join(f"@{name}@" for name in names)
