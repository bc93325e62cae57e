"""Small file operations that must be right everywhere: atomic replace, streaming sha256, and
reading a data file (YAML or JSON) into a pydantic model.

Board profiles, model manifests, recipes and config files are all read through
``read_data_file`` / ``load_data_file``, so each one that is missing, unreadable, not
parseable or invalid is refused the same way: the message says what is wrong, ``where`` points
at the file (with ``line:column`` for a syntax error), the hint says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edge.errors import MoltbotError

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # Python 3.10 (JetPack 6's system Python)
    from importlib.abc import Traversable

Model = TypeVar("Model", bound=BaseModel)
DataPath = Path | Traversable

MISSING_HINT = "check the path"
YAML_SYNTAX_HINT = "fix the YAML syntax (indentation, quotes, ':' after each key)"
JSON_SYNTAX_HINT = "fix the JSON syntax (double quotes, commas between items, no trailing comma)"


def write_text_atomically(path: Path, text: str) -> None:
    """Write, fsync, then rename over ``path``: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_data_file(
    path: DataPath,
    model: type[Model],
    *,
    error: type[MoltbotError],
    what: str,
    hint: str,
    missing_hint: str = MISSING_HINT,
    syntax_hint: str | None = None,
) -> Model:
    """Read, parse and validate ``path`` as ``model``; every failure raises ``error``.

    ``what`` names the file in messages ("board profile" → "board profile is invalid: …");
    ``hint`` is what to do when the content does not fit the model.
    """
    data = read_data_file(
        path, error=error, what=what, missing_hint=missing_hint, syntax_hint=syntax_hint
    )
    return validate_data(data, model, error=error, what=what, where=str(path), hint=hint)


def read_data_file(
    path: DataPath,
    *,
    error: type[MoltbotError],
    what: str,
    missing_hint: str = MISSING_HINT,
    syntax_hint: str | None = None,
) -> Any:
    """The parsed content of a YAML file, or of a JSON file if its name ends in ``.json``.

    An empty YAML file is ``None``. ``syntax_hint`` replaces the generic "fix the syntax" hint.
    """
    text = _read_text(path, error=error, what=what, missing_hint=missing_hint)
    is_json = path.name.endswith(".json")
    syntax = "JSON" if is_json else "YAML"
    hint = syntax_hint or (JSON_SYNTAX_HINT if is_json else YAML_SYNTAX_HINT)
    try:
        return json.loads(text) if is_json else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        raise error(f"{what} is not valid JSON: {exc.msg}", where=where, hint=hint) from exc
    except yaml.YAMLError as exc:
        problem, where = yaml_problem(exc, path)
        raise error(f"{what} is not valid YAML: {problem}", where=where, hint=hint) from exc
    except ValueError as exc:  # PyYAML builds `2024-13-45` or `!!int abc` and fails
        raise error(
            f"{what} is not valid YAML: {exc}",
            where=str(path),
            hint="quote a value that looks like a date or number but is not one",
        ) from exc
    except RecursionError as exc:
        raise error(f"{what} nests too deeply to be {syntax}", where=str(path), hint=hint) from exc


def validate_data(
    data: Any, model: type[Model], *, error: type[MoltbotError], what: str, where: str, hint: str
) -> Model:
    """``data`` as ``model``, or ``error`` listing every bad field as ``a.b.c: message``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(
            f"{what} is invalid: {validation_problems(exc)}", where=where, hint=hint
        ) from exc


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; …``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '<top level>'}: {error['msg']}"
        for error in exc.errors()
    )


def yaml_problem(exc: yaml.YAMLError, path: object) -> tuple[str, str]:
    """A PyYAML error as (problem, ``file:line:column``) for a message that points at it."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    return str(getattr(exc, "problem", None) or exc), where


def _read_text(path: DataPath, *, error: type[MoltbotError], what: str, missing_hint: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(f"no {what} found", where=str(path), hint=missing_hint) from exc
    except UnicodeDecodeError as exc:
        raise error(
            f"cannot read {what}: not UTF-8 text (byte {exc.start} is "
            f"{exc.object[exc.start]:#04x})",
            where=str(path),
            hint="save it as UTF-8 text",
        ) from exc
    except OSError as exc:
        raise error(
            f"cannot read {what}: {exc.strerror or exc}",
            where=str(path),
            hint="check that it is a file and that its permissions let this user read it",
        ) from exc
