"""Loading the config from its four sources, lowest to highest precedence.

1. the model's defaults;
2. the system file ``/etc/moltbot/config.yaml``, or the file named by ``--config`` /
   ``MOLTBOT_CONFIG`` instead of it;
3. the site file on the boot partition (written by ``moltbot image configure``), or the file
   named by ``MOLTBOT_SITE_FILE``;
4. ``MOLTBOT_<SECTION>__<KEY>`` environment variables (``__`` nests; balena fleet and device
   variables use this). Values that start with ``[`` or ``{`` are parsed as JSON.

Maps set by two sources merge key by key; a map set by any source replaces the default map
as a whole (so a site's own voice intents replace the built-in ones).

Every value remembers where it came from, so ``moltbot config show`` can say so and a bad value
is reported with the file or variable that set it.
"""

from __future__ import annotations

import difflib
import json
import os
import reprlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.config.model import MoltbotConfig
from edge.config.secrets import is_secret_path
from edge.errors import ConfigError
from edge.files import read_data_file

DEFAULT_SYSTEM_FILE = Path("/etc/moltbot/config.yaml")
DEFAULT_SITE_FILE = Path("/boot/firmware/moltbot/site.yaml")
ENV_PREFIX = "MOLTBOT_"
ENV_NESTING = "__"
# Variables with the prefix that are not settings themselves.
RESERVED_ENV = frozenset({"MOLTBOT_CONFIG", "MOLTBOT_SITE_FILE", "MOLTBOT_DEBUG"})
DEFAULT_ORIGIN = "default"

Tree = dict[str, Any]


@dataclass(frozen=True)
class LoadedConfig:
    """The effective config plus, for every leaf set by a source, where it came from."""

    config: MoltbotConfig
    origins: Mapping[str, str]
    files_read: tuple[Path, ...]

    def origin_of(self, dotted_key: str) -> str:
        return _origin_covering(self.origins, dotted_key) or DEFAULT_ORIGIN


def load_config(
    *,
    config_file: Path | None = None,
    site_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    system_file: Path = DEFAULT_SYSTEM_FILE,
) -> LoadedConfig:
    """Read every source, merge them and validate the result; raise ``ConfigError`` if bad."""
    env = os.environ if environ is None else environ
    merged: Tree = {}
    origins: dict[str, str] = {}
    files_read: list[Path] = []

    for path in _config_files(config_file, site_file, env, system_file):
        _merge(merged, read_config_file(path), origins, str(path))
        files_read.append(path)
    env_tree, env_origins = environment_layer(env)
    _merge(merged, env_tree, origins, origin=None, leaf_origins=env_origins)

    try:
        config = MoltbotConfig.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, origins) from exc
    return LoadedConfig(config=config, origins=origins, files_read=tuple(files_read))


def _config_files(
    config_file: Path | None,
    site_file: Path | None,
    env: Mapping[str, str],
    system_file: Path,
) -> Iterator[Path]:
    named_config = config_file or _path_from_env(env, "MOLTBOT_CONFIG")
    if named_config is not None:
        yield _must_exist(named_config, "--config / MOLTBOT_CONFIG")
    elif system_file.is_file():
        yield system_file
    named_site = site_file or _path_from_env(env, "MOLTBOT_SITE_FILE")
    if named_site is not None:
        yield _must_exist(named_site, "MOLTBOT_SITE_FILE")
    elif DEFAULT_SITE_FILE.is_file():
        yield DEFAULT_SITE_FILE


def _path_from_env(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value) if value else None


def _must_exist(path: Path, named_by: str) -> Path:
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist or is not a file",
            where=named_by,
            hint="check the path, or leave it unset to use /etc/moltbot/config.yaml",
        )
    return path


def read_config_file(path: Path) -> Tree:
    """Parse one YAML config file into a tree; an empty file is an empty tree."""
    data = read_data_file(path, error=ConfigError, what="config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file must hold a mapping of sections, found {type(data).__name__}",
            where=str(path),
            hint="start the file with a section such as 'uplink:' or 'device:'",
        )
    return data


