"""Which settings are secrets, found from the model's types rather than a hand-kept list."""

from __future__ import annotations

import types
import typing
from functools import cache

from pydantic import BaseModel, SecretStr

from edge.config.model import MoltbotConfig


def _is_secret_type(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_secret_type(arg) for arg in typing.get_args(annotation))
    return False


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


@cache
def secret_paths(model: type[BaseModel] = MoltbotConfig, prefix: str = "") -> frozenset[str]:
    """Dotted keys of every secret field, e.g. ``uplink.password``."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if _is_secret_type(field.annotation):
            found.add(dotted)
        nested = _model_in(field.annotation)
        if nested is not None:
            found |= secret_paths(nested, f"{dotted}.")
    return frozenset(found)


def is_secret_path(dotted_key: str) -> bool:
    return any(
        dotted_key == secret or dotted_key.startswith(f"{secret}.") for secret in secret_paths()
    )
