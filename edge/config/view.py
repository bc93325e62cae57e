"""Views of the config for people: the effective values with their sources, and the reference.

Secrets never leave this module in clear: ``SecretStr`` dumps as ``**********``.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from edge.config.loading import ENV_NESTING, ENV_PREFIX, LoadedConfig
from edge.config.model import MoltbotConfig

DERIVED_FROM_DATA_DIR = "derived from device.data_dir"


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: Any
    source: str


def redacted_tree(config: MoltbotConfig) -> dict[str, Any]:
    """The config as plain JSON-able data with every secret masked."""
    return config.model_dump(mode="json")


def effective_rows(loaded: LoadedConfig) -> list[SettingRow]:
    """One row per leaf setting: dotted key, redacted value, where it came from."""
    rows = [
        SettingRow(key, value, loaded.origin_of(key))
        for key, value in _leaves(redacted_tree(loaded.config))
    ]
    paths = loaded.config.paths()
    derived = {
        "inference.model_dir": paths.model_dir,
        "inference.engine_cache_dir": paths.engine_cache_dir,
        "cache.dir": paths.outbox_dir,
        "voice.model_dir": paths.vosk_model_dir,
        "updates.dir": paths.updates_dir,
    }
    return [
        SettingRow(row.key, str(derived[row.key]), DERIVED_FROM_DATA_DIR)
        if row.key in derived and row.value is None
        else row
        for row in rows
    ]


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.extend(_leaves(value, f"{dotted}."))
        else:
            leaves.append((dotted, value))
    return leaves


def format_rows(rows: list[SettingRow]) -> str:
    key_width = max(len(row.key) for row in rows)
    value_width = min(48, max(len(_show(row.value)) for row in rows))
    lines = [f"{'KEY':<{key_width}}  {'VALUE':<{value_width}}  SOURCE"]
    lines += [
        f"{row.key:<{key_width}}  {_show(row.value):<{value_width}}  {row.source}" for row in rows
    ]
    return "\n".join(lines)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def env_var_name(dotted_key: str) -> str:
    return ENV_PREFIX + ENV_NESTING.join(part.upper() for part in dotted_key.split("."))


def reference_markdown() -> str:
    """The README's config reference: every setting, type, default, variable and meaning."""
    lines = [
        "| key | type | default | environment variable | description |",
        "|---|---|---|---|---|",
    ]
    for key, annotation, default, description in _settings(MoltbotConfig):
        lines.append(
            f"| `{key}` | {_type_name(annotation)} | {_default_text(default)} | "
            f"`{env_var_name(key)}` | {description} |"
        )
    return "\n".join(lines)


def _settings(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    found: list[tuple[str, Any, Any, str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_settings(annotation, f"{dotted}."))
            continue
        default = field.get_default(call_default_factory=True)
        found.append((dotted, annotation, default, field.description or ""))
    return found


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{arg}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        suffix = " or unset" if type(None) in args else ""
        return " \\| ".join(names) + suffix
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} → {_type_name(args[1])}"
    simple = {bool: "bool", int: "int", float: "float", str: "string", Path: "path"}
    if annotation in simple:
        return simple[annotation]
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(default: Any) -> str:
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    elif isinstance(default, dict):
        default = {
            key: value.model_dump(mode="json", exclude_defaults=True)
            if isinstance(value, BaseModel)
            else value
            for key, value in default.items()
        }
    text = json.dumps(default, ensure_ascii=False) if not isinstance(default, Path) else default
    return f"`{text}`".replace("|", "\\|")