def environment_layer(env: Mapping[str, str]) -> tuple[Tree, dict[str, str]]:
    """Turn ``MOLTBOT_A__B=v`` variables into a tree and the variable name of each leaf."""
    tree: Tree = {}
    origins: dict[str, str] = {}
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in RESERVED_ENV:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split(ENV_NESTING)
        if not all(keys):
            raise ConfigError(
                f"environment variable {name} has an empty key",
                where=name,
                hint="write MOLTBOT_<SECTION>__<KEY>, e.g. MOLTBOT_UPLINK__HOST",
            )
        node = tree
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"environment variable {name} nests under a key that another variable sets",
                    where=name,
                    hint="set either the whole value or its parts, not both",
                )
            node = child
        node[keys[-1]] = _parse_env_value(name, env[name])
        origins[".".join(keys)] = name
    return tree, origins


def _parse_env_value(name: str, raw: str) -> Any:
    text = raw.strip()
    if not text.startswith(("[", "{")):
        return raw
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"environment variable {name} starts like JSON but does not parse: {exc.msg}",
            where=name,
            hint='lists and maps are JSON, e.g. ["a", "b"] or {"defect": 30}',
        ) from exc


def _merge(
    base: Tree,
    overlay: Tree,
    origins: dict[str, str],
    origin: str | None,
    *,
    leaf_origins: Mapping[str, str] | None = None,
    prefix: str = "",
) -> None:
    """Deep-merge ``overlay`` into ``base``; maps merge key by key, other values replace."""
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(
                base[key], value, origins, origin, leaf_origins=leaf_origins, prefix=f"{dotted}."
            )
            continue
        base[key] = value
        for stale in [k for k in origins if k == dotted or k.startswith(f"{dotted}.")]:
            del origins[stale]
        if leaf_origins is not None:
            origins.update({k: v for k, v in leaf_origins.items() if _covers(dotted, k)})
        elif origin is not None:
            origins.update(dict.fromkeys(_leaf_keys(value, dotted), origin))


def _leaf_keys(value: Any, dotted: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [
            leaf for key, child in value.items() for leaf in _leaf_keys(child, f"{dotted}.{key}")
        ]
    return [dotted]


def _covers(parent: str, key: str) -> bool:
    return key == parent or key.startswith(f"{parent}.")


def _origin_covering(origins: Mapping[str, str], dotted_key: str) -> str | None:
    """The source of ``dotted_key``, of one of its parents, or of one of its children."""
    parts = dotted_key.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in origins:
            return origins[candidate]
    below = sorted({v for k, v in origins.items() if _covers(dotted_key, k)})
    return ", ".join(below) if below else None


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """Suggest the closest known key for a misspelled one (``protocl`` → ``protocol``)."""
    model: type[BaseModel] = MoltbotConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _short_repr(value: Any, limit: int = 200) -> str:
    """A value for an error message; a hostile file's huge value is cut, not echoed whole."""
    short = reprlib.Repr()  # Python 3.11: no keyword arguments yet
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring = 3, 8, 8, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _config_error(exc: ValidationError, origins: Mapping[str, str]) -> ConfigError:
    problems = []
    sources = set()
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        source = _origin_covering(origins, dotted) or DEFAULT_ORIGIN
        sources.add(source)
        given = "" if is_secret_path(dotted) else f" (got {_short_repr(error['input'])})"
        if error["type"] == "extra_forbidden":
            message = "unknown setting" + _did_you_mean(error["loc"])
            given = ""
        else:
            message = error["msg"]
        problems.append(f"{source}: {dotted or '<top level>'}: {message}{given}")
    listing = "\n    ".join(problems)
    return ConfigError(
        f"the configuration is invalid ({len(problems)} problem(s)):\n    {listing}",
        where=", ".join(sorted(sources)),
        hint="fix or remove these values; `moltbot config reference` lists every setting "
        "and what it allows",
    )
